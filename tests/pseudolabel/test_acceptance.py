"""Acceptance decisions and the organ-level ignore label: unit level and on real teacher predictions."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import REJECT
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pseudolabel.acceptance import apply_organ_rejection, decide, gate_voxels
from nnunet_medaka.pseudolabel.outputs import TABLE_FILE

SCORES = {"sphere": {"p_good": 0.9}, "box": {"p_good": 0.3}}


def test_decisions_per_mode():
    assert decide(SCORES, ["sphere", "box"], "case", 0.5) == ({"sphere": "accept", "box": "reject"}, "reject")
    assert decide(SCORES, ["sphere", "box"], "organ", 0.5) == ({"sphere": "accept", "box": "reject"}, "partial")
    assert decide(SCORES, ["sphere", "box"], "organ", 0.2) == ({"sphere": "accept", "box": "accept"}, "accept")
    assert decide(None, ["sphere", "box"], "none", None) == ({"sphere": "accept", "box": "accept"}, "accept")
    with pytest.raises(MedakaError, match="quality model"):
        decide(None, ["sphere", "box"], "case", None)


def test_a_label_free_signal_decides_and_a_missing_value_rejects():
    signals = {"sphere": {"mean_max_softmax": 0.95}, "box": {"mean_max_softmax": None}}  # box not predicted
    assert decide(signals, ["sphere", "box"], "organ", 0.9, key="mean_max_softmax") == (
        {"sphere": "accept", "box": "reject"}, "partial")
    signals["box"]["mean_max_softmax"] = 0.91
    assert decide(signals, ["sphere", "box"], "case", 0.9, key="mean_max_softmax")[1] == "accept"


def test_the_filter_choices_are_written_once_for_each_stage():
    from nnunet_medaka.pseudolabel.predict import FILTERS
    from nnunet_medaka.training.presets import FILTERS as SETTING_CHOICES

    assert FILTERS == SETTING_CHOICES


def test_ignore_region_is_dilated_mask_plus_uncertain_voxels_keeping_accepted_organs():
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[4:7, 4:7, 4:7] = 2  # rejected organ
    seg[4:7, 7:9, 4:7] = 1  # accepted organ touching it
    probs = np.zeros((3, *seg.shape), np.float32)
    probs[2, 10, 10, 10] = 0.15  # uncertain voxel far away
    probs[2, 0, 0, 0] = 0.05  # below the band probability
    out = apply_organ_rejection(seg, probs, [2], ignore_label=3, ignore_band=1, band_probability=0.1)
    expected = seg.copy()
    cross = ndimage.binary_dilation(seg == 2, structure=ndimage.generate_binary_structure(3, 1))  # ball of radius 1
    expected[(cross | (probs[2] >= 0.1)) & (seg != 1)] = 3
    np.testing.assert_array_equal(out, expected)
    assert (out[seg == 1] == 1).all() and out[0, 0, 0] == 0 and out[10, 10, 10] == 3


def test_voxel_gating_ignores_exactly_the_uncertain_voxels():
    seg = np.array([[[0, 1, 1, 2]]], np.uint8)
    probs = np.array([[[[0.9, 0.05, 0.3, 0.1]]], [[[0.05, 0.9, 0.6, 0.1]]], [[[0.05, 0.05, 0.1, 0.8]]]], np.float32)
    out = gate_voxels(seg, probs, 0.7, ignore_label=3)
    np.testing.assert_array_equal(out, [[[0, 1, 3, 2]]])  # only the voxel whose top probability is 0.6
    assert seg[0, 0, 2] == 1  # the input is left as it was
    np.testing.assert_array_equal(gate_voxels(seg, probs, 1.0, ignore_label=300), [[[300, 300, 300, 300]]])
    with pytest.raises(MedakaError, match="do not match"):
        gate_voxels(seg, probs[:, :, :, :2], 0.5, ignore_label=3)


def read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_organ_rejection_on_teacher_predictions_writes_ignore_exactly(pseudo_organ):
    out, probabilities = pseudo_organ
    rows = {(r["case"], r["organ"]): r for r in csv.DictReader((out / TABLE_FILE).open())}
    for case, probs in probabilities.items():
        label_map = read(out / "labels" / f"{case}.nii.gz")
        argmax = probs.argmax(0)
        if case not in REJECT:
            np.testing.assert_array_equal(label_map, argmax)
            assert rows[(case, "box")]["decision"] == "accept" and rows[(case, "box")]["case_decision"] == "accept"
            continue
        # independent reference: distance to the rejected box <= 2 voxels, or p(box) >= 0.1; sphere voxels kept
        box = argmax == 2
        near = ndimage.distance_transform_edt(~box) <= 2 if box.any() else np.zeros_like(box)
        expected = argmax.copy()
        expected[(near | (probs[2] >= 0.1)) & (argmax != 1)] = 3
        np.testing.assert_array_equal(label_map, expected)
        assert (label_map == 3).sum() > (argmax == 2).sum() > 0
        assert rows[(case, "box")]["decision"] == "reject" and rows[(case, "box")]["case_decision"] == "partial"
        assert rows[(case, "box")]["p_good"] == "0.200000" and rows[(case, "sphere")]["p_good"] == "0.900000"
