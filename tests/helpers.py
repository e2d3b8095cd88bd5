"""Shared test utilities: a tiny synthetic nnU-Net dataset and checked subprocess runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

VENV_BIN = Path(sys.executable).parent
LABELS = {"background": 0, "sphere": 1, "box": 2}


def tool(name: str) -> str:
    """Path of a console script installed beside the running Python (nnUNetv2_*, nnunet-medaka)."""
    path = VENV_BIN / name
    assert path.exists(), f"{path} missing: install the package with `pip install -e .[test]`"
    return str(path)


def run_checked(cmd: Sequence[str], env: Mapping[str, str], timeout: float = 600, cwd=None) -> subprocess.CompletedProcess:
    """Run a command; on a non-zero exit fail with the tail of its output."""
    proc = subprocess.run([str(c) for c in cmd], env=dict(env), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-6000:])
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{tail}")
    return proc


def synthetic_case(rng: np.random.Generator, shape=(36, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with a bright sphere (label 1) and a darker box (label 2) at random places."""
    label = np.zeros(shape, np.uint8)
    zz, yy, xx = np.indices(shape)
    c = rng.uniform(0.35, 0.65, 3) * np.array(shape)
    r = rng.uniform(6, 9)
    label[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r**2] = 1
    lo = rng.integers(2, 8, 3)
    size = rng.integers(7, 11, 3)
    box = tuple(slice(a, a + s) for a, s in zip(lo, size))
    label[box][label[box] == 0] = 2
    image = rng.normal(100, 10, shape) + 200 * (label == 1) + 90 * (label == 2)
    return image.astype(np.float32), label


def write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(img, str(path))


def make_raw_dataset(raw_root: Path, dataset_id: int, name: str, n_cases: int = 6, seed: int = 0) -> Path:
    """Write an nnU-Net raw dataset of synthetic cases; returns its folder."""
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        image, label = synthetic_case(rng)
        write_nifti(folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz", image)
        write_nifti(folder / "labelsTr" / f"case_{i:03d}.nii.gz", label)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": LABELS, "numTraining": n_cases, "file_ending": ".nii.gz",
        "name": name, "description": "synthetic spheres and boxes made by the nnunet-medaka tests",
    }, indent=2))
    return folder


# `nnunet-medaka run` settings for tests: the tiny schedule, 2 CV folds, one corrupted copy per organ, and no
# quality filter (a 1-epoch teacher's pseudo-labels are all bad; the filter itself is tested in tests/pseudolabel)
TINY_RUN = {"cv_folds": 2, "acceptance": "none", "num_epochs": 1, "iterations_per_epoch": 2,
            "val_iterations_per_epoch": 1, "configuration": "3d_fullres", "corruptions_per_organ": 1,
            "small_plans": {"target_plans": "nnUNetPlansSmall", "patch_size": [32, 32, 32],
                            "features_per_stage": [8, 16, 32]}}
