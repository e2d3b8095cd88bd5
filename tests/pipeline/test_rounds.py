"""``run --set rounds=N`` end to end on tiny synthetic data: each round's teacher is the previous round's students,
a kill inside a round resumes without redoing finished work, and the early stop follows the out-of-fold evidence."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TINY_RUN, make_raw_dataset, run_checked, tool
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.pipeline.rounds import chosen_round
from test_run import kill_during, state

ROUND_NODES = [f"round{r}/{s}" for r in (2, 3) for s in ("quality", "pseudolabel", "student-dataset", "student",
                                                          "evaluate")]


def rounds_cmd(out: Path, *extra) -> list:
    settings = dict(TINY_RUN, rounds=3, student_folds=[0, 1], round_min_gain=-1)
    return [tool("nnunet-medaka"), "run", "962", "--out", str(out), "--preset", "cpu-demo", "--device", "cpu",
            *[f"--set={k}={json.dumps(v)}" for k, v in settings.items()], *extra]


@pytest.mark.slow  # trains and predicts with real nnU-Net, three rounds
def test_three_rounds_chain_teachers_resume_after_kill_and_stop_on_evidence(nnunet_env, tmp_path):
    source = make_raw_dataset(Path(nnunet_env["nnUNet_raw"]), 961, "RoundSource", n_cases=9, seed=4)
    split_dataset(source, dataset_id=962, dataset_name="RoundTiny", n_labeled=4, n_test=2, seed=0,
                  out_dir=nnunet_env["nnUNet_raw"])
    out = tmp_path / "run"
    kill_during(rounds_cmd(out), nnunet_env, "round2/student")
    before = state(out)
    assert "round2/student-dataset" in before and "round2/student" not in before
    proc = run_checked(rounds_cmd(out), nnunet_env, timeout=1500)
    after = state(out)
    for name, record in before.items():  # nothing finished before the kill was redone
        assert after[name]["finished"] == record["finished"], name
    assert list(after)[-len(ROUND_NODES) - 1:] == [*ROUND_NODES, "rounds"]

    ids = json.loads((out / "student_dataset.json").read_text())
    results = Path(nnunet_env["nnUNet_results"])
    student = lambda r: results / (ids["name"] if r == 1 else ids["rounds"][str(r)]["name"]) / \
        "KDTrainer__nnUNetPlansSmallFrom962__3d_fullres"
    for r in (2, 3):
        # the previous round's students (every fold) made this round's pseudo-labels ...
        settings = json.loads((out / "rounds" / f"round{r}" / "pseudolabels" / "pseudolabel_settings.json").read_text())
        assert Path(settings["teacher"]["folder"]) == student(r - 1) and settings["teacher"]["folds"] == [0, 1]
        # ... their out-of-fold predictions trained this round's quality classifier ...
        quality = json.loads((out / "rounds" / f"round{r}" / "quality" / "features.json").read_text())
        assert quality["teacher"]["trainer"] == "KDTrainer"
        # ... with every earlier teacher's out-of-fold predictions as more real mistakes to learn from
        teacher = results / "Dataset962_RoundTiny" / "SupervisedTrainer__nnUNetPlansSmall__3d_fullres"
        assert [Path(x["model"]) for x in quality["training"]["extra_teachers"]] == [teacher, student(1)][: r - 1]
        # ... and fold k distils from their fold k, on the labeled cases plus this round's pseudo-labels only
        for fold in (0, 1):
            resolved = json.loads((student(r) / f"fold_{fold}" / "nnunet_medaka_resolved_config.json").read_text())
            assert Path(resolved["config"]["teacher"]) == student(r - 1) and resolved["config"]["teacher_folds"] == [fold]
        built = json.loads((Path(nnunet_env["nnUNet_preprocessed"]) / ids["rounds"][str(r)]["name"]
                            / "build_student.json").read_text())
        assert len(built["labeled"]) == 4 and set(built["pseudo_labeled"]) <= {c for c in json.loads(
            (out / "rounds" / f"round{r}" / "pseudolabels" / "pseudolabel_summary.json").read_text())["cases_for_student"]}
        splits = json.loads((Path(nnunet_env["nnUNet_preprocessed"]) / ids["rounds"][str(r)]["name"]
                             / "splits_final.json").read_text())
        assert all(set(s["val"]) <= set(built["labeled"]) for s in splits)
        assert all(set(s["train"]) - set(built["labeled"]) == set(built["pseudo_labeled"]) for s in splits)
    table = json.loads((out / "rounds.json").read_text())
    assert [row["round"] for row in table["rounds"]] == [0, 1, 2, 3] and all(row["ran"] for row in table["rounds"])
    # round_min_gain -1 ran every round, but the pick still follows the out-of-fold evidence
    assert table["chosen_round"] == chosen_round(table["rounds"], 0.0)
    assert "# Self-training rounds" in proc.stdout and "the model to deploy is" in proc.stdout
    assert (out / "rounds.png").stat().st_size > 0

    # no round can gain more than 1 Dice: round 2 stops, round 3 follows, the teacher is the model to deploy
    run_checked(rounds_cmd(out, "--set=round_min_gain=1"), nnunet_env, timeout=900)
    table = json.loads((out / "rounds.json").read_text())
    assert [row["ran"] for row in table["rounds"]] == [True, True, False, False]
    assert "not more than round_min_gain 1" in table["rounds"][2]["reason"]
    assert table["rounds"][3]["reason"] == "round 2 did not run"
    assert table["chosen_round"] == 0
    assert state(out)["round2/student"]["outputs"] == {"stopped": True}


def oof(*dice, ran=None):
    """Rounds-table rows (round 0, the teacher, first) with these out-of-fold Dice values."""
    ran = ran or [True] * len(dice)
    return [{"round": r, "ran": ok, "oof_dice": d} for r, (d, ok) in enumerate(zip(dice, ran))]


@pytest.mark.parametrize("rows, min_gain, expected", [
    (oof(0.80, 0.83, 0.82), -1.0, 1),  # a worse round 2 ran for measurement; it is not the one to deploy
    (oof(0.80, 0.83, 0.84), -1.0, 2),
    (oof(0.80, 0.83, 0.84), 0.0, 2),
    (oof(0.80, 0.83, 0.84), 0.02, 1),  # round 2 gained 0.01, not more than 0.02
    (oof(0.80, 0.79, 0.90), -1.0, 0),  # the chain stops at the first round that did not improve
    (oof(0.80, 0.80), 0.0, 0),  # a tie is no improvement
    (oof(0.80, 0.83, 0.0, ran=[True, True, False]), 0.0, 1),
])
def test_chosen_round_walks_the_chain_while_the_evidence_improves(rows, min_gain, expected):
    assert chosen_round(rows, min_gain) == expected


def test_rounds_settings_are_checked():
    from nnunet_medaka.errors import MedakaError
    from nnunet_medaka.training.presets import resolve_settings

    assert resolve_settings("quick")["rounds"] == 1
    with pytest.raises(MedakaError, match=r"student_folds=.*every cross-validation fold, \[0, 1\], with rounds=2"):
        resolve_settings("quick", {"rounds": 2, "cv_folds": 2})
    with pytest.raises(MedakaError, match=r"student_width=0\.5: expected null with rounds > 1"):
        resolve_settings("quick", {"rounds": 2, "cv_folds": 2, "student_folds": [0, 1], "student_width": 0.5,
                                   "student_init": "random"})
    assert resolve_settings("quick", {"rounds": 2, "cv_folds": 2, "student_folds": [0, 1]})["rounds"] == 2
