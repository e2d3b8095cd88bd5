"""What an ``nnunet-medaka experiment`` folder holds, read for its review page (``nnunet-medaka report
EXPERIMENT_DIR``, drawn by `nnunet_medaka.report.page`).

`collect_experiment` reads the experiment's layout (`pipeline.experiment_units`): the state, settings and results
files, and per fraction and seed ``units/<fraction>_<seed>/{pseudolabels,quality}`` plus the model folders recorded
in ``experiment_state.json``, each unit as the same pieces the run page shows. Every piece is optional; what is
missing is said.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from nnunet_medaka.report.collect import _folds, _read_json, collect_pseudolabels, collect_quality

__all__ = ["EXPERIMENT_FILES", "collect_experiment", "experiment_manifest", "is_experiment", "unit_anchor",
           "unit_title"]

# written by `nnunet-medaka experiment` (nnunet_medaka.pipeline.experiment_command)
EXPERIMENT_FILES = ("experiment_state.json", "experiment_settings.json")
_TRAIN_NODE = re.compile(r"^(?P<unit>f[^/]+/s\d+)/(?P<row>[a-z-]+)/fold(?P<fold>\d+)$")


def is_experiment(folder: Path) -> bool:
    """Whether ``folder`` was written by ``nnunet-medaka experiment``."""
    return any((Path(folder) / name).is_file() for name in EXPERIMENT_FILES)


def _unit_order(key: str) -> tuple:
    fraction, seed = key.split("/")
    return (int(seed[1:]), -float(fraction[1:]))


def collect_experiment(exp_dir: Path) -> dict:
    """Everything the page shows about an experiment folder, finished or not, with a list of what is missing.

    Returns
    -------
    dict
        ``run`` (the folder), ``settings``, ``results`` (``results.json`` or {}), ``state`` (unit name -> record),
        ``plots`` (name -> path), ``units`` (unit key -> a run-like dict with ``pseudo``, ``labels``,
        ``ignore_label``, ``quality``, ``models``, ``missing``), ``finished``, ``missing``.
    """
    exp_dir = Path(exp_dir)
    missing: list = []
    settings = _read_json(exp_dir / "experiment_settings.json", missing, "experiment settings") or {}
    state = (_read_json(exp_dir / "experiment_state.json", missing, "experiment state") or {}).get("stages", {})
    results = _read_json(exp_dir / "results.json", missing, "results (the experiment has not finished)") or {}
    plots = {"iou_heatmap.png": exp_dir / "iou_heatmap.png"} if (exp_dir / "iou_heatmap.png").is_file() else {}
    keys = {name.split("/")[0] + "/" + name.split("/")[1] for name in state if name.count("/") >= 2}
    keys |= {p.name.replace("_", "/", 1) for p in (exp_dir / "units").glob("f*_s*") if p.is_dir()}
    units = {}
    for key in sorted(keys, key=_unit_order):
        folder = exp_dir / "units" / key.replace("/", "_")
        unit_missing: list = []
        pseudo = collect_pseudolabels(folder / "pseudolabels", unit_missing)
        quality = collect_quality(folder / "quality", unit_missing)
        models: dict = {}
        for name, record in state.items():
            m = _TRAIN_NODE.match(name)
            if not m or m["unit"] != key:
                continue
            model = Path((record.get("outputs") or {}).get("model", ""))
            fold = f"fold_{m['fold']}"
            png = dict(_folds(model)).get(fold) if model.is_dir() else None
            entry = models.setdefault(m["row"], {"folder": model if model.is_dir() else None, "folds": []})
            entry["folds"].append((fold, png))
            if png is None:
                unit_missing.append(f"{m['row']} {fold}: no progress.png ({model})")
        units[key] = {"pseudo": pseudo["pseudo"], "labels": pseudo["labels"], "ignore_label": pseudo["ignore_label"],
                      "quality": quality, "models": models, "missing": unit_missing}
    if not units:
        missing.append("no unit has started yet")
    return {"run": exp_dir, "settings": settings, "results": results, "state": state, "plots": plots,
            "units": units, "finished": bool(results), "missing": missing}


def unit_title(key: str) -> str:
    """``Fraction 0.33, seed 0`` for the unit key ``f0.33/s0``."""
    fraction, seed = key.split("/")
    return f"Fraction {fraction[1:]}, seed {seed[1:]}"


def unit_anchor(key: str) -> str:
    """An HTML id for a unit key."""
    return "unit-" + re.sub(r"[^A-Za-z0-9]+", "-", key)


def experiment_manifest(exp: Mapping) -> dict:
    """What ``report.json`` records about an experiment page (besides the image list)."""
    return {"format": "nnunet-medaka-report", "kind": "experiment", "run": str(exp["run"]),
            "finished": exp["finished"], "units": list(exp["units"]),
            "cases": {k: len(u["pseudo"]["cases"]) for k, u in exp["units"].items()}}
