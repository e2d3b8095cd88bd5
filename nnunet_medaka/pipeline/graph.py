"""Resumable units of work with dependencies, run one after another or side by side.

A `Node` is one unit: its inputs, the nodes it depends on, its stock commands (for logs and ``--dry-run``) and
the function that does the work. `run_nodes` runs a list of them through the state file of
`nnunet_medaka.pipeline.state`, each fingerprinted with its own inputs and those of the nodes it depends on, so a
finished node is skipped and a changed setting redoes exactly the nodes below it. ``experiment`` builds its graph
of units from these (`nnunet_medaka.pipeline.experiment_units`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

__all__ = ["Node", "node_fingerprints", "run_nodes"]


@dataclass
class Node:
    """One resumable unit of work; ``rows`` are the rows whose results depend on it."""

    name: str
    inputs: dict
    deps: list
    commands: Callable[[], list]
    run: Callable[[], dict]
    reset: Optional[Callable[[], None]] = None
    rows: set = field(default_factory=set)


def node_fingerprints(nodes: Sequence[Node]) -> dict:
    """Name -> fingerprint of each node's inputs and of the fingerprints of the nodes it depends on (which come
    before it): a change reaches exactly the nodes below it, and adding nodes changes no existing one."""
    from nnunet_medaka.pipeline.state import fingerprint

    from nnunet_medaka.errors import MedakaError

    fps: dict = {}
    for node in nodes:
        unknown = [d for d in node.deps if d not in fps]
        if unknown:  # a bug in the graph; the parallel runner would otherwise wait for it forever
            raise MedakaError(f"unit {node.name} depends on {', '.join(unknown)}, not a unit before it in the graph")
        fps[node.name] = fingerprint({"inputs": node.inputs, "deps": {d: fps[d] for d in node.deps}})
    return fps


def run_nodes(nodes: Sequence[Node], state, *, say: Callable[[str], None] = print, dry_run: bool = False,
              rows_order: Sequence[str] = (), workers: int = 1) -> dict:
    """Run the nodes through `nnunet_medaka.pipeline.state.run_stages`, each with its dependencies' fingerprints
    among its inputs; a node finished with the same fingerprint is skipped.

    With ``workers > 1`` up to that many nodes run at once: a node starts as soon as every node it depends on has
    finished, the earliest in list order first. After a failure no new node starts; the running ones finish (and
    are recorded), then the first error is raised.

    Returns
    -------
    dict
        Node name -> ``{"outputs", "skipped", "seconds"}`` (empty for a dry run).
    """
    from nnunet_medaka.pipeline.state import Stage, run_stages

    fps = node_fingerprints(nodes)
    done: dict = {}

    def one(i: int, node: Node) -> dict:
        inputs = {"node": fps[node.name]}
        prefix = f"[{i}/{len(nodes)}] "
        rows = f" (rows: {', '.join(r for r in rows_order if r in node.rows)})" if node.rows else ""

        def log(line: str) -> None:
            if line.startswith("[1/1] "):
                line = prefix + line[len("[1/1] "):] + ("" if ":" in line else rows)
            elif workers > 1:  # interleaved lines of simultaneous nodes: say whose
                line = f"      ({node.name}) {line.lstrip()}"
            say(line)

        stage = Stage(node.name, node.commands, lambda: inputs, node.run, node.reset)
        return run_stages([stage], state, log=log, dry_run=dry_run)

    if workers <= 1 or dry_run:
        for i, node in enumerate(nodes, 1):
            done.update(one(i, node))
        return done
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    order = {node.name: i for i, node in enumerate(nodes, 1)}
    waiting, running, errors = list(nodes), {}, []
    with ThreadPoolExecutor(workers) as pool:
        while waiting or running:
            ready = [n for n in waiting if all(d in done for d in n.deps)] if not errors else []
            for node in ready[: workers - len(running)]:
                waiting.remove(node)
                running[pool.submit(one, order[node.name], node)] = node
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                node = running.pop(future)
                if future.exception() is not None:
                    errors.append(future.exception())
                else:
                    done.update(future.result())
    if errors:
        raise errors[0]
    return done
