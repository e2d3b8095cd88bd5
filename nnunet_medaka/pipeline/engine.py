"""The one engine of ``run`` and ``experiment``: resumable nodes with dependencies, a state file, progress events.

A `Node` is one unit of work: its inputs, the nodes it depends on and its `Step` (the stock commands it stands
for, the function that does the work, and how to remove its outputs). `run_graph` runs a list of nodes through
the state file (`RunState`): a node finished with the same fingerprint is skipped; one whose fingerprint changed
is redone after its outputs and those of every recorded node below it are removed. A node's fingerprint covers
its own inputs and the fingerprints of the nodes it depends on, so a change reaches exactly the nodes below it.
The state file is rewritten atomically after each node, so a run killed with ``kill -9`` anywhere leaves either
the old or the new record, never a torn one; the work of a node killed half-way is redone (nodes resume inside
themselves where nnU-Net can, e.g. ``nnUNetv2_train --c``).

Progress is a stream of `Event` objects; `print_events` turns them into the lines both commands print, so tests
can assert on the events and the state file rather than on wording.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import fingerprint, read_json, write_json_atomic

__all__ = ["Event", "Node", "RunState", "Step", "node_fingerprints", "print_events", "run_graph"]

STATE_VERSION = 1
# for tests of resume: "NODE=WHAT" SIGKILLs this process group when NODE emits the event kind WHAT or a line
# containing WHAT (a kill at a named point, independent of the machine's speed)
KILL_AT_VAR = "nnunet_medaka_kill_at"


@dataclass(frozen=True)
class Step:
    """What a node does: ``commands()`` the stock command lines it stands for (logs, ``--dry-run``); ``run(say)``
    the work, returning a JSON-serialisable dict of outputs (``say`` takes progress lines; run again after an
    interruption it continues the work it finds); ``reset()`` removes its outputs before it is redone."""

    commands: Callable[[], list]
    run: Callable[[Callable[[str], None]], dict]
    reset: Optional[Callable[[], None]] = None


@dataclass
class Node:
    """One resumable unit of work; ``rows`` are the experiment rows whose results depend on it."""

    name: str
    inputs: Any
    deps: list
    step: Step
    rows: set = field(default_factory=set)


@dataclass(frozen=True)
class Event:
    """One piece of progress: ``kind`` ``would-run``/``would-skip`` (dry run), ``skipped``, ``started``, ``line``
    (``text`` said by the node) or ``finished`` (``seconds``); ``reason`` why a node runs, ``redo`` when it replaces
    a finished record, ``finished_at`` the record time of a skipped node."""

    kind: str
    node: str
    index: int
    total: int
    reason: str = ""
    redo: bool = False
    commands: tuple = ()
    text: str = ""
    seconds: float = 0.0
    finished_at: str = ""
    rows: tuple = ()


class RunState:
    """The state file of one run or experiment folder: node name -> fingerprint, outputs, seconds, finish time."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self.stages: dict = {}
        self._lock = threading.Lock()  # nodes finishing at the same time (parallel units)
        if self.path.exists():
            data = read_json(self.path, what="the state file", fix="delete it to start from scratch")
            if data.get("version") != STATE_VERSION:
                raise MedakaError(f"{self.path}: state of another version ({data.get('version')!r}); "
                                  "delete it (or use a new output folder) to start from scratch")
            self.stages = data.get("stages", {})

    def finished(self, name: str, fp: str) -> Optional[dict]:
        """The record of a node finished with fingerprint ``fp``, else None."""
        record = self.stages.get(name)
        return record if record and record.get("fingerprint") == fp else None

    def why_redo(self, name: str, fp: str, inputs: Any = None) -> str:
        """Why a node runs: not run yet, or which of its recorded inputs changed (or a node it depends on)."""
        record = self.stages.get(name)
        if record is None:
            return "not run yet"
        if "inputs" not in record:  # a record of an earlier version
            return f"its inputs changed (fingerprint {record.get('fingerprint')} -> {fp})"
        changed = _changed(record["inputs"], inputs)
        return f"its inputs changed ({', '.join(changed) if changed else 'a step before it changed'})"

    def mark(self, name: str, fp: str, outputs: dict, seconds: float, inputs: Any = None) -> None:
        with self._lock:
            self.stages[name] = {"fingerprint": fp, "outputs": dict(outputs), "seconds": round(seconds, 1),
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "inputs": inputs}
            self._write()

    def forget(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self.stages.pop(name, None)
            self._write()

    def _write(self) -> None:
        write_json_atomic(self.path, {"version": STATE_VERSION, "stages": self.stages})


def _changed(old: Any, new: Any, prefix: str = "") -> list:
    """Dotted names of the values that differ between two inputs (``settings.num_epochs``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(set(old) | set(new)) for c in _changed(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".") or "inputs"] if json.dumps(old, sort_keys=True, default=str) != \
        json.dumps(new, sort_keys=True, default=str) else []


def node_fingerprints(nodes: Sequence[Node], *, chained: bool = False) -> dict:
    """Name -> the fingerprint the state file records for each node.

    Both forms cover the node's inputs and its dependencies' fingerprints; they are the two that ``run``
    (``chained``: every earlier stage is a dependency) and ``experiment`` wrote before they shared this engine,
    kept so that folders made by earlier versions resume without redoing finished work.
    """
    fps: dict = {}
    for node in nodes:
        unknown = [d for d in node.deps if d not in fps]
        if unknown:  # a bug in the graph; the parallel runner would otherwise wait for it forever
            raise MedakaError(f"unit {node.name} depends on {', '.join(unknown)}, not a unit before it in the graph")
        if chained:
            fps[node.name] = fingerprint({"inputs": node.inputs, "before": [fps[d] for d in node.deps]})
        else:
            fps[node.name] = fingerprint({"inputs": node.inputs, "deps": {d: fps[d] for d in node.deps}})
    if chained:
        return fps
    return {name: fingerprint({"inputs": {"node": fp}, "before": []}) for name, fp in fps.items()}


def _dependants(nodes: Sequence[Node], name: str) -> list:
    """``name`` and every node below it, in graph order."""
    below = {name}
    for node in nodes:
        if any(d in below for d in node.deps):
            below.add(node.name)
    return [n for n in nodes if n.name in below]


def run_graph(nodes: Sequence[Node], state: RunState, *, on_event: Callable[[Event], None], dry_run: bool = False,
              workers: int = 1, chained: bool = False, rows_order: Sequence[str] = ()) -> dict:
    """Run the nodes, skipping those the state file records as finished with the same fingerprint.

    With ``workers > 1`` up to that many nodes run at once: a node starts as soon as every node it depends on has
    finished, the earliest in list order first. After a failure no new node starts; the running ones finish (and
    are recorded), then the first error is raised.

    Returns
    -------
    dict
        Node name -> ``{"outputs", "skipped", "seconds"}`` (empty for a dry run).
    """
    fps = node_fingerprints(nodes, chained=chained)
    order = {node.name: i for i, node in enumerate(nodes, 1)}
    lock = threading.Lock()

    def one(node: Node) -> dict:
        fp, i = fps[node.name], order[node.name]
        rows = tuple(r for r in rows_order if r in node.rows)
        def emit(kind: str, **kw) -> None:
            event = Event(kind, node.name, i, len(nodes), rows=rows, **kw)
            on_event(event)
            at, _, what = os.environ.get(KILL_AT_VAR, "").partition("=")
            if at == node.name and (what == kind or (kind == "line" and what in event.text)):
                os.killpg(os.getpgrp(), signal.SIGKILL)

        done = state.finished(node.name, fp)
        if dry_run:
            emit("would-skip" if done else "would-run", reason=state.why_redo(node.name, fp, node.inputs),
                 commands=tuple(node.step.commands()))
            return {}
        if done is not None:
            emit("skipped", finished_at=done["finished"])
            return {node.name: {"outputs": done["outputs"], "skipped": True, "seconds": done["seconds"]}}
        redo = node.name in state.stages
        emit("started", reason=state.why_redo(node.name, fp, node.inputs), redo=redo,
             commands=tuple(node.step.commands()))
        if redo:
            with lock:  # outputs first, records second: a kill in between only repeats the reset
                below = [n for n in _dependants(nodes, node.name) if n.name in state.stages]
                for n in below:
                    if n.step.reset is not None:
                        n.step.reset()
                state.forget(n.name for n in below)
        t0 = time.perf_counter()
        outputs = node.step.run(lambda text: emit("line", text=text)) or {}
        seconds = time.perf_counter() - t0
        state.mark(node.name, fp, outputs, seconds, node.inputs)
        emit("finished", seconds=seconds)
        return {node.name: {"outputs": outputs, "skipped": False, "seconds": round(seconds, 1)}}

    done: dict = {}
    if workers <= 1 or dry_run:
        for node in nodes:
            done.update(one(node))
        return done
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    waiting, running, errors = list(nodes), {}, []
    with ThreadPoolExecutor(workers) as pool:
        while waiting or running:
            ready = [n for n in waiting if all(d in done for d in n.deps)] if not errors else []
            for node in ready[: workers - len(running)]:
                waiting.remove(node)
                running[pool.submit(one, node)] = node
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                if future.exception() is not None:
                    errors.append(future.exception())
                else:
                    done.update(future.result())
    if errors:
        raise errors[0]
    return done


def print_events(say: Callable[[str], None], *, parallel: bool = False) -> Callable[[Event], None]:
    """The printer of both commands: ``[i/n] node`` heads, the commands as ``$ ...`` lines, the node's own lines
    indented; with ``parallel`` every line below a head names its node, since simultaneous nodes interleave."""

    def body(event: Event, text: str) -> None:
        say(f"      ({event.node}) {text}" if parallel else f"      {text}")

    def on_event(event: Event) -> None:
        head = f"[{event.index}/{event.total}] {event.node}"
        if event.kind in ("would-run", "would-skip"):
            say(f"{head}: finished, would be skipped" if event.kind == "would-skip"
                else f"{head}: would run ({event.reason})")
        elif event.kind == "skipped":
            say(f"{head}: finished earlier ({event.finished_at}), skipped")
        elif event.kind == "started":
            say(f"{head}: redone, {event.reason}" if event.redo else
                head + (f" (rows: {', '.join(event.rows)})" if event.rows else ""))
        elif event.kind == "line":
            body(event, event.text)
        elif event.kind == "finished":
            body(event, f"done in {event.seconds:.0f} s")
        for command in event.commands:
            body(event, f"$ {command}")

    return on_event
