"""`nnunet-medaka env` and `doctor`, checked against nnU-Net's own trainer lookup."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_checked, tool
from nnunet_medaka import ext_trainer_dir
from nnunet_medaka import doctor
from nnunet_medaka.environment import merged_ext_trainer


def test_trainer_folder_holds_only_reexports():
    folder = ext_trainer_dir()
    assert (folder / "nnunet_medaka_trainers.py").is_file()
    text = (folder / "nnunet_medaka_trainers.py").read_text()
    assert "class " not in text  # classes live in the package, so they stay importable and picklable


def test_merge_keeps_other_entries_once():
    ours = str(ext_trainer_dir())
    assert merged_ext_trainer(None) == ours
    assert merged_ext_trainer(f"/x{os.pathsep}{ours}{os.pathsep}/y") == os.pathsep.join([ours, "/x", "/y"])


def test_env_output_evaluates_in_bash(tmp_path):
    script = f'export nnUNet_extTrainer=/elsewhere; eval "$({tool("nnunet-medaka")} env --root {tmp_path})"; ' \
             'echo "$nnUNet_extTrainer|$nnUNet_results"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"{ext_trainer_dir()}{os.pathsep}/elsewhere|{tmp_path.resolve()}/nnUNet_results"
    assert (tmp_path / "nnUNet_raw").is_dir()


@pytest.fixture
def good_env(monkeypatch, tmp_path):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("nnUNet_extTrainer", str(ext_trainer_dir()))
    return tmp_path


def _by_name(checks):
    return {c.name: c for c in checks}


def test_doctor_passes_in_a_good_environment(good_env):
    checks = doctor.run_checks()
    assert all(c.ok for c in checks if c.required), [c for c in checks if not c.ok]
    assert _by_name(checks)["-tr SupervisedTrainer"].detail.startswith("nnunet_medaka.")


def test_doctor_missing_ext_trainer(good_env, monkeypatch):
    monkeypatch.delenv("nnUNet_extTrainer")
    checks = _by_name(doctor.run_checks(trainers=("SupervisedTrainer",)))
    assert not checks["nnUNet_extTrainer"].ok and checks["nnUNet_extTrainer"].fix == 'eval "$(nnunet-medaka env)"'
    assert not checks["-tr SupervisedTrainer"].ok


def test_doctor_broken_module_on_ext_path(good_env, monkeypatch, tmp_path):
    bad = tmp_path / "bad_trainers"
    bad.mkdir()
    (bad / "aaa_broken.py").write_text("raise ValueError('boom')\n")
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(bad), str(ext_trainer_dir())]))
    check = _by_name(doctor.run_checks(trainers=("SupervisedTrainer",)))["-tr SupervisedTrainer"]
    assert not check.ok and "crashed: ValueError: boom" in check.detail and "imports every file" in check.fix


def test_doctor_shadowing_trainer(good_env, monkeypatch, tmp_path):
    other = tmp_path / "other_trainers"
    other.mkdir()
    (other / "zz_shadow.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class SupervisedTrainer(nnUNetTrainer):\n    pass\n")
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(other), str(ext_trainer_dir())]))
    check = _by_name(doctor.run_checks(trainers=("SupervisedTrainer",)))["-tr SupervisedTrainer"]
    assert not check.ok and "different SupervisedTrainer" in check.detail


@pytest.mark.parametrize("problem", ["unset", "missing"])
def test_doctor_nnunet_folders(good_env, monkeypatch, problem):
    if problem == "unset":
        monkeypatch.delenv("nnUNet_results")
    else:
        monkeypatch.setenv("nnUNet_results", str(good_env / "nope"))
    check = _by_name(doctor.run_checks(trainers=()))["nnUNet_results"]
    assert not check.ok and ("not set" if problem == "unset" else "no such folder") in check.detail


def test_doctor_old_nnunet(good_env, monkeypatch):
    monkeypatch.setattr(doctor.metadata, "version", lambda name: "2.5.1")
    check = _by_name(doctor.run_checks(trainers=()))["nnunetv2"]
    assert not check.ok and "2.8.1" in check.fix


def test_doctor_torchvision_mismatch(good_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision.ops", None)  # what a mismatched torchvision looks like: ops fail
    check = _by_name(doctor.run_checks(trainers=()))["torch + torchvision"]
    assert not check.ok and "torchvision==0.29.1" in check.fix


def test_doctor_cuda_is_a_note_not_a_failure(good_env):
    check = _by_name(doctor.run_checks(trainers=()))["CUDA"]
    assert not check.required


def test_stock_command_without_env_fails_and_doctor_says_how(tiny_dataset, nnunet_env):
    env = dict(nnunet_env)
    env.pop("nnUNet_extTrainer")
    proc = subprocess.run([tool("nnUNetv2_train"), str(tiny_dataset.id), "3d_fullres", "0", "-tr", "SupervisedTrainer",
                           "-p", tiny_dataset.plans, "-device", "cpu"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "Could not find requested nnunet trainer SupervisedTrainer" in proc.stderr
    proc = subprocess.run([tool("nnunet-medaka"), "doctor", "-q"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines()[-1] == 'fix: eval "$(nnunet-medaka env)"'


def test_installed_wheel_layout(trained_teacher, tiny_dataset, nnunet_env, tmp_path):
    """A non-editable install ships trainers/ inside the package; stock prediction finds the trainer there."""
    repo = Path(__file__).resolve().parents[1]
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    run_checked([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, repo],
                nnunet_env)
    run_checked([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site,
                 next(wheels.glob("*.whl"))], nnunet_env)
    env = dict(nnunet_env, PYTHONPATH=str(site))
    env.pop("nnUNet_extTrainer")
    # cwd away from the checkout, or `python -c` would import the source tree instead of the install
    folder = run_checked([sys.executable, "-c", "import nnunet_medaka as m; print(m.ext_trainer_dir())"], env,
                         cwd=tmp_path).stdout
    assert folder.strip() == str(site / "nnunet_medaka" / "trainers")
    env["nnUNet_extTrainer"] = folder.strip()
    out = tmp_path / "pred"
    run_checked([tool("nnUNetv2_predict"), "-i", tiny_dataset.raw / "imagesTr", "-o", out, "-d", tiny_dataset.id,
                 "-c", tiny_dataset.configuration, "-tr", "SupervisedTrainer", "-p", tiny_dataset.plans, "-f", "0",
                 "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"], env, cwd=tmp_path)
    assert len(list(out.glob("*.nii.gz"))) == 6


def test_predictors_built_side_by_side_take_turns_in_nnunets_class_search(trained_teacher, nnunet_env, monkeypatch):
    """Experiment units run in threads of one process; nnU-Net's trainer lookup edits sys.modules, and two
    pseudolabel steps building their predictors at once crashed ("dictionary changed size during iteration")."""
    import threading
    import time

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_medaka.environment import nnunet_predictor

    monkeypatch.setenv("nnUNet_results", nnunet_env["nnUNet_results"])
    inside, most = [0], [0]
    original = nnUNetPredictor.initialize_from_trained_model_folder

    def counted(self, *args, **kwargs):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.2)  # long enough for the other threads to arrive
        try:
            return original(self, *args, **kwargs)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(nnUNetPredictor, "initialize_from_trained_model_folder", counted)
    built, errors = [], []

    def build():
        try:
            built.append(nnunet_predictor(trained_teacher, [0], "checkpoint_final.pth", device=torch.device("cpu"),
                                          mirroring=False))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(built) == 3 and most[0] == 1
    assert all(p.network is not None for p in built)
