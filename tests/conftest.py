"""Session fixtures: one tiny nnU-Net dataset, planned once, and one teacher trained once on it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import make_raw_dataset, run_checked, tool
from nnunet_medaka.environment import planning_environ, plugin_environ
from nnunet_medaka.training.plans import write_small_plans

TINY_ID = 901
TINY_NAME = "TinySpheres"
SMALL_PLANS = "nnUNetPlansSmall"
TINY_SCHEDULE = {"num_epochs": 1, "iterations_per_epoch": 3, "val_iterations_per_epoch": 1, "mirroring": False}
# fixtures that plan, train or predict with real nnU-Net: a test using one (directly or through another fixture)
# is marked slow, so `make test-fast` (-m "not slow") leaves it out; tests that run nnU-Net themselves carry
# @pytest.mark.slow
SLOW_FIXTURES = {"tiny_dataset", "trained_teacher", "teacher_cv", "pseudo_none", "pseudo_organ", "student_build"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@dataclass(frozen=True)
class TinyDataset:
    id: int
    name: str
    plans: str
    configuration: str
    raw: Path
    preprocessed: Path


@pytest.fixture(scope="session")
def nnunet_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nnunet")


@pytest.fixture(scope="session")
def nnunet_env(nnunet_root) -> dict:
    """Environment for stock nnU-Net subprocesses: plugin trainers found, folders in tmp, CPU knobs."""
    env = plugin_environ(root=nnunet_root)
    env.update(nnUNet_n_proc_DA="0", nnUNet_compile="f", nnUNet_def_n_proc="2", OMP_NUM_THREADS="2",
               PYTHONUNBUFFERED="1")
    env.pop("nnunet_medaka_config", None)
    return env


@pytest.fixture(scope="session")
def tiny_dataset(nnunet_env) -> TinyDataset:
    raw = make_raw_dataset(Path(nnunet_env["nnUNet_raw"]), TINY_ID, TINY_NAME)
    run_checked([tool("nnUNetv2_plan_and_preprocess"), "-d", TINY_ID, "-c", "3d_fullres", "-np", "2",
                 "-npfp", "2", "--verify_dataset_integrity"], planning_environ(nnunet_env))
    preprocessed = Path(nnunet_env["nnUNet_preprocessed"]) / raw.name
    write_small_plans(preprocessed, target_plans=SMALL_PLANS)
    (preprocessed / "nnunet_medaka.json").write_text(json.dumps(TINY_SCHEDULE))
    return TinyDataset(TINY_ID, raw.name, SMALL_PLANS, "3d_fullres", raw, preprocessed)


@pytest.fixture(scope="session")
def trained_teacher(tiny_dataset, nnunet_env) -> Path:
    """Model folder of a SupervisedTrainer run (fold 0, one tiny epoch) made by the stock command."""
    run_checked([tool("nnUNetv2_train"), tiny_dataset.id, tiny_dataset.configuration, "0", "-tr", "SupervisedTrainer",
                 "-p", tiny_dataset.plans, "-device", "cpu"], nnunet_env, timeout=900)
    folder = (Path(nnunet_env["nnUNet_results"]) / tiny_dataset.name
              / f"SupervisedTrainer__{tiny_dataset.plans}__{tiny_dataset.configuration}")
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
    return folder
