"""KDTrainer through the stock nnU-Net commands, the teacher safety checks, export-plain and DDP on CPU (gloo)."""
import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from helpers import run_checked, tool
from nnunet_medaka.config import MedakaConfig, validate_config
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.training.export import export_plain
from nnunet_medaka.training.teacher import TeacherRuntime, dry_run, load_teacher
from nnunet_medaka.training.teacher_files import locate_teacher, sha256_file, verify_compatibility

KD_TRAINER_DIR = "KDTrainer__{plans}__{configuration}"
KD_SCHEDULE = {"num_epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "mirroring": False}
HERE = Path(__file__).resolve().parent


def write_config(path: Path, **values) -> Path:
    path.write_text(json.dumps(values))
    return path


def train_cmd(dataset, fold="0", *extra):
    return [tool("nnUNetv2_train"), dataset.id, dataset.configuration, fold, "-tr", "KDTrainer", "-p", dataset.plans,
            "-device", "cpu", *extra]


@pytest.fixture(scope="module")
def kd_student(tiny_dataset, trained_teacher, nnunet_env, tmp_path_factory):
    """A KD student trained for one tiny epoch by stock `nnUNetv2_train -tr KDTrainer`; returns (folder, env, config)."""
    config = tmp_path_factory.mktemp("kdcfg") / "kd.json"
    env = dict(nnunet_env, nnunet_medaka_config=str(config))
    settings = dict(KD_SCHEDULE, teacher=str(trained_teacher), teacher_folds=[0], kd_temperature=2, kd_weight=1,
                    kd_scope="all", kd_scales="all")
    run_checked([tool("nnunet-medaka"), "config", "-d", tiny_dataset.id,
                 *[f"--set={k}={json.dumps(v)}" for k, v in settings.items()]], env)
    assert json.loads(config.read_text())["teacher"] == str(trained_teacher)
    run_checked(train_cmd(tiny_dataset), env, timeout=900)
    folder = (Path(nnunet_env["nnUNet_results"]) / tiny_dataset.name
              / KD_TRAINER_DIR.format(plans=tiny_dataset.plans, configuration=tiny_dataset.configuration))
    return folder, env, config


@pytest.fixture(scope="module")
def teacher_files(trained_teacher):
    return locate_teacher(trained_teacher, [0], "checkpoint_final.pth")


@pytest.fixture(scope="module")
def student(tiny_dataset):
    """The student's plans dict and dataset.json (same dataset and plans as the teacher)."""
    plans = json.loads((tiny_dataset.preprocessed / f"{tiny_dataset.plans}.json").read_text())
    dataset_json = json.loads((tiny_dataset.preprocessed / "dataset.json").read_text())
    return plans, dataset_json


def verify(teacher_files, plans, dataset_json, configuration="3d_fullres"):
    verify_compatibility(teacher_files, "3d_fullres", student_plans=plans, student_configuration=configuration,
                         student_dataset_json=dataset_json)


# ---------------------------------------------------------------- end to end through the stock commands
def test_stock_kd_training_logs_terms_and_records_teacher(kd_student, trained_teacher):
    folder, _, config = kd_student
    fold = folder / "fold_0"
    settings = json.loads((fold / "nnunet_medaka_resolved_config.json").read_text())
    assert settings["trainer"] == "KDTrainer" and settings["config_file"] == str(config)
    teacher_ckpt = trained_teacher / "fold_0" / "checkpoint_final.pth"
    assert settings["teacher"]["checkpoints"] == [
        {"fold": 0, "path": str(teacher_ckpt), "sha256": hashlib.sha256(teacher_ckpt.read_bytes()).hexdigest()}]
    assert settings["teacher"]["runtime"]["precision"] == "fp32"  # CPU: fp32, eager
    log = "\n".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    for line in ("KD teacher: SupervisedTrainer", "train_loss_supervised", "train_loss_kd", settings["teacher"]["checkpoints"][0]["sha256"]):
        assert line in log
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    teacher_ckpt_keys = torch.load(teacher_ckpt, map_location="cpu", weights_only=False)["network_weights"].keys()
    assert ckpt["trainer_name"] == "KDTrainer"
    assert ckpt["network_weights"].keys() == teacher_ckpt_keys  # the student only: no teacher weights saved
    logged = ckpt["logging"]
    sup, kd, total = logged["train_loss_supervised"][0], logged["train_loss_kd"][0], logged["train_losses"][0]
    assert np.isfinite(kd) and kd > 0
    assert total == pytest.approx(sup + 1.0 * kd, rel=1e-4)  # kd_weight 1
    # progress.png: nnU-Net's three panels plus, once training ended, the loss-terms panel below them; the panel
    # alone is redrawn every epoch beside it
    import matplotlib.pyplot as plt
    assert plt.imread(fold / "progress.png").shape[0] > 5400
    assert plt.imread(fold / "progress_loss_terms.png").shape[:2] == (400, 960)


def test_continue_reloads_teacher_and_resumes(kd_student, tiny_dataset, trained_teacher):
    folder, env, config = kd_student
    write_config(config, teacher=str(trained_teacher), **dict(KD_SCHEDULE, num_epochs=2))
    logs_before = set((folder / "fold_0").glob("training_log_*.txt"))
    run_checked(train_cmd(tiny_dataset, "0", "--c"), env, timeout=900)
    new_logs = set((folder / "fold_0").glob("training_log_*.txt")) - logs_before
    log = "\n".join(p.read_text() for p in new_logs)
    assert "KD teacher: SupervisedTrainer" in log and "Epoch 1" in log and "Epoch 0" not in log
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 2
    assert len(ckpt["logging"]["train_loss_kd"]) == 2 and all(np.isfinite(ckpt["logging"]["train_loss_kd"]))


def test_narrower_student_distils_from_wider_teacher(tiny_dataset, trained_teacher, nnunet_env, tmp_path):
    """A student of the same plans with half the feature maps per stage trains by stock `-tr KDTrainer -p …W050`
    against the full-width teacher; its checkpoint is the narrower network and predicts through the stock command."""
    from nnunet_medaka.training.plans import width_plans_name, write_width_plans

    narrow = width_plans_name(tiny_dataset.plans, 0.5)
    written = write_width_plans(tiny_dataset.preprocessed, source_plans=tiny_dataset.plans,
                                configuration=tiny_dataset.configuration, width=0.5)
    wide = json.loads((tiny_dataset.preprocessed / f"{tiny_dataset.plans}.json").read_text())
    got = json.loads(written.read_text())
    arch = lambda p: p["configurations"][tiny_dataset.configuration]["architecture"]["arch_kwargs"]
    assert got["plans_name"] == narrow
    assert arch(got)["features_per_stage"] == [max(1, round(f / 2)) for f in arch(wide)["features_per_stage"]]
    assert {k: v for k, v in arch(got).items() if k != "features_per_stage"} == \
        {k: v for k, v in arch(wide).items() if k != "features_per_stage"}
    config = write_config(tmp_path / "kd.json", teacher=str(trained_teacher), teacher_folds=[0], **KD_SCHEDULE)
    env = dict(nnunet_env, nnunet_medaka_config=str(config))
    run_checked([tool("nnUNetv2_train"), tiny_dataset.id, tiny_dataset.configuration, "0", "-tr", "KDTrainer", "-p",
                 narrow, "-device", "cpu"], env, timeout=900)
    fold = (Path(nnunet_env["nnUNet_results"]) / tiny_dataset.name
            / KD_TRAINER_DIR.format(plans=narrow, configuration=tiny_dataset.configuration) / "fold_0")
    student_w = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    teacher_w = torch.load(trained_teacher / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                           weights_only=False)["network_weights"]
    assert student_w.keys() == teacher_w.keys()
    first = next(k for k in teacher_w if k.endswith("conv.weight"))
    assert student_w[first].shape[0] * 2 == teacher_w[first].shape[0]
    assert sum(v.numel() for v in student_w.values()) < sum(v.numel() for v in teacher_w.values()) / 2
    with pytest.raises(MedakaError, match=r"share of the feature maps"):
        write_width_plans(tiny_dataset.preprocessed, source_plans=tiny_dataset.plans,
                          configuration=tiny_dataset.configuration, width=1.5)


@pytest.fixture(scope="module")
def teacherless_root(kd_student, tiny_dataset, tmp_path_factory):
    """A results folder holding only the student (no teacher anywhere in it) and one input image."""
    folder, _, _ = kd_student
    root = tmp_path_factory.mktemp("teacherless")
    shutil.copytree(folder, root / "results" / tiny_dataset.name / folder.name,
                    ignore=shutil.ignore_patterns("validation", "*.png", "training_log_*"))
    (root / "in").mkdir()
    shutil.copy(tiny_dataset.raw / "imagesTr" / "case_003_0000.nii.gz", root / "in")
    return root


def predict_cmd(dataset, root, out, trainer):
    return [tool("nnUNetv2_predict"), "-i", root / "in", "-o", out, "-d", dataset.id, "-c", dataset.configuration,
            "-tr", trainer, "-p", dataset.plans, "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"]


def test_predict_without_teacher(teacherless_root, tiny_dataset, nnunet_env):
    env = dict(nnunet_env, nnUNet_results=str(teacherless_root / "results"))
    run_checked(predict_cmd(tiny_dataset, teacherless_root, teacherless_root / "pred_kd", "KDTrainer"), env)
    assert (teacherless_root / "pred_kd" / "case_003.nii.gz").is_file()


def test_export_plain_predicts_with_stock_trainer(teacherless_root, tiny_dataset, nnunet_env):
    src = teacherless_root / "results" / tiny_dataset.name / KD_TRAINER_DIR.format(
        plans=tiny_dataset.plans, configuration=tiny_dataset.configuration)
    out = teacherless_root / "results" / tiny_dataset.name / f"nnUNetTrainer__{tiny_dataset.plans}__{tiny_dataset.configuration}"
    run_checked([tool("nnunet-medaka"), "export-plain", src, out], nnunet_env)
    assert torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=False)["trainer_name"] == "nnUNetTrainer"
    # plain nnU-Net: no nnUNet_extTrainer, so the plugin cannot be found
    plain_env = {k: v for k, v in nnunet_env.items() if k != "nnUNet_extTrainer"}
    plain_env["nnUNet_results"] = str(teacherless_root / "results")
    run_checked(predict_cmd(tiny_dataset, teacherless_root, teacherless_root / "pred_plain", "nnUNetTrainer"), plain_env)
    if not (teacherless_root / "pred_kd" / "case_003.nii.gz").is_file():  # this test run alone
        test_predict_without_teacher(teacherless_root, tiny_dataset, nnunet_env)
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(teacherless_root / d / "case_003.nii.gz")))
            for d in ("pred_kd", "pred_plain"))
    assert np.array_equal(a, b)


def test_export_plain_refuses_bad_input(trained_teacher, tmp_path):
    with pytest.raises(MedakaError, match="already exists"):
        export_plain(trained_teacher, tmp_path)
    with pytest.raises(MedakaError, match="plans.json: missing"):
        export_plain(tmp_path, tmp_path / "out")


def test_stock_command_refuses_differently_preprocessed_teacher(trained_teacher, tiny_dataset, nnunet_env, tmp_path):
    bad = tmp_path / "SupervisedTrainer__Other__3d_fullres"
    shutil.copytree(trained_teacher, bad, ignore=shutil.ignore_patterns("validation", "*.png", "training_log_*"))
    plans = json.loads((bad / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["spacing"] = [2.0, 1.0, 1.0]
    (bad / "plans.json").write_text(json.dumps(plans))
    config = write_config(tmp_path / "kd.json", teacher=str(bad), **KD_SCHEDULE)
    # fold 1, so that nothing lands in the fold the other tests train
    proc = subprocess.run([str(c) for c in train_cmd(tiny_dataset, "1")], env=dict(nnunet_env, nnunet_medaka_config=str(config)),
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert "MedakaError" in proc.stderr and "preprocessing differs" in proc.stderr
    assert "configuration 'spacing': teacher [2.0, 1.0, 1.0], student [1.0, 1.0, 1.0]" in proc.stderr
    assert "nnUNetv2_move_plans_between_datasets" in proc.stderr
    assert "Epoch 0" not in proc.stdout  # refused before the first step


# ---------------------------------------------------------------- safety checks, one by one
def test_refuses_missing_teacher_folder(tmp_path):
    with pytest.raises(MedakaError, match=r"config key 'teacher' is .*no such folder.*--set teacher="):
        locate_teacher(tmp_path / "nope", [0], "checkpoint_final.pth")


def test_refuses_missing_fold(trained_teacher):
    with pytest.raises(MedakaError, match=r"teacher_folds includes 3, but .*fold_3 does not exist \(available: fold_0\)"):
        locate_teacher(trained_teacher, [0, 3], "checkpoint_final.pth")


def test_refuses_missing_checkpoint(trained_teacher):
    with pytest.raises(MedakaError, match=r"teacher_checkpoint is 'checkpoint_latest.pth'.*fold_0 has: checkpoint_best.pth, "
                                          r"checkpoint_final.pth"):
        locate_teacher(trained_teacher, [0], "checkpoint_latest.pth")


def test_refuses_folder_without_plans(tmp_path):
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(MedakaError, match=r"plans.json is missing"):
        locate_teacher(tmp_path, [0], "checkpoint_final.pth")


def test_accepts_matching_teacher(teacher_files, student):
    verify(teacher_files, *student)


def test_refuses_different_labels(teacher_files, student):
    plans, dataset_json = student
    other = dict(dataset_json, labels={"background": 0, "sphere": 1, "cube": 2})
    with pytest.raises(MedakaError, match=r"dataset.json 'labels' differ: teacher .*\"box\": 2.*student .*\"cube\": 2"):
        verify(teacher_files, plans, other)


def test_accepts_ignore_label_added_in_student(teacher_files, student):
    plans, dataset_json = student
    verify(teacher_files, plans, dict(dataset_json, labels=dict(dataset_json["labels"], ignore=3)))


def test_refuses_different_input_channels(teacher_files, student):
    plans, dataset_json = student
    two = dict(dataset_json, channel_names={"0": "MRI", "1": "MRI"})
    with pytest.raises(MedakaError, match=r"input channels differ: .*takes 1 .*the student gets 2"):
        verify(teacher_files, plans, two)


@pytest.mark.parametrize("field, value", [
    ("spacing", [1.0, 1.0, 1.5]),
    ("normalization_schemes", ["CTNormalization"]),
    ("use_mask_for_norm", [True]),
    ("resampling_fn_data_kwargs", {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}),
])
def test_refuses_different_preprocessing(teacher_files, student, field, value):
    plans, dataset_json = student
    plans = copy.deepcopy(plans)
    plans["configurations"]["3d_fullres"][field] = value
    with pytest.raises(MedakaError, match=rf"preprocessing differs .*configuration '{field}'.*move_plans_between_datasets"):
        verify(teacher_files, plans, dataset_json)


def test_intensity_properties_must_match_when_normalization_reads_them(teacher_files, student):
    plans, dataset_json = student
    shifted = copy.deepcopy(plans)
    shifted["foreground_intensity_properties_per_channel"]["0"]["mean"] += 5.0
    verify(teacher_files, shifted, dataset_json)  # z-score normalisation ignores them: same arrays, accepted
    teacher_ct, student_ct = copy.deepcopy(teacher_files.plans), copy.deepcopy(shifted)
    for p in (teacher_ct, student_ct):
        p["configurations"]["3d_fullres"]["normalization_schemes"] = ["CTNormalization"]
    ct_teacher = type(teacher_files)(teacher_files.folder, teacher_ct, teacher_files.dataset_json, teacher_files.checkpoints)
    with pytest.raises(MedakaError, match=r"foreground_intensity_properties_per_channel'\[0\] \(used by CTNormalization\)"):
        verify(ct_teacher, student_ct, dataset_json)


def test_refuses_patch_size_the_teacher_cannot_process(teacher_files, student):
    plans, dataset_json = student
    plans = copy.deepcopy(plans)
    plans["configurations"]["3d_fullres"]["patch_size"] = [32, 30, 32]
    with pytest.raises(MedakaError, match=r"'patch_size' \[32, 30, 32\] is not a multiple of the teacher network's total "
                                          r"stride \[4, 4, 4\].*e.g. \[32, 32, 32\]"):
        verify(teacher_files, plans, dataset_json)


def test_reports_all_problems_at_once(teacher_files, student):
    plans, dataset_json = student
    plans = copy.deepcopy(plans)
    plans["configurations"]["3d_fullres"]["spacing"] = [3.0, 3.0, 3.0]
    other = dict(dataset_json, labels={"background": 0, "sphere": 1})
    with pytest.raises(MedakaError, match=r"labels' differ.*\|.*spacing"):
        verify(teacher_files, plans, other)


@pytest.mark.parametrize("values, key", [
    ({"kd_temperature": 0}, "kd_temperature"),
    ({"kd_temperature": -1.5}, "kd_temperature"),
    ({"kd_weight": -0.1}, "kd_weight"),
    ({"kd_scope": "labelled"}, "kd_scope"),
    ({"kd_scales": "half"}, "kd_scales"),
    ({"teacher_folds": []}, "teacher_folds"),
    ({"teacher": 5}, "teacher"),
    ({"kd_temprature": 2}, "kd_temprature"),
])
def test_refuses_malformed_kd_config(values, key):
    with pytest.raises(MedakaError, match=rf"key '{key}'.*nnunet-medaka config --set"):
        validate_config(values, source="nnunet_medaka.json")


def test_refuses_unloadable_checkpoint(teacher_files, student, tmp_path):
    bad = tmp_path / "SupervisedTrainer__nnUNetPlansSmall__3d_fullres"
    (bad / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(teacher_files.folder / name, bad / name)
    (bad / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    plans, dataset_json = student
    with pytest.raises(MedakaError, match=r"checkpoint_final.pth cannot be loaded"):
        load_teacher(bad, [0], "checkpoint_final.pth", device=torch.device("cpu"), student_plans=plans,
                     student_configuration="3d_fullres", student_dataset_json=dataset_json)


def test_kdtrainer_without_teacher_refuses_to_initialize(tiny_dataset, student, nnunet_env, monkeypatch, tmp_path):
    plugin_env(monkeypatch, nnunet_env, write_config(tmp_path / "kd.json", **KD_SCHEDULE))
    from nnunet_medaka.training.kd_trainer import KDTrainer

    plans, dataset_json = student
    trainer = KDTrainer(dict(copy.deepcopy(plans), continue_training=False), "3d_fullres", 2, dataset_json,
                        torch.device("cpu"))
    with pytest.raises(MedakaError, match=r"config key 'teacher' is not set.*--set teacher="):
        trainer.initialize()


def plugin_env(monkeypatch, nnunet_env, config: Path) -> None:
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, nnunet_env[key])
    monkeypatch.setenv("nnunet_medaka_config", str(config))


def test_pseudo_scope_distils_only_pseudo_labelled_samples(tiny_dataset, student, trained_teacher, nnunet_env,
                                                          monkeypatch, tmp_path):
    plugin_env(monkeypatch, nnunet_env, write_config(tmp_path / "kd.json", teacher=str(trained_teacher), kd_scope="pseudo",
                                                     **KD_SCHEDULE))
    from nnunet_medaka.training.kd_trainer import PSEUDO_CASES_KEY, KDTrainer

    plans, dataset_json = student
    trainer = KDTrainer(dict(copy.deepcopy(plans), continue_training=False), "3d_fullres", 3,
                        dict(dataset_json, **{PSEUDO_CASES_KEY: ["case_001"]}), torch.device("cpu"))
    trainer.initialize()
    calls = []
    forward = trainer.teacher.ensemble.forward
    monkeypatch.setattr(trainer.teacher.ensemble, "forward", lambda x: calls.append(x.shape) or forward(x))
    g = torch.Generator().manual_seed(0)
    targets = [torch.randint(0, 3, (2, 1, *[int(32 * f) for f in scale]), generator=g, dtype=torch.int16)
               for scale in trainer._get_deep_supervision_scales()]
    batch = {"data": torch.randn(2, 1, 32, 32, 32, generator=g), "target": targets}
    mixed = trainer.train_step(dict(batch, keys=np.array(["case_000", "case_001"])))
    w = trainer.kd_loss.kd_weight  # the config default (0.3), not set here
    assert w == MedakaConfig().kd_weight == 0.3
    assert np.isfinite(mixed["loss_kd"]) and mixed["loss"] == pytest.approx(mixed["loss_supervised"] + w * mixed["loss_kd"],
                                                                            rel=1e-4)
    labelled_only = trainer.train_step(dict(batch, keys=np.array(["case_000", "case_002"])))
    assert np.isnan(labelled_only["loss_kd"]) and labelled_only["loss"] == pytest.approx(labelled_only["loss_supervised"])
    assert len(calls) == 1  # no teacher pass for a batch without pseudo-labelled cases
    settings = json.loads((Path(trainer.output_folder) / "nnunet_medaka_resolved_config.json").read_text())
    assert settings["kd"]["pseudo_cases"] == 1 and settings["config"]["kd_scope"] == "pseudo"


def test_refuses_pseudo_cases_not_in_dataset(tiny_dataset):
    from nnunet_medaka.training.kd_trainer import verify_pseudo_cases

    folder = tiny_dataset.preprocessed / "nnUNetPlans_3d_fullres"
    verify_pseudo_cases(frozenset({"case_001"}), folder)
    with pytest.raises(MedakaError, match=r"lists 1 case\(s\) not in .*case_0O1"):
        verify_pseudo_cases(frozenset({"case_001", "case_0O1"}), folder)


def test_loaded_teacher_is_frozen_and_fits_student_patch(trained_teacher, student, nnunet_env, monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", nnunet_env["nnUNet_extTrainer"])
    plans, dataset_json = student
    teacher = load_teacher(trained_teacher, [0], "checkpoint_final.pth", device=torch.device("cpu"),
                           student_plans=plans, student_configuration="3d_fullres", student_dataset_json=dataset_json,
                           runtime=TeacherRuntime())
    assert not teacher.ensemble.training and not any(p.requires_grad for p in teacher.ensemble.parameters())
    ckpt = trained_teacher / "fold_0" / "checkpoint_final.pth"
    assert teacher.sha256 == {str(ckpt): sha256_file(ckpt)}
    dry_run(teacher, num_input_channels=1, patch_size=[32, 32, 32], num_classes=3, device=torch.device("cpu"))
    with pytest.raises(MedakaError, match=r"returns shape \(1, 3, 32, 32, 32\).*expected \(1, 4, 32, 32, 32\)"):
        dry_run(teacher, num_input_channels=1, patch_size=[32, 32, 32], num_classes=4, device=torch.device("cpu"))


# ---------------------------------------------------------------- DDP semantics on CPU
def test_ddp_one_teacher_per_rank_gloo(trained_teacher, tiny_dataset, nnunet_env):
    """Two gloo ranks, each with its own teacher: KD gradients equal single-process full-batch ones, step in sync."""
    run_checked([sys.executable, HERE / "kd_ddp_check.py", trained_teacher, tiny_dataset.preprocessed / f"{tiny_dataset.plans}.json",
                 tiny_dataset.preprocessed / "dataset.json"], nnunet_env, timeout=300)


# ---------------------------------------------------------------- the benchmark script still runs (not timed)
def test_step_time_benchmark_runs_on_cpu(nnunet_env):
    proc = run_checked([sys.executable, HERE.parents[1] / "benchmarks" / "kd_step_time.py", "--device", "cpu", "--patch", "16",
                        "16", "16", "--classes", "3", "--steps", "1", "--warmup", "0"], nnunet_env, timeout=300)
    report = json.loads(proc.stdout)
    assert report["plain"]["median_ms"] > 0 and report["kd"]["median_ms"] > 0 and report["ratio_median"] > 0
    assert report["kd"]["teacher_runtime"] == {"precision": "fp32", "channels_last": False, "compile": False,
                                               "autocast": False}
