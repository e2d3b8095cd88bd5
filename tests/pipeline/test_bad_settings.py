"""Every setting is checked before any work, by one set of rules: ``run --dry-run`` and ``experiment --dry-run`` refuse
exactly the values a later stage would, each naming the key, and write nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import make_raw_dataset
from nnunet_medaka.config import check_value
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.environment import plugin_environ
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pipeline.experiment_command import run_experiment
from nnunet_medaka.pipeline.run import run_pipeline
from nnunet_medaka.training.presets import RUN_DEFAULTS, get_preset, resolve_settings

# one value each key's stage refuses (the trainer's config check, KFold, the quality classifier, ...)
BAD = {
    "num_epochs": 0, "iterations_per_epoch": -4, "val_iterations_per_epoch": 1.5, "initial_lr": 2,
    "mirroring": "yes", "cpu_threads": 0, "final_validation": 1, "kd_weight": -1, "kd_temperature": 0,
    "seed": -1, "cv_folds": 1, "student_folds": [7], "parallel_folds": 0, "corruptions_per_organ": -3,
    "tau": 1.5, "student_init": "pretrained", "acceptance": "some", "configuration": "", "small_plans": "big",
    "labeled_share": 1, "filter": "dice", "voxel_confidence": 1.5,
    "student_augmentation": "heavy", "student_finetune": -1, "pool_size": 0, "student_width": 2, "rounds": 0, "round_min_gain": 2,
}


@pytest.fixture(scope="module")
def split_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_settings")
    env = plugin_environ(root=root)
    source = make_raw_dataset(Path(env["nnUNet_raw"]), 951, "BadSource", n_cases=10, seed=2)
    split_dataset(source, dataset_id=952, dataset_name="BadTiny", n_labeled=5, n_test=2, seed=0,
                  out_dir=env["nnUNet_raw"])
    return env


@pytest.fixture
def in_env(split_env, monkeypatch):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, split_env[key])


def test_every_setting_has_a_bad_value_here():
    keys = set(RUN_DEFAULTS) | set(get_preset("quick")) - {"fold"}
    assert keys == set(BAD), keys ^ set(BAD)


@pytest.mark.parametrize("key", sorted(BAD))
def test_a_bad_value_is_refused_by_both_dry_runs_naming_the_key(key, in_env, tmp_path):
    value = BAD[key]
    if key in ("num_epochs", "iterations_per_epoch", "val_iterations_per_epoch", "initial_lr", "mirroring",
               "cpu_threads", "final_validation", "kd_weight", "kd_temperature", "seed", "labeled_share"):
        assert check_value(key, value) is not None  # the trainers' config check refuses it too
    with pytest.raises(MedakaError, match=rf"\b{key}="):
        resolve_settings("quick", {key: value})
    with pytest.raises(MedakaError, match=rf"\b{key}="):
        run_pipeline("952", tmp_path / "run", overrides={key: value}, device="cpu", dry_run=True, say=lambda _: None)
    with pytest.raises(MedakaError, match=rf"\b{key}="):
        run_experiment("952", tmp_path / "exp", fractions=[1.0], seeds=[0], overrides={key: value}, device="cpu",
                       dry_run=True, say=lambda _: None)
    assert not (tmp_path / "run").exists() and not (tmp_path / "exp").exists()


def test_every_problem_in_one_message():
    with pytest.raises(MedakaError) as e:
        resolve_settings("quick", {"tau": "abc", "kd_weight": float("inf"), "num_epochs": -4})
    assert all(f"{k}=" in str(e.value) for k in ("tau", "kd_weight", "num_epochs"))
    with pytest.raises(MedakaError, match=r"student_finetune=30: .*fewer than num_epochs \(30\)"):
        resolve_settings("quick", {"student_finetune": 30})  # the student would never see its pseudo-labels
    assert resolve_settings("quick", {"student_finetune": 29})["student_finetune"] == 29


def test_relations_and_the_output_are_checked_by_the_dry_run(in_env, tmp_path):
    with pytest.raises(MedakaError, match=r"5 labeled case\(s\), fewer than cv_folds=6"):
        run_pipeline("952", tmp_path / "run", overrides={"cv_folds": 6}, device="cpu", dry_run=True)
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("user data")
    with pytest.raises(MedakaError, match="not_a_folder: is a file"):
        run_pipeline("952", a_file, device="cpu", dry_run=True)
    assert a_file.read_text() == "user data"
    with pytest.raises(MedakaError, match="seed=-3: experiment takes its seeds from --seeds"):
        run_experiment("952", tmp_path / "exp", fractions=[1.0], seeds=[0], overrides={"seed": 3 - 6},
                       device="cpu", dry_run=True)
    assert os.listdir(tmp_path) == ["not_a_folder"]
