"""A real two-fold nnU-Net cross-validation with ``--npz`` on the tiny dataset, made once per session."""
from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import run_checked, tool
from nnunet_medaka.training.plans import write_small_plans

QC_PLANS = "nnUNetPlansSmallQC"  # own plans name, so the results folder is not the one trained_teacher writes
CV_FOLDS = 2


@dataclass(frozen=True)
class TeacherCV:
    dataset: object  # the TinyDataset
    plans: str
    folds: int
    model_folder: Path
    seconds: float


@pytest.fixture(scope="session")
def teacher_cv(tiny_dataset, nnunet_env, tmp_path_factory) -> TeacherCV:
    """SupervisedTrainer trained on 2 custom folds (3 validation cases each), stock ``nnUNetv2_train --npz``."""
    start = time.time()
    write_small_plans(tiny_dataset.preprocessed, target_plans=QC_PLANS, patch_size=(24, 24, 24),
                      features_per_stage=(4, 8, 16))
    cases = sorted(p.name[: -len(".nii.gz")] for p in (tiny_dataset.raw / "labelsTr").glob("*.nii.gz"))
    splits = [{"train": cases[3:], "val": cases[:3]}, {"train": cases[:3], "val": cases[3:]}]
    splits_file = tiny_dataset.preprocessed / "splits_final.json"
    splits_file.write_text(json.dumps(splits, indent=2))
    # own settings file (the tiny schedule plus one torch thread: on a busy CPU, more threads are much slower),
    # so the dataset's shared nnunet_medaka.json stays as other tests expect it
    settings = tmp_path_factory.mktemp("qc_settings") / "nnunet_medaka.json"
    settings.write_text(json.dumps({**json.loads((tiny_dataset.preprocessed / "nnunet_medaka.json").read_text()),
                                    "cpu_threads": 1}))
    env = {**nnunet_env, "nnunet_medaka_config": str(settings), "OMP_NUM_THREADS": "1"}
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for fold in range(CV_FOLDS):
        run_checked([tool("nnUNetv2_train"), tiny_dataset.id, tiny_dataset.configuration, fold, "-tr",
                     "SupervisedTrainer", "-p", QC_PLANS, "-device", "cpu", "--npz"], env, timeout=900)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    print(f"\nteacher CV ({CV_FOLDS} folds, --npz): {time.time() - start:.0f} s wall, {cpu:.0f} s CPU")
    folder = (Path(nnunet_env["nnUNet_results"]) / tiny_dataset.name
              / f"SupervisedTrainer__{QC_PLANS}__{tiny_dataset.configuration}")
    for fold in range(CV_FOLDS):
        assert len(list((folder / f"fold_{fold}" / "validation").glob("*.npz"))) == 3
    return TeacherCV(tiny_dataset, QC_PLANS, CV_FOLDS, folder, time.time() - start)
