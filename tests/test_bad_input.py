"""Bad input as a new user makes it: one clear error naming the file or key and the fix, exit 2, nothing left behind.

Each test is one cause; the settings of run/experiment are in tests/pipeline/test_bad_settings.py."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import LABELS, make_raw_dataset, tool, write_nifti
from nnunet_medaka.environment import plugin_environ
from nnunet_medaka.errors import MedakaError


@pytest.fixture
def env(tmp_path) -> dict:
    env = plugin_environ(root=tmp_path / "nn")
    env.pop("nnunet_medaka_config", None)
    return env


def cli(args, env) -> subprocess.CompletedProcess:
    return subprocess.run([tool("nnunet-medaka"), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


def one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with exit 2 and one error line (no traceback) that holds every needle."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    assert all(n in errors[0] for n in needles), errors[0]
    return errors[0]


def test_convert_into_an_out_dir_that_is_a_file(env, tmp_path):
    msd = tmp_path / "msd"
    for sub in ("imagesTr", "labelsTr"):
        (msd / sub).mkdir(parents=True)
    write_nifti(msd / "imagesTr" / "c0.nii.gz", np.zeros((8, 8, 8), np.float32))
    write_nifti(msd / "labelsTr" / "c0.nii.gz", np.ones((8, 8, 8), np.uint8))
    a_file = tmp_path / "out"
    a_file.write_text("user data")
    one_error(cli(["convert", "msd", msd, "-d", 5, "-n", "X", "--labels", "sphere=1", "--channel-name", "MRI",
                   "--out-dir", a_file], env), str(a_file), "is a file")
    assert a_file.read_text() == "user data" and sorted(os.listdir(tmp_path)) == ["msd", "nn", "out"]


def test_split_with_a_negative_seed(env):
    make_raw_dataset(Path(env["nnUNet_raw"]), 961, "SplitSource", n_cases=4)
    one_error(cli(["split", 961, "-d", 962, "-n", "S", "--labeled", 2, "--test", 1, "--seed", -5], env),
              "--seed -5", "whole number >= 0")
    assert sorted(os.listdir(env["nnUNet_raw"])) == ["Dataset961_SplitSource"]


def test_config_file_variable_pointing_at_a_folder_leaves_nothing(env, tmp_path):
    (Path(env["nnUNet_preprocessed"]) / "Dataset963_C").mkdir()
    folder = tmp_path / "a_folder"
    folder.mkdir()
    one_error(cli(["config", "-d", 963, "--set", "num_epochs=5"], {**env, "nnunet_medaka_config": str(folder)}),
              str(folder), "is a folder", "nnunet_medaka_config")
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == ["a_folder", "nn"]


@pytest.mark.parametrize("assignment, needle", [("kd_weight=1e999", "kd_weight"),
                                                 ("teacher=/no/such/model", "/no/such/model: no such folder")])
def test_config_refuses_what_training_would_refuse(env, assignment, needle):
    pre = Path(env["nnUNet_preprocessed"]) / "Dataset964_C"
    pre.mkdir()
    one_error(cli(["config", "-d", 964, "--set", assignment], env), needle)
    assert not (pre / "nnunet_medaka.json").exists()


def test_a_truncated_npz_is_named(tmp_path):
    from nnunet_medaka.quality.table import read_probabilities

    npz = tmp_path / "case_000.npz"
    np.savez_compressed(npz, probabilities=np.random.default_rng(0).random((3, 8, 8, 8)).astype(np.float32))
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(MedakaError, match=r"case_000.npz: not a readable .npz, truncated or corrupt.*--npz"):
        read_probabilities(npz)


@pytest.mark.parametrize("kwargs, message", [({"cv_folds": 1}, r"--cv-folds 1: expected a whole number >= 2"),
                                             ({"tau": 2}, r"--tau 2: expected an IoU threshold strictly between 0 and 1")])
def test_qc_evaluate_checks_its_options_as_qc_train_does(tmp_path, kwargs, message):
    from nnunet_medaka.quality.commands import evaluate_quality

    with pytest.raises(MedakaError, match=message):
        evaluate_quality(tmp_path / "quality", **kwargs)
    assert not (tmp_path / "quality").exists()


def test_a_truncated_nifti_is_refused_not_read_zero_filled(tmp_path):
    from nnunet_medaka.files import check_complete

    image = tmp_path / "u_000_0000.nii.gz"
    write_nifti(image, np.random.default_rng(1).random((20, 20, 20)).astype(np.float32))
    check_complete(image)  # complete: fine
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    with pytest.raises(MedakaError, match=r"u_000_0000.nii.gz: truncated or corrupt"):
        check_complete(image)
    assert gzip.decompress(data)  # the helper reads what a gzip reader reads


def test_build_student_refuses_a_table_case_without_a_record(tmp_path):
    from nnunet_medaka.pseudolabel.student import build_student

    pl = tmp_path / "pl"
    for sub in ("labels", "records", "failures", "runs"):
        (pl / sub).mkdir(parents=True)
    (pl / "pseudolabel_settings.json").write_text(json.dumps({
        "format": "nnunet-medaka-pseudolabels", "teacher": {}, "labels": LABELS, "file_ending": ".nii.gz",
        "cases": ["u0"], "acceptance": "none"}))
    (pl / "pseudolabels.csv").write_text("case,organ,label,voxels,predicted_iou,p_good,decision,case_decision,true_iou\n"
                                         "u0,sphere,1,10,,,accept,accept,\n")
    with pytest.raises(MedakaError, match=r"pseudolabels.csv: lists 1 case\(s\) without a record in records/ \(e.g. u0\)"):
        build_student(pl, 965, "Student")


def test_sigterm_inside_a_staged_folder_leaves_nothing(tmp_path):
    """The CLI turns SIGTERM into an unwinding exception, so a staging folder is removed on the way out."""
    code = (f"import os, signal, sys\n"
            f"from nnunet_medaka.cli import install_sigterm_handler\n"
            f"from nnunet_medaka.files import staged_folder\n"
            f"install_sigterm_handler()\n"
            f"try:\n"
            f"    with staged_folder({str(tmp_path / 'Dataset966_X')!r}) as s:\n"
            f"        (s / 'half.txt').write_text('x')\n"
            f"        os.kill(os.getpid(), signal.SIGTERM)\n"
            f"except KeyboardInterrupt:\n"
            f"    sys.exit(130)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert os.listdir(tmp_path) == []


def test_sigterm_ends_forked_workers_as_its_default_does():
    """nnU-Net's pools fork workers from the plugin's process and end them with SIGTERM at shutdown: a worker that
    unwound like the parent could die holding the pool's queue lock and hang the shutdown (it hung an experiment's
    quality stage). Forked processes die by the signal, the parent still unwinds."""
    code = ("import multiprocessing, os, signal, sys, time\n"
            "from nnunet_medaka.cli import install_sigterm_handler\n"
            "install_sigterm_handler()\n"
            "child = multiprocessing.get_context('fork').Process(target=time.sleep, args=(30,))\n"
            "child.start()\n"
            "time.sleep(0.5)\n"
            "os.kill(child.pid, signal.SIGTERM)\n"
            "child.join(20)\n"
            "print(child.exitcode)\n"
            "for _ in range(5):  # the pool nnU-Net uses to list a dataset's files, ended by terminate() each time\n"
            "    with multiprocessing.get_context('fork').Pool(4) as pool:\n"
            "        assert pool.map(abs, range(-8, 0)) == list(range(8, 0, -1))\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(5)\n"
            "except KeyboardInterrupt:\n"
            "    sys.exit(130)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stdout.split() == [str(-signal.SIGTERM)]
    assert "KeyboardInterrupt" not in proc.stderr  # no worker unwound


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    from nnunet_medaka.files import staged_folder

    dead = tmp_path / ".Dataset967_X.partial-999999999"  # no such process
    dead.mkdir()
    (dead / "half.nii.gz").write_text("x")
    with staged_folder(tmp_path / "Dataset967_X") as staging:
        (staging / "dataset.json").write_text("{}")
    assert sorted(os.listdir(tmp_path)) == ["Dataset967_X"]


# ---- messages that name the real cause ---------------------------------------------------------------------------
def _msd(folder: Path, images: dict, labels=("c0",)) -> Path:
    (folder / "imagesTr").mkdir(parents=True)
    for name in images:
        write_nifti(folder / "imagesTr" / name, np.zeros((8, 8, 8), np.float32))
    if labels is not None:
        (folder / "labelsTr").mkdir()
        for case in labels:
            write_nifti(folder / "labelsTr" / f"{case}.nii.gz", np.ones((8, 8, 8), np.uint8))
    return folder


@pytest.mark.parametrize("make, needles", [
    (lambda t: t / "no_such_source", ["no_such_source: no such folder"]),
    (lambda t: _msd(t / "m", {"c0.nii.gz": 0, "c1.mha": 0}, labels=("c0", "c1")),
     ["no image c1.nii.gz", "c1.mha is there", "convert it to NIfTI"]),
    (lambda t: _msd(t / "m", {"c0.nii.gz": 0}, labels=None), ["labelsTr: folder missing"]),
])
def test_convert_names_the_real_cause(env, tmp_path, make, needles):
    source = make(tmp_path)
    kind = "microct" if "no_such" in source.name else "msd"
    args = ["convert", kind, source, "-d", 6, "-n", "X", *(["--labels", "a=1", "--channel-name", "MRI"]
                                                          if kind == "msd" else [])]
    one_error(cli(args, env), *needles)
    assert not list(Path(env["nnUNet_raw"]).iterdir())


def test_an_explicit_first_id_never_wraps_past_999():
    from nnunet_medaka.conversion.raw_dataset import free_dataset_ids

    assert free_dataset_ids(3, 998, {999}, fix="f") == [998, 1, 2]  # the default start wraps, as documented
    with pytest.raises(MedakaError, match=r"5 dataset id\(s\) needed, 2 free in 997-999; pass a lower --first-id"):
        free_dataset_ids(5, 997, {999}, fix="pass a lower --first-id", wrap=False)


def test_qc_train_names_the_teachers_the_dataset_has(env, monkeypatch):
    from nnunet_medaka.quality.table import find_teacher_cv

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    pre = Path(env["nnUNet_preprocessed"]) / "Dataset970_Q"
    pre.mkdir()
    (pre / "splits_final.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}, {"train": ["b"], "val": ["a"]}]))
    with pytest.raises(MedakaError, match=r"for every fold \(FOLD = 0 1\)"):
        find_teacher_cv("970", "2d")
    (Path(env["nnUNet_results"]) / "Dataset970_Q" / "SupervisedTrainer__nnUNetPlansQuick__2d").mkdir(parents=True)
    with pytest.raises(MedakaError, match=r"FOLD = 0 1\), or pass the trainer \(-tr\) and plans \(-p\) of a teacher this "
                                          r"dataset has: SupervisedTrainer__nnUNetPlansQuick__2d"):
        find_teacher_cv("970", "2d")


def test_doctor_on_an_nnunet_path_that_is_a_file(env, tmp_path):
    a_file = tmp_path / "results_file"
    a_file.write_text("x")
    proc = cli(["doctor"], {**env, "nnUNet_results": str(a_file)})
    assert proc.returncode == 1 and "is a file, not a folder" in proc.stdout + proc.stderr
    assert f"mkdir -p {a_file}" not in proc.stdout + proc.stderr


def test_split_of_a_split_dataset_says_its_test_cases_stay_out(env, caplog, monkeypatch):
    from nnunet_medaka.conversion.split import split_dataset

    monkeypatch.setenv("nnUNet_raw", env["nnUNet_raw"])
    source = make_raw_dataset(Path(env["nnUNet_raw"]), 971, "SplitTwice", n_cases=8)
    first = split_dataset(source, dataset_id=972, dataset_name="Once", n_labeled=3, n_test=2, seed=0)
    with caplog.at_level("WARNING"):
        split_dataset(first, dataset_id=973, dataset_name="Twice", n_labeled=2, n_test=1, seed=0)
    assert "its 2 test image(s) in imagesTs/ are not part of the new split" in caplog.text


def test_an_organ_without_voxels_is_warned_about(tmp_path, caplog):
    import tifffile

    from nnunet_medaka.conversion.convert import convert_microct
    from nnunet_medaka.conversion.phantom import make_phantoms

    phantoms = make_phantoms(tmp_path / "ph", n_labeled=2, n_unlabeled=0, seed=0, size=40)
    mask = sorted((Path(phantoms["root"]) / "masks").rglob("*_heart.tif"))[0]
    tifffile.imwrite(mask, np.zeros_like(tifffile.imread(mask)))
    with caplog.at_level("WARNING"):
        convert_microct(phantoms["root"], dataset_id=974, dataset_name="EmptyHeart", organs=phantoms["organs_file"],
                        out_dir=tmp_path / "raw")
    assert f"organ heart has no voxels ({mask})" in caplog.text


def test_export_plain_names_a_truncated_checkpoint(trained_teacher, tmp_path, nnunet_env):
    """A truncated checkpoint_final.pth is named with the fix, instead of torch's traceback; nothing is exported."""
    import shutil

    model = tmp_path / "SupervisedTrainer__copy"
    shutil.copytree(trained_teacher, model)
    checkpoint = model / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    out = tmp_path / "plain"
    one_error(cli(["export-plain", model, out], nnunet_env), str(checkpoint), "truncated or corrupt")
    assert not out.exists()
