"""``nnunet-medaka qc train|score|evaluate`` on a real two-fold nnU-Net cross-validation with ``--npz``."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import run_checked, tool
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.quality.model import choose_filter
from nnunet_medaka.quality.score import check_compatible, load_quality_model, score_case


@pytest.fixture()
def folders_env(monkeypatch, nnunet_env):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, nnunet_env[var])


@pytest.fixture(scope="module")
def quality_folder(teacher_cv, nnunet_env) -> Path:
    ds = teacher_cv.dataset
    proc = run_checked([tool("nnunet-medaka"), "qc", "train", "-d", ds.id, "-c", ds.configuration, "-tr",
                        "SupervisedTrainer", "-p", teacher_cv.plans, "--tau", "auto", "--corruptions", "3",
                        "--cv-folds", "3", "--seed", "0", "--tta"], nnunet_env, timeout=600)
    folder = teacher_cv.model_folder / "quality"
    assert folder.is_dir(), proc.stdout + proc.stderr
    return folder


def _csv(path: Path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_qc_train_writes_model_features_and_report(quality_folder, teacher_cv):
    for name in ("quality_model.joblib", "features.json", "features.csv", "reference.csv", "evaluation/report.json",
                 "evaluation/metrics.csv", "evaluation/predictions.csv", "evaluation/scatter_predicted_vs_true_iou.png",
                 "evaluation/roc_and_risk_coverage_real.png", "evaluation/per_organ_auroc.png"):
        assert (quality_folder / name).is_file(), name
    model = load_quality_model(quality_folder)
    assert model.labels == {"sphere": 1, "box": 2}
    assert 0 < model.tau < 1 and 0 <= model.accept_threshold <= 1
    assert model.teacher["model_folder"] == teacher_cv.model_folder.name
    assert model.teacher["folds"] == [0, 1] and model.teacher["dataset"] == teacher_cv.dataset.name
    # the evidence `--filter auto` decides on: every candidate judged on the real out-of-fold rows, and the choice
    evidence = model.training["filter_evidence"]
    assert set(evidence) == {"quality", "mean_max_softmax", "soft_dice_confidence"} or evidence == {}
    assert all(0 <= v <= 1 for v in evidence.values())
    assert (model.training["auto_filter"], model.training["auto_filter_reason"]) == choose_filter(evidence)
    rows = _csv(quality_folder / "features.csv")
    assert {r["source"] for r in rows if r["real"] == "1"} == {"oof"}
    assert sum(r["real"] == "1" for r in rows) == 6 * 2  # every case's out-of-fold prediction, per organ
    assert any(r["source"].startswith("corrupt:") for r in rows)
    report = json.loads((quality_folder / "evaluation" / "report.json").read_text())
    assert report["summary"]
    for subset in ("real", "all"):
        for organ in ("sphere", "box", "overall"):
            methods = report["metrics"][subset][organ]
            # --tta: the TTA agreement baseline, on real rows only (corrupted copies have no network output)
            assert set(methods) == {"classifier", "accept_all", "mean_max_softmax", "mean_entropy", "confidence_gate",
                                    *(["tta_agreement"] if subset == "real" else [])}
            assert set(methods["classifier"]) >= {"auroc", "auprc", "spearman", "aurc", "mae"}
    tta = [float(r["tta_dice"]) for r in rows if r["real"] == "1"]
    assert tta and all(0 <= v <= 1 for v in tta) and all(np.isnan(float(r["tta_dice"])) for r in rows if r["real"] == "0")


def test_grouped_cv_of_the_report_never_scores_a_seen_case(quality_folder):
    report = json.loads((quality_folder / "evaluation" / "report.json").read_text())
    for fold in report["folds"]:
        assert not set(fold["test_cases"]) & set(fold["train_cases"])
    predictions = _csv(quality_folder / "evaluation" / "predictions.csv")
    fold_of_case = {}
    for p in predictions:
        assert p["case"] not in report["folds"][int(p["cv_fold"])]["train_cases"]
        fold_of_case.setdefault(p["case"], set()).add(p["cv_fold"])
    assert fold_of_case and all(len(v) == 1 for v in fold_of_case.values())  # organs and copies stay together


def test_qc_evaluate_cli(quality_folder, tmp_path, capsys):
    from nnunet_medaka.cli import main

    out = tmp_path / "report"
    assert main(["qc", "evaluate", str(quality_folder), "-o", str(out), "--cv-folds", "2"]) == 0  # in-process CLI
    assert "AUROC" in capsys.readouterr().out
    assert (out / "report.json").is_file() and (out / "roc_and_risk_coverage_all.png").is_file()
    assert json.loads((out / "report.json").read_text())["n_splits"] == 2


def test_qc_score_from_files_equals_score_from_arrays(quality_folder, teacher_cv, nnunet_env, tmp_path):
    predictions = teacher_cv.model_folder / "fold_0" / "validation"
    images = teacher_cv.dataset.raw / "imagesTr"
    out = tmp_path / "scores.csv"
    run_checked([tool("nnunet-medaka"), "qc", "score", quality_folder, predictions, "-i", images, "-o", out],
                nnunet_env, timeout=300)
    rows = _csv(out)
    assert len(rows) == 3 * 2 and out.with_suffix(".json").is_file()
    model = load_quality_model(quality_folder / "quality_model.joblib")
    for r in rows:
        itk = sitk.ReadImage(str(images / f"{r['case']}_0000.nii.gz"))
        image = sitk.GetArrayFromImage(itk)[None].astype(np.float32)
        probabilities = np.load(predictions / f"{r['case']}.npz")["probabilities"]
        scores = score_case(model, image, probabilities, spacing=itk.GetSpacing()[::-1])[r["organ"]]
        assert float(r["predicted_iou"]) == pytest.approx(scores["predicted_iou"], abs=1e-12)
        assert float(r["p_good"]) == pytest.approx(scores["p_good"], abs=1e-12)
        assert bool(int(r["accept"])) == scores["accept"] == (scores["p_good"] >= model.accept_threshold)


def test_build_table_is_deterministic(teacher_cv, folders_env, monkeypatch):
    import multiprocessing.pool

    from nnunet_medaka.quality.table import build_table, find_teacher_cv

    def no_pool(*args, **kwargs):  # a pool that ends while a worker still starts can hang for good
        raise AssertionError("find_teacher_cv started a process pool to list the raw dataset")

    monkeypatch.setattr(multiprocessing.pool.Pool, "__init__", no_pool)
    cv = find_teacher_cv(str(teacher_cv.dataset.id), "3d_fullres", "SupervisedTrainer", teacher_cv.plans)
    monkeypatch.undo()
    assert all(isinstance(p, str) for c in cv.cases.values() for p in [*c["images"], c["label"]])
    a, ref_a = build_table(cv, corruptions_per_organ=2, seed=3, progress=False)
    b, ref_b = build_table(cv, corruptions_per_organ=2, seed=3, progress=False)
    assert json.dumps(a, default=str) == json.dumps(b, default=str) and len(ref_a) == len(ref_b) == 12


# ---------------------------------------------------------------- bad input


def _copy_teacher(teacher_cv, trainer: str, folds=(0, 1)) -> Path:
    """Skeleton copy of the teacher's results (json files and validation folders) under another trainer name."""
    target = teacher_cv.model_folder.parent / f"{trainer}__{teacher_cv.plans}__3d_fullres"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for name in ("dataset.json", "plans.json"):
        shutil.copy(teacher_cv.model_folder / name, target / name)
    for f in folds:
        shutil.copytree(teacher_cv.model_folder / f"fold_{f}" / "validation", target / f"fold_{f}" / "validation")
    return target


def _train(teacher_cv, trainer, **kwargs):
    from nnunet_medaka.quality.commands import train_quality

    return train_quality(str(teacher_cv.dataset.id), "3d_fullres", trainer=trainer, plans=teacher_cv.plans,
                         progress=False, **kwargs)


def test_extra_teacher_adds_its_out_of_fold_mistakes_as_training_rows(teacher_cv, folders_env, tmp_path):
    """Another cross-validation of the same cases (here the teacher's own outputs under another trainer name, one
    name) adds one training row per validated case and organ, never a `real` one; the report still judges the
    classifier on the teacher's own out-of-fold rows."""
    from nnunet_medaka.cli import main

    other = _copy_teacher(teacher_cv, "QCEarlierTeacher")
    plain = _train(teacher_cv, "SupervisedTrainer", output=tmp_path / "plain", corruptions_per_organ=0)
    folder = _train(teacher_cv, "SupervisedTrainer", output=tmp_path / "extra", corruptions_per_organ=0,
                    extra_teachers=[(str(teacher_cv.dataset.id), "QCEarlierTeacher", teacher_cv.plans)])
    read = lambda f: list(csv.DictReader(open(f / "features.csv")))
    base, rows = read(plain), read(folder)
    tag = f"oof:{other.parent.name}/{other.name}"
    extra = [r for r in rows if r["source"] == tag]
    assert len(extra) == len(base) and all(r["real"] == "0" for r in extra)
    # the same predictions: the same IoU, case by case and organ by organ
    assert sorted((r["case"], r["organ"], r["iou"]) for r in extra) == sorted((r["case"], r["organ"], r["iou"]) for r in base)
    info = json.loads((folder / "features.json").read_text())["training"]
    assert info["extra_teachers"] == [{"model": str(other), "cases": len({r["case"] for r in base}), "rows": len(base)}]
    # the classifier is still judged on the teacher's own out-of-fold rows only
    report = json.loads((folder / "evaluation" / "report.json").read_text())
    real_n = {organ: m["classifier"]["n"] for organ, m in report["metrics"]["real"].items()}
    assert real_n == {**{o: sum(r["organ"] == o for r in base) for o in {r["organ"] for r in base}}, "overall": len(base)}
    assert np.isfinite([float(r["iou"]) for r in extra]).all()
    with pytest.raises(SystemExit):
        main(["qc", "train", "-d", "1", "-c", "3d_fullres", "--extra-teacher", "1:SupervisedTrainer"])


def test_no_cross_validation_outputs(teacher_cv, folders_env):
    with pytest.raises(MedakaError, match=r"no cross-validation outputs.*nnUNetv2_train 901 3d_fullres FOLD"):
        _train(teacher_cv, "NoSuchTrainer")


def test_fold_missing(teacher_cv, folders_env):
    _copy_teacher(teacher_cv, "QCMissingFold", folds=(0,))
    with pytest.raises(MedakaError, match=r"fold 1 missing.*nnUNetv2_train 901 3d_fullres 1 -tr QCMissingFold"):
        _train(teacher_cv, "QCMissingFold")


def test_trained_without_npz(teacher_cv, folders_env, tmp_path):
    target = _copy_teacher(teacher_cv, "QCNoNpz")
    for npz in (target / "fold_1" / "validation").glob("*.npz"):
        npz.unlink()
    out = tmp_path / "quality"
    with pytest.raises(MedakaError, match=r"without --npz.*--npz --val"):
        _train(teacher_cv, "QCNoNpz", output=out)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written


def test_label_sets_differ(teacher_cv, folders_env, tmp_path):
    target = _copy_teacher(teacher_cv, "QCOtherLabels")
    dj = json.loads((target / "dataset.json").read_text())
    dj["labels"] = {"background": 0, "sphere": 1, "box": 2, "tail": 3}
    (target / "dataset.json").write_text(json.dumps(dj))
    with pytest.raises(MedakaError, match="label sets differ"):
        _train(teacher_cv, "QCOtherLabels", output=tmp_path / "quality")
    assert not (tmp_path / "quality").exists()


def test_predictions_without_images(quality_folder, teacher_cv, tmp_path):
    from nnunet_medaka.quality.commands import score_predictions

    (tmp_path / "images").mkdir()
    out = tmp_path / "scores.csv"
    with pytest.raises(MedakaError, match=r"predictions without images.*_0000\.nii\.gz.*-i"):
        score_predictions(quality_folder, teacher_cv.model_folder / "fold_0" / "validation", tmp_path / "images", out,
                          progress=False)
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedakaError, match="no .npz probabilities.*--save_probabilities"):
        score_predictions(quality_folder, tmp_path / "empty", tmp_path / "images", out, progress=False)


def test_quality_model_for_other_organs_or_teacher(quality_folder, teacher_cv, tmp_path):
    from nnunet_medaka.quality.commands import score_predictions

    model = load_quality_model(quality_folder)
    with pytest.raises(MedakaError, match="trained for organs"):
        check_compatible(model, labels={"background": 0, "liver": 1})
    with pytest.raises(MedakaError, match="probability channels"):
        score_case(model, np.zeros((1, 4, 4, 4)), np.full((4, 4, 4, 4), 0.25))
    predictions = tmp_path / "pred"
    shutil.copytree(teacher_cv.model_folder / "fold_0" / "validation", predictions)
    plans = json.loads((teacher_cv.model_folder / "plans.json").read_text())
    plans["dataset_name"] = "Dataset999_OtherFish"
    (predictions / "plans.json").write_text(json.dumps(plans))
    out = tmp_path / "scores.csv"
    with pytest.raises(MedakaError, match=r"teacher dataset=.*Dataset999_OtherFish.*qc train"):
        score_predictions(quality_folder, predictions, teacher_cv.dataset.raw / "imagesTr", out, progress=False)
    assert not out.exists()
    with pytest.raises(MedakaError, match="no quality model"):
        load_quality_model(tmp_path)
