"""How good is the quality filter? Grouped cross-validation over labeled cases, against simple baselines.

Every method gives each (case, organ) row a score, higher meaning better quality, and is judged the same way:

``classifier``        the learned model: P(IoU >= tau) for the metrics of the binary task (AUROC, AUPRC, the
                      accept decision), its predicted IoU for those of the continuous IoU (Spearman, AURC, MAE)
``accept_all``        a constant (accept everything; AUROC 0.5, AURC = the mean error)
``mean_max_softmax``  mean over the organ's voxels of the maximum class probability
``mean_entropy``      minus the mean normalised entropy over the organ's voxels
``confidence_gate``   fraction of the organ's voxels with p > 0.9; the gate accepts when it is >= 0.8 (the rule of a
                      public nnU-Net semi-supervised repository)

``tta_agreement``     (when the rows carry ``tta_dice``: ``qc train --tta``) mean pairwise Dice of the organ between
                      one fold's predictions of the image as it is and mirrored (``quality.tta``); real rows only

An organ missing from the prediction scores lowest under every baseline. Fold-ensemble disagreement is not a
baseline here: on labeled cases it is contaminated (the other folds trained on the case); the TTA agreement of the
one fold that held the case out is its clean counterpart.

Metrics, per organ and overall, on the real out-of-fold predictions alone and on real + corrupted rows:
AUROC and AUPRC for detecting a bad pseudo-label (IoU < tau; score negated), Spearman of score with true IoU,
MAE of the predicted IoU (classifier), AURC = area under the risk-coverage curve (rows accepted in order of
decreasing score, tied scores together; risk = mean 1 - IoU of the accepted rows; lower is better), and at the
method's operating point: accepted fraction, fraction of accepted rows that are good, mean IoU accepted.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from nnunet_medaka.errors import MedakaError

__all__ = ["BASELINES", "baseline_scores", "aurc", "risk_coverage", "method_metrics", "evaluate_rows",
           "write_report"]

BASELINES = ("accept_all", "mean_max_softmax", "mean_entropy", "confidence_gate")
GATE_FRACTION = 0.8


def baseline_scores(rows: Sequence[Mapping]) -> dict:
    """Method -> (scores, accept decisions) for the baselines over feature rows."""
    def col(key, missing):
        v = np.asarray([r[key] for r in rows], float)
        return np.where(np.isfinite(v), v, missing)

    gate = col("gate_fraction", 0.0)
    maxsoft = col("mean_max_softmax", 0.0)
    entropy = -col("mean_entropy", 1.0)
    out = {
        "accept_all": (np.ones(len(rows)), np.ones(len(rows), bool)),
        "mean_max_softmax": (maxsoft, None),
        "mean_entropy": (entropy, None),
        "confidence_gate": (gate, gate >= GATE_FRACTION),
    }
    if rows and "tta_dice" in rows[0]:  # NaN on rows without a network output (corrupted copies)
        out["tta_agreement"] = (np.asarray([r["tta_dice"] for r in rows], float), None)
    return out


def risk_coverage(scores: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) as the acceptance threshold sweeps down the unique scores (ties accepted together)."""
    order = np.argsort(-scores, kind="stable")
    s, e = scores[order], error[order]
    cum = np.cumsum(e)
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tie group
    coverage = (ends + 1) / len(s)
    risk = cum[ends] / (ends + 1)
    return coverage, risk


def aurc(scores: np.ndarray, error: np.ndarray) -> float:
    """Area under the risk-coverage curve: each tie group's risk weighted by its share of rows."""
    if len(scores) == 0:
        return float("nan")
    coverage, risk = risk_coverage(np.asarray(scores, float), np.asarray(error, float))
    widths = np.diff(np.r_[0.0, coverage])
    return float(np.sum(widths * risk))


def method_metrics(scores: np.ndarray, iou: np.ndarray, tau: float, accepted: Optional[np.ndarray] = None,
                   predicted_iou: Optional[np.ndarray] = None) -> dict:
    """AUROC/AUPRC for IoU < tau from ``scores``; Spearman and AURC from ``predicted_iou`` when given (else
    ``scores``); MAE of ``predicted_iou``; operating-point numbers from ``accepted``."""
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores, iou = np.asarray(scores, float), np.asarray(iou, float)
    bad = iou < tau
    out = {"n": int(len(iou)), "n_bad": int(bad.sum()), "iou_min": float(iou.min()) if len(iou) else None,
           "iou_median": float(np.median(iou)) if len(iou) else None, "iou_max": float(iou.max()) if len(iou) else None}
    both = 0 < bad.sum() < len(bad)
    out["auroc"] = float(roc_auc_score(bad, -scores)) if both else None
    out["auprc"] = float(average_precision_score(bad, -scores)) if both else None
    ranking = scores if predicted_iou is None else np.asarray(predicted_iou, float)
    constant = len(np.unique(ranking)) < 2 or len(np.unique(iou)) < 2
    out["spearman"] = None if constant else float(spearmanr(ranking, iou).statistic)
    out["aurc"] = aurc(ranking, 1.0 - iou)
    if predicted_iou is not None:
        out["mae"] = float(np.mean(np.abs(np.asarray(predicted_iou) - iou)))
    if accepted is not None and len(iou):
        accepted = np.asarray(accepted, bool)
        out["accepted_fraction"] = float(accepted.mean())
        out["accepted_good_fraction"] = float((~bad[accepted]).mean()) if accepted.any() else None
        out["accepted_mean_iou"] = float(iou[accepted].mean()) if accepted.any() else None
    return out


def evaluate_rows(rows: Sequence[Mapping], reference_rows: Sequence[Mapping], labels: Mapping[str, int], *,
                  tau: float, n_splits: int = 5, seed: int = 0, accept_threshold: Optional[float] = None,
                  progress: bool = True) -> dict:
    """Grouped cross-validation of the classifier and the baselines on the training table.

    The accept threshold of each outer fold is chosen inside that fold's training cases (nested grouped CV,
    ``model.choose_threshold``) unless ``accept_threshold`` fixes it.

    Returns
    -------
    dict
        ``metrics`` ({subset: {organ|"overall": {method: metrics}}}, subsets ``real`` and ``all``),
        ``predictions`` (rows with every method's score), ``folds`` (test and training cases of each fold),
        ``summary`` (first-line verdict), settings.
    """
    from nnunet_medaka.quality.model import choose_threshold, grouped_predictions

    organs = sorted(labels, key=labels.get)
    outer = grouped_predictions(rows, reference_rows, organs, tau=tau, n_splits=n_splits, seed=seed,
                                progress=progress)
    iou = np.asarray([r["iou"] for r in rows], float)
    accepted = np.zeros(len(rows), bool)
    thresholds = []
    for k, train_cases in enumerate(outer["train_cases"]):
        test = outer["cv_fold"] == k
        if accept_threshold is not None:
            t = float(accept_threshold)
        else:
            inner_rows = [r for r in rows if r["case"] in set(train_cases)]
            inner = grouped_predictions(inner_rows, reference_rows, organs, tau=tau, n_splits=n_splits, seed=seed)
            t, _ = choose_threshold(inner["p_good"], np.asarray([r["iou"] for r in inner_rows]),
                                    [bool(r["real"]) for r in inner_rows], tau)
        thresholds.append(t)
        accepted[test] = outer["p_good"][test] >= t
    methods = {"classifier": (outer["p_good"], accepted), **baseline_scores(rows)}
    real = np.asarray([bool(r["real"]) for r in rows])
    organ_of = np.asarray([r["organ"] for r in rows])
    metrics = {}
    for subset, keep in (("real", real), ("all", np.ones(len(rows), bool))):
        metrics[subset] = {}
        for organ in [*organs, "overall"]:
            sel = keep & ((organ_of == organ) if organ != "overall" else True)
            if not sel.any():
                continue
            metrics[subset][organ] = {
                m: method_metrics(s[sel], iou[sel], tau, None if a is None else a[sel],
                                  outer["predicted_iou"][sel] if m == "classifier" else None)
                for m, (s, a) in methods.items() if np.isfinite(s[sel]).all()}  # TTA: real rows only
    predictions = []
    for i, r in enumerate(rows):
        entry = {"case": r["case"], "organ": r["organ"], "source": r["source"], "real": r["real"],
                 "teacher_fold": r["fold"], "cv_fold": int(outer["cv_fold"][i]), "iou": r["iou"],
                 "predicted_iou": float(outer["predicted_iou"][i]), "p_good": float(outer["p_good"][i]),
                 "accept": int(accepted[i])}
        for m in methods:
            if m != "classifier":
                entry[f"score_{m}"] = float(methods[m][0][i])
        predictions.append(entry)
    folds = [{"test_cases": sorted({rows[i]["case"] for i in np.nonzero(outer["cv_fold"] == k)[0]}),
              "train_cases": outer["train_cases"][k], "accept_threshold": thresholds[k]}
             for k in range(len(outer["train_cases"]))]
    return {"tau": tau, "n_splits": len(folds), "seed": seed, "metrics": metrics, "predictions": predictions,
            "folds": folds, "summary": _verdict(metrics, tau)}


def _verdict(metrics: Mapping, tau: float) -> str:
    overall = metrics.get("real", {}).get("overall") or metrics["all"]["overall"]
    c = overall["classifier"]
    lost = []
    for m, b in overall.items():
        if m == "classifier":
            continue
        if c["auroc"] is not None and b["auroc"] is not None and b["auroc"] >= c["auroc"]:
            lost.append(f"{m} AUROC {b['auroc']:.3f} >= {c['auroc']:.3f}")
        if b["aurc"] <= c["aurc"]:
            lost.append(f"{m} AURC {b['aurc']:.4f} <= {c['aurc']:.4f}")
    if c["auroc"] is None:
        return (f"NOT EVALUABLE on real out-of-fold predictions: only one class at tau={tau} "
                f"({overall['classifier']['n_bad']} of {overall['classifier']['n']} bad); choose another --tau")
    if lost:
        return "THE LEARNED CLASSIFIER DOES NOT BEAT EVERY BASELINE on real out-of-fold predictions: " + "; ".join(lost)
    return (f"The learned classifier beats every baseline on real out-of-fold predictions: AUROC {c['auroc']:.3f}, "
            f"AURC {c['aurc']:.4f}, Spearman {c['spearman'] if c['spearman'] is None else round(c['spearman'], 3)}")


def _plots(result: Mapping, folder: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    tau = result["tau"]
    preds = result["predictions"]
    iou = np.asarray([p["iou"] for p in preds])
    real = np.asarray([bool(p["real"]) for p in preds])
    hat = np.asarray([p["predicted_iou"] for p in preds])
    scores = {"classifier": np.asarray([p["p_good"] for p in preds]),
              **{k[len("score_"):]: np.asarray([p[k] for p in preds], float) for k in preds[0] if k.startswith("score_")}}
    written = []

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(iou[~real], hat[~real], s=6, alpha=0.4, label="corrupted copies", color="tab:gray")
    ax.scatter(iou[real], hat[real], s=10, alpha=0.8, label="real out-of-fold", color="tab:blue")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.axvline(tau, color="tab:red", lw=0.8)
    ax.set(xlabel="true IoU", ylabel="predicted IoU (grouped CV)", xlim=(0, 1), ylim=(0, 1),
           title="Predicted vs true IoU")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "scatter_predicted_vs_true_iou.png", dpi=120)
    plt.close(fig)
    written.append("scatter_predicted_vs_true_iou.png")

    for subset, keep in (("real", real), ("all", np.ones(len(preds), bool))):
        bad = iou[keep] < tau
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.5))
        for m, s in scores.items():
            if not np.isfinite(s[keep]).all():  # the TTA baseline exists on real rows only
                continue
            r = hat if m == "classifier" else s  # the classifier ranks by predicted IoU for the continuous risk
            cov, risk = risk_coverage(r[keep], 1 - iou[keep])
            a2.plot(np.r_[0, cov], np.r_[risk[0], risk], label=f"{m} (AURC {aurc(r[keep], 1 - iou[keep]):.3f})",
                    drawstyle="steps-post")
            if 0 < bad.sum() < len(bad):
                fpr, tpr, _ = roc_curve(bad, -s[keep])
                a1.plot(fpr, tpr, label=m)
        a1.plot([0, 1], [0, 1], "k--", lw=0.8)
        a1.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, detecting IoU < {tau} ({subset})")
        a2.set(xlabel="coverage (fraction accepted)", ylabel="risk (mean 1 - IoU of accepted)",
               title=f"Risk-coverage ({subset})")
        if 0 < bad.sum() < len(bad):
            a1.legend(fontsize=7)
        else:
            a1.text(0.5, 0.5, f"one class only at tau={tau}", ha="center")
        a2.legend(fontsize=7)
        fig.tight_layout()
        name = f"roc_and_risk_coverage_{subset}.png"
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
        written.append(name)

    per_organ = {o: v for o, v in result["metrics"].get("real", result["metrics"]["all"]).items() if o != "overall"}
    if per_organ:
        shown = [m for m in scores if all(m in v for v in per_organ.values())]
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(per_organ) * len(shown) / 3), 4))
        width = 0.8 / len(shown)
        for j, m in enumerate(shown):
            vals = [per_organ[o][m]["auroc"] if per_organ[o][m]["auroc"] is not None else 0 for o in per_organ]
            ax.bar(np.arange(len(per_organ)) + j * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(per_organ)) + 0.4 - width / 2, list(per_organ), rotation=30)
        ax.set(ylabel="AUROC (IoU < tau), real out-of-fold", ylim=(0, 1), title="Per-organ AUROC")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "per_organ_auroc.png", dpi=120)
        plt.close(fig)
        written.append("per_organ_auroc.png")
    return written


def _metrics_table(metrics: Mapping) -> list:
    out = []
    for subset, organs in metrics.items():
        for organ, methods in organs.items():
            for method, values in methods.items():
                out.append({"subset": subset, "organ": organ, "method": method,
                            **{k: ("" if v is None else v) for k, v in values.items()}})
    return out


def write_report(result: Mapping, folder: os.PathLike | str, *, overwrite: bool = False) -> Path:
    """Write ``report.json``, ``metrics.csv``, ``predictions.csv`` and the PNG plots into ``folder`` atomically.

    Everything is written into a temporary sibling folder that replaces ``folder`` at the end.
    """
    from nnunet_medaka.files import write_json_atomic
    from nnunet_medaka.quality.table import write_rows

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise MedakaError(f"{folder}: exists; pass --overwrite to replace it")
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        plots = _plots(result, tmp)
        report = {"summary": result["summary"], "tau": result["tau"], "n_splits": result["n_splits"],
                  "seed": result["seed"], "folds": result["folds"], "metrics": result["metrics"],
                  "methods": {"classifier": "learned P(IoU >= tau)", "accept_all": "constant",
                              "mean_max_softmax": "mean max class probability in the organ",
                              "mean_entropy": "minus mean normalised entropy in the organ",
                              "confidence_gate": "fraction of organ voxels with p > 0.9, accepts at >= 0.8",
                              "tta_agreement": "mean pairwise Dice of one fold's mirrored predictions (qc train --tta)"},
                  "plots": plots}
        write_json_atomic(tmp / "report.json", report)
        write_rows(tmp / "metrics.csv", _metrics_table(result["metrics"]))
        write_rows(tmp / "predictions.csv", result["predictions"])
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
