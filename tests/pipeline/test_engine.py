"""Stage-by-stage resume: finished stages are skipped, changed inputs redo a stage and everything after it."""
import json

import pytest

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pipeline.state import RunState, Stage, files_fingerprint, run_stages


def make_stages(calls, settings):
    def stage(name):
        def run():
            calls.append(name)
            return {"made": name}
        return Stage(name, commands=lambda: [f"echo {name}"], inputs=lambda: settings.get(name), run=run)
    return [stage(n) for n in ("a", "b", "c")]


def test_finished_stages_are_skipped(tmp_path):
    calls, settings, lines = [], {"a": 1, "b": 2, "c": 3}, []
    run_stages(make_stages(calls, settings), RunState(tmp_path / "s.json"), log=lines.append)
    assert calls == ["a", "b", "c"]
    result = run_stages(make_stages(calls, settings), RunState(tmp_path / "s.json"), log=lines.append)
    assert calls == ["a", "b", "c"]
    assert all(r["skipped"] for r in result.values())
    assert result["b"]["outputs"] == {"made": "b"}


def test_changed_input_redoes_that_stage_and_the_later_ones(tmp_path):
    calls, settings, lines = [], {"a": 1, "b": 2, "c": 3}, []
    run_stages(make_stages(calls, settings), RunState(tmp_path / "s.json"), log=lines.append)
    settings["b"] = 20
    calls.clear()
    run_stages(make_stages(calls, settings), RunState(tmp_path / "s.json"), log=lines.append)
    assert calls == ["b", "c"]
    assert any("b: redone, its inputs changed" in line for line in lines)


def test_a_stage_that_failed_is_not_recorded(tmp_path):
    calls, settings = [], {"a": 1, "b": 2, "c": 3}
    stages = make_stages(calls, settings)

    def boom():
        raise RuntimeError("killed")
    stages[1] = Stage("b", commands=lambda: [], inputs=lambda: 2, run=boom)
    with pytest.raises(RuntimeError):
        run_stages(stages, RunState(tmp_path / "s.json"), log=lambda s: None)
    assert set(json.loads((tmp_path / "s.json").read_text())["stages"]) == {"a"}
    calls.clear()
    run_stages(make_stages(calls, settings), RunState(tmp_path / "s.json"), log=lambda s: None)
    assert calls == ["b", "c"]


def test_dry_run_prints_commands_and_runs_nothing(tmp_path):
    calls, lines = [], []
    run_stages(make_stages(calls, {}), RunState(tmp_path / "s.json"), log=lines.append, dry_run=True)
    assert calls == [] and not (tmp_path / "s.json").exists()
    assert "      $ echo b" in lines


def test_files_fingerprint_sees_new_and_changed_files(tmp_path):
    (tmp_path / "d").mkdir()
    before = files_fingerprint([tmp_path / "d"])
    (tmp_path / "d" / "x").write_text("1")
    after = files_fingerprint([tmp_path / "d"])
    assert before != after
    (tmp_path / "d" / "x").write_text("22")
    assert files_fingerprint([tmp_path / "d"]) != after


def test_corrupt_state_file_is_named(tmp_path):
    (tmp_path / "s.json").write_text("{")
    with pytest.raises(MedakaError, match="s.json: not valid JSON"):
        RunState(tmp_path / "s.json")


def test_changed_input_resets_that_stage_and_the_later_finished_ones(tmp_path):
    resets, settings = [], {"a": 1, "b": 2, "c": 3}

    def stages():
        return [Stage(n, commands=lambda: [], inputs=lambda n=n: settings[n], run=lambda: {},
                      reset=lambda n=n: resets.append(n)) for n in ("a", "b", "c")]
    run_stages(stages(), RunState(tmp_path / "s.json"), log=lambda s: None)
    assert resets == []
    settings["b"] = 5
    run_stages(stages(), RunState(tmp_path / "s.json"), log=lambda s: None)
    assert resets == ["b", "c"]
