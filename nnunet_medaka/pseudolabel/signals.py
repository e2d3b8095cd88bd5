"""Label-free quality signals of a pseudo-label, computed while the teacher's ensemble predicts it.

Every signal needs no ground truth and no network pass beyond the folds the ensemble already runs:

``fold_agreement``
    Mean pairwise Dice of the organ's masks predicted by each fold on its own (on nnU-Net's preprocessed grid).
    Clean on unlabeled cases: no fold saw them. Published as the strongest label-free failure signal in 3D
    segmentation (pairwise Dice of ensemble members), and the rule behind nnU-Net self-training's largest
    documented gain (keep a case when every organ's fold predictions agree).
``soft_dice_confidence``
    Dice between the hard mask and the organ's soft probability map, in closed form:
    ``2 * sum(p * y) / (sum(p) + sum(y))``, p the ensemble's probability of the organ and y its predicted mask.
    It is 1 when the mask is predicted with certainty everywhere and nowhere else.
``mean_max_softmax``
    Mean over the organ's mask of the largest class probability.

An organ absent from every map counts as a perfect agreement (1.0) and gets no softmax signals (None).
"""
from __future__ import annotations

from itertools import combinations
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["JUDGED", "SIGNALS", "dice", "ensemble_logits", "fold_agreement", "judge_signals", "organ_signals",
           "signals_table", "soft_dice_confidence"]

SIGNALS = ("fold_agreement", "soft_dice_confidence", "mean_max_softmax")
# every score of a pseudo-label that `judge_signals` ranks: the quality model's two, then the label-free ones
JUDGED = ("p_good", "predicted_iou", *SIGNALS)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def fold_agreement(fold_segmentations: Sequence[np.ndarray], label: int) -> Optional[float]:
    """Mean pairwise Dice of ``label`` between the folds' label maps; None with fewer than two folds."""
    if len(fold_segmentations) < 2:
        return None
    masks = [s == label for s in fold_segmentations]
    return float(np.mean([dice(a, b) for a, b in combinations(masks, 2)]))


def soft_dice_confidence(probability: np.ndarray, mask: np.ndarray) -> Optional[float]:
    """Soft Dice between the probability map of one organ and its predicted mask; None when both are empty."""
    # summed in float64 without a float64 copy of the map (a whole volume per organ on large scans)
    denominator = float(probability.sum(dtype=np.float64)) + float(np.count_nonzero(mask))
    return None if denominator == 0 else 2.0 * float(probability[mask].sum(dtype=np.float64)) / denominator


def organ_signals(probabilities: np.ndarray, segmentation: np.ndarray, organs: Mapping[str, int],
                  fold_segmentations: Sequence[np.ndarray] = ()) -> dict:
    """Every signal of every organ: ``{organ: {signal: float or None}}``.

    Parameters
    ----------
    probabilities : ndarray (K, Z, Y, X)
        The ensemble's class probabilities in the label map's geometry (index = label).
    segmentation : ndarray (Z, Y, X)
        The ensemble's label map.
    organs : mapping
        Organ name -> label.
    fold_segmentations : sequence of ndarray
        Each fold's own label map (any common grid); fewer than two gives ``fold_agreement`` None.
    """
    pmax = probabilities.max(axis=0)
    out = {}
    for organ, label in organs.items():
        mask = segmentation == label
        out[organ] = {"fold_agreement": fold_agreement(fold_segmentations, label),
                      "soft_dice_confidence": soft_dice_confidence(probabilities[label], mask),
                      "mean_max_softmax": float(pmax[mask].mean()) if mask.any() else None}
    return out


def ensemble_logits(predictor, data) -> tuple:
    """nnU-Net's fold ensemble of one preprocessed case, keeping each fold's label map on the way.

    The same computation as ``nnUNetPredictor.predict_logits_from_preprocessed_data`` (each fold's sliding-window
    logits summed in fold order, divided by the number of folds), so the ensemble's label map is unchanged; each
    fold's logits are turned into a label map (uint8/uint16, nnU-Net's label manager) before the next fold runs.

    Returns
    -------
    (torch.Tensor, list of ndarray)
        The averaged logits on the CPU and one label map per fold.
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import default_num_processes

    n_threads = torch.get_num_threads()
    torch.set_num_threads(min(default_num_processes, n_threads))
    network = getattr(predictor.network, "_orig_mod", predictor.network)  # a compiled network's state names
    prediction, folds = None, []
    dtype = np.uint8 if len(predictor.label_manager.all_labels) < 256 else np.uint16
    try:
        with torch.inference_mode():  # nnU-Net's sliding window returns inference tensors, summed in place
            for params in predictor.list_of_parameters:
                network.load_state_dict(params)
                logits = predictor.predict_sliding_window_return_logits(data).to("cpu")
                folds.append(np.asarray(predictor.label_manager.convert_logits_to_segmentation(logits)).astype(dtype))
                prediction = logits if prediction is None else prediction.add_(logits)
            if len(predictor.list_of_parameters) > 1:
                prediction /= len(predictor.list_of_parameters)
    finally:
        torch.set_num_threads(n_threads)
    return prediction, folds


def judge_signals(rows: Sequence[Mapping], tau: float) -> dict:
    """How well each score ranks pseudo-labels by their true IoU, on rows with ground truth (evaluation only).

    Parameters
    ----------
    rows : sequence of mapping
        ``pseudolabels.csv`` rows (strings, as `csv.DictReader` gives them); rows without ``true_iou`` are left out,
        and each score is judged on the rows that have it.
    tau : float
        A pseudo-label is bad when its true IoU is below ``tau``; judged also at the rows' median true IoU.

    Returns
    -------
    dict
        ``{"n", "median_iou", "signals": {score: {"n", "auroc", "auprc", "spearman", "aurc", "auroc_median",
        "auprc_median"}}}`` (None where undefined, e.g. no bad or no good pseudo-label).
    """
    from nnunet_medaka.quality.evaluate import method_metrics

    rows = [r for r in rows if r.get("true_iou") not in (None, "")]
    truth = np.array([float(r["true_iou"]) for r in rows])
    median = float(np.median(truth)) if len(truth) else None
    out = {"n": len(rows), "median_iou": median, "signals": {}}
    for name in JUDGED:
        have = [i for i, r in enumerate(rows) if r.get(name) not in (None, "")]
        if not have:
            continue
        scores, iou = np.array([float(rows[i][name]) for i in have]), truth[have]
        at_tau, at_median = method_metrics(scores, iou, tau), method_metrics(scores, iou, median)
        out["signals"][name] = {"n": len(have), **{k: at_tau[k] for k in ("auroc", "auprc", "spearman", "aurc")},
                                "auroc_median": at_median["auroc"], "auprc_median": at_median["auprc"]}
    return out


def signals_table(judged: Mapping, tau: float) -> list:
    """Markdown lines: one row per judged score (`judge_signals`)."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    lines = [f"| score (no ground truth) | n | AUROC IoU < {tau:g} | AUPRC | AUROC IoU < median "
             f"({fmt(judged['median_iou'])}) | Spearman with true IoU | AURC |", "|---|---|---|---|---|---|---|"]
    for name, m in judged["signals"].items():
        lines.append(f"| {name} | {m['n']} | {fmt(m['auroc'])} | {fmt(m['auprc'])} | {fmt(m['auroc_median'])} | "
                     f"{fmt(m['spearman'])} | {fmt(m['aurc'])} |")
    return lines
