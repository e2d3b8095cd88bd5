"""`nnunet-medaka build-student` from the organ-level pseudo-labels, then the printed stock nnUNetv2_train command."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from conftest import N_UNLABELED, REJECT, STUDENT_ID
from helpers import run_checked, tool


def test_student_dataset_json_and_files(student_build, tiny_dataset):
    _, raw, pre = student_build
    ds = json.loads((raw / "dataset.json").read_text())
    teacher_ds = json.loads((tiny_dataset.raw / "dataset.json").read_text())
    assert ds["labels"] == {**teacher_ds["labels"], "ignore": 3}  # organ-level rejection used the ignore label
    assert ds["pseudo_labeled_cases"] == [f"u_{i:03d}" for i in range(N_UNLABELED)]
    assert ds["numTraining"] == 6 + N_UNLABELED
    assert json.loads((pre / "dataset.json").read_text()) == ds  # the copy nnU-Net's preprocessing reads
    labels = sorted(p.name for p in (raw / "labelsTr").iterdir())
    assert labels == sorted([f"case_{i:03d}.nii.gz" for i in range(6)] + [f"u_{i:03d}.nii.gz" for i in range(N_UNLABELED)])
    rejected = next(iter(REJECT))
    assert 3 in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{rejected}.nii.gz"))))
    assert not list(raw.parent.glob(".build-student*")) and not list(pre.parent.glob(".build-student*"))


def test_plans_preprocessing_and_config(student_build, tiny_dataset, trained_teacher):
    _, raw, pre = student_build
    plans = json.loads((pre / f"{tiny_dataset.plans}From901.json").read_text())
    teacher_plans = json.loads((trained_teacher / "plans.json").read_text())
    assert plans["plans_name"] == f"{tiny_dataset.plans}From901" and plans["dataset_name"] == raw.name
    assert plans["configurations"]["3d_fullres"]["architecture"] == teacher_plans["configurations"]["3d_fullres"]["architecture"]
    data = pre / plans["configurations"]["3d_fullres"]["data_identifier"]
    cases = {p.name.split(".")[0] for p in data.glob("*.b2nd") if not p.name.endswith("_seg.b2nd")}
    assert cases == {f"case_{i:03d}" for i in range(6)} | {f"u_{i:03d}" for i in range(N_UNLABELED)}
    config = json.loads((pre / "nnunet_medaka.json").read_text())
    assert config["teacher"] == str(trained_teacher) and config["teacher_folds"] == [0]
    assert config["kd_scope"] == "pseudo" and config["num_epochs"] == 1  # schedule taken over from the teacher dataset


def test_pseudo_cases_only_in_training_folds_and_labeled_folds_equal_teachers(student_build, tiny_dataset):
    _, _, pre = student_build
    splits = json.loads((pre / "splits_final.json").read_text())
    teacher = json.loads((tiny_dataset.preprocessed / "splits_final.json").read_text())
    pseudo = {f"u_{i:03d}" for i in range(N_UNLABELED)}
    assert len(splits) == len(teacher)
    for s, t in zip(splits, teacher):
        assert not pseudo & set(s["val"])
        assert s["val"] == t["val"]
        assert set(s["train"]) == set(t["train"]) | pseudo


def test_printed_command_trains_with_stock_nnunet(student_build, nnunet_env):
    printed, raw, pre = student_build
    line = next(l for l in printed.splitlines() if "nnUNetv2_train" in l)
    command = shlex.split(line.split("&&", 1)[1])
    assert command[:2] == ["nnUNetv2_train", str(STUDENT_ID)] and "KDTrainer" in command
    # half of the samples from the labeled cases (their share of the cases is smaller), and the noisy student's
    # heavier augmentation (3d here: nnUNetTrainerDA5's pipeline must run inside KDTrainer)
    # and the final fine-tune on the labeled cases (its last epoch of two; the augmentation workers restarted)
    run_checked([tool("nnunet-medaka"), "config", "-d", str(STUDENT_ID), "--set", "labeled_share=0.5",
                 "--set", "augmentation=da5", "--set", "num_epochs=2", "--set", "finetune_epochs=1"], nnunet_env)
    # one export worker in nnU-Net's final validation (fewer spawned interpreters on a CPU test machine)
    run_checked([tool(command[0]), *command[1:], "-device", "cpu"], dict(nnunet_env, nnUNet_def_n_proc="1"), timeout=900)
    fold = Path(nnunet_env["nnUNet_results"]) / raw.name / f"KDTrainer__{command[command.index('-p') + 1]}__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    settings = json.loads((fold / "nnunet_medaka_resolved_config.json").read_text())
    assert settings["config"]["kd_scope"] == "pseudo"
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "This split has" in log and "Using splits from existing split file" in log
    assert settings["config"]["labeled_share"] == 0.5 and settings["config"]["augmentation"] == "da5"
    assert "labeled cases drawn with probability 0.500 in all" in log and "pseudo-labeled 0.500" in log
    assert re.search(r"epoch 1: fine-tune on the \d+ labeled cases only for the last 1 epoch\(s\)", log)
    assert "Epoch 1" in log and settings["config"]["finetune_epochs"] == 1
