"""``nnunet-medaka run`` end to end on tiny synthetic data, killed with SIGKILL in every stage and resumed.

The run under test is the one ``nnunet-medaka demo`` starts (phantoms -> convert -> split -> ``run``), so this also
covers the main command of the quick start; one tiny run serves both to keep the suite short.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import TINY_RUN, make_raw_dataset, run_checked, tool
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.pipeline.layout import RunLayout

STATE_FILE = RunLayout.STATE

STAGES = ("plan", "teacher", "quality", "pseudolabel", "student-dataset", "student", "evaluate")
ORGANS = {"eyes", "brain", "spinal_cord", "heart", "liver", "gut", "swim_bladder", "kidney", "mean"}


def demo_cmd(work_dir: Path) -> list:
    return [tool("nnunet-medaka"), "demo", "--work-dir", str(work_dir), "--specimens", "7", "--labeled", "3",
            "--test", "2", "--size", "48", "--device", "cpu", *[f"--set={k}={json.dumps(v)}" for k, v in TINY_RUN.items()]]


def run_cmd(dataset, out, *extra):
    return [tool("nnunet-medaka"), "run", str(dataset), "--out", str(out), "--preset", "cpu-demo", "--device", "cpu",
            *[f"--set={k}={json.dumps(v)}" for k, v in TINY_RUN.items()], *extra]


def kill_during(cmd, env, stage: str, at: str = "started") -> str:
    """Run ``cmd`` and let it SIGKILL its own process group (nnU-Net's trainings included) when ``stage`` emits
    ``at`` (an event kind, or text of one of its lines): the engine's kill hook, so the point does not depend on
    the machine's speed."""
    from nnunet_medaka.pipeline.engine import KILL_AT_VAR

    proc = subprocess.run(cmd, env={**env, KILL_AT_VAR: f"{stage}={at}"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True, timeout=1200)
    assert proc.returncode == -signal.SIGKILL, f"not killed in {stage} at {at!r} (exit {proc.returncode}):\n{proc.stdout}"
    return proc.stdout


def state(out: Path) -> dict:
    path = out / STATE_FILE
    return json.loads(path.read_text())["stages"] if path.is_file() else {}


@pytest.mark.slow  # trains or predicts with real nnU-Net
def test_demo_run_survives_sigkill_in_every_stage(nnunet_env, tmp_path):
    work = tmp_path / "demo"
    out = work / "run"
    env = {k: v for k, v in nnunet_env.items() if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    finished_at = {}
    outputs = {}
    teacher_fold0 = work / "nnUNet_results" / "Dataset802_MedakaPhantomFewLabels" / \
        "SupervisedTrainer__nnUNetPlansSmall__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    for i, stage in enumerate(STAGES):
        outputs[stage] = output = kill_during(demo_cmd(work), env, stage,
                                              {"teacher": "fold 1: training", "student": "fold all: training against"}.get(stage, "started"))
        if stage == "teacher":  # cpu-demo trains both folds at once: fold 1 starts before fold 0 has finished
            teacher_lines = output[output.index("] teacher"):]
            assert "fold 1: training (2 folds at a time, 1 thread(s) each)" in teacher_lines and "done in" not in teacher_lines
        records = state(out)
        assert stage not in records, f"{stage} recorded as finished although killed"
        for earlier in STAGES[:i]:  # finished stages are never redone
            assert earlier in records, f"{earlier} lost after the kill in {stage}"
            finished_at.setdefault(earlier, records[earlier]["finished"])
            assert records[earlier]["finished"] == finished_at[earlier], f"{earlier} was redone"
    proc = run_checked(demo_cmd(work), env, timeout=1200)
    records = state(out)
    assert list(records) == list(STAGES)
    for stage in STAGES[:-1]:
        assert records[stage]["finished"] == finished_at[stage]
    assert "resuming the demo" in proc.stdout and "SYNTHETIC phantoms: 3 labeled, 2 unlabeled, 2 test" in proc.stdout
    assert "Mean IoU over organs" in proc.stdout

    summary = json.loads((work / "demo_summary.json").read_text())
    assert summary["data"].startswith("synthetic")
    for role in ("teacher", "supervised", "student"):
        assert set(summary["scores"][role]) == ORGANS
    assert summary["baseline"] in ("teacher", "supervised")
    assert summary["student_minus_baseline_mean_iou"] == pytest.approx(
        summary["scores"]["student"]["mean"]["IoU"] - summary["scores"][summary["baseline"]]["mean"]["IoU"], abs=1e-4)
    # scored as deployed: the teacher as its 2-fold ensemble, the supervised baseline and the student as fold all
    for role, folds in (("teacher", "0 1"), ("supervised", "all"), ("student", "all")):
        command = (out / "logs" / f"predict_{role}.log").read_text().splitlines()[0]
        assert f" -f {folds} -device" in command, command
    # the baseline of equal budget: labeled cases only, from teacher fold 0's weights (cpu-demo: student_init
    # teacher), the same schedule as the student
    baseline_log = next((work / "nnUNet_results" / "Dataset802_MedakaPhantomFewLabels").glob(
        "SupervisedTrainer__*/fold_all/training_log_*.txt")).read_text()
    student_log = next((work / "nnUNet_results").glob("Dataset*Student/KDTrainer__*/fold_all/training_log_*.txt")).read_text()
    assert baseline_log.count("Epoch time") == student_log.count("Epoch time") == TINY_RUN["num_epochs"]
    assert (f"nnUNetv2_train 802 3d_fullres all -tr SupervisedTrainer -p nnUNetPlansSmall -device cpu -pretrained_weights "
            f"{teacher_fold0}") in outputs["student"]
    assert summary["pseudo_labels"]["finished"] == 2
    assert (out / "iou_per_organ.png").stat().st_size > 0 and (out / "overlays.png").stat().st_size > 0
    resolved = json.loads(next((work / "nnUNet_results").glob("Dataset*Student/KDTrainer__*/fold_all/"
                                                             "nnunet_medaka_resolved_config.json")).read_text())
    # the student learns from every case it may use (fold all) against the teacher's fold ensemble
    assert resolved["trainer"] == "KDTrainer" and resolved["config"]["teacher_folds"] == [0, 1]

    # a finished run is not redone; a changed setting redoes its stage and those below it (shown by --dry-run)
    again = run_checked(demo_cmd(work), env, timeout=600)
    assert again.stdout.count("skipped") == len(STAGES)
    demo_env = dict(env, **{v: str(work / v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    dry = run_checked(run_cmd(802, out, "--set=acceptance=\"organ\"", "--dry-run"), demo_env, timeout=300)
    assert "[3/7] quality: finished, would be skipped" in dry.stdout
    assert "[4/7] pseudolabel: would run (its inputs changed" in dry.stdout
    assert "[7/7] evaluate: would run" in dry.stdout
    assert "nnUNetv2_train 802 3d_fullres 0 -tr SupervisedTrainer -p nnUNetPlansSmall -device cpu --npz" in dry.stdout
    assert "nnUNetv2_train 802 3d_fullres 1 -tr SupervisedTrainer -p nnUNetPlansSmall -device cpu --npz" in dry.stdout
    # cpu-demo starts the student from its teacher fold (resumed with --c after the kill, without it);
    # student_init=random changes the student stage only
    assert f"-pretrained_weights {teacher_fold0}" in outputs["student"]
    dry = run_checked(run_cmd(802, out, "--set=student_init=\"random\"", "--dry-run"), demo_env, timeout=300)
    assert "[5/7] student-dataset: finished, would be skipped" in dry.stdout
    assert "[6/7] student: would run (its inputs changed" in dry.stdout
    assert "-pretrained_weights" not in dry.stdout


@pytest.fixture(scope="module")
def run_dataset(nnunet_env) -> int:
    source = make_raw_dataset(Path(nnunet_env["nnUNet_raw"]), 931, "RunSource", n_cases=9, seed=3)
    split_dataset(source, dataset_id=932, dataset_name="RunTiny", n_labeled=4, n_test=3, seed=0,
                  out_dir=nnunet_env["nnUNet_raw"])
    return 932


def test_bad_inputs_give_one_clear_error(run_dataset, nnunet_env, tmp_path):
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    proc = subprocess.run(run_cmd(run_dataset, other), env=nnunet_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not a run folder" in proc.stderr
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]

    labeled_only = make_raw_dataset(Path(nnunet_env["nnUNet_raw"]), 933, "RunNoUnlabeled", n_cases=3)
    proc = subprocess.run(run_cmd(933, tmp_path / "r2"), env=nnunet_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"{labeled_only / 'imagesUnlabeled'}: no unlabeled images" in proc.stderr
    assert "imagesTs: no test images" in proc.stderr
    assert not (tmp_path / "r2").exists()

    proc = subprocess.run(run_cmd(run_dataset, tmp_path / "r3", "--set=cv_folds=1"), env=nnunet_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cv_folds=1: expected a whole number >= 2" in proc.stderr
    assert not (tmp_path / "r3").exists()


def test_parallel_folds_setting_is_checked_and_shares_out_the_cores(monkeypatch):
    from nnunet_medaka.errors import MedakaError
    from nnunet_medaka.training.presets import resolve_settings
    from nnunet_medaka.training.stock import threads_per_training

    assert resolve_settings("cpu-demo")["parallel_folds"] == 2 and resolve_settings("quick")["parallel_folds"] == 1
    assert resolve_settings("cpu-demo")["student_init"] == "teacher" and resolve_settings("quick")["student_init"] == "teacher"
    # the method's kd_weight (docs/results/ablation-hippocampus.md); the demo keeps 1
    assert resolve_settings("quick")["kd_weight"] == 0.3 and resolve_settings("cpu-demo")["kd_weight"] == 1.0
    assert resolve_settings("full")["student_init"] == "random"
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(MedakaError, match="parallel_folds=.*expected a whole number >= 1"):
            resolve_settings("cpu-demo", {"parallel_folds": bad})
    with pytest.raises(MedakaError, match='student_init="pretrained": expected random .* or teacher'):
        resolve_settings("cpu-demo", {"student_init": "pretrained"})
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    settings = resolve_settings("cpu-demo")
    assert threads_per_training(settings["cpu_threads"], "cpu", 2) == 8  # the cores shared out
    assert threads_per_training(settings["cpu_threads"], "cpu", 1) is None  # one training: nnU-Net's own choice
    assert threads_per_training(settings["cpu_threads"], "cuda", 2) is None
    assert threads_per_training(3, "cpu", 2) == 3  # an explicit setting wins


def test_summary_compares_the_student_with_the_stronger_baseline_of_equal_budget():
    from nnunet_medaka.pipeline.results import run_summary_text

    def summary(ious: dict, **extra) -> str:
        scores = {role: {"mean": {"IoU": iou}} for role, iou in ious.items()}
        results = {"dataset": "Dataset932_RunTiny", "preset": "quick", "scores": scores, "pseudo_labels": None,
                   "quality_classifier": None, "cv_folds": 2, "n_labeled": 10,
                   "paths": {k: k for k in ("plot", "overlays", "logs", "pseudo_labels", "quality")}}
        results.update(extra)
        return run_summary_text(results, table="(table)")

    # the supervised model beats the teacher ensemble here, so the student is measured against it
    text = summary({"teacher": 0.60, "supervised": 0.66, "student": 0.65}, baseline="supervised",
                   student_init="teacher")
    assert "teacher 0.600, supervised 0.660, KD student 0.650" in text
    assert "lower than the stronger baseline, the supervised baseline (one model on all 10 labeled cases) (Δ -0.010)" in text
    assert "both started from teacher fold 0's weights (`student_init=teacher`)" in text and "equal training budgets" in text
    text = summary({"teacher": 0.62, "supervised": 0.61, "student": 0.65}, student_init="random")
    assert "higher than the stronger baseline, the teacher (the ensemble of its 2 folds) (Δ +0.030)" in text
    assert "both started from random weights" in text
    # the summary names the filter and its threshold
    pseudo = {"finished": 6, "acceptance": "case", "threshold": 0.0864, "cases_accepted": 2, "cases_partial": 0,
              "cases_rejected": 4, "cases_for_student": ["a", "b"]}
    text = summary({"teacher": 0.62, "student": 0.65}, pseudo_labels=pseudo)
    assert "2 went into the student dataset. Filter: the quality classifier's P(good) ≥ 0.086 per organ" in text
    text = summary({"teacher": 0.62, "student": 0.65}, pseudo_labels=dict(pseudo, acceptance="none", threshold=None))
    assert "Filter: none, every pseudo-label is used." in text
    text = summary({"teacher": 0.62, "student": 0.65}, pseudo_labels=dict(
        pseudo, filter="mean_max_softmax", filter_reason="auto: mean_max_softmax: AUROC 0.900 ..."))
    assert "Filter: mean_max_softmax ≥ 0.086 per organ" in text
    assert "Chosen by `filter=auto`: mean_max_softmax: AUROC 0.900 ...." in text
    # results.json of earlier versions: teacher and student only, no baseline key
    text = summary({"teacher": 0.60, "student": 0.65})
    assert "higher than the stronger baseline, the teacher" in text and "equal training budgets" not in text
