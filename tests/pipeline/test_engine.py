"""The engine of run and experiment: finished nodes are skipped, changed inputs redo a node and everything below it,
progress comes as events (asserted here) that one printer turns into lines."""
import json

import pytest

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import files_fingerprint
from nnunet_medaka.pipeline.engine import Node, RunState, Step, node_fingerprints, print_events, run_graph


def chain(calls, settings, resets=None, fail=None):
    """Nodes a -> b -> c as `run` builds them: each depends on every earlier one."""
    def step(name):
        def run(say):
            calls.append(name)
            say(f"working on {name}")
            if name == fail:
                raise RuntimeError("killed")
            return {"made": name}
        reset = (lambda: resets.append(name)) if resets is not None else None
        return Step(lambda: [f"echo {name}"], run, reset)
    names = ("a", "b", "c")
    return [Node(n, settings.get(n), list(names[:i]), step(n)) for i, n in enumerate(names)]


def run_chain(nodes, path, **kw):
    events = []
    done = run_graph(nodes, RunState(path), on_event=events.append, chained=True, **kw)
    return done, events


def kinds(events, kind):
    return [e.node for e in events if e.kind == kind]


def test_finished_nodes_are_skipped(tmp_path):
    calls, settings = [], {"a": 1, "b": 2, "c": 3}
    _, events = run_chain(chain(calls, settings), tmp_path / "s.json")
    assert calls == ["a", "b", "c"] and kinds(events, "started") == ["a", "b", "c"]
    assert [e.text for e in events if e.kind == "line"] == ["working on a", "working on b", "working on c"]
    assert all(e.reason == "not run yet" and not e.redo for e in events if e.kind == "started")
    result, events = run_chain(chain(calls, settings), tmp_path / "s.json")
    assert calls == ["a", "b", "c"] and kinds(events, "skipped") == ["a", "b", "c"]
    assert all(r["skipped"] for r in result.values()) and result["b"]["outputs"] == {"made": "b"}


def test_changed_input_redoes_that_node_and_resets_the_finished_ones_below(tmp_path):
    calls, resets, settings = [], [], {"a": 1, "b": 2, "c": 3}
    run_chain(chain(calls, settings, resets), tmp_path / "s.json")
    assert resets == []
    settings["b"] = 20
    calls.clear()
    _, events = run_chain(chain(calls, settings, resets), tmp_path / "s.json")
    assert calls == ["b", "c"] and resets == ["b", "c"]  # outputs of b and of c (below it) removed once, up front
    started = {e.node: e for e in events if e.kind == "started"}
    assert started["b"].redo and started["b"].reason == "its inputs changed (inputs)"
    assert not started["c"].redo  # its record was dropped with b's reset


def test_why_a_node_is_redone_names_the_settings_that_changed(tmp_path):
    state = RunState(tmp_path / "s.json")
    state.mark("plan", "fp1", {}, 1.0, {"raw": "abc", "settings": {"num_epochs": 30, "seed": 0}})
    assert state.why_redo("plan", "fp2", {"raw": "abc", "settings": {"num_epochs": 50, "seed": 0}}) == \
        "its inputs changed (settings.num_epochs)"
    assert state.why_redo("plan", "fp2", {"raw": "abc", "settings": {"num_epochs": 30, "seed": 0}}) == \
        "its inputs changed (a step before it changed)"
    state.stages["old"] = {"fingerprint": "fp0", "outputs": {}}  # a record of an earlier version
    assert state.why_redo("old", "fp3", {}) == "its inputs changed (fingerprint fp0 -> fp3)"
    assert RunState(tmp_path / "s.json").stages["plan"]["inputs"]["settings"]["num_epochs"] == 30


def test_a_node_that_failed_is_not_recorded(tmp_path):
    calls, settings = [], {"a": 1, "b": 2, "c": 3}
    with pytest.raises(RuntimeError):
        run_chain(chain(calls, settings, fail="b"), tmp_path / "s.json")
    assert set(json.loads((tmp_path / "s.json").read_text())["stages"]) == {"a"}
    calls.clear()
    run_chain(chain(calls, settings), tmp_path / "s.json")
    assert calls == ["b", "c"]


def test_dry_run_lists_commands_and_runs_nothing(tmp_path):
    calls, lines = [], []
    run_graph(chain(calls, {}), RunState(tmp_path / "s.json"), on_event=print_events(lines.append), dry_run=True,
              chained=True)
    assert calls == [] and not (tmp_path / "s.json").exists()
    assert lines == ["[1/3] a: would run (not run yet)", "      $ echo a", "[2/3] b: would run (not run yet)",
                     "      $ echo b", "[3/3] c: would run (not run yet)", "      $ echo c"]


def test_printer_names_the_node_of_every_line_when_nodes_run_side_by_side(tmp_path):
    lines = []
    nodes = chain([], {})
    for node in nodes:
        node.rows = {"teacher"}
    run_graph(nodes, RunState(tmp_path / "s.json"), on_event=print_events(lines.append, parallel=True), workers=2,
              rows_order=["teacher", "kd-only"])
    assert lines[:4] == ["[1/3] a (rows: teacher)", "      (a) $ echo a", "      (a) working on a"] + \
        [lines[3]] and lines[3].startswith("      (a) done in ")


def test_the_two_fingerprint_forms_of_earlier_state_files_are_kept():
    from nnunet_medaka.files import fingerprint

    nodes = chain([], {"a": 1, "b": 2})
    chained = node_fingerprints(nodes, chained=True)
    assert chained["a"] == fingerprint({"inputs": 1, "before": []})  # what run's state file holds
    assert chained["b"] == fingerprint({"inputs": 2, "before": [chained["a"]]})
    graph = fingerprint({"inputs": 1, "deps": {}})  # what experiment's state file holds
    assert node_fingerprints(nodes)["a"] == fingerprint({"inputs": {"node": graph}, "before": []})


def test_files_fingerprint_sees_new_and_changed_files(tmp_path):
    (tmp_path / "d").mkdir()
    before = files_fingerprint([tmp_path / "d"])
    (tmp_path / "d" / "x").write_text("1")
    after = files_fingerprint([tmp_path / "d"])
    assert before != after
    (tmp_path / "d" / "x").write_text("22")
    assert files_fingerprint([tmp_path / "d"]) != after
    assert files_fingerprint([tmp_path / "missing"]) != files_fingerprint([tmp_path / "d"])


def test_corrupt_state_file_is_named(tmp_path):
    (tmp_path / "s.json").write_text("{")
    with pytest.raises(MedakaError, match="s.json: not valid JSON"):
        RunState(tmp_path / "s.json")
