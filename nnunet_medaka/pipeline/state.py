"""Stage-by-stage resume for long runs: a state file records each finished stage with its inputs' fingerprint.

A stage is skipped when the state file says it finished with the same fingerprint; it is redone when its
fingerprint changed (new inputs or settings), and every later stage with it, since each stage's fingerprint
includes the fingerprints of the stages before it. The file is rewritten atomically after each stage, so a run
killed with ``kill -9`` anywhere leaves either the old or the new record, never a torn one; the work of a stage
killed half-way is redone (stages resume inside themselves where nnU-Net can, e.g. ``nnUNetv2_train --c``).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from nnunet_medaka.config import write_json_atomic
from nnunet_medaka.errors import MedakaError

__all__ = ["RunState", "Stage", "files_fingerprint", "fingerprint", "run_stages"]

STATE_VERSION = 1


def fingerprint(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value (keys sorted), shortened to 16 hex digits."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_fingerprint(paths: Iterable[os.PathLike | str]) -> str:
    """Fingerprint of files and folders by name, size and modification time (not content: volumes are large).

    Folders contribute every file below them; a missing path counts as missing, so creating it changes the value.
    """
    entries = []
    for root in sorted(Path(p) for p in paths):
        if root.is_dir():
            for f in sorted(root.rglob("*")):
                if f.is_file():
                    st = f.stat()
                    entries.append((str(f), st.st_size, st.st_mtime_ns))
        elif root.is_file():
            st = root.stat()
            entries.append((str(root), st.st_size, st.st_mtime_ns))
        else:
            entries.append((str(root), "missing"))
    return fingerprint(entries)


@dataclass(frozen=True)
class Stage:
    """One step of a run.

    Attributes
    ----------
    name : str
        Short id, unique within the run (also the state-file key).
    commands : callable
        Returns the stock commands this stage corresponds to (lines of shell), for logs and ``--dry-run``.
    inputs : callable
        Returns a JSON-serialisable description of what the stage depends on (settings, file fingerprints).
    run : callable
        Does the work; returns a JSON-serialisable dict of outputs, stored in the state file. Run again after
        an interruption, it should continue the work it finds (the stage's own resume).
    reset : callable, optional
        Removes the stage's outputs; called before a finished stage is redone because its inputs changed, so
        that its own resume does not continue from outputs of the old inputs.
    """

    name: str
    commands: Callable[[], list]
    inputs: Callable[[], Any]
    run: Callable[[], dict]
    reset: Optional[Callable[[], None]] = None


class RunState:
    """The state file of one run folder (``run_state.json``)."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self.stages: dict = {}
        self._lock = threading.Lock()  # stages finishing at the same time (experiment's parallel units)
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise MedakaError(f"{self.path}: not valid JSON ({e}); delete it to start the run from scratch") from None
            if data.get("version") != STATE_VERSION:
                raise MedakaError(f"{self.path}: state of another version ({data.get('version')!r}); "
                                  "delete it (or use a new output folder) to start from scratch")
            self.stages = data.get("stages", {})

    def finished(self, name: str, fp: str) -> Optional[dict]:
        """The record of a stage finished with fingerprint ``fp``, else None."""
        record = self.stages.get(name)
        return record if record and record.get("fingerprint") == fp else None

    def why_redo(self, name: str, fp: str) -> str:
        record = self.stages.get(name)
        if record is None:
            return "not run yet"
        return f"its inputs changed (fingerprint {record.get('fingerprint')} -> {fp})"

    def mark(self, name: str, fp: str, outputs: Mapping, seconds: float) -> None:
        with self._lock:
            self.stages[name] = {"fingerprint": fp, "outputs": dict(outputs), "seconds": round(seconds, 1),
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            write_json_atomic(self.path, {"version": STATE_VERSION, "stages": self.stages})

    def forget_after(self, names: list) -> None:
        """Drop the records of ``names`` (later stages whose input changed)."""
        with self._lock:
            for name in names:
                self.stages.pop(name, None)
            write_json_atomic(self.path, {"version": STATE_VERSION, "stages": self.stages})


def run_stages(stages: list, state: RunState, *, log: Callable[[str], None] = print,
               dry_run: bool = False) -> dict:
    """Run ``stages`` in order, skipping those the state file records as finished with the same inputs.

    Each stage's fingerprint covers its own inputs and the fingerprints of all stages before it, so a change
    anywhere re-runs everything below it.

    Returns
    -------
    dict
        Stage name -> ``{"outputs", "skipped", "seconds"}``.
    """
    results, chain = {}, []
    for i, stage in enumerate(stages, 1):
        fp = fingerprint({"inputs": stage.inputs(), "before": chain})
        chain.append(fp)
        head = f"[{i}/{len(stages)}] {stage.name}"
        if dry_run:
            done = state.finished(stage.name, fp)
            log(f"{head}: {'finished, would be skipped' if done else 'would run (' + state.why_redo(stage.name, fp) + ')'}")
            for command in stage.commands():
                log(f"      $ {command}")
            continue
        done = state.finished(stage.name, fp)
        if done is not None:
            log(f"{head}: finished earlier ({done['finished']}), skipped")
            results[stage.name] = {"outputs": done["outputs"], "skipped": True, "seconds": done["seconds"]}
            continue
        if stage.name in state.stages:
            log(f"{head}: redone, {state.why_redo(stage.name, fp)}")
            later = stages[i - 1:]
            for s in later:  # outputs first, records second: a kill in between only repeats the reset
                if s.name in state.stages and s.reset is not None:
                    s.reset()
            state.forget_after([s.name for s in later])
        else:
            log(f"{head}")
        for command in stage.commands():
            log(f"      $ {command}")
        t0 = time.perf_counter()
        outputs = stage.run() or {}
        seconds = time.perf_counter() - t0
        state.mark(stage.name, fp, outputs, seconds)
        log(f"      done in {seconds:.0f} s")
        results[stage.name] = {"outputs": outputs, "skipped": False, "seconds": round(seconds, 1)}
    return results
