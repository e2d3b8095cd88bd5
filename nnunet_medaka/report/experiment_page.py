"""What an ``nnunet-medaka experiment`` folder holds, read for its review page (``nnunet-medaka report
EXPERIMENT_DIR``, drawn by `nnunet_medaka.report.page`).

`collect_experiment` reads the experiment's layout (`nnunet_medaka.pipeline.layout`): the state, settings and results
files, and per fraction and seed ``units/<fraction>_<seed>/{pseudolabels,quality}`` plus the model folders recorded
in ``experiment_state.json``, each unit as the same pieces the run page shows. Every piece is optional; what is
missing is said.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from nnunet_medaka.pipeline.layout import ExperimentLayout, parse_train_node, parse_unit_key
from nnunet_medaka.report.collect import collect_pseudolabels, collect_quality, model_folds, read_json_noted

__all__ = ["EXPERIMENT_FILES", "collect_experiment", "experiment_manifest", "is_experiment", "unit_anchor",
           "unit_title"]

EXPERIMENT_FILES = ExperimentLayout.MARKERS


def is_experiment(folder: Path) -> bool:
    """Whether ``folder`` was written by ``nnunet-medaka experiment``."""
    return any((Path(folder) / name).is_file() for name in EXPERIMENT_FILES)


def _unit_order(key: str) -> tuple:
    fraction, seed = parse_unit_key(key)
    return (seed, -fraction)


def collect_experiment(exp_dir: Path) -> dict:
    """Everything the page shows about an experiment folder, finished or not, with a list of what is missing.

    Returns
    -------
    dict
        ``run`` (the folder), ``settings``, ``results`` (``results.json`` or {}), ``state`` (unit name -> record),
        ``plots`` (name -> path), ``units`` (unit key -> a run-like dict with ``pseudo``, ``labels``,
        ``ignore_label``, ``quality``, ``models``, ``missing``), ``finished``, ``missing``.
    """
    layout = ExperimentLayout(Path(exp_dir))
    missing: list = []
    settings = read_json_noted(layout.settings, missing, "experiment settings") or {}
    state = (read_json_noted(layout.state, missing, "experiment state") or {}).get("stages", {})
    results = read_json_noted(layout.results, missing, "results (the experiment has not finished)") or {}
    plots = {layout.HEATMAP: layout.heatmap} if layout.heatmap.is_file() else {}
    trainings = {name: parse_train_node(name) for name in state}
    keys = {t[0] for t in trainings.values() if t} | layout.unit_keys_on_disk()
    units = {}
    for key in sorted(keys, key=_unit_order):
        folders = layout.unit(key)
        unit_missing: list = []
        pseudo = collect_pseudolabels(folders.pseudolabels, unit_missing)
        quality = collect_quality(folders.quality, unit_missing)
        models: dict = {}
        for name, record in state.items():
            if not trainings[name] or trainings[name][0] != key:
                continue
            _, row, k = trainings[name]
            model = Path((record.get("outputs") or {}).get("model", ""))
            fold = f"fold_{k}"
            png = dict(model_folds(model)).get(fold) if model.is_dir() else None
            entry = models.setdefault(row, {"folder": model if model.is_dir() else None, "folds": []})
            entry["folds"].append((fold, png))
            if png is None:
                unit_missing.append(f"{row} {fold}: no progress.png ({model})")
        units[key] = {"pseudo": pseudo["pseudo"], "labels": pseudo["labels"], "ignore_label": pseudo["ignore_label"],
                      "quality": quality, "models": models, "missing": unit_missing}
    if not units:
        missing.append("no unit has started yet")
    return {"run": layout.folder, "settings": settings, "results": results, "state": state, "plots": plots,
            "units": units, "finished": bool(results), "missing": missing}


def unit_title(key: str) -> str:
    """``Fraction 0.33, seed 0`` for the unit key ``f0.33/s0``."""
    fraction, seed = parse_unit_key(key)
    return f"Fraction {fraction:g}, seed {seed}"


def unit_anchor(key: str) -> str:
    """An HTML id for a unit key."""
    return "unit-" + re.sub(r"[^A-Za-z0-9]+", "-", key)


def experiment_manifest(exp: Mapping) -> dict:
    """What ``report.json`` records about an experiment page (besides the image list)."""
    return {"format": "nnunet-medaka-report", "kind": "experiment", "run": str(exp["run"]),
            "finished": exp["finished"], "units": list(exp["units"]),
            "cases": {k: len(u["pseudo"]["cases"]) for k, u in exp["units"].items()}}
