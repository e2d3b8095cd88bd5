"""The label-free pseudo-label signals: closed forms checked on arrays whose answers are known by hand."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_medaka.pseudolabel.signals import dice, fold_agreement, organ_signals, soft_dice_confidence


def test_dice_and_fold_agreement():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 voxels
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(0.5) and dice(a, a) == 1.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0  # absent from both: they agree
    maps = [a.astype(np.uint8), b.astype(np.uint8), a.astype(np.uint8)]
    # pairs (a, b), (a, a), (b, a): (0.5 + 1 + 0.5) / 3
    assert fold_agreement(maps, 1) == pytest.approx(2 / 3)
    assert fold_agreement(maps[:1], 1) is None  # one fold: nothing to agree with


def test_soft_dice_confidence_is_one_only_for_a_certain_mask():
    mask = np.array([True, True, False, False])
    assert soft_dice_confidence(mask.astype(float), mask) == 1.0
    p = np.array([0.6, 0.6, 0.4, 0.0])  # 2 * 1.2 / (1.6 + 2)
    assert soft_dice_confidence(p, mask) == pytest.approx(2.4 / 3.6)
    assert soft_dice_confidence(np.zeros(4), np.zeros(4, bool)) is None


def test_organ_signals_per_organ():
    probabilities = np.zeros((3, 1, 2, 2))
    probabilities[0] = [[[0.9, 0.2], [0.1, 0.3]]]
    probabilities[1] = [[[0.1, 0.8], [0.0, 0.0]]]
    probabilities[2] = 1 - probabilities[0] - probabilities[1]
    segmentation = probabilities.argmax(0)  # [[0, 1], [2, 2]]
    folds = [segmentation, np.where(segmentation == 1, 0, segmentation)]  # the second fold misses organ "a"
    out = organ_signals(probabilities, segmentation, {"a": 1, "b": 2}, folds)
    assert out["a"]["fold_agreement"] == 0.0 and out["b"]["fold_agreement"] == 1.0
    assert out["a"]["mean_max_softmax"] == pytest.approx(0.8)
    assert out["b"]["mean_max_softmax"] == pytest.approx((0.9 + 0.7) / 2)
    assert out["b"]["soft_dice_confidence"] == pytest.approx(2 * 1.6 / (1.6 + 2))
    assert organ_signals(probabilities, segmentation, {"c": 3 - 1})["c"]["fold_agreement"] is None


def test_judge_signals_ranks_each_score_by_the_true_iou():
    from nnunet_medaka.pseudolabel.signals import judge_signals, signals_table

    truth = [0.9, 0.8, 0.6, 0.5]
    rows = [{"true_iou": str(t), "fold_agreement": str(a), "soft_dice_confidence": str(s), "p_good": "",
             "mean_max_softmax": ""} for t, a, s in zip(truth, (0.95, 0.9, 0.7, 0.6), (0.5, 0.9, 0.8, 0.6))]
    rows.append({"true_iou": "", "fold_agreement": "0.1"})  # no ground truth: left out
    judged = judge_signals(rows, tau=0.7)
    assert judged["n"] == 4 and judged["median_iou"] == pytest.approx(0.7)
    assert set(judged["signals"]) == {"fold_agreement", "soft_dice_confidence"}  # scores nobody has are skipped
    agreement, sdc = judged["signals"]["fold_agreement"], judged["signals"]["soft_dice_confidence"]
    assert agreement["auroc"] == 1.0 and agreement["spearman"] == pytest.approx(1.0)  # a perfect ranking
    # SDC ranks the best pseudo-label last: bad ones (0.6, 0.5) score 0.8, 0.6 against good ones 0.5, 0.9
    assert sdc["auroc"] == pytest.approx(0.5) and sdc["spearman"] == pytest.approx(-0.2)
    lines = signals_table(judged, 0.7)
    assert lines[0].startswith("| score (no ground truth) | n | AUROC IoU < 0.7") and "median (0.700)" in lines[0]
    assert lines[2] == "| fold_agreement | 4 | 1.000 | 1.000 | 1.000 | 1.000 | " + lines[2].split(" | ")[-1]
