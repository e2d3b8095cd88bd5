"""``nnunet-medaka experiment``: the paper's ablation over labeled fractions and seeds, resumable, through nnU-Net's
stock commands.

Rows: `nnunet_medaka.pipeline.experiment_units.ROWS`; one schedule and one network (the base dataset's plans).
Each row trains ``student_folds`` (default [0]) and is scored on the same test cases with ``nnUNetv2_predict`` and
``nnUNetv2_evaluate_folder``. How the work is split into shared, resumable units: `nnunet_medaka.pipeline.
experiment_units`; what is reported and how: `nnunet_medaka.pipeline.experiment_results`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import claim_folder, read_json, remove, resolve_device, write_json_atomic
from nnunet_medaka.pipeline.engine import RunState, print_events, run_graph
from nnunet_medaka.conversion.split import draw_labeled
from nnunet_medaka.pipeline.experiment_units import PSEUDO_ROWS, ROWS, UnitGraph
from nnunet_medaka.pipeline.layout import ExperimentLayout
from nnunet_medaka.training.estimate import describe

__all__ = ["EXPERIMENT_DEFAULTS", "run_experiment"]

STATE_FILE = ExperimentLayout.STATE
EXPERIMENT_DEFAULTS = {"fractions": (1.0, 0.33), "seeds": (0, 1, 2), "n_bootstrap": 2000}


def _check_choices(rows: Sequence[str], fractions: Sequence[float], seeds: Sequence[int], settings: dict,
                   n_labeled: int, n_unlabeled: int = 0) -> list:
    """Every problem with the requested rows, fractions and seeds (empty when all is well)."""
    problems = []
    size = settings["pool_size"]
    if size is not None and settings["acceptance"] != "case" and "pseudo-all" in rows:
        problems.append(f"pool_size={size} with acceptance={settings['acceptance']}: the pseudo-all row would "
                        "pseudo-label the whole pool again; use acceptance=case, or drop the row or the setting")
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        problems.append(f"--rows {' '.join(unknown) or '(none)'}: unknown or empty; choose among {', '.join(ROWS)}")
    if len(set(rows)) != len(rows):
        problems.append(f"--rows {' '.join(rows)}: a row is named twice")
    bad = [f for f in fractions if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1]
    if bad or not fractions:
        problems.append(f"--fractions {' '.join(map(str, bad)) or '(none)'}: expected labeled fractions in (0, 1], "
                        "e.g. --fractions 1 0.33")
    elif len({round(f * 100) for f in fractions}) != len(fractions):
        problems.append(f"--fractions {' '.join(map(str, fractions))}: two fractions round to the same percentage; "
                        "give distinct fractions")
    if not seeds or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds) or \
            len(set(seeds)) != len(seeds):
        problems.append(f"--seeds {' '.join(map(str, seeds)) or '(none)'}: expected distinct whole numbers >= 0")
    if not settings["final_validation"] and any(r.startswith("pseudo-") for r in rows):
        problems.append("final_validation=false: the pseudo-* rows need the teacher's final validation (the quality "
                        "classifier learns from its out-of-fold predictions); drop the setting or those rows")
    if settings["acceptance"] == "none" and any(r in ("pseudo-qc", "pseudo-qc-kd") for r in rows):
        problems.append("acceptance=none: the pseudo-qc rows need the quality filter; use --set acceptance=case "
                        "(or organ), or drop those rows")
    if not bad and fractions and not unknown:
        smallest = min(fractions) if any(r != "supervised-all" for r in rows) else 1.0
        k = len(draw_labeled([str(i) for i in range(n_labeled)], smallest, 0))
        if any(r.startswith("pseudo-") for r in rows) and k < 3:
            problems.append(f"fraction {smallest:g} of {n_labeled} labeled cases leaves {k}; the pseudo-* rows need at "
                            "least 3 (the quality classifier's nested grouped cross-validation over cases); raise "
                            "the fraction or drop those rows")
        elif k < settings["cv_folds"]:
            fix = f"raise the fraction or --set cv_folds={k}" if k >= 2 else \
                "raise the fraction (cross-validation needs at least 2 labeled cases)"
            problems.append(f"fraction {smallest:g} of {n_labeled} labeled cases leaves {k}, fewer than cv_folds="
                            f"{settings['cv_folds']}; {fix}")
        # the pool of the largest fraction is the smallest: the unlabeled cases and the labeled ones left out
        pool = n_unlabeled + n_labeled - len(draw_labeled([str(i) for i in range(n_labeled)], max(fractions), 0))
        if size is not None and size > pool:  # resolve_settings has checked it is a whole number
            problems.append(f"pool_size={size}: fraction {max(fractions):g} leaves a pool of {pool} unlabeled "
                            f"case(s); choose pool_size <= {pool}")
    return problems


def _allocate_ids(out: Path, keys: list, dataset_id: int, first_id: Optional[int], names) -> dict:
    """Dataset ids of the experiment: those recorded in ``OUT/datasets.json``, then the first free ones from
    ``first_id`` (default the dataset's id + 100, wrapping below 1000)."""
    from nnunet_medaka.conversion.raw_dataset import free_dataset_ids, taken_dataset_ids
    from nnunet_medaka.environment import nnunet_folder

    path = ExperimentLayout(out).ids
    ids = read_json(path, what="the experiment's dataset ids") if path.is_file() else {}
    used = taken_dataset_ids(*(nnunet_folder(v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")),
                             except_owner=path)  # its own reservations are in ids already
    new = [key for key in keys if key not in ids]
    ids.update(zip(new, free_dataset_ids(len(new), (dataset_id + 100) if first_id is None else first_id,
                                         used | set(ids.values()) | {dataset_id}, fix="free some ids or pass --first-id",
                                         wrap=first_id is None)))
    raw_root = nnunet_folder("nnUNet_raw")
    for key, ident in ids.items():
        if key in keys:
            clash = [p for p in raw_root.glob(f"Dataset{ident:03d}_*") if p.name != names(key, ids)]
            if clash:
                raise MedakaError(f"{path}: dataset id {ident} ({key}) is now taken by {clash[0]}; move that dataset or "
                                  "start the experiment in a new --out folder")
    return ids


def _prepare_out(out: Path, record: dict, overwrite: bool, *, check_only: bool = False) -> None:
    """Check the experiment folder: new, or one of this dataset's experiments (resumed), or replaced with overwrite
    (only checked with ``check_only``)."""
    layout = ExperimentLayout(out)
    if layout.settings.is_file():
        old = read_json(layout.settings, what="the experiment's settings", fix="delete the folder to start again")
        if old.get("dataset") == record["dataset"]:
            return
        if not overwrite:
            raise MedakaError(f"{layout.settings}: this folder holds the experiment on {old.get('dataset')}, not "
                              f"{record['dataset']}; choose another --out (or --overwrite to replace it)")
    else:  # refuses a folder that is not an experiment's, unless overwrite
        claim_folder(out, (ExperimentLayout.SETTINGS,), what="an experiment folder", overwrite=overwrite)
    if not check_only:
        remove(out)


def _wall_times(nodes: list, state, evaluations: list) -> dict:
    """``(row, fraction) -> {"own", "total"}`` seconds: the nodes only this row needs, and every node it needs
    (shared ones included), over all seeds, from the state file's records."""
    by_name = {n.name: n for n in nodes}
    closures: dict = {}
    for row, fraction, _, name in evaluations:
        todo, seen = [name], closures.setdefault((row, fraction), set())
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo += by_name[n].deps
    secs = lambda n: float(state.stages.get(n, {}).get("seconds", 0.0))
    return {key: {"own": round(sum(secs(n) for n in names if by_name[n].rows == {key[0]}), 1),
                  "total": round(sum(secs(n) for n in names), 1)} for key, names in closures.items()}


def run_experiment(
    dataset: str,
    out: os.PathLike | str,
    *,
    fractions: Sequence[float] = EXPERIMENT_DEFAULTS["fractions"],
    seeds: Sequence[int] = EXPERIMENT_DEFAULTS["seeds"],
    rows: Optional[Sequence[str]] = None,
    preset: str = "quick",
    overrides: Optional[dict] = None,
    device: str = "auto",
    first_id: Optional[int] = None,
    n_bootstrap: int = EXPERIMENT_DEFAULTS["n_bootstrap"],
    dry_run: bool = False,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
    on_event: Optional[Callable] = None,
) -> dict:
    """Run (or resume) the ablation of the paper on a raw dataset in ``split``'s layout.

    Parameters
    ----------
    dataset : str
        Raw dataset id or ``DatasetXXX_Name`` in ``$nnUNet_raw`` (labeled ``imagesTr``/``labelsTr``,
        ``imagesUnlabeled/`` with optional ``labelsUnlabeled_gt/``, test ``imagesTs``/``labelsTs``).
    out : path
        Experiment folder: settings, state, dataset ids, logs, per-unit pseudo-labels and predictions, results.
    fractions : sequence of float
        Labeled fractions in (0, 1]; each (fraction, seed) draws its cases from one seeded permutation.
    seeds : sequence of int
        Training seeds (config key ``seed``) and subset draws.
    rows : sequence of str, optional
        Rows to run (default all, `experiment_units.ROWS`); ``teacher`` is always run (every row's baseline).
    preset, overrides
        As ``run`` (`nnunet_medaka.training.presets.resolve_settings`).
    device : {"auto", "cpu", "cuda"}
    first_id : int, optional
        First dataset id to try for the experiment's datasets (default the dataset's id + 100).
    n_bootstrap : int
        Bootstrap resamples of the intervals.
    dry_run : bool
        List the units with their stock commands and whether they would run; write nothing.
    overwrite : bool
        Replace an ``out`` that is not an experiment folder (or belongs to another dataset).
    say : callable
        Receives each progress line.
    on_event : callable, optional
        Receives each progress event (`nnunet_medaka.pipeline.engine.Event`) instead of the printer.

    Returns
    -------
    dict
        ``units`` (name -> outputs, skipped, seconds) and, when finished, ``files`` (results paths).

    Raises
    ------
    MedakaError
        Before anything is written, for a bad dataset layout, unknown rows or settings, fractions too small for
        ``cv_folds``, or an ``out`` folder that is not this dataset's experiment.
    """
    from nnunet_medaka.conversion.raw_dataset import cases_in_folder
    from nnunet_medaka.conversion.split import split_layout
    from nnunet_medaka.training.presets import resolve_settings
    from nnunet_medaka.training.stock import stock_environ

    overrides = dict(overrides or {})
    seed = overrides.pop("seed", None)  # refused below, with the other problems: the seeds come from --seeds
    # every student of an experiment starts from random weights (a student_init override is refused below), also
    # where the preset's run default is teacher: settings that need random weights (student_width) are checked so
    settings = resolve_settings(preset, {**overrides, "student_init": "random"})
    rows = list(ROWS) if rows is None else list(rows)
    fractions = [float(f) if isinstance(f, (int, float)) and not isinstance(f, bool) else f for f in fractions]
    seeds = list(seeds)
    raw, dataset_id, dataset_json = split_layout(dataset)
    n_labeled = sum(1 for p in (raw / "labelsTr").iterdir() if p.name.endswith(dataset_json["file_ending"]))
    n_unlabeled = len(cases_in_folder(raw / dataset_json.get("unlabeled_images", "imagesUnlabeled"), None,
                                      dataset_json["file_ending"], len(dataset_json["channel_names"])))
    problems = _check_choices(rows, fractions, seeds, settings, n_labeled, n_unlabeled)
    if seed is not None:
        problems.append(f"seed={seed!r}: experiment takes its seeds from --seeds; drop the setting")
    if (overrides or {}).get("student_init", "random") != "random":
        problems.append(f"student_init={overrides['student_init']!r}: experiment starts every student from random "
                        "weights, so that every row trains for the same schedule as its teacher; drop the setting "
                        "(it is run's)")
    if settings["rounds"] != 1:
        problems.append(f"rounds={settings['rounds']}: self-training rounds are a setting of `run` only for now; drop "
                        "the setting, or run each configuration with `nnunet-medaka run --set rounds=N`")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 100:
        problems.append(f"--bootstrap {n_bootstrap!r}: expected a whole number >= 100")
    if problems:
        raise MedakaError("; ".join(problems))
    rows = [r for r in ROWS if r in rows or r == "teacher"]  # table order; the teacher is every row's baseline
    device = resolve_device(device)
    out = Path(out).expanduser().resolve()
    record = {"dataset": raw.name, "preset": preset, "settings": settings, "rows": rows, "fractions": fractions,
              "seeds": seeds}
    _prepare_out(out, record, overwrite, check_only=dry_run)
    graph = UnitGraph(raw=raw, dataset_json=dataset_json, out=out, settings=settings, rows=rows, fractions=fractions,
                      seeds=seeds, ids={}, device=device, env=stock_environ(device=device))
    keys = graph.dataset_keys()
    graph.ids.update(_allocate_ids(out, keys, dataset_id, first_id, graph.dataset_name))
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(graph.layout.settings, record)  # first: it marks the folder as an experiment's
        write_json_atomic(graph.layout.ids, graph.ids)
        from nnunet_medaka.conversion.raw_dataset import reserve_dataset_ids
        from nnunet_medaka.environment import nnunet_folder

        reserve_dataset_ids(nnunet_folder("nnUNet_raw"), graph.ids.values(), owner=graph.layout.ids)
        (out / "logs").mkdir(exist_ok=True)
    nodes = graph.nodes()
    say(f"experiment on {raw.name}, preset {preset!r}: rows {', '.join(rows)}; fractions "
        f"{', '.join(f'{f:g}' for f in fractions)}; seeds {', '.join(map(str, seeds))}; {len(nodes)} units into {out}"
        + (" (dry run: nothing is executed)" if dry_run else ""))
    if device == "cpu":  # the time of one training, measured before any work (warned about when over an hour)
        for line in describe(settings, raw, dataset_json, threads=graph.threads, dry_run=dry_run):
            say(line)
    state = RunState(graph.layout.state)
    units = run_graph(nodes, state, on_event=on_event or print_events(say, parallel=graph.workers > 1),
                      dry_run=dry_run, rows_order=rows, workers=graph.workers)
    if dry_run:
        return {"units": {}, "planned": [n.name for n in nodes]}
    files = _write_results(graph, nodes, state, out, record, n_bootstrap)
    return {"units": units, "files": files}


def _write_results(graph, nodes: list, state, out: Path, record: dict, n_bootstrap: int) -> dict:
    from nnunet_medaka.pipeline.experiment_results import write_experiment_results
    from nnunet_medaka.pseudolabel.outputs import quality_on_unlabeled
    from nnunet_medaka.training.comparison import read_case_scores

    labels = graph.dataset_json["labels"]
    organs = [k for k in labels if k not in ("background", "ignore")]
    evaluations = graph.evaluations()
    table = []
    for row, fraction, seed, name in evaluations:
        scores = read_case_scores(state.stages[name]["outputs"]["summary"], labels, graph.ending)
        for case in sorted(scores):
            for organ in organs:
                if organ in scores[case]:
                    table.append({"row": row, "fraction": fraction, "seed": seed, "case": case, "organ": organ,
                                  **scores[case][organ]})
    quality = []
    for u, fraction, seed, unit_rows in graph.units():
        if any(r in PSEUDO_ROWS for r in unit_rows):
            folders = graph.layout.unit(u)
            pooled = graph.settings["pool_size"] is not None  # the students' pool: judged where the filter acted
            q = quality_on_unlabeled(folders.pseudolabels_pool if pooled else folders.pseudolabels,
                                     tau=graph.settings["tau"])
            view = folders.pseudolabels_all / "pseudolabel_summary.json"
            # a folder left by an earlier run of the experiment with other rows or settings is not this run's
            q["all_cases"] = len(read_json(view)["cases_for_student"]) if view.is_file() and "pseudo-all" in unit_rows \
                else None
            quality.append({"fraction": fraction, "seed": seed, **q})
    return write_experiment_results(
        out, table, dataset=record["dataset"], preset=record["preset"], settings=graph.settings,
        rows=record["rows"], fractions=record["fractions"], seeds=record["seeds"], organs=organs,
        n_test=len(graph.test), quality=quality, wall=_wall_times(nodes, state, evaluations), n_resamples=n_bootstrap)


def _run(args: argparse.Namespace) -> int:
    result = run_experiment(args.dataset, args.out, fractions=args.fractions, seeds=args.seeds, rows=args.rows,
                            preset=args.preset, overrides=dict(args.set or []), device=args.device,
                            first_id=args.first_id, n_bootstrap=args.bootstrap, dry_run=args.dry_run,
                            overwrite=args.overwrite)
    if not args.dry_run:
        md = Path(result["files"]["results.md"]).read_text()
        print("\n" + md.split("\n\nMean IoU on")[0])
        print(f"\nresults: {result['files']['results.md']} (+ results.csv, results.json, iou_heatmap.png)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from nnunet_medaka.config import parse_set
    from nnunet_medaka.training.presets import PRESETS, RUN_DEFAULTS

    p = subparsers.add_parser(
        "experiment", help="the paper's ablation (teacher, pseudo-all, pseudo-qc, pseudo-qc-kd, kd-only, "
        "supervised-all) over labeled fractions and seeds, resumable, with bootstrap intervals",
        description="Rows: " + "; ".join(f"{k}: {v}" for k, v in ROWS.items()) + ". Shared work (one plan, one "
        "teacher cross-validation, quality model and pseudo-label prediction per fraction and seed) runs once; "
        "rerun the same command to resume.")
    p.add_argument("dataset", metavar="RAW_DATASET",
                   help="raw dataset id or DatasetXXX_Name in $nnUNet_raw (layout of `nnunet-medaka split`)")
    p.add_argument("--out", required=True, help="experiment folder (state, logs, results); rerun to resume")
    p.add_argument("--fractions", type=float, nargs="+", default=list(EXPERIMENT_DEFAULTS["fractions"]), metavar="F",
                   help="fractions of the labeled cases to train on (default 1 0.33)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(EXPERIMENT_DEFAULTS["seeds"]), metavar="S",
                   help="seeds (training and subset draw; default 0 1 2)")
    p.add_argument("--rows", nargs="+", metavar="ROW", help=f"rows to run (default all: {' '.join(ROWS)}); the "
                   "teacher is always run")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="training preset (default quick)")
    p.add_argument("--set", action="append", type=parse_set, metavar="KEY=VALUE",
                   help=f"override a preset or method setting as in `run` (method keys: {', '.join(RUN_DEFAULTS)}); "
                   "repeatable")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--first-id", type=int, metavar="ID", help="first dataset id for the experiment's datasets "
                   "(default: the dataset's id + 100, first free ones)")
    p.add_argument("--bootstrap", type=int, default=EXPERIMENT_DEFAULTS["n_bootstrap"], metavar="N",
                   help="bootstrap resamples of the intervals (default 2000)")
    p.add_argument("--dry-run", action="store_true", help="list the units and their stock commands; run nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that is not an experiment folder")
    p.set_defaults(func=_run)
