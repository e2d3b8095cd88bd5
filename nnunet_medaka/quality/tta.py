"""Test-time-augmentation agreement: a quality baseline that re-runs one teacher fold on mirrored inputs.

A pseudo-label whose organ changes when the input is mirrored is less trustworthy. For each case the fold's network
predicts the preprocessed image as it is and mirrored along each axis nnU-Net allows mirroring on (the slicing axis
of a ``2d`` configuration excluded: mirroring it changes nothing); the score of an organ is the mean Dice between
every pair of these segmentations. It is the public segmentation-failure benchmark's "pairwise Dice" signal computed
with one model instead of a fold ensemble, which keeps it honest on labeled cases: each out-of-fold prediction is
re-run with the fold that never saw the case (a fold ensemble's disagreement on a labeled case is contaminated: the
other folds trained on it).

It needs the network again (one prediction per variant), so it is an optional baseline of ``qc train --tta``, not a
feature of the classifier: the classifier scores a pseudo-label from the teacher's probabilities alone.
"""
from __future__ import annotations

import contextlib
import io
import os
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

__all__ = ["pairwise_dice", "tta_agreement"]


def pairwise_dice(segmentations: Sequence[np.ndarray], labels: Mapping[str, int]) -> dict:
    """Per organ, the mean Dice over every pair of segmentations.

    Parameters
    ----------
    segmentations : sequence of ndarray
        Two or more label maps of one case, all the same shape.
    labels : mapping
        Organ name -> label value.

    Returns
    -------
    dict
        Organ -> mean pairwise Dice in [0, 1]. An organ absent from every segmentation scores 0 (a missing organ
        is the worst pseudo-label, as under every other baseline); a pair where only one holds it scores 0.
    """
    if len(segmentations) < 2:
        raise ValueError("pairwise_dice needs at least two segmentations")
    out = {}
    for organ, value in labels.items():
        masks = [s == value for s in segmentations]
        sizes = [int(m.sum()) for m in masks]
        if not any(sizes):
            out[organ] = 0.0
            continue
        scores = []
        for i, j in combinations(range(len(masks)), 2):
            total = sizes[i] + sizes[j]
            scores.append(2.0 * np.logical_and(masks[i], masks[j]).sum() / total if total else 0.0)
        out[organ] = float(np.mean(scores))
    return out


def tta_agreement(model_folder: os.PathLike | str, fold: int, cases: Mapping[str, Sequence[str]],
                  labels: Mapping[str, int], *, checkpoint: str = "checkpoint_final.pth", progress: bool = True) -> dict:
    """Mirror-TTA pairwise Dice of one teacher fold on raw cases (on the GPU when there is one).

    Parameters
    ----------
    model_folder : path
        The teacher's ``Trainer__Plans__configuration`` folder.
    fold : int
        The fold whose network predicts (for out-of-fold rows: the fold that held the case out).
    cases : mapping
        Case id -> its raw image files (channels in order).
    labels : mapping
        Organ name -> label value.

    Returns
    -------
    dict
        Case -> {organ -> mean pairwise Dice}.
    """
    import torch
    from tqdm import tqdm

    from nnunet_medaka.environment import nnunet_predictor

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    predictor = nnunet_predictor(model_folder, [fold], checkpoint, device=device, mirroring=False)
    pm, cm = predictor.plans_manager, predictor.configuration_manager
    reader = pm.image_reader_writer_class()
    preprocessor = cm.preprocessor_class(verbose=False)
    # the network's mirror axes count from the patch's first axis; a 2d patch covers the data's last two axes
    offset = 3 - len(cm.patch_size)
    axes = [1 + offset + a for a in (predictor.allowed_mirroring_axes or ())]
    if not axes:
        from nnunet_medaka.errors import MedakaError

        raise MedakaError(f"{model_folder} fold {fold}: the checkpoint allows no mirroring axes, so there is no "
                          "test-time augmentation to agree with; run `qc train` without --tta")
    variants = [()] + [(a,) for a in axes]
    out = {}
    for case, files in tqdm(sorted(cases.items()), desc=f"TTA agreement, fold {fold}", unit="case",
                            disable=not progress):
        image, properties = reader.read_images(list(files))
        with contextlib.redirect_stdout(io.StringIO()):
            data, _, _ = preprocessor.run_case_npy(image, None, properties, pm, cm, predictor.dataset_json)
        segmentations = []
        for flip in variants:
            x = torch.from_numpy(np.ascontiguousarray(np.flip(data, flip) if flip else data))
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                logits = predictor.predict_logits_from_preprocessed_data(x).cpu()
            if flip:
                logits = torch.flip(logits, flip)
            segmentations.append(logits.argmax(0).numpy())
        out[case] = pairwise_dice(segmentations, labels)
    return out
