"""``nnunet-medaka run`` end to end on tiny synthetic data, killed with SIGKILL in every stage and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import make_raw_dataset, run_checked, tool
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.pipeline.run import STATE_FILE

STAGES = ("plan", "teacher", "quality", "pseudolabel", "student-dataset", "student", "evaluate")
# the tiny schedule of the other tests; 2 CV folds, one corrupted copy per organ
# acceptance none: a 1-epoch teacher's pseudo-labels are all bad, and the filter itself is tested in tests/pseudolabel
TINY = {"cv_folds": 2, "acceptance": "none", "num_epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1,
        "configuration": "3d_fullres", "corruptions_per_organ": 1,
        "small_plans": {"target_plans": "nnUNetPlansSmall", "patch_size": [32, 32, 32],
                        "features_per_stage": [8, 16, 32]}}


def run_cmd(dataset, out, *extra):
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]
    return [tool("nnunet-medaka"), "run", str(dataset), "--out", str(out), "--preset", "cpu-demo", "--device", "cpu",
            *sets, *extra]


@pytest.fixture(scope="module")
def run_dataset(nnunet_env) -> int:
    source = make_raw_dataset(Path(nnunet_env["nnUNet_raw"]), 931, "RunSource", n_cases=9, seed=3)
    split_dataset(source, dataset_id=932, dataset_name="RunTiny", n_labeled=4, n_test=3, seed=0,
                  out_dir=nnunet_env["nnUNet_raw"])
    return 932


def kill_during(cmd, env, stage: str, delay: float) -> str:
    """Start ``cmd``; SIGKILL its whole process group ``delay`` s after it announces ``stage``."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if seen is None and f"] {stage}" in line and "skipped" not in line:
            seen = time.monotonic()
            break
    if seen is None:
        proc.wait()
        raise AssertionError(f"stage {stage} never started:\n{''.join(lines)}")
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return "".join(lines)


def state(out: Path) -> dict:
    path = out / STATE_FILE
    return json.loads(path.read_text())["stages"] if path.is_file() else {}


def test_run_survives_sigkill_in_every_stage(run_dataset, nnunet_env, tmp_path):
    out = tmp_path / "run"
    env = dict(nnunet_env)
    finished_at = {}
    for i, stage in enumerate(STAGES):
        kill_during(run_cmd(run_dataset, out), env, stage, delay=4 if stage in ("teacher", "student") else 1.5)
        records = state(out)
        assert stage not in records, f"{stage} recorded as finished although killed"
        for earlier in STAGES[:i]:  # finished stages are never redone
            assert earlier in records, f"{earlier} lost after the kill in {stage}"
            finished_at.setdefault(earlier, records[earlier]["finished"])
            assert records[earlier]["finished"] == finished_at[earlier], f"{earlier} was redone"
    proc = run_checked(run_cmd(run_dataset, out), env, timeout=900)
    records = state(out)
    assert list(records) == list(STAGES)
    for stage in STAGES[:-1]:
        assert records[stage]["finished"] == finished_at[stage]
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"teacher", "student"}
    assert (out / "iou_per_organ.png").stat().st_size > 0 and (out / "overlays.png").stat().st_size > 0
    assert "Mean IoU over organs" in proc.stdout and "student" in proc.stdout
    assert results["pseudo_labels"]["finished"] == 2  # 9 cases: 4 labeled, 3 test, 2 unlabeled

    # a finished run is not redone; a changed setting redoes its stage and those below it (shown by --dry-run)
    again = run_checked(run_cmd(run_dataset, out), env, timeout=600)
    assert again.stdout.count("skipped") == len(STAGES)
    dry = run_checked(run_cmd(run_dataset, out, "--set=acceptance=\"organ\"", "--dry-run"), env, timeout=300)
    assert "[3/7] quality: finished, would be skipped" in dry.stdout
    assert "[4/7] pseudolabel: would run (its inputs changed" in dry.stdout
    assert "[7/7] evaluate: would run" in dry.stdout
    assert "nnUNetv2_train 932 3d_fullres 0 -tr SupervisedTrainer -p nnUNetPlansSmall -device cpu --npz" in dry.stdout


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
