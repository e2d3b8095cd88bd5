"""``nnunet-medaka experiment``: statistics and answers on hand-made numbers, the shared-unit graph, refusals, and one
end-to-end run with real nnU-Net (two rows, two seeds, tiny schedule) that is then resumed without redoing work."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY_RUN, make_raw_dataset, run_checked, tool, write_nifti
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pipeline.experiment_command import STATE_FILE, run_experiment
from nnunet_medaka.pipeline.experiment_results import write_experiment_results
from nnunet_medaka.training.comparison import compare_rows, paired_bootstrap, read_results_csv
from nnunet_medaka.conversion.split import draw_labeled, draw_pool
from nnunet_medaka.pipeline.experiment_units import ROWS, UnitGraph
from nnunet_medaka.pseudolabel.outputs import pseudolabel_view
from nnunet_medaka.pipeline.engine import Node, RunState, Step, node_fingerprints, print_events, run_graph


def run_nodes(nodes, state, *, say, workers=1):
    return run_graph(nodes, state, on_event=print_events(say, parallel=workers > 1), workers=workers)

# the tiny schedule of `run`'s tests, without nnU-Net's final validation (the rows are scored on the test cases;
# the quality classifier, which needs it, is not part of the end-to-end test's rows)
SETS = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY_RUN, "final_validation": False}.items()]


# ---- statistics and answers on hand-made numbers ------------------------------------------------------------------
def test_paired_bootstrap_on_hand_made_numbers():
    same = paired_bootstrap([0.1] * 8)
    assert same["mean"] == pytest.approx(0.1) and same["low"] == pytest.approx(0.1) and same["high"] == pytest.approx(0.1)

    d = [0.30, -0.10, 0.05, 0.20, -0.05, 0.15, 0.10, 0.00]
    b = paired_bootstrap(d, n_resamples=2000, seed=0)
    rng = np.random.default_rng(0)  # the documented recipe, by hand
    means = np.asarray(d)[rng.integers(0, len(d), size=(2000, len(d)))].mean(axis=1)
    assert b["mean"] == pytest.approx(np.mean(d))
    assert (b["low"], b["high"]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert b["low"] < 0.08 < b["high"] and b == paired_bootstrap(d, n_resamples=2000, seed=0)
    assert paired_bootstrap([0.2, float("nan")])["n"] == 1 and paired_bootstrap([0.2])["low"] is None


def _table(effects: dict, seeds=(0, 1), n_cases=12, organs=("sphere", "box")) -> list:
    """IoU = base(case) + effect(row, fraction) + small seed/case noise."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.4, 0.6, n_cases)
    rows = []
    for (row, fraction), effect in effects.items():
        for seed in seeds:
            for c in range(n_cases):
                for organ in organs:
                    iou = float(np.clip(base[c] + effect + rng.normal(0, 0.01), 0, 1))
                    rows.append({"row": row, "fraction": fraction, "seed": seed, "case": f"t{c:02d}", "organ": organ,
                                 "IoU": iou, "Dice": 2 * iou / (1 + iou)})
    return rows


def _write(tmp_path, effects, seeds=(0, 1), rows=("teacher", "pseudo-qc-kd", "supervised-all"), fractions=(1.0, 0.33)):
    write_experiment_results(tmp_path, _table(effects, seeds), dataset="Dataset500_Hand", preset="quick",
                             settings={"tau": 0.7}, rows=list(rows), fractions=list(fractions), seeds=list(seeds),
                             organs=["sphere", "box"], n_test=12, wall={("teacher", 0.33): {"own": 10.0, "total": 30.0}})
    return (tmp_path / "results.md").read_text(), json.loads((tmp_path / "results.json").read_text())


def test_results_md_states_a_win_and_a_gap(tmp_path):
    md, res = _write(tmp_path, {("teacher", 0.33): 0.0, ("pseudo-qc-kd", 0.33): 0.08, ("teacher", 1.0): 0.15,
                                ("pseudo-qc-kd", 1.0): 0.16, ("supervised-all", 1.0): 0.15})
    head = md.split("\n\nMean IoU on")[0]
    assert head.startswith("# Experiment on Dataset500_Hand")
    assert "(a) Does the full method (pseudo-qc-kd) beat the stronger fair baseline (teacher) by more than the noise? " \
           "Fraction 0.33:** **yes**" in head
    assert "(b) Does pseudo-qc-kd at the smallest fraction (0.33) reach supervised-all (fraction 1) quality?** " \
           "**no**" in head
    a = res["answers"]["a"][0]
    assert (a["fraction"], a["verdict"], a["n"]) == (0.33, "above", 12) and a["mean"] == pytest.approx(0.08, abs=0.01)
    assert 0 < a["low"] < a["mean"] < a["high"]
    assert res["answers"]["b"]["verdict"] == "below" and res["answers"]["b"]["high"] < 0
    assert "averaged over 2 seeds" in head
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == "row,fraction,seed,case,organ,IoU,Dice" and len(lines) == 1 + 5 * 2 * 12 * 2
    assert (tmp_path / "iou_heatmap.png").stat().st_size > 0
    teacher = next(e for e in res["rows"] if e["row"] == "teacher" and e["fraction"] == 0.33)
    assert teacher["wall_s"] == {"own": 10.0, "total": 30.0} and teacher["iou"]["overall"]["std"] is not None


def test_results_md_never_claims_a_win_inside_the_noise(tmp_path):
    effects = {("teacher", 0.33): 0.0, ("pseudo-qc-kd", 0.33): 0.0, ("supervised-all", 1.0): 0.0}
    table = _table(effects, seeds=(0,))
    for r in table:  # a small difference, much smaller than the case-to-case noise added here
        if r["row"] == "pseudo-qc-kd":
            r["IoU"] += 0.003 + (0.2 if r["case"] in ("t00", "t03") else -0.06 if r["case"] in ("t01", "t05") else 0)
    write_experiment_results(tmp_path, table, dataset="Dataset500_Hand", preset="quick", settings={"tau": 0.7},
                             rows=["teacher", "pseudo-qc-kd", "supervised-all"], fractions=[0.33], seeds=[0],
                             organs=["sphere", "box"], n_test=12)
    md = (tmp_path / "results.md").read_text()
    assert "Fraction 0.33:** **no**: the interval includes 0, so no gain beyond the noise is shown" in md
    assert "**not shown**: the interval includes 0" in md and "not proof of equal quality" in md
    assert "One seed: the std over seeds is unknown" in md and "(std n/a)" in md
    assert "understates" not in md  # 12 test cases


def test_results_md_says_no_when_the_seeds_disagree(tmp_path):
    # a gain at two seeds and a loss at the third: the interval over test cases (each case averaged over the
    # seeds) excludes 0, but the difference is not larger than the run-to-run noise
    table = _table({("teacher", 0.33): 0.0, ("pseudo-qc-kd", 0.33): 0.0, ("supervised-all", 1.0): 0.1},
                   seeds=(0, 1, 2))
    shift = {0: 0.03, 1: 0.03, 2: -0.01}
    for r in table:
        if r["row"] == "pseudo-qc-kd":
            r["IoU"] += shift[r["seed"]]
    write_experiment_results(tmp_path, table, dataset="Dataset500_Hand", preset="quick", settings={"tau": 0.7},
                             rows=["teacher", "pseudo-qc-kd", "supervised-all"], fractions=[0.33], seeds=[0, 1, 2],
                             organs=["sphere", "box"], n_test=12)
    md = (tmp_path / "results.md").read_text()
    res = json.loads((tmp_path / "results.json").read_text())
    a = res["answers"]["a"][0]
    assert a["low"] > 0 and a["verdict"] == "seeds disagree"  # the test-case interval alone would have said yes
    assert [round(d, 2) for d in a["per_seed"]] == [0.03, 0.03, -0.01]
    assert "**no**: the interval over test cases excludes 0, but not every seed shows the difference" in md
    assert re.search(r"per seed Δ \+0\.03\d / \+0\.03\d / -0\.01\d\)", md)
    assert "(c) Does the KD term" not in md and res["answers"]["c"] == []  # pseudo-qc was not run


def test_results_md_says_what_the_kd_term_adds_to_the_filtered_pseudo_labels(tmp_path):
    # pseudo-qc beats the teacher; KD costs at every seed at 0.33, at two of three seeds at 1
    effects = {("teacher", 1.0): 0.1, ("teacher", 0.33): 0.0, ("pseudo-qc", 1.0): 0.1, ("pseudo-qc", 0.33): 0.03,
               ("pseudo-qc-kd", 1.0): 0.1, ("pseudo-qc-kd", 0.33): 0.03, ("supervised-all", 1.0): 0.1}
    table = _table(effects, seeds=(0, 1, 2))
    cost = {(0.33, 0): -0.02, (0.33, 1): -0.01, (0.33, 2): -0.015, (1.0, 0): -0.02, (1.0, 1): -0.02, (1.0, 2): 0.005}
    for r in table:
        if r["row"] == "pseudo-qc-kd":
            r["IoU"] += cost[(r["fraction"], r["seed"])]
    write_experiment_results(tmp_path, table, dataset="Dataset500_Hand", preset="quick", settings={"tau": 0.7},
                             rows=["teacher", "pseudo-qc", "pseudo-qc-kd", "supervised-all"], fractions=[1.0, 0.33],
                             seeds=[0, 1, 2], organs=["sphere", "box"], n_test=12)
    md = (tmp_path / "results.md").read_text()
    c = {x["fraction"]: x for x in json.loads((tmp_path / "results.json").read_text())["answers"]["c"]}
    assert c[0.33]["verdict"] == "below" and c[0.33]["high"] < 0
    assert c[0.33]["per_seed"] == pytest.approx([-0.02, -0.01, -0.015], abs=0.005)
    assert c[1.0]["verdict"] == "seeds disagree" and c[1.0]["high"] < 0
    assert "**(c) Does the KD term add to the filtered pseudo-labels (pseudo-qc-kd vs pseudo-qc)? Fraction 0.33:** " \
           "**no, it costs**: the interval lies below 0 at every seed" in md
    assert "Fraction 1:** **no**: the interval over test cases excludes 0, but not every seed shows" in md
    # the table gives every row's per-seed difference from its teacher
    row = next(line for line in md.splitlines() if line.startswith("| pseudo-qc | 0.33 |"))
    assert re.search(r"\| (\+0\.0[23]\d / ){2}\+0\.0[23]\d \|", row)


def test_results_md_qualifies_a_win_on_few_cases_and_one_seed(tmp_path):
    effects = {("teacher", 0.5): 0.0, ("pseudo-qc-kd", 0.5): 0.05}
    write_experiment_results(tmp_path, _table(effects, seeds=(0,), n_cases=4), dataset="Dataset500_Hand",
                             preset="quick", settings={"tau": 0.7}, rows=["teacher", "pseudo-qc-kd"], fractions=[0.5],
                             seeds=[0], organs=["sphere", "box"], n_test=4)
    md = (tmp_path / "results.md").read_text()
    assert "Fraction 0.5:** **yes** (at this one seed): the interval excludes 0" in md
    assert "only 4 test cases: a bootstrap over so few cases understates the uncertainty" in md


def test_two_experiments_compare_through_their_results_csv(tmp_path):
    # experiment B's students are better by a seed-dependent margin; the CSV round trip keeps the numbers
    effects = {("teacher", 0.33): 0.0, ("pseudo-qc-kd", 0.33): 0.02}
    a = _table(effects, seeds=(0, 1, 2))
    gain = {0: 0.01, 1: 0.02, 2: 0.015}
    b = [dict(r, IoU=r["IoU"] + gain[r["seed"]]) if r["row"] == "pseudo-qc-kd" else r for r in a]
    for name, table in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        write_experiment_results(tmp_path / name, table, dataset="Dataset500_Hand", preset="quick",
                                 settings={"tau": 0.7}, rows=["teacher", "pseudo-qc-kd"], fractions=[0.33],
                                 seeds=[0, 1, 2], organs=["sphere", "box"], n_test=12)
    read_a, read_b = (read_results_csv(tmp_path / n / "results.csv") for n in "ab")
    assert read_a[0]["fraction"] == 0.33 and read_a[0]["seed"] == 0 and read_a[0]["IoU"] == pytest.approx(a[0]["IoU"])
    table = [dict(r, row="A") for r in read_a if r["row"] == "pseudo-qc-kd"] + \
            [dict(r, row="B") for r in read_b if r["row"] == "pseudo-qc-kd"]
    c = compare_rows(table, ("B", 0.33), ("A", 0.33))
    assert c["verdict"] == "above" and c["n"] == 12 and c["seeds"] == [0, 1, 2]
    assert c["per_seed"] == pytest.approx([0.01, 0.02, 0.015], abs=1e-5)
    assert compare_rows(table, ("A", 0.33), ("B", 0.33))["verdict"] == "below"
    # a seed that goes the other way makes the same interval "seeds disagree"
    flipped = [dict(r, IoU=r["IoU"] - 0.02) if r["row"] == "B" and r["seed"] == 0 else r for r in table]
    assert compare_rows(flipped, ("B", 0.33), ("A", 0.33))["verdict"] == "seeds disagree"
    (tmp_path / "bad.csv").write_text("row,fraction\nteacher,0.33\n")
    with pytest.raises(MedakaError, match="bad.csv: not an experiment results.csv"):
        read_results_csv(tmp_path / "bad.csv")


def test_quality_on_unlabeled_reports_true_iou_of_accepted_and_rejected(tmp_path):
    from nnunet_medaka.pseudolabel.outputs import quality_on_unlabeled

    folder = tmp_path / "pl"
    folder.mkdir()
    organs = [("u1", "a", 0.9, 0.8, "accept", 0.85), ("u1", "b", 0.7, 0.6, "accept", 0.65),
              ("u2", "a", 0.3, 0.2, "reject", 0.25), ("u2", "b", 0.6, 0.4, "reject", 0.45)]
    lines = ["case,organ,label,voxels,predicted_iou,p_good,decision,case_decision,true_iou"]
    lines += [f"{c},{o},1,10,{hat},{p},{d},{d},{t}" for c, o, hat, p, d, t in organs]
    (folder / "pseudolabels.csv").write_text("\n".join(lines) + "\n")
    (folder / "pseudolabel_summary.json").write_text(json.dumps({
        "finished": 2, "cases_for_student": ["u1"], "organs_accepted": 2, "organs_rejected": 2,
        "true_iou": {"accepted_organs_mean": 0.75, "rejected_organs_mean": 0.35}, "filter": "mean_max_softmax",
        "filter_reason": "auto: mean_max_softmax: AUROC 0.900 ..."}))
    q = quality_on_unlabeled(folder, tau=0.5)
    assert (q["n"], q["auroc"], q["spearman"]) == (4, 1.0, pytest.approx(1.0))
    assert (q["iou_accepted"], q["iou_rejected"], q["cases_for_student"]) == (0.75, 0.35, 1)
    table = _table({("teacher", 0.33): 0.0, ("pseudo-qc-kd", 0.33): 0.0}, seeds=(0,))
    write_experiment_results(tmp_path, table, dataset="Dataset500_Hand", preset="quick", settings={"tau": 0.5},
                             rows=["teacher", "pseudo-qc-kd"], fractions=[0.33], seeds=[0], organs=["sphere", "box"],
                             n_test=12, quality=[{**q, "fraction": 0.33, "seed": 0, "all_cases": 2}])
    markdown = (tmp_path / "results.md").read_text()
    assert "| 0.33 | 0 | 4 | 1.000 | 1.000 | mean_max_softmax (auto) | 1/2 | 2/4 | 0.750 / 0.350 | 2 |" in markdown
    assert "chosen without the pool's ground truth: mean_max_softmax: AUROC 0.900" in markdown


def test_results_md_says_what_was_not_run(tmp_path):
    md, res = _write(tmp_path, {("teacher", 1.0): 0.0, ("kd-only", 1.0): 0.01}, rows=("teacher", "kd-only"),
                     fractions=(1.0,))
    assert "Fraction 1:** not answered: rows pseudo-qc-kd and teacher were not both run" in md
    assert "(b) Does pseudo-qc-kd at the smallest fraction (1) reach supervised-all (fraction 1) quality?** not " \
           "answered: no fraction below 1 was run" in md
    assert res["answers"]["b"]["verdict"] == "not run"


# ---- the graph of shared units ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exp_dataset(nnunet_env) -> int:
    """9 cases: 4 labeled, 2 unlabeled (ground truth aside), 3 test."""
    raw = Path(nnunet_env["nnUNet_raw"])
    source = make_raw_dataset(raw, 941, "ExpSource", n_cases=9, seed=5)
    split_dataset(source, dataset_id=942, dataset_name="ExpTiny", n_labeled=4, n_test=3, seed=0, out_dir=raw)
    return 942


@pytest.fixture
def in_env(nnunet_env, monkeypatch):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, nnunet_env[key])


def _graph(dataset: int, out: Path, rows, fractions=(1.0, 0.5), seeds=(0, 1), ids=None, **overrides) -> UnitGraph:
    from nnunet_medaka.conversion.split import split_layout
    from nnunet_medaka.training.presets import resolve_settings

    raw, _, ds = split_layout(str(dataset))
    settings = resolve_settings("cpu-demo", {"cv_folds": 2, **overrides})
    graph = UnitGraph(raw=raw, dataset_json=ds, out=out, settings=settings, rows=list(rows), fractions=list(fractions),
                      seeds=list(seeds), ids={}, device="cpu", env={})
    graph.ids.update(ids or {k: 100 + i for i, k in enumerate(graph.dataset_keys())})
    return graph


def test_units_are_shared_and_adding_rows_redoes_nothing(exp_dataset, in_env, tmp_path):
    full = _graph(exp_dataset, tmp_path, ROWS)
    every = full.nodes()
    names = [n.name for n in every]
    assert len(names) == len(set(names)) and names.count("plan") == 1
    by = {n.name: n for n in every}
    for seed in (0, 1):
        for f in ("f1", "f0.5"):
            u = f"{f}/s{seed}"
            assert [n for n in names if n.startswith(f"{u}/teacher/fold")] == [f"{u}/teacher/fold0", f"{u}/teacher/fold1"]
            assert by[f"{u}/teacher/fold0"].rows == set(ROWS) - {"supervised"} - (
                {"supervised-all"} if f == "f0.5" else set())  # supervised trains its own model (fold all)
            # students train on every case they may use (fold all) and distil from the teacher's fold ensemble,
            # which made their pseudo-labels; the teacher is scored as that ensemble
            teachers = [f"{u}/teacher/fold0", f"{u}/teacher/fold1"]
            assert by[f"{u}/kd-only/foldall"].deps == [f"{u}/dataset", *teachers]
            assert by[f"{u}/pseudo-qc/foldall"].deps == [f"{u}/data-qc"]  # no KD: no teacher
            assert by[f"{u}/pseudo-qc-kd/foldall"].deps == [f"{u}/data-qc", *teachers]
            assert by[f"{u}/teacher/evaluate"].deps == teachers and by[f"{u}/teacher/evaluate"].inputs["folds"] == [0, 1]
            assert by[f"{u}/supervised/foldall"].deps == [f"{u}/dataset"]
            assert by[f"{u}/supervised/evaluate"].deps == [f"{u}/supervised/foldall"]
            assert by[f"{u}/pseudolabels-all"].deps == [f"{u}/pseudolabel"]  # one prediction of the pool
            assert by[f"{u}/pseudolabel"].rows == {"pseudo-all", "pseudo-qc", "pseudo-qc-kd"}
    # supervised-all is fraction 1's teacher: no unit of its own
    graph = _graph(exp_dataset, tmp_path, ROWS)
    assert ("supervised-all", 1.0, 0, "f1/s0/teacher/evaluate") in graph.evaluations()

    # ids are recorded per dataset in OUT/datasets.json, so a later run with more rows keeps them
    few = _graph(exp_dataset, tmp_path, ["teacher", "kd-only"], fractions=(0.5,), ids=full.ids).nodes()
    assert not [n.name for n in few if "pseudo" in n.name or "quality" in n.name]
    fp_few, fp_every = node_fingerprints(few), node_fingerprints(every)
    assert all(fp_few[k] == fp_every[k] for k in fp_few)  # adding rows, fractions or seeds changes no finished unit


def test_pool_size_cuts_the_students_pool_and_reuses_teacher_and_pseudo_labels(exp_dataset, in_env, tmp_path):
    whole = _graph(exp_dataset, tmp_path, ROWS, acceptance="case")
    cut = _graph(exp_dataset, tmp_path, ROWS, ids=whole.ids, acceptance="case", pool_size=1)
    by = {n.name: n for n in cut.nodes()}
    for u in ("f1/s0", "f0.5/s1"):
        assert by[f"{u}/pool"].deps == [f"{u}/pseudolabel"] and by[f"{u}/pool"].inputs == {"pool_size": 1}
        assert by[f"{u}/data-qc"].deps == [f"{u}/pool"]  # the filtered pseudo-labels of the cut pool
        assert by[f"{u}/pseudolabels-all"].inputs["pool_size"] == 1
    fp_whole, fp_cut = node_fingerprints(whole.nodes()), node_fingerprints(list(by.values()))
    shared = [k for k in fp_whole if "/teacher/" in k or k.endswith(("/pseudolabel", "/quality", "supervised/foldall"))]
    assert shared and all(fp_whole[k] == fp_cut[k] for k in shared)  # no teacher trained, no pool predicted again
    assert all(fp_whole[k] != fp_cut[k] for k in fp_whole if k.endswith(("/data-qc", "/pseudo-all/foldall")))


def test_draw_pool_nested_and_seeded():
    cases = [f"u{i}" for i in range(20)]
    small, large = draw_pool(cases, 5, 0), draw_pool(cases, 10, 0)
    assert len(small) == 5 and set(small) <= set(large) and draw_pool(cases, 20, 3) == sorted(cases)
    assert draw_pool(cases, 5, 1) != small and draw_pool(list(reversed(cases)), 5, 0) == small
    assert small != draw_labeled(cases, 0.25, 0)  # not the labeled draw's permutation


def test_draw_labeled_nested_and_seeded():
    cases = [f"c{i}" for i in range(12)]
    small, large = draw_labeled(cases, 0.25, 3), draw_labeled(cases, 0.5, 3)
    assert len(small) == 3 and len(large) == 6 and set(small) <= set(large)
    assert draw_labeled(cases, 1.0, 7) == sorted(cases) and draw_labeled(cases, 0.25, 4) != small


def test_nodes_resume_after_a_crash(tmp_path):
    calls = []

    def work(name, fail=False):
        def run(say):
            calls.append(name)
            if fail and calls.count(name) == 1:
                raise RuntimeError("killed")
            return {"done": name}
        return run

    def nodes(fail_b=False, c_input=1):
        return [Node("a", {"x": 1}, [], Step(lambda: ["# a"], work("a"))),
                Node("b", {"x": 2}, ["a"], Step(lambda: ["# b"], work("b", fail_b))),
                Node("c", {"x": c_input}, ["a"], Step(lambda: ["# c"], work("c")))]

    state = RunState(tmp_path / STATE_FILE)
    with pytest.raises(RuntimeError):
        run_nodes(nodes(fail_b=True), state, say=lambda _: None)
    assert calls == ["a", "b"]
    run_nodes(nodes(fail_b=True), RunState(tmp_path / STATE_FILE), say=lambda _: None)
    assert calls == ["a", "b", "b", "c"]  # a was not redone
    lines = []
    run_nodes(nodes(c_input=2), RunState(tmp_path / STATE_FILE), say=lines.append)
    assert calls[-1] == "c" and len(calls) == 5  # only the changed node
    assert any(line.startswith("[3/3] c: redone, its inputs changed") for line in lines)


def test_parallel_nodes_respect_dependencies_and_stop_after_a_failure(tmp_path):
    import threading

    both_running = threading.Barrier(2, timeout=20)  # a and b must be running at the same time to pass it
    started, lock = [], threading.Lock()

    def work(name, *, meet=False, fail=False):
        def run(say):
            with lock:
                started.append(name)
            if meet:
                both_running.wait()
            if fail:
                raise RuntimeError(f"{name} failed")
            return {"done": name}
        return run

    def nodes(fail_c=False):
        return [Node("a", {}, [], Step(lambda: [], work("a", meet=True))),
                Node("b", {}, [], Step(lambda: [], work("b", meet=True))),
                Node("c", {}, ["a"], Step(lambda: [], work("c", fail=fail_c))),
                Node("d", {}, ["b", "c"], Step(lambda: [], work("d")))]

    with pytest.raises(RuntimeError, match="c failed"):
        run_nodes(nodes(fail_c=True), RunState(tmp_path / STATE_FILE), say=lambda _: None, workers=2)
    assert sorted(started) == ["a", "b", "c"]  # a and b together (the barrier), c after a, d never after c failed
    assert sorted(json.loads((tmp_path / STATE_FILE).read_text())["stages"]) == ["a", "b"]
    started.clear()
    lines = []
    done = run_nodes(nodes(), RunState(tmp_path / STATE_FILE), say=lines.append, workers=2)
    assert started == ["c", "d"] and sorted(done) == ["a", "b", "c", "d"]  # resumed: a and b not redone
    assert any(line.startswith("[4/4] d") for line in lines)
    orphan = [Node("e", {}, ["not-a-node"], Step(lambda: [], work("e")))]
    with pytest.raises(MedakaError, match="unit e depends on not-a-node, not a unit before it"):
        run_nodes(orphan, RunState(tmp_path / "other.json"), say=lambda _: None, workers=2)


def test_pseudolabel_views_reuse_the_prediction(tmp_path):
    source = tmp_path / "pl"
    for sub in ("labels", "records", "failures", "runs"):
        (source / sub).mkdir(parents=True)
    settings = {"format": "nnunet-medaka-pseudolabels", "teacher": {}, "labels": {"background": 0, "sphere": 1},
                "ignore_label": 2, "file_ending": ".nii.gz", "cases": ["u0", "u1"], "acceptance": "case",
                "threshold": 0.5}
    (source / "pseudolabel_settings.json").write_text(json.dumps(settings))
    for case, decision in (("u0", "accept"), ("u1", "reject")):
        write_nifti(source / "labels" / f"{case}.nii.gz", np.ones((4, 4, 4), np.uint8))
        (source / "records" / f"{case}.json").write_text(json.dumps({
            "case": case, "images": [], "label_file": f"labels/{case}.nii.gz", "case_decision": decision,
            "ignored_voxels": 5 if case == "u1" else 0, "voxels_total": 64,  # u1: voxel gating ignored 5 voxels
            "organs": [{"organ": "sphere", "label": 1, "voxels": 64, "predicted_iou": 0.5, "p_good": 0.4,
                        "decision": decision, "true_iou": 0.3}]}))
    summary = pseudolabel_view(source, tmp_path / "all", accept_all=True)
    assert summary["cases_for_student"] == ["u0", "u1"] and summary["acceptance"] == "none"
    assert os.path.samefile(source / "labels" / "u1.nii.gz", tmp_path / "all" / "labels" / "u1.nii.gz")
    assert (tmp_path / "all" / "pseudolabels.csv").read_text().count("accept") == 4
    # the gated voxels stay ignored, so build-student still declares the ignore label
    assert json.loads((tmp_path / "all" / "records" / "u1.json").read_text())["ignored_voxels"] == 5
    assert summary["ignored_voxel_share"] == pytest.approx(5 / 128, abs=1e-6)
    # a cut pool keeps the decisions: u1 stays rejected, u0 is not in it
    summary = pseudolabel_view(source, tmp_path / "pool", cases=["u1"])
    assert summary["cases"] == 1 and summary["cases_for_student"] == [] and summary["acceptance"] == "case"
    assert json.loads((tmp_path / "pool" / "pseudolabel_settings.json").read_text())["cases"] == ["u1"]
    with pytest.raises(MedakaError, match=r"no case u7 among its 2 pseudo-labeled cases"):
        pseudolabel_view(source, tmp_path / "bad", cases=["u1", "u7"])
    assert not (tmp_path / "bad").exists()


# ---- refusals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"rows": ["teacher", "pseudo-magic"]}, r"--rows pseudo-magic: unknown or empty; choose among teacher, supervised"),
    ({"fractions": [0.33, 1.5]}, r"--fractions 1.5: expected labeled fractions in \(0, 1\]"),
    ({"fractions": [0.33, 0.331]}, r"two fractions round to the same percentage"),
    ({"seeds": [0, 0]}, r"--seeds 0 0: expected distinct whole numbers"),
    ({"fractions": [0.25], "rows": ["teacher"], "overrides": {"cv_folds": 2}}, r"fraction 0.25 of 4 labeled cases leaves 1, fewer than "
                                                            r"cv_folds=2; raise the fraction \(cross-validation needs at least 2"),
    ({"overrides": {"acceptance": "none"}}, r"acceptance=none: the pseudo-qc rows need the quality filter"),
    ({"fractions": [0.5]}, r"fraction 0.5 of 4 labeled cases leaves 2; the pseudo-\* rows need at least 3"),
    ({"overrides": {"kd_wieght": 1}}, r"unknown run setting 'kd_wieght'"),
    ({"overrides": {"final_validation": False}}, r"final_validation=false: the pseudo-\* rows need"),
    ({"overrides": {"student_init": "teacher"}}, r"student_init='teacher': experiment starts every student from random"),
    ({"overrides": {"pool_size": 3, "acceptance": "case"}}, r"pool_size=3: fraction 1 leaves a pool of 2 unlabeled "
                                                            r"case\(s\); choose pool_size <= 2"),
    ({"overrides": {"pool_size": 1}}, r"pool_size=1 with acceptance=organ: the pseudo-all row would pseudo-label"),
])
def test_bad_inputs_give_one_clear_error_and_write_nothing(exp_dataset, in_env, tmp_path, kwargs, message):
    kwargs = {"fractions": [1.0], "seeds": [0], "preset": "cpu-demo", "device": "cpu", **kwargs}
    if "overrides" in kwargs:
        kwargs["overrides"] = {"cv_folds": 2, **kwargs["overrides"]}
    before = sorted(p.name for p in Path(os.environ["nnUNet_raw"]).iterdir())
    with pytest.raises(MedakaError, match=message):
        run_experiment(str(exp_dataset), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in Path(os.environ["nnUNet_raw"]).iterdir()) == before


def test_refuses_a_folder_that_is_not_an_experiment(exp_dataset, in_env, tmp_path, capsys):
    from nnunet_medaka.cli import main

    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    code = main(["experiment", str(exp_dataset), "--out", str(other), "--fractions", "1", "--device", "cpu",
                 "--set=cv_folds=2"])
    assert code == 2
    assert f"{other}: exists and holds no experiment_settings.json (not an experiment folder)" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    labeled_only = make_raw_dataset(Path(os.environ["nnUNet_raw"]), 943, "ExpNoPool", n_cases=3)
    with pytest.raises(MedakaError, match=f"{labeled_only / 'imagesUnlabeled'}: no unlabeled images"):
        run_experiment("943", tmp_path / "o2", device="cpu")
    assert not (tmp_path / "o2").exists()


# ---- end to end with real nnU-Net ---------------------------------------------------------------------------------
@pytest.mark.slow  # trains or predicts with real nnU-Net
def test_experiment_two_rows_two_seeds_end_to_end(exp_dataset, nnunet_env, tmp_path):
    out = tmp_path / "exp"
    cmd = [tool("nnunet-medaka"), "experiment", str(exp_dataset), "--out", str(out), "--rows", "teacher", "kd-only",
           "--fractions", "0.5", "--seeds", "0", "1", "--preset", "cpu-demo", "--device", "cpu", "--first-id", "600",
           *SETS, "--set=parallel_folds=2"]  # the two seeds' units run side by side
    proc = run_checked(cmd, nnunet_env, timeout=900)
    assert proc.stdout.count("$ nnUNetv2_plan_and_preprocess") == 1  # one plan for every row and seed
    assert "[3/13] f0.5/s0/teacher/fold0 (rows: teacher, kd-only)" in proc.stdout
    # both seeds' datasets start before the first teacher finishes: independent units overlap
    assert proc.stdout.index("f0.5/s1/dataset") < proc.stdout.index("(f0.5/s0/teacher/fold0) done in")
    # the KD student starts from random weights although cpu-demo's run default is student_init=teacher
    assert "nnUNetv2_train 602 3d_fullres all -tr KDTrainer -p nnUNetPlansSmall -device cpu\n" in proc.stdout
    assert "-pretrained_weights" not in proc.stdout
    assert json.loads((out / "experiment_settings.json").read_text())["settings"]["student_init"] == "random"
    records = json.loads((out / STATE_FILE).read_text())["stages"]
    assert sorted(records) == sorted(["plan", *[f"f0.5/s{s}/{n}" for s in (0, 1) for n in (
        "dataset", "teacher/fold0", "teacher/fold1", "teacher/evaluate", "kd-only/foldall", "kd-only/evaluate")]])
    ids = json.loads((out / "datasets.json").read_text())
    results = Path(nnunet_env["nnUNet_results"])
    teacher = next(results.glob(f"Dataset{ids['f0.5/s0']:03d}_*")) / "SupervisedTrainer__nnUNetPlansSmall__3d_fullres"
    assert sorted(p.name for p in teacher.glob("fold_*")) == ["fold_0", "fold_1"]  # scored as their ensemble
    resolved = json.loads((teacher.parent / "KDTrainer__nnUNetPlansSmall__3d_fullres" / "fold_all" /
                           "nnunet_medaka_resolved_config.json").read_text())
    # the student learns from every labeled case (fold all), distilling from the teacher's fold ensemble
    assert resolved["config"]["teacher"] == str(teacher) and resolved["config"]["teacher_folds"] == [0, 1]
    assert resolved["config"]["final_validation"] is False
    assert resolved["config"]["seed"] == 0
    # simultaneous trainings read their own copy of the config, with their share of the cores
    assert resolved["config"]["cpu_threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert json.loads((out / "units" / "f0.5_s1" / "configs" / "kd-only_foldall.json").read_text())["teacher_folds"] == [0, 1]

    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 3 * 2  # rows x seeds x test cases x organs
    assert {tuple(line.split(",")[:3]) for line in lines[1:]} == {(r, "0.5", s) for r in ("teacher", "kd-only")
                                                                  for s in ("0", "1")}
    res = json.loads((out / "results.json").read_text())
    kd = next(e for e in res["rows"] if e["row"] == "kd-only")
    assert kd["vs_teacher"]["overall"]["n"] == 3 and kd["wall_s"]["own"] > 0
    assert kd["wall_s"]["total"] > kd["wall_s"]["own"]  # the shared plan and teacher counted in its total
    md = (out / "results.md").read_text()
    assert "not answered: rows pseudo-qc-kd and teacher were not both run" in md and "| kd-only | 0.5 |" in md
    assert (out / "iou_heatmap.png").stat().st_size > 0

    checkpoint = teacher / "fold_0" / "checkpoint_final.pth"
    mtime = checkpoint.stat().st_mtime_ns
    again = run_checked(cmd, nnunet_env, timeout=300)  # resume: everything finished, nothing redone
    assert again.stdout.count(", skipped") == 13 and checkpoint.stat().st_mtime_ns == mtime
    assert json.loads((out / STATE_FILE).read_text())["stages"] == records
