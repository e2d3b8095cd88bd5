"""`nnunet-medaka pseudolabel` on the tiny teacher: outputs equal nnU-Net's own prediction, resume after a kill,
shards merged equal one run, unreadable images listed while the rest is processed."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import N_UNLABELED, environ, make_quality_model
from nnunet_medaka.pseudolabel.outputs import SUMMARY_FILE, TABLE_COLUMNS, TABLE_FILE


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def label_arrays(out: Path, sub: str = "labels") -> dict:
    return {p.name: read(p) for p in sorted((out / sub).glob("*.nii.gz"))}


def test_table_labels_and_true_iou(pseudo_none, unlabeled):
    rows = list(csv.DictReader((pseudo_none / TABLE_FILE).open()))
    assert tuple(rows[0]) == TABLE_COLUMNS
    assert [(r["case"], r["organ"]) for r in rows] == [(f"u_{i:03d}", o) for i in range(N_UNLABELED) for o in ("sphere", "box")]
    assert {r["decision"] for r in rows} == {"accept"} and {r["case_decision"] for r in rows} == {"accept"}
    assert rows and all(r["predicted_iou"] == "" and r["p_good"] == "" for r in rows)  # no quality model
    _, gt = unlabeled
    for r in rows:  # true IoU recomputed from the written label map and the ground truth
        pred, truth = read(pseudo_none / "labels" / f"{r['case']}.nii.gz"), read(gt / f"{r['case']}.nii.gz")
        label = int(r["label"])
        union = np.logical_or(pred == label, truth == label).sum()
        expected = np.logical_and(pred == label, truth == label).sum() / union if union else 1.0
        assert r["true_iou"] == f"{expected:.6f}"
        assert int(r["voxels"]) == int((pred == label).sum())
    summary = json.loads((pseudo_none / SUMMARY_FILE).read_text())
    assert summary["cases_accepted"] == N_UNLABELED and summary["failed"] == []
    timing = json.loads((pseudo_none / "runs" / "part-0-of-1.json").read_text())
    assert timing["cases"] == N_UNLABELED and timing["cases_per_second"] > 0


def test_label_maps_equal_nnunet_own_prediction(pseudo_none, unlabeled, trained_teacher, nnunet_env, tmp_path):
    """The path `nnUNetv2_predict -npp 0 -nps 0` takes (predict_from_files_sequential), in-process to save CPU."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    images, _ = unlabeled
    (tmp_path / "stock").mkdir()
    with environ(nnunet_env):
        predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(trained_teacher), [0], "checkpoint_final.pth")
        predictor.predict_from_files_sequential(str(images), str(tmp_path / "stock"))
    ours = label_arrays(pseudo_none)
    stock = label_arrays(tmp_path, "stock")
    assert ours.keys() == stock.keys() and len(ours) == N_UNLABELED
    for name in ours:
        np.testing.assert_array_equal(ours[name], stock[name])
    ref = sitk.ReadImage(str(tmp_path / "stock" / "u_000.nii.gz"))
    mine = sitk.ReadImage(str(pseudo_none / "labels" / "u_000.nii.gz"))
    assert mine.GetSpacing() == ref.GetSpacing() and mine.GetOrigin() == ref.GetOrigin()


def _two_fold_teacher(trained_teacher: Path, target: Path, noise: float) -> Path:
    """A copy of the tiny teacher with a fold 1: fold 0's weights, plus Gaussian noise of this size."""
    import torch

    folder = target / trained_teacher.parent.name / trained_teacher.name
    shutil.copytree(trained_teacher, folder)
    (folder / "fold_1").mkdir()
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    generator = torch.Generator().manual_seed(0)
    checkpoint["network_weights"] = {k: v + noise * torch.randn(v.shape, generator=generator) if v.is_floating_point()
                                     else v for k, v in checkpoint["network_weights"].items()}
    torch.save(checkpoint, folder / "fold_1" / "checkpoint_final.pth")
    return folder


def test_fold_signals_without_changing_the_ensemble(unlabeled, trained_teacher, nnunet_env, tmp_path):
    """Each fold's own label map is kept for the agreement signal, while the written pseudo-labels stay equal to
    nnU-Net's own 2-fold ensemble; identical folds agree perfectly, perturbed ones less."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_medaka.pseudolabel.predict import pseudolabel

    images, gt = unlabeled
    teacher = _two_fold_teacher(trained_teacher, tmp_path / "results", noise=0.05)
    (tmp_path / "stock").mkdir()
    with environ(nnunet_env):
        pseudolabel(teacher, images, tmp_path / "pl", folds=[0, 1], ground_truth=gt, mirroring=False, device="cpu",
                    progress=False)
        predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(teacher), [0, 1], "checkpoint_final.pth")
        predictor.predict_from_files_sequential(str(images), str(tmp_path / "stock"))
    ours, stock = label_arrays(tmp_path / "pl"), label_arrays(tmp_path, "stock")
    assert ours.keys() == stock.keys() and all(np.array_equal(ours[k], stock[k]) for k in ours)
    rows = list(csv.DictReader((tmp_path / "pl" / TABLE_FILE).open()))
    agreement = [float(r["fold_agreement"]) for r in rows]
    assert all(0 <= a <= 1 for a in agreement) and min(agreement) < 1  # the noise moved some masks
    for r in rows:
        if int(r["voxels"]):
            assert 0 < float(r["soft_dice_confidence"]) <= 1 and 0 < float(r["mean_max_softmax"]) <= 1
    record = json.loads((tmp_path / "pl" / "records" / "u_000.json").read_text())
    assert record["seconds"]["signals"] >= 0
    same = _two_fold_teacher(trained_teacher, tmp_path / "same", noise=0.0)
    with environ(nnunet_env):
        pseudolabel(same, images, tmp_path / "pl_same", folds=[0, 1], mirroring=False, device="cpu", progress=False)
    rows = list(csv.DictReader((tmp_path / "pl_same" / TABLE_FILE).open()))
    assert {r["fold_agreement"] for r in rows} == {"1.000000"}


def test_a_label_free_signal_filters_without_a_quality_model(unlabeled, trained_teacher, nnunet_env, tmp_path):
    """--filter mean_max_softmax --threshold T: an organ is accepted exactly when its recorded signal reaches T, and
    the summary names the filter; a signal filter without a threshold or a quality model is refused up front."""
    from nnunet_medaka.cli import main

    images, gt = unlabeled
    base = ["pseudolabel", "-m", str(trained_teacher), "-i", str(images), "--disable-tta", "-device", "cpu", "--quiet"]
    with environ(nnunet_env):
        assert main([*base, "-o", str(tmp_path / "probe")]) == 0  # acceptance none: read the signal's values
        values = sorted(float(r["mean_max_softmax"] or 0) for r in csv.DictReader((tmp_path / "probe" / TABLE_FILE).open()))
        distinct = sorted(set(values))
        k = len(distinct) // 2
        threshold = (distinct[k - 1] + distinct[k]) / 2  # between two values: about half the organs pass
        assert main([*base, "-o", str(tmp_path / "pl"), "--filter", "mean_max_softmax", "--threshold", str(threshold),
                     "--acceptance", "organ", "--ground-truth", str(gt)]) == 0
        assert main([*base, "-o", str(tmp_path / "refused"), "--filter", "soft_dice_confidence", "--acceptance",
                     "case"]) == 2
    assert not (tmp_path / "refused").exists()
    rows = list(csv.DictReader((tmp_path / "pl" / TABLE_FILE).open()))
    for r in rows:
        passed = r["mean_max_softmax"] != "" and float(r["mean_max_softmax"]) >= threshold
        assert r["decision"] == ("accept" if passed else "reject"), r
    assert {r["decision"] for r in rows} == {"accept", "reject"}
    summary = json.loads((tmp_path / "pl" / SUMMARY_FILE).read_text())
    assert summary["filter"] == "mean_max_softmax" and summary["threshold"] == threshold

    # --filter auto: the filter and threshold the quality model's training chose, and why, in the summary
    reason = "mean_max_softmax: AUROC 0.900 on the teacher's out-of-fold predictions, against 0.700 ..."
    chosen = make_quality_model(tmp_path / "q_auto", trained_teacher, good=("sphere", "box"), training={
        "auto_filter": "mean_max_softmax", "auto_filter_reason": reason,
        "signal_thresholds": {"mean_max_softmax": threshold}})
    old = make_quality_model(tmp_path / "q_old", trained_teacher, good=("sphere", "box"))
    with environ(nnunet_env):
        assert main([*base, "-o", str(tmp_path / "auto"), "--filter", "auto", "--quality-model", str(chosen),
                     "--acceptance", "organ"]) == 0
        assert main([*base, "-o", str(tmp_path / "auto_old"), "--filter", "auto", "--quality-model", str(old)]) == 2
        assert main([*base, "-o", str(tmp_path / "auto_none"), "--filter", "auto", "--acceptance", "case"]) == 2
    assert not (tmp_path / "auto_old").exists() and not (tmp_path / "auto_none").exists()
    auto = json.loads((tmp_path / "auto" / SUMMARY_FILE).read_text())
    assert auto["filter"] == "mean_max_softmax" and auto["threshold"] == threshold
    assert auto["filter_reason"] == f"auto: {reason}"
    decisions = [r["decision"] for r in csv.DictReader((tmp_path / "auto" / TABLE_FILE).open())]
    assert decisions == [r["decision"] for r in rows]  # the same signal and threshold: the same decisions

    # voxel gating: the probe's label maps, with the voxels the ensemble was unsure of set to the ignore label (3)
    with environ(nnunet_env):
        assert main([*base, "-o", str(tmp_path / "gated"), "--voxel-confidence", "0.9"]) == 0
        assert main([*base, "-o", str(tmp_path / "bad_gate"), "--voxel-confidence", "0"]) == 2
    assert not (tmp_path / "bad_gate").exists()
    probe, gated = label_arrays(tmp_path / "probe"), label_arrays(tmp_path / "gated")
    ignored = 0
    for name, labels in gated.items():
        kept = labels != 3
        np.testing.assert_array_equal(labels[kept], probe[name][kept])
        record = json.loads((tmp_path / "gated" / "records" / name.replace(".nii.gz", ".json")).read_text())
        assert record["ignored_voxels"] == int((~kept).sum()) and record["voxels_total"] == labels.size
        ignored += int((~kept).sum())
    assert 0 < ignored < sum(a.size for a in gated.values())
    summary = json.loads((tmp_path / "gated" / SUMMARY_FILE).read_text())
    assert summary["voxel_confidence"] == 0.9
    assert summary["ignored_voxel_share"] == pytest.approx(ignored / sum(a.size for a in gated.values()), abs=1e-6)
    with environ(nnunet_env):  # every case accepted, none partial: the gated voxels alone make the student need it
        assert main(["build-student", str(tmp_path / "gated"), "-d", "946", "-n", "GatedStudent", "-np", "1"]) == 0
    student = json.loads((Path(nnunet_env["nnUNet_raw"]) / "Dataset946_GatedStudent" / "dataset.json").read_text())
    assert student["labels"]["ignore"] == 3


class SimulatedKill(BaseException):
    """Stands for kill -9: nothing after it runs, no cleanup (BaseException passes every `except Exception`)."""


def test_resume_after_kill_gives_identical_outputs(pseudo_none, unlabeled, trained_teacher, nnunet_env, tmp_path,
                                                   monkeypatch):
    from nnunet_medaka.cli import main
    from nnunet_medaka.pseudolabel import predict

    images, gt = unlabeled
    out = tmp_path / "killed"
    real, calls = predict.write_record, []

    def dying(output, record):
        calls.append(record["case"])
        if len(calls) == 2:  # the 2nd case: its label file is in place, its record not yet written
            raise SimulatedKill
        real(output, record)

    monkeypatch.setattr(predict, "write_record", dying)
    with environ(nnunet_env), pytest.raises(SimulatedKill):
        predict.pseudolabel(trained_teacher, images, out, folds=[0], ground_truth=gt, mirroring=False, device="cpu",
                            progress=False)
    monkeypatch.setattr(predict, "write_record", real)
    assert sorted(p.stem for p in (out / "records").glob("*.json")) == ["u_000"]
    assert (out / "labels" / "u_001.nii.gz").is_file()  # written, but without a record it is not "finished"
    assert not (out / TABLE_FILE).exists()
    (out / "labels" / ".u_002.tmp999.nii.gz").write_bytes(b"half a file")  # as if killed while writing
    with environ(nnunet_env):
        assert main(["pseudolabel", "-m", str(trained_teacher), "-i", str(images), "-o", str(out), "--ground-truth",
                     str(gt), "--disable-tta", "-device", "cpu", "--quiet"]) == 0
    timing = json.loads((out / "runs" / "part-0-of-1.json").read_text())
    assert timing["cases"] == N_UNLABELED - 1  # u_000 skipped, u_001 redone
    assert (out / TABLE_FILE).read_bytes() == (pseudo_none / TABLE_FILE).read_bytes()
    assert (out / SUMMARY_FILE).read_bytes() == (pseudo_none / SUMMARY_FILE).read_bytes()
    assert not list((out / "labels").glob(".*"))
    a, b = label_arrays(out), label_arrays(pseudo_none)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_two_shards_merged_equal_one_run(pseudo_none, unlabeled, trained_teacher, nnunet_env, tmp_path):
    from nnunet_medaka.cli import main

    images, gt = unlabeled
    common = ["pseudolabel", "-m", str(trained_teacher), "-i", str(images), "--ground-truth", str(gt), "--disable-tta",
              "-device", "cpu", "--quiet", "-num_parts", "2"]
    with environ(nnunet_env):
        assert main([*common, "-o", str(tmp_path / "shared"), "-part_id", "0"]) == 0
        assert not (tmp_path / "shared" / TABLE_FILE).exists()
        assert main(["pseudolabel-merge", str(tmp_path / "shared")]) == 2  # part 1 missing: an error naming it
        assert main([*common, "-o", str(tmp_path / "elsewhere"), "-part_id", "1"]) == 0  # another machine
        assert main(["pseudolabel-merge", str(tmp_path / "shared"), "--from", str(tmp_path / "elsewhere")]) == 0
    merged = tmp_path / "shared"
    assert (merged / TABLE_FILE).read_bytes() == (pseudo_none / TABLE_FILE).read_bytes()
    assert (merged / SUMMARY_FILE).read_bytes() == (pseudo_none / SUMMARY_FILE).read_bytes()
    a, b = label_arrays(merged), label_arrays(pseudo_none)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_unreadable_image_is_named_and_the_rest_processed(unlabeled, trained_teacher, nnunet_env, tmp_path, capsys):
    from nnunet_medaka.cli import main

    images, _ = unlabeled
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(images / "u_000_0000.nii.gz", folder)
    (folder / "broken_0000.nii.gz").write_bytes(b"\x1f\x8b not really a nifti")
    out = tmp_path / "out"
    with environ(nnunet_env):
        code = main(["pseudolabel", "-m", str(trained_teacher), "-i", str(folder), "-o", str(out), "--disable-tta",
                     "-device", "cpu", "--quiet"])
    assert code == 1
    assert "broken" in capsys.readouterr().out
    rows = list(csv.DictReader((out / TABLE_FILE).open()))
    assert {r["case"] for r in rows} == {"u_000"}
    failed = list(csv.DictReader((out / "failed_cases.csv").open()))
    assert [f["case"] for f in failed] == ["broken"] and "broken_0000.nii.gz" in failed[0]["files"]
    assert json.loads((out / SUMMARY_FILE).read_text())["failed"] == ["broken"]
