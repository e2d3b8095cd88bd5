"""``run --dry-run`` and ``experiment --dry-run`` print exactly the listings pinned in ``tests/pipeline/dry_run/``.

The listings are what a user relies on: every stage or unit, whether it would run, and the stock commands it
stands for. They were written before the pipeline was rebuilt on one library of steps and pin that nothing of it
changed. Paths are written relative to placeholders (``$ROOT`` the nnU-Net folders' parent, ``$OUT`` the output
folder) so that the files do not depend on the temporary folder. To re-pin after an intended change:
``NNUNET_MEDAKA_REPIN=1 pytest tests/pipeline/test_dry_run_listing.py`` and review the diff.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import make_raw_dataset, run_checked, tool
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.environment import plugin_environ

PINNED = Path(__file__).parent / "dry_run"


@pytest.fixture(scope="module")
def dry_env(tmp_path_factory) -> tuple[dict, Path]:
    """A nnU-Net root of its own (dataset ids allocated from it do not depend on other tests) with one split
    dataset: 6 labeled, 3 unlabeled, 3 test cases."""
    root = tmp_path_factory.mktemp("dry")
    env = plugin_environ(root=root)
    env.pop("nnunet_medaka_config", None)
    source = make_raw_dataset(Path(env["nnUNet_raw"]), 941, "DrySource", n_cases=12, seed=5)
    split_dataset(source, dataset_id=942, dataset_name="DryTiny", n_labeled=6, n_test=3, seed=0,
                  out_dir=env["nnUNet_raw"])
    return env, root


def _listing(cmd: list, env: dict, root: Path, out: Path) -> str:
    text = run_checked(cmd, env, timeout=300).stdout
    lines = [line for line in text.replace(str(out), "$OUT").replace(str(root), "$ROOT").splitlines()
             if not line.startswith(("disk estimate:", "time estimate:", "warning: one training"))]  # measured here
    return "\n".join(lines) + "\n"


CASES = {
    "run_cpu_demo": ["run", "942", "--preset", "cpu-demo"],
    "run_quick": ["run", "942", "--preset", "quick", "--set=cv_folds=3", "--set=student_folds=[0,2]"],
    "experiment_all_rows": ["experiment", "942", "--preset", "quick", "--set=cv_folds=2", "--fractions", "1", "0.5",
                            "--seeds", "0", "1"],
    "experiment_parallel": ["experiment", "942", "--preset", "cpu-demo", "--rows", "teacher", "pseudo-qc-kd",
                            "--fractions", "0.5", "--seeds", "3"],
    # the selection and student recipes: the filter the evidence picks, voxel gating, a noisy and narrower student
    "run_recipes": ["run", "942", "--preset", "quick", "--set=cv_folds=2", "--set=filter=auto",
                    "--set=voxel_confidence=0.8", "--set=student_augmentation=da5", "--set=student_width=0.5",
                    "--set=student_init=random"],
    # the same in an experiment (its students start from random weights whatever the preset's run default), with
    # a final fine-tune on the labeled cases and the students' pool cut to one case
    "experiment_recipes": ["experiment", "942", "--preset", "quick", "--set=cv_folds=2", "--rows", "teacher",
                           "pseudo-all", "pseudo-qc-kd", "--fractions", "1", "--seeds", "0", "--set=acceptance=case",
                           "--set=student_width=0.5", "--set=student_finetune=5", "--set=labeled_share=0.5",
                           "--set=pool_size=1"],
    # self-training rounds: round 2's teacher is round 1's students (every CV fold)
    "run_rounds": ["run", "942", "--preset", "cpu-demo", "--set=rounds=2", "--set=student_folds=[0,1]"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dry_run_listing_is_pinned(dry_env, tmp_path, name):
    env, root = dry_env
    out = tmp_path / "out"
    got = _listing([tool("nnunet-medaka"), *CASES[name], "--out", str(out), "--device", "cpu", "--dry-run"], env,
                   root, out)
    assert not out.exists(), "a dry run wrote its output folder"
    pinned = PINNED / f"{name}.txt"
    if os.environ.get("NNUNET_MEDAKA_REPIN"):
        pinned.parent.mkdir(exist_ok=True)
        pinned.write_text(got)
    assert pinned.is_file(), f"{pinned} missing; write it with NNUNET_MEDAKA_REPIN=1"
    assert got == pinned.read_text()
