"""The folder layouts of a run and of an experiment, written down once: the writers use them, ``report`` reads them.

A run folder (``nnunet-medaka run --out``)::

    run_settings.json  run_state.json  student_dataset.json   settings, resume state, the student dataset's id
    logs/                          one log per stock command
    quality/ pseudolabels/         the quality classifier; the pseudo-labels of the unlabeled pool
    predictions/<role>/            the test-set predictions of teacher, supervised baseline and student, summary.json
    results.json results.md iou_per_organ.png overlays.png
    rounds/round<r>/ rounds.json rounds.md rounds.png   with rounds=N: each later round's folders, the rounds table

An experiment folder (``nnunet-medaka experiment --out``)::

    experiment_settings.json  experiment_state.json  datasets.json   settings, resume state, dataset ids
    logs/                          one log per stock command, named after its unit
    units/f<fraction>_s<seed>/     per unit: quality/, pseudolabels/, pseudolabels_all/, pseudolabels_pool/ (with
                                   pool_size), predictions/<row>/, configs/ (a training's own config when
                                   trainings run side by side)
    results.md results.csv results.json iou_heatmap.png

An experiment's units are named ``f0.33/s0`` and its nodes ``f0.33/s0/<step>`` (``teacher/fold0``,
``pseudo-qc/evaluate``, ``quality``, ...); a run's nodes are `RUN_STAGES`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

__all__ = ["ExperimentLayout", "RUN_STAGES", "RunLayout", "UnitFolders", "parse_train_node", "parse_unit_key",
           "unit_key"]

RUN_STAGES = ("plan", "teacher", "quality", "pseudolabel", "student-dataset", "student", "evaluate")
_TRAIN_NODE = re.compile(r"^(?P<unit>f[^/]+/s\d+)/(?P<row>[a-z-]+)/fold(?P<fold>\d+|all)$")


class UnitFolders:
    """The files one teacher/student unit writes below its folder (a run folder, or an experiment's unit)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.quality = self.folder / "quality"
        self.pseudolabels = self.folder / "pseudolabels"
        self.pseudolabels_all = self.folder / "pseudolabels_all"
        self.pseudolabels_pool = self.folder / "pseudolabels_pool"  # experiment's pool_size: the pool cut down
        self.configs = self.folder / "configs"

    def predictions(self, role: str) -> Path:
        return self.folder / "predictions" / role


class RunLayout(UnitFolders):
    """A run folder."""

    STATE, SETTINGS, STUDENT = "run_state.json", "run_settings.json", "student_dataset.json"
    RESULTS, MARKDOWN, PLOT, OVERLAYS = "results.json", "results.md", "iou_per_organ.png", "overlays.png"
    ROUNDS, ROUNDS_MARKDOWN, ROUNDS_PLOT = "rounds.json", "rounds.md", "rounds.png"
    MARKERS = (STATE, SETTINGS)

    def __init__(self, folder: Path):
        super().__init__(folder)
        for attr in ("STATE", "SETTINGS", "STUDENT", "RESULTS", "MARKDOWN", "PLOT", "OVERLAYS", "ROUNDS",
                     "ROUNDS_MARKDOWN", "ROUNDS_PLOT"):
            setattr(self, attr.lower(), self.folder / getattr(self, attr))
        self.logs = self.folder / "logs"

    def round(self, r: int) -> UnitFolders:
        """Where self-training round r (>= 2) writes: ``rounds/round<r>/``."""
        return UnitFolders(self.folder / "rounds" / f"round{r}")


class ExperimentLayout:
    """An experiment folder."""

    STATE, SETTINGS, IDS = "experiment_state.json", "experiment_settings.json", "datasets.json"
    RESULTS, MARKDOWN, CSV, HEATMAP = "results.json", "results.md", "results.csv", "iou_heatmap.png"
    MARKERS = (SETTINGS, STATE)

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        for attr in ("STATE", "SETTINGS", "IDS", "RESULTS", "MARKDOWN", "CSV", "HEATMAP"):
            setattr(self, attr.lower(), self.folder / getattr(self, attr))
        self.logs = self.folder / "logs"
        self.units = self.folder / "units"

    def unit(self, key: str) -> UnitFolders:
        return UnitFolders(self.units / key.replace("/", "_"))

    def unit_keys_on_disk(self) -> set:
        return {p.name.replace("_", "/", 1) for p in self.units.glob("f*_s*") if p.is_dir()}


def unit_key(fraction: float, seed: int) -> str:
    """``f0.33/s0``: a unit's name in the state file (its folder is ``units/f0.33_s0``)."""
    return f"f{fraction:g}/s{seed}"


def parse_unit_key(key: str) -> tuple[float, int]:
    """(fraction, seed) of a unit key, also of a node name below it."""
    fraction, seed = key.split("/")[:2]
    return float(fraction[1:]), int(seed[1:])


def parse_train_node(name: str) -> Optional[tuple[str, str, object]]:
    """(unit key, row, fold: a number or ``"all"``) of a training node's name, else None."""
    m = _TRAIN_NODE.match(name)
    return (m["unit"], m["row"], m["fold"] if m["fold"] == "all" else int(m["fold"])) if m else None
