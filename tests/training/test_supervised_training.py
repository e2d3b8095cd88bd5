"""End to end through the stock commands: train with SupervisedTrainer, predict, evaluate."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import run_checked, tool


def test_stock_train_applies_configured_schedule(trained_teacher):
    fold = trained_teacher / "fold_0"
    resolved = json.loads((fold / "nnunet_medaka_resolved_config.json").read_text())
    assert resolved["trainer"] == "SupervisedTrainer"
    assert resolved["config"]["num_epochs"] == 1 and resolved["config"]["iterations_per_epoch"] == 3
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "nnunet_medaka settings:" in log
    assert "Epoch 0" in log and "Epoch 1" not in log  # one epoch, as configured
    # final validation ran (without mirroring, as configured) and wrote its summary
    assert (fold / "validation" / "summary.json").is_file()


def test_stock_predict_and_evaluate(trained_teacher, tiny_dataset, nnunet_env, tmp_path):
    out = tmp_path / "pred"
    run_checked([tool("nnUNetv2_predict"), "-i", tiny_dataset.raw / "imagesTr", "-o", out, "-d", tiny_dataset.id,
                 "-c", tiny_dataset.configuration, "-tr", "SupervisedTrainer", "-p", tiny_dataset.plans, "-f", "0",
                 "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"], nnunet_env)
    assert len(list(out.glob("*.nii.gz"))) == 6
    run_checked([tool("nnUNetv2_evaluate_folder"), tiny_dataset.raw / "labelsTr", out,
                 "-djfile", trained_teacher / "dataset.json", "-pfile", trained_teacher / "plans.json"], nnunet_env)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    # the evaluator's IoU is the IoU of the predicted files against the labels, computed here independently
    ious = {k: [] for k in (1, 2)}
    for label_file in sorted((tiny_dataset.raw / "labelsTr").glob("*.nii.gz")):
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(out / label_file.name)))
        assert predicted.shape == truth.shape
        for k in ious:
            union = np.logical_or(truth == k, predicted == k).sum()
            ious[k].append(np.logical_and(truth == k, predicted == k).sum() / union if union else np.nan)
    for k, values in ious.items():
        assert summary["mean"][str(k)]["IoU"] == pytest.approx(np.nanmean(values), abs=1e-6)
