"""Quality features, corruptions and metrics on hand-built arrays (no nnU-Net)."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_medaka.quality.corrupt import CORRUPTIONS, corrupt
from nnunet_medaka.quality.evaluate import aurc, method_metrics
from nnunet_medaka.quality.features import (
    FEATURE_NAMES, RAW_FEATURES, feature_matrix, iou, organ_features, reference_statistics,
)
from nnunet_medaka.quality.model import grouped_predictions, youden_threshold

LABELS = {"cube": 1, "other": 2}


def _one_hot(seg: np.ndarray, k: int = 3) -> np.ndarray:
    return np.stack([seg == c for c in range(k)]).astype(np.float32)


def test_cube_volume_components_surface():
    seg = np.zeros((12, 12, 12), np.int16)
    seg[2:6, 2:6, 2:6] = 1  # 4^3 cube: 64 voxels, erosion 2^3 = 8
    image = np.zeros((1, 12, 12, 12), np.float32)
    image[0][seg == 1] = 10.0
    f = organ_features(image, _one_hot(seg), LABELS, spacing=(1.0, 1.0, 2.0))
    cube = f["cube"]
    assert cube["present"] == 1.0
    assert cube["log_volume"] == pytest.approx(np.log1p(64 * 2.0))
    assert cube["n_components"] == 1.0 and cube["largest_component_fraction"] == 1.0
    assert cube["surface_to_volume"] == pytest.approx(56 / 64)
    assert cube["mean_max_softmax"] == 1.0 and cube["mean_entropy"] == pytest.approx(0.0)
    assert cube["gate_fraction"] == 1.0 and cube["uncertain_fraction"] == 0.0 and cube["missing_mass"] == 0.0
    assert cube["centroid_rel_z"] == pytest.approx(0.5)  # the only organ: centred in the foreground box
    assert cube["intensity_contrast"] > 0
    assert f["other"]["present"] == 0.0 and np.isnan(f["other"]["mean_max_softmax"])
    assert set(cube) == set(RAW_FEATURES)


def test_two_components_and_soft_probabilities():
    seg = np.zeros((12, 12, 12), np.int16)
    seg[1:5, 1:5, 1:5] = 1  # 64 voxels
    seg[8:10, 8:10, 8:10] = 1  # 8 voxels, apart
    p = _one_hot(seg)
    low = (seg == 1) & (np.indices(seg.shape)[0] < 3)  # a slab of the big cube at p = 0.6
    p[1][low], p[0][low] = 0.6, 0.4
    f = organ_features(np.zeros((1, 12, 12, 12), np.float32), p, LABELS)["cube"]
    assert f["n_components"] == 2.0
    assert f["largest_component_fraction"] == pytest.approx(64 / 72)
    assert f["gate_fraction"] == pytest.approx(1 - low.sum() / 72)
    assert f["uncertain_fraction"] == pytest.approx(low.sum() / 72)
    assert 0 < f["mean_entropy"] < 1 and f["mean_max_softmax"] < 1


def test_iou():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2], b[1:3] = True, True
    assert iou(a, b) == pytest.approx(1 / 3)
    assert iou(np.zeros_like(a), np.zeros_like(a)) == 1.0


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruptions_keep_a_softmax_and_damage_the_organ(kind):
    seg = np.zeros((20, 20, 20), np.int16)
    seg[5:13, 5:13, 5:13] = 1
    seg[14:18, 14:18, 2:6] = 2
    p = _one_hot(seg) * 0.9 + 0.1 / 3
    out, damaged = corrupt(p, LABELS, "cube", kind, np.random.default_rng(1))
    assert out.shape == p.shape and np.allclose(out.sum(axis=0), 1, atol=1e-5) and (out >= 0).all()
    assert "cube" in damaged
    new = np.argmax(out, axis=0) == 1
    assert iou(new, seg == 1) < 1.0
    if kind == "dilate":
        assert new.sum() > (seg == 1).sum()
    if kind in ("erode", "truncate", "drop"):
        assert new.sum() < (seg == 1).sum()


def test_metrics_perfect_and_constant_scores():
    iou_true = np.array([0.1, 0.3, 0.8, 0.9, 0.95])
    perfect = method_metrics(iou_true, iou_true, tau=0.5)
    assert perfect["auroc"] == 1.0 and perfect["spearman"] == pytest.approx(1.0)
    constant = method_metrics(np.ones(5), iou_true, tau=0.5)
    assert constant["aurc"] == pytest.approx(np.mean(1 - iou_true)) and constant["auroc"] == 0.5
    assert aurc(iou_true, 1 - iou_true) < constant["aurc"]
    assert youden_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.8)


def _synthetic_rows(n_cases=8, seed=0):
    rng = np.random.default_rng(seed)
    rows, reference = [], []
    for c in range(n_cases):
        for organ in LABELS:
            reference.append({"case": f"c{c}", "organ": organ, **{k: float(rng.normal()) for k in RAW_FEATURES},
                              "present": 1.0})
            for s in range(3):
                q = float(rng.uniform())
                feats = {k: float(rng.normal()) for k in RAW_FEATURES}
                feats["mean_max_softmax"] = q + 0.05 * float(rng.normal())
                rows.append({"case": f"c{c}", "organ": organ, "label": LABELS[organ],
                             "source": "oof" if s == 0 else "corrupt:shift", "real": int(s == 0), "fold": 0,
                             "iou": q, **feats})
    return rows, reference


def test_grouped_cv_never_scores_a_case_with_a_model_that_saw_it():
    rows, reference = _synthetic_rows()
    out = grouped_predictions(rows, reference, list(LABELS), tau=0.5, n_splits=4, seed=0)
    assert np.isfinite(out["p_good"]).all() and (out["cv_fold"] >= 0).all()
    for i, r in enumerate(rows):
        assert r["case"] not in out["train_cases"][out["cv_fold"][i]]
    # every row of a case (organs, real and corrupted) lands in one test fold
    folds_of_case = {}
    for i, r in enumerate(rows):
        folds_of_case.setdefault(r["case"], set()).add(int(out["cv_fold"][i]))
    assert folds_of_case and all(len(f) == 1 for f in folds_of_case.values())
    again = grouped_predictions(rows, reference, list(LABELS), tau=0.5, n_splits=4, seed=0)
    assert np.array_equal(out["p_good"], again["p_good"])  # deterministic given the seed


def test_feature_matrix_columns():
    rows, reference = _synthetic_rows(n_cases=2)
    x = feature_matrix(rows, list(LABELS), reference_statistics(reference))
    assert x.shape == (len(rows), len(FEATURE_NAMES))
    assert set(x[:, 0]) == {0.0, 1.0}


def test_tta_pairwise_dice_on_hand_built_masks():
    from nnunet_medaka.quality.tta import pairwise_dice

    a = np.zeros((4, 6, 6), np.uint8)
    a[1:3, 1:5, 1:5] = 1  # 32 voxels
    b = a.copy()
    b[1:3, 1:5, 4] = 0  # 24 voxels, all inside a
    c = a.copy()
    c[a == 1] = 2  # the organ swapped for another label
    labels = {"organ": 1, "other": 2, "absent": 3}
    same = pairwise_dice([a, a, a], labels)
    assert same["organ"] == 1.0 and same["absent"] == 0.0  # never predicted: the worst score
    mixed = pairwise_dice([a, b, c], labels)
    # pairs (a,b): 2*24/56; (a,c) and (b,c): the organ is missing from c
    assert mixed["organ"] == pytest.approx((2 * 24 / 56) / 3)
    assert mixed["other"] == 0.0
    with pytest.raises(ValueError):
        pairwise_dice([a], labels)


def test_signal_thresholds_on_the_real_out_of_fold_rows():
    """The label-free signals' operating points: Youden J on the real rows only; the Soft Dice Confidence rebuilt
    from the features equals its closed form on the probability map; an absent organ scores 0."""
    from nnunet_medaka.pseudolabel.signals import soft_dice_confidence
    from nnunet_medaka.quality.model import signal_thresholds

    p = np.array([0.9, 0.8, 0.3, 0.1])  # one organ's probability on four voxels, the first two its mask
    mask = np.array([True, True, False, False])
    r, m = p.sum() / mask.sum(), p[~mask].sum() / p.sum()  # soft_hard_ratio, missing_mass
    assert 2 * r * (1 - m) / (r + 1) == pytest.approx(soft_dice_confidence(p, mask))

    def row(iou, softmax, ratio, missing, real=True, present=1):
        return {"real": real, "present": present, "iou": iou, "mean_max_softmax": softmax, "soft_hard_ratio": ratio,
                "missing_mass": missing}

    rows = [row(0.9, 0.95, 1.0, 0.0), row(0.8, 0.9, 1.0, 0.05), row(0.5, 0.7, 0.8, 0.4), row(0.4, 0.6, 0.7, 0.5),
            row(0.95, 0.1, 0.1, 0.9, real=False),  # a corrupted copy: not used
            row(0.3, float("nan"), float("nan"), float("nan"), present=0)]  # organ missing: scores 0
    thresholds = signal_thresholds(rows, tau=0.7)
    assert thresholds["mean_max_softmax"] == pytest.approx(0.9)
    assert thresholds["soft_dice_confidence"] == pytest.approx(2 * 0.95 / 2)
    assert signal_thresholds([row(0.9, 0.9, 1, 0, real=False)], 0.7) == {}


def test_filter_auto_prefers_a_signal_unless_the_classifier_ranks_better():
    """`filter_evidence` judges the classifier's out-of-fold P(good) and every signal on the real rows only;
    `choose_filter` takes the classifier only when it beats every signal, and says so."""
    from nnunet_medaka.quality.model import choose_filter, filter_evidence

    def row(iou, softmax, real=True):
        return {"real": real, "present": 1, "iou": iou, "mean_max_softmax": softmax, "soft_hard_ratio": 1.0,
                "missing_mass": 1.0 - softmax}

    rows = [row(0.9, 0.95), row(0.8, 0.7), row(0.5, 0.9), row(0.4, 0.6), row(0.1, 0.99, real=False)]
    perfect = np.array([0.9, 0.8, 0.2, 0.1, 0.0])  # the classifier separates good (iou >= 0.7) from bad
    evidence = filter_evidence(rows, perfect, tau=0.7)
    assert evidence["quality"] == 1.0 and evidence["mean_max_softmax"] == pytest.approx(0.75)
    assert set(evidence) == {"quality", "mean_max_softmax", "soft_dice_confidence"}
    name, reason = choose_filter(evidence)
    assert name == "quality" and "beats" in reason
    swapped = filter_evidence(rows, perfect[::-1].copy(), tau=0.7)  # the classifier ranks them backwards
    name, reason = choose_filter(swapped)
    assert name in ("mean_max_softmax", "soft_dice_confidence") and f"{swapped[name]:.3f}" in reason
    tie = {"quality": 0.8, "mean_max_softmax": 0.8, "soft_dice_confidence": 0.7}
    assert choose_filter(tie)[0] == "mean_max_softmax"  # a tie goes to the signal: nothing learned
    assert filter_evidence([row(0.9, 0.9), row(0.8, 0.5)], np.array([0.5, 0.5]), 0.7) == {}  # one class only
    assert choose_filter({})[0] == "quality"
