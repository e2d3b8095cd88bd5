"""Converted datasets pass nnU-Net's own checks: plan and preprocess with --verify_dataset_integrity.

One nnU-Net run covers the phantom conversion, a split of it and an MSD hippocampus conversion, to
pay nnU-Net's start-up once. The MSD part uses 12 of the 100 cases, among them the float32 label
and uint8 images; test_convert_msd.py converts all 100 (nnU-Net needs a further minute for them).
"""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from nnunet_medaka.conversion.convert import convert_microct, convert_msd
from nnunet_medaka.conversion.phantom import make_phantoms
from nnunet_medaka.conversion.split import split_dataset

HIPPOCAMPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "msd_hippocampus"
MSD_CASES = ["hippocampus_243", "hippocampus_065", "hippocampus_070", "hippocampus_006", "hippocampus_008",
             "hippocampus_015", "hippocampus_023", "hippocampus_025", "hippocampus_026", "hippocampus_035",
             "hippocampus_037", "hippocampus_087"]


def plan_and_preprocess_command() -> str:
    here = Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess")
    return str(here) if here.is_file() else shutil.which("nnUNetv2_plan_and_preprocess")


@pytest.mark.slow  # trains or predicts with real nnU-Net
def test_converted_datasets_plan_and_preprocess(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)  # 0 crashes the planner (nnU-Net 2.8.1)

    phantoms = make_phantoms(tmp_path / "specimens", n_labeled=3, n_unlabeled=2, seed=0)
    datasets = [convert_microct(phantoms["root"], dataset_id=901, dataset_name="Phantom")]
    datasets.append(split_dataset(901, dataset_id=902, dataset_name="PhantomSplit", n_labeled=2, n_test=1, seed=0))
    if (HIPPOCAMPUS / "imagesTr").is_dir():
        subset = tmp_path / "msd_subset"
        for folder in ("imagesTr", "labelsTr"):
            (subset / folder).mkdir(parents=True)
            for case in MSD_CASES:
                (subset / folder / f"{case}.nii.gz").symlink_to(HIPPOCAMPUS / folder / f"{case}.nii.gz")
        datasets.append(convert_msd(subset, dataset_id=903, dataset_name="Hippocampus",
                                    labels="anterior=1,posterior=2", channel_names="MRI"))
    else:
        # said in pytest's summary, never a silent pass: the MSD part of the check did not run
        warnings.warn(f"MSD hippocampus not found at {HIPPOCAMPUS}: checked the phantom datasets only")

    ids = [d.name[7:10] for d in datasets]
    result = subprocess.run(
        [plan_and_preprocess_command(), "-d", *ids, "-c", "3d_fullres", "--verify_dataset_integrity",
         "-np", "1", "-npfp", "1", "--no_pbar"],
        env=os.environ.copy(), capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("verify_dataset_integrity Done") == len(datasets)
    for dataset in datasets:
        preprocessed = tmp_path / "nnUNet_preprocessed" / dataset.name
        n_training = json.loads((dataset / "dataset.json").read_text())["numTraining"]
        assert (preprocessed / "nnUNetPlans.json").is_file()
        arrays = [p for p in (preprocessed / "nnUNetPlans_3d_fullres").iterdir() if not p.name.endswith("_seg.b2nd")
                  and p.suffix == ".b2nd"]
        assert len(arrays) == n_training, dataset.name
    plans = json.loads((tmp_path / "nnUNet_preprocessed" / datasets[0].name / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
