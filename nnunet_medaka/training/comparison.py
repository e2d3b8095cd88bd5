"""Comparing trained models on the same test cases: per-case scores from nnU-Net's evaluator, means over seeds,
paired bootstrap intervals and the verdict every comparison of ``experiment`` uses.

Statistics (all on IoU, as nnU-Net's evaluator computes it per test case and organ; an organ absent from both
prediction and reference gives NaN there and is left out of means, as nnU-Net does):

- a row's score at one seed: mean over test cases; "overall" per case is the mean over organs;
- mean ± std over seeds (sample std; unknown with one seed);
- Δ vs ``teacher`` (same fraction): per test case the row's minus the teacher's IoU at the same seed, averaged over
  the seeds both have; the interval is a paired bootstrap over test cases (resampled with replacement, statistic
  the mean Δ, percentile interval, seeded numpy Generator). It covers the test-case sampling; the seed-to-seed
  spread of training shows in the std. An interval that excludes 0 is a difference beyond that noise.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from nnunet_medaka.errors import MedakaError

__all__ = ["CSV_COLUMNS", "compare_rows", "format_comparison", "mean_std", "nanmean", "paired_bootstrap",
           "read_case_scores", "read_results_csv", "stronger_baseline", "summarize_table", "verdict"]

CSV_COLUMNS = ("row", "fraction", "seed", "case", "organ", "IoU", "Dice")


def read_case_scores(summary_file: os.PathLike | str, labels: Mapping[str, int], file_ending: str) -> dict:
    """Per test case and organ IoU and Dice from ``nnUNetv2_evaluate_folder``'s ``summary.json``.

    Returns
    -------
    dict
        ``{case: {organ: {"IoU": float, "Dice": float}}}`` (NaN where nnU-Net gives NaN).
    """
    path = Path(summary_file)
    if not path.is_file():
        raise MedakaError(f"{path}: no evaluation summary; rerun the experiment to evaluate this row")
    summary = json.loads(path.read_text())
    organs = {str(v): k for k, v in labels.items() if k not in ("background", "ignore")}
    scores = {}
    for entry in summary["metric_per_case"]:
        name = Path(entry["reference_file"]).name
        case = name[: -len(file_ending)] if name.endswith(file_ending) else name
        scores[case] = {organ: {m: float(entry["metrics"][value][m]) for m in ("IoU", "Dice")}
                        for value, organ in organs.items() if value in entry["metrics"]}
    return scores


def read_results_csv(path: os.PathLike | str) -> list:
    """An experiment's ``results.csv`` as the table the functions here take (fraction and scores as floats, seed as
    int, NaN kept).

    Raises
    ------
    MedakaError
        For a missing file or one without the expected columns.
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            lines = list(csv.DictReader(f))
        return [{"row": r["row"], "fraction": float(r["fraction"]), "seed": int(r["seed"]), "case": r["case"],
                 "organ": r["organ"], "IoU": float(r["IoU"]), "Dice": float(r["Dice"])} for r in lines]
    except OSError as e:
        raise MedakaError(f"{path}: cannot read ({e.strerror}); give an experiment folder's results.csv") from None
    except (KeyError, TypeError, ValueError) as e:
        raise MedakaError(f"{path}: not an experiment results.csv (columns {', '.join(CSV_COLUMNS)}; "
                          f"{type(e).__name__}: {e})") from None


def paired_bootstrap(differences: Sequence[float], *, n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean of paired differences and its percentile bootstrap interval, resampling the pairs with replacement.

    Parameters
    ----------
    differences : sequence of float
        One difference per test case (NaNs are dropped).
    n_resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the numpy Generator (the same inputs give the same interval).
    level : float
        Coverage of the interval.

    Returns
    -------
    dict
        ``mean``, ``low``, ``high`` (None with fewer than 2 differences) and ``n``.
    """
    d = np.asarray([x for x in differences if x is not None and not math.isnan(x)], float)
    if len(d) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    if len(d) < 2:
        return {"mean": float(d.mean()), "low": None, "high": None, "n": 1}
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_resamples, len(d)))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {"mean": float(d.mean()), "low": float(low), "high": float(high), "n": int(len(d))}


def nanmean(values) -> float:
    v = np.asarray([x for x in values if not math.isnan(x)], float)
    return float(v.mean()) if len(v) else float("nan")


def _case_values(table: Sequence[Mapping], row: str, fraction: float) -> dict:
    """``{seed: {case: {organ: IoU}}}`` of one row at one fraction."""
    out: dict = {}
    for r in table:
        if r["row"] == row and r["fraction"] == fraction:
            out.setdefault(r["seed"], {}).setdefault(r["case"], {})[r["organ"]] = r["IoU"]
    return out


def _per_case(values: dict, organ: Optional[str]) -> dict:
    """``{seed: {case: IoU}}`` for one organ, or the mean over organs (``organ`` None)."""
    return {seed: {case: (nanmean(o.values()) if organ is None else o.get(organ, float("nan")))
                   for case, o in cases.items()} for seed, cases in values.items()}


def _paired(a: dict, b: dict, n_resamples: int) -> dict:
    """Bootstrap of a − b over the cases both have, per case averaged over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    cases = sorted(set.intersection(*[set(a[s]) & set(b[s]) for s in seeds])) if seeds else []
    diffs = [nanmean([a[s][c] - b[s][c] for s in seeds]) for c in cases]
    return {**paired_bootstrap(diffs, n_resamples=n_resamples), "seeds": seeds}


def mean_std(per_seed: dict) -> dict:
    v = [x for x in per_seed.values() if not math.isnan(x)]
    return {"mean": float(np.mean(v)) if v else None, "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "per_seed": {str(k): (None if math.isnan(x) else x) for k, x in per_seed.items()}}


def summarize_table(table: Sequence[Mapping], *, rows: Sequence[str], fractions: Sequence[float],
                    organs: Sequence[str], n_resamples: int = 2000) -> list:
    """One entry per (row, fraction) present in ``table``: IoU/Dice means ± std over seeds, Δ vs teacher.

    Parameters
    ----------
    table : sequence of mapping
        ``results.csv`` lines as dicts (``row``, ``fraction``, ``seed``, ``case``, ``organ``, ``IoU``, ``Dice``).
    rows, fractions, organs
        Their order in the output.
    n_resamples : int
        Bootstrap resamples.
    """
    entries = []
    for row in rows:
        for fraction in ([1.0] if row == "supervised-all" else fractions):
            values = _case_values(table, row, fraction)
            if not values:
                continue
            dice = {}
            for r in table:
                if r["row"] == row and r["fraction"] == fraction:
                    dice.setdefault(r["seed"], {}).setdefault(r["case"], []).append(r["Dice"])
            entry = {"row": row, "fraction": fraction, "seeds": sorted(values),
                     "n_cases": len(set.union(*[set(c) for c in values.values()])), "iou": {}, "vs_teacher": None}
            for organ in [*organs, None]:
                per_case = _per_case(values, organ)
                entry["iou"][organ or "overall"] = mean_std({s: nanmean(c.values()) for s, c in per_case.items()})
            entry["dice_overall"] = mean_std({s: nanmean([nanmean(v) for v in c.values()]) for s, c in dice.items()})
            teacher = _case_values(table, "teacher", fraction)
            if row != "teacher" and teacher:
                entry["vs_teacher"] = {organ or "overall": _paired(_per_case(values, organ), _per_case(teacher, organ),
                                                                   n_resamples) for organ in [*organs, None]}
                entry["vs_teacher_per_seed"] = _seed_differences(table, (row, fraction), ("teacher", fraction))
            entries.append(entry)
    return entries


def verdict(b: Mapping, seed_diffs: Sequence[float] = ()) -> str:
    """``above``/``below`` when the interval over test cases excludes 0 and, with two or more seeds, every seed's
    difference has that sign; ``seeds disagree`` when the interval excludes 0 but some seed does not follow it (the
    difference is then not larger than the run-to-run noise); ``includes 0``; ``unknown`` without an interval."""
    if b.get("mean") is None or b["low"] is None:
        return "unknown"
    v = "above" if b["low"] > 0 else "below" if b["high"] < 0 else "includes 0"
    if len(seed_diffs) >= 2 and ((v == "above" and min(seed_diffs) <= 0) or (v == "below" and max(seed_diffs) >= 0)):
        return "seeds disagree"
    return v


def _seed_differences(table: Sequence[Mapping], a: tuple, b: tuple) -> list:
    """Per seed both have, the difference of the mean IoU over the cases and organs both have: (row, fraction) a
    minus (row, fraction) b, seeds in order."""
    va, vb = _per_case(_case_values(table, *a), None), _per_case(_case_values(table, *b), None)
    out = []
    for seed in sorted(set(va) & set(vb)):
        cases = sorted(set(va[seed]) & set(vb[seed]))
        out.append(nanmean([va[seed][c] - vb[seed][c] for c in cases]))
    return out


def compare_rows(table: Sequence[Mapping], a: tuple, b: tuple, *, n_resamples: int = 2000) -> dict:
    """Mean IoU of (row, fraction) ``a`` minus (row, fraction) ``b``, by the rule every answer uses.

    Parameters
    ----------
    table : sequence of mapping
        ``results.csv`` lines as dicts; rows of two experiments can be compared after renaming one's rows.
    a, b : tuple
        ``(row, fraction)``.
    n_resamples : int
        Bootstrap resamples.

    Returns
    -------
    dict
        ``mean``, ``low``, ``high``, ``n`` (test cases) and ``seeds`` of the paired bootstrap over test cases (each
        case's difference averaged over the seeds both have), ``per_seed`` (each seed's difference of mean IoU) and
        ``verdict``: ``above``/``below`` when the interval excludes 0 and every seed has that sign, else
        ``seeds disagree``, ``includes 0`` or ``unknown``.
    """
    boot = _paired(_per_case(_case_values(table, *a), None), _per_case(_case_values(table, *b), None), n_resamples)
    diffs = _seed_differences(table, a, b)
    return {**boot, "per_seed": diffs, "verdict": verdict(boot, diffs)}


def format_comparison(c: Mapping) -> str:
    """A `compare_rows` result as a table cell: ``+0.004 [-0.003, +0.013] (+0.006 / +0.006 / +0.001; includes 0)``."""
    interval = f" [{c['low']:+.3f}, {c['high']:+.3f}]" if c["low"] is not None else ""
    return f"{c['mean']:+.3f}{interval} ({' / '.join(f'{d:+.3f}' for d in c['per_seed'])}; {c['verdict']})"


def stronger_baseline(scores: Mapping) -> str:
    """The baseline a student must beat: of the teacher's fold ensemble and the supervised model on every labeled
    case (when there is one), the one with the higher mean IoU."""
    return max((r for r in ("teacher", "supervised") if r in scores), key=lambda r: scores[r]["mean"]["IoU"])
