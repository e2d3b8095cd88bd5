"""What a run folder holds, read without assumptions: every piece is optional, and what is missing is said.

`collect_run` reads a folder written by ``nnunet-medaka run`` (finished or not) into one plain dict that the page
renders: settings, stage timings, scores, the pseudo-label table with each case's image and label map, the quality
classifier's evaluation, and the model folders' learning curves. Recorded absolute paths are used when they still
exist; otherwise the run folder's own layout is tried, so a run folder copied elsewhere still reports.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Optional

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pipeline.layout import RUN_STAGES, RunLayout

__all__ = ["QUALITY_PLOTS", "RUN_STAGES", "collect_pseudolabels", "collect_quality", "collect_run", "model_folds", "rank_cases",
           "read_json_noted"]

# the plots `nnunet-medaka qc evaluate` writes (used when its report.json does not list them)
QUALITY_PLOTS = ("scatter_predicted_vs_true_iou.png", "roc_and_risk_coverage_real.png",
                 "roc_and_risk_coverage_all.png", "per_organ_auroc.png")
_FLOAT_COLUMNS = ("predicted_iou", "p_good", "true_iou")


def read_json_noted(path: Path, missing: list, what: str) -> Optional[Any]:
    """The parsed file, or None with a note in ``missing`` when it is absent or unreadable."""
    if not path.is_file():
        missing.append(f"{what} ({path.name}) not found")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        missing.append(f"{what} ({path}) unreadable: {e}")
        return None


def _locate(recorded: Optional[str], own: Path) -> Path:
    """The run folder's ``own`` subfolder when it exists (a run folder copied elsewhere still names the original),
    else ``recorded`` when that exists, else ``own``."""
    if own.exists() or not recorded or not Path(recorded).exists():
        return own
    return Path(recorded)


def _number(text: Any) -> Optional[float]:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _pseudo_rows(pseudo_dir: Path, missing: list) -> tuple[dict, str]:
    """case -> {"organs": [...], "case_decision", "images"} from pseudolabels.csv, else from records/*.json."""
    cases: dict = {}
    table = pseudo_dir / "pseudolabels.csv"
    records = sorted((pseudo_dir / "records").glob("*.json")) if (pseudo_dir / "records").is_dir() else []
    for path in records:  # the records know each case's image files
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        cases[record.get("case", path.stem)] = {
            "organs": [{**o, **{k: _number(o.get(k)) for k in _FLOAT_COLUMNS}} for o in record.get("organs", [])],
            "case_decision": record.get("case_decision"), "images": record.get("images") or [],
            "label_file": record.get("label_file")}
    if table.is_file():
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
        from_table: dict = {}
        for row in rows:
            entry = from_table.setdefault(row["case"], {"organs": [], "case_decision": row.get("case_decision"),
                                                        "images": cases.get(row["case"], {}).get("images", []),
                                                        "label_file": cases.get(row["case"], {}).get("label_file")})
            entry["organs"].append({"organ": row.get("organ"), "label": int(row["label"]) if row.get("label") else None,
                                    "voxels": int(row["voxels"]) if row.get("voxels") else None,
                                    "decision": row.get("decision"),
                                    **{k: _number(row.get(k)) for k in _FLOAT_COLUMNS}})
        return from_table, "pseudolabels.csv"
    if cases:
        missing.append(f"pseudo-label table ({table.name}) not written yet: shown from {len(cases)} finished case records")
        return cases, "records"
    missing.append("pseudo-labels: no pseudolabels.csv and no finished case records")
    return {}, "none"


def rank_cases(cases: dict) -> list:
    """Case ids, best first: by mean predicted IoU over organs (cases without one last), then by id."""
    def key(case: str):
        values = [o["predicted_iou"] for o in cases[case]["organs"] if o.get("predicted_iou") is not None]
        return (0, -sum(values) / len(values), case) if values else (1, 0.0, case)

    return sorted(cases, key=key)


def _image_for(case: str, entry: dict, image_dirs: list, ending: str) -> Optional[Path]:
    for recorded in entry.get("images") or []:
        if Path(recorded).is_file():
            return Path(recorded)
    for folder in image_dirs:
        candidate = Path(folder) / f"{case}_0000{ending}"
        if candidate.is_file():
            return candidate
    return None


def model_folds(model: Path) -> list:
    """[(fold name, progress.png or None)] of a model folder, folds in numeric order."""
    def order(p: Path):
        suffix = p.name[len("fold_"):]
        return (0, int(suffix), "") if suffix.isdigit() else (1, 0, suffix)

    folds = sorted((p for p in model.glob("fold_*") if p.is_dir()), key=order)
    return [(p.name, p / "progress.png" if (p / "progress.png").is_file() else None) for p in folds]


def _metrics_rows(path: Path) -> list:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def collect_pseudolabels(pseudo_dir: Path, missing: list, *, raw: Optional[Path] = None,
                         raw_json: Optional[dict] = None) -> dict:
    """The pseudo-labels of a ``pseudolabel`` output folder: each case's organs and decisions, its image and label
    map (paths, or None when not found), the organ labels and the ignore label.

    Returns
    -------
    dict
        ``pseudo`` ({``dir``, ``cases``, ``source``, ``summary``}), ``labels`` (organ -> value, background and
        ignore left out), ``ignore_label``, ``settings`` (``pseudolabel_settings.json``).
    """
    raw_json = raw_json or {}
    settings: dict = {}
    if pseudo_dir.is_dir():
        settings = read_json_noted(pseudo_dir / "pseudolabel_settings.json", missing, "pseudo-label settings") or {}
        cases, source = _pseudo_rows(pseudo_dir, missing)
    else:
        missing.append("pseudo-labels: no pseudolabels folder yet")
        cases, source = {}, "none"
    ending = settings.get("file_ending") or raw_json.get("file_ending") or ".nii.gz"
    image_dirs = [d for d in (settings.get("images"), settings.get("input"),
                              str(raw / raw_json["unlabeled_images"]) if raw and raw_json.get("unlabeled_images") else None)
                  if d]
    for case, entry in cases.items():
        entry["image"] = _image_for(case, entry, image_dirs, ending)
        label = pseudo_dir / (entry.get("label_file") or f"labels/{case}{ending}")
        entry["label_map"] = label if label.is_file() else None
    labels = settings.get("labels") or raw_json.get("labels") or {}
    labels = {k: v for k, v in labels.items() if k not in ("background", "ignore") and isinstance(v, int) and v > 0}
    summary = read_json_noted(pseudo_dir / "pseudolabel_summary.json", [], "") if pseudo_dir.is_dir() else None
    return {"pseudo": {"dir": pseudo_dir, "cases": cases, "source": source, "summary": summary}, "labels": labels,
            "ignore_label": settings.get("ignore_label", raw_json.get("labels", {}).get("ignore")),
            "settings": settings}


def collect_quality(quality_dir: Path, missing: list) -> dict:
    """The quality classifier's evaluation in ``quality_dir/evaluation``: {``report``, ``plots``, ``metrics``,
    ``dir``}, each empty (None or []) when absent, with a note in ``missing``."""
    evaluation = quality_dir / "evaluation"
    report, plots, metrics = None, [], []
    if evaluation.is_dir():
        report = read_json_noted(evaluation / "report.json", missing, "quality classifier evaluation")
        names = (report or {}).get("plots") or QUALITY_PLOTS
        plots = [evaluation / n for n in names if (evaluation / n).is_file()]
        metrics = _metrics_rows(evaluation / "metrics.csv")
        if not metrics:
            missing.append("quality classifier metrics (metrics.csv) not found")
    else:
        missing.append("quality classifier evaluation: no quality/evaluation folder")
    return {"report": report, "plots": plots, "metrics": metrics, "dir": quality_dir}


def collect_run(run_dir: Path) -> dict:
    """Everything the report shows about one run folder, with a list of what is missing.

    Parameters
    ----------
    run_dir
        A folder written by ``nnunet-medaka run`` (finished or still running).

    Returns
    -------
    dict
        Keys ``run``, ``settings``, ``dataset``, ``stages`` (name -> state entry or None), ``finished``, ``results``, ``scores``,
        ``labels`` (organ -> label value), ``ignore_label``, ``pseudo`` (``dir``, ``cases``, ``source``,
        ``summary``), ``quality`` (``report``, ``plots``, ``metrics``), ``models`` (role -> {``folder``,
        ``folds``}), ``plots`` (name -> path), ``rounds`` (the rounds table of a run with ``rounds > 1``, else None)
        and ``missing`` (sentences).

    Raises
    ------
    MedakaError
        When ``run_dir`` is no folder or holds none of a run's files.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MedakaError(f"{run_dir}: no such folder (give the --out folder of `nnunet-medaka run`)")
    layout = RunLayout(run_dir)
    if not any(p.is_file() for p in (layout.state, layout.settings, layout.results)):
        raise MedakaError(f"{run_dir}: no {layout.STATE}, {layout.SETTINGS} or {layout.RESULTS}; not a run folder "
                          "(give the --out folder of `nnunet-medaka run`)")
    missing: list = []
    settings = read_json_noted(layout.settings, missing, "run settings") or {}
    state = read_json_noted(layout.state, missing, "run state") or {}
    done = state.get("stages", {}) if isinstance(state, dict) else {}
    stages = {name: done.get(name) for name in RUN_STAGES}
    stages.update({name: entry for name, entry in done.items() if name not in stages})
    unfinished = [name for name in RUN_STAGES if not (stages.get(name) or {}).get("finished")]
    if unfinished:
        missing.append(f"the run has not finished: stage(s) {', '.join(unfinished)} not done")
    results = read_json_noted(layout.results, missing, "results") or {}
    paths = results.get("paths", {})
    outputs = {name: (entry or {}).get("outputs", {}) for name, entry in stages.items()}

    scores = results.get("scores") or outputs.get("evaluate", {}).get("scores")
    if not scores:
        missing.append("test scores: the evaluate stage has not finished")

    pseudo_dir = _locate(paths.get("pseudo_labels") or outputs.get("pseudolabel", {}).get("folder"),
                         layout.pseudolabels)
    raw = Path(paths["raw"]) if paths.get("raw") else None
    raw_json = {}
    if raw is not None and (raw / "dataset.json").is_file():
        raw_json = read_json_noted(raw / "dataset.json", missing, "raw dataset.json") or {}
    pseudo = collect_pseudolabels(pseudo_dir, missing, raw=raw, raw_json=raw_json)
    labels = pseudo["labels"]
    if not labels and scores:
        first = next(iter(scores.values()))
        labels = {organ: i + 1 for i, organ in enumerate(o for o in first if o != "mean")}
    quality_dir = _locate(paths.get("quality") or outputs.get("quality", {}).get("folder"), layout.quality)
    quality = collect_quality(quality_dir, missing)

    models = {}
    recorded_models = paths.get("models") or {}
    for role, stage in (("teacher", "teacher"), ("student", "student")):
        stage_outputs = outputs.get(stage, {})  # the student stage records the student and its baseline by name
        recorded = recorded_models.get(role) or stage_outputs.get("model") or stage_outputs.get(role, {}).get("model")
        folder = Path(recorded) if recorded else None
        if folder is None or not folder.is_dir():
            missing.append(f"{role} model folder not found" + (f" ({recorded})" if recorded else ""))
            models[role] = {"folder": folder, "folds": []}
            continue
        folds = model_folds(folder)
        models[role] = {"folder": folder, "folds": folds}
        for fold, png in folds:
            if png is None:
                missing.append(f"{role} {fold}: no progress.png")

    plots = {}
    for path in (layout.plot, layout.overlays):
        name = path.name
        if path.is_file():
            plots[name] = path
        else:
            missing.append(f"{name} not written yet")
    rounds = None
    if int(settings.get("rounds", 1) or 1) > 1:  # self-training rounds: their table and plot
        rounds = read_json_noted(layout.rounds, missing, "the rounds table")
        if layout.rounds_plot.is_file():
            plots[layout.ROUNDS_PLOT] = layout.rounds_plot
    return {
        "run": run_dir, "settings": settings,
        "dataset": results.get("dataset") or (pseudo["settings"].get("teacher") or {}).get("dataset")
        or (raw.name if raw is not None else None), "stages": stages, "finished": not unfinished, "results": results,
        "scores": scores, "labels": labels, "ignore_label": pseudo["ignore_label"],
        "pseudo": {**pseudo["pseudo"], "summary": results.get("pseudo_labels")
                   or outputs.get("pseudolabel", {}).get("summary") or pseudo["pseudo"]["summary"]},
        "quality": quality,
        "models": models, "plots": plots, "missing": missing, "rounds": rounds,
    }
