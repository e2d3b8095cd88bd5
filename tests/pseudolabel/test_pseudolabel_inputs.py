"""Bad input to `pseudolabel` and `build-student`: a clear error before any work, naming the file or option."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import STUDENT_ID, STUDENT_NAME, environ, make_quality_model, write_unlabeled
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pseudolabel.predict import pseudolabel
from nnunet_medaka.pseudolabel.student import build_student


@pytest.fixture
def env(nnunet_env):
    with environ(nnunet_env):
        yield nnunet_env


def refused(tmp_path, teacher, images, match, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(MedakaError, match=match) as e:
        pseudolabel(teacher, images, out, folds=kwargs.pop("folds", [0]), device="cpu", progress=False, **kwargs)
    assert not out.exists(), "work was done before the error"
    return str(e.value)


def test_teacher_folder_fold_and_checkpoint_missing(env, trained_teacher, unlabeled, tmp_path):
    images, _ = unlabeled
    refused(tmp_path, tmp_path / "nope", images, "no such folder")
    message = refused(tmp_path, trained_teacher, images, "fold_3", folds=[3])
    assert "available: fold_0" in message
    refused(tmp_path, trained_teacher, images, "checkpoint_best_x.pth", checkpoint="checkpoint_best_x.pth")


def test_images_with_other_channels_or_ending(env, trained_teacher, unlabeled, tmp_path):
    images, _ = unlabeled
    extra = tmp_path / "two_channels"
    shutil.copytree(images, extra)
    shutil.copy(extra / "u_000_0000.nii.gz", extra / "u_000_0001.nii.gz")
    refused(tmp_path, trained_teacher, extra, r"u_000 has channels \[0, 1\]")
    nrrd = tmp_path / "nrrd"
    nrrd.mkdir()
    (nrrd / "u_000_0000.nrrd").write_bytes(b"x")
    refused(tmp_path, trained_teacher, nrrd, r"file_ending '\.nii\.gz'")
    dataset = tmp_path / "raw"
    shutil.copytree(images, dataset / "imagesUnlabeled")
    (dataset / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {}, "numTraining": 0,
                                                      "file_ending": ".nii.gz", "unlabeled_images": "imagesUnlabeled"}))
    refused(tmp_path, trained_teacher, dataset, "channel_names")


def test_empty_folder_and_colliding_case_ids(env, trained_teacher, tmp_path):
    (tmp_path / "empty").mkdir()
    refused(tmp_path, trained_teacher, tmp_path / "empty", "nothing to pseudo-label")
    images, _ = write_unlabeled(tmp_path / "clash", n=1, prefix="case")  # case_000: a labeled case of the teacher
    refused(tmp_path, trained_teacher, images, r"case ids \['case_000'\] are also labeled cases")


def test_filtering_without_quality_model_and_wrong_quality_models(env, trained_teacher, unlabeled, tmp_path):
    images, _ = unlabeled
    refused(tmp_path, trained_teacher, images, "--acceptance organ filters .* none was given", acceptance="organ")
    other_organs = make_quality_model(tmp_path / "q1", trained_teacher, labels={"liver": 1, "gut": 2})
    refused(tmp_path, trained_teacher, images, "trained for organs", quality_model=other_organs)
    other_teacher = make_quality_model(tmp_path / "q2", trained_teacher, trainer="nnUNetTrainer")
    refused(tmp_path, trained_teacher, images, "trained for teacher trainer='nnUNetTrainer'", quality_model=other_teacher)


def test_output_of_another_run_is_not_mixed(env, trained_teacher, unlabeled, pseudo_none, tmp_path):
    images, _ = unlabeled
    copy = tmp_path / "copy"
    shutil.copytree(pseudo_none, copy)
    with pytest.raises(MedakaError, match="other settings .*acceptance"):
        pseudolabel(trained_teacher, images, copy, folds=[0], device="cpu", progress=False, acceptance="organ",
                    quality_model=make_quality_model(tmp_path / "q", trained_teacher))


def test_quality_model_scores_reach_the_table(env, trained_teacher, unlabeled, tmp_path):
    import csv

    from nnunet_medaka.cli import main

    images, _ = unlabeled
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(images / "u_000_0000.nii.gz", one)
    model = make_quality_model(tmp_path / "q", trained_teacher, good=("sphere",))
    assert main(["pseudolabel", "-m", str(trained_teacher), "-i", str(one), "-o", str(tmp_path / "out"), "-q",
                 str(model), "--disable-tta", "-device", "cpu", "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "pseudolabels.csv").open()))
    assert {(r["organ"], r["predicted_iou"], r["p_good"], r["decision"], r["case_decision"]) for r in rows} == {
        ("sphere", "0.900000", "1.000000", "accept", "reject"), ("box", "0.200000", "0.000000", "reject", "reject")}
    with pytest.raises(MedakaError, match="no pseudo-label was accepted"):  # default acceptance case: all dropped
        build_student(tmp_path / "out", 903, "Nothing")


def test_build_student_refuses_existing_target_and_unfinished_runs(env, student_build, pseudo_organ, pseudo_none, tmp_path):
    out, _ = pseudo_organ
    with pytest.raises(MedakaError, match="already exists; pass --overwrite"):
        build_student(out, STUDENT_ID, STUDENT_NAME)
    with pytest.raises(MedakaError, match="already used by"):
        build_student(out, STUDENT_ID, "OtherName")
    with pytest.raises(MedakaError, match="is the teacher's dataset"):
        build_student(out, 901, "Again")
    partial = tmp_path / "partial"
    shutil.copytree(pseudo_none, partial)
    (partial / "pseudolabels.csv").unlink()
    with pytest.raises(MedakaError, match="pseudolabel-merge"):
        build_student(partial, 904, "Unfinished")
