"""Models trained by an earlier release keep predicting: nnU-Net stores the trainer *name* in the checkpoint, so
moving the trainer classes between modules must not matter to ``nnUNetv2_predict -tr KDTrainer``.

``tests/data/kd_student_v0_1_0`` is a KD student (one tiny epoch on the synthetic spheres of ``helpers``) trained
and then used to predict ``case_000_0000.nii.gz`` with release 0.1.0, before the stage subpackages; its
optimizer state was dropped to keep the file small (prediction reads only the network weights).
"""
from __future__ import annotations

import pytest

import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from helpers import run_checked, tool

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "kd_student_v0_1_0"
MODEL = "Dataset901_TinySpheres/KDTrainer__nnUNetPlansSmall__3d_fullres"


def test_fixture_was_made_by_kdtrainer():
    checkpoint = torch.load(FIXTURE / MODEL / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "KDTrainer"


@pytest.mark.slow  # trains or predicts with real nnU-Net
def test_student_from_release_0_1_0_predicts_as_it_did(nnunet_env, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE / MODEL, results / MODEL)
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(FIXTURE / "case_000_0000.nii.gz", inputs)
    env = dict(nnunet_env, nnUNet_results=str(results))
    out = tmp_path / "out"
    run_checked([tool("nnUNetv2_predict"), "-i", inputs, "-o", out, "-d", "901", "-c", "3d_fullres", "-tr", "KDTrainer",
                 "-p", "nnUNetPlansSmall", "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"],
                env, timeout=600)
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case_000.nii.gz")))
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(FIXTURE / "expected_case_000.nii.gz")))
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
