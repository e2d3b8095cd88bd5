"""What ``nnunet-medaka experiment`` reports: per-case scores, means over seeds, paired bootstrap intervals against the
teacher, the quality filter on the unlabeled cases, wall times, and the answers to the paper's two questions.

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
import io
import json
import math
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from nnunet_medaka.config import write_json_atomic
from nnunet_medaka.errors import MedakaError

__all__ = ["answer_lines", "compare_rows", "paired_bootstrap", "quality_on_unlabeled", "read_case_scores",
           "read_results_csv", "summarize_table", "write_experiment_results"]

CSV_COLUMNS = ("row", "fraction", "seed", "case", "organ", "IoU", "Dice")
MIN_CASES = 10  # below this many test cases the answers add that the bootstrap understates the uncertainty


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


def _nanmean(values) -> float:
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
    return {seed: {case: (_nanmean(o.values()) if organ is None else o.get(organ, float("nan")))
                   for case, o in cases.items()} for seed, cases in values.items()}


def _paired(a: dict, b: dict, n_resamples: int) -> dict:
    """Bootstrap of a − b over the cases both have, per case averaged over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    cases = sorted(set.intersection(*[set(a[s]) & set(b[s]) for s in seeds])) if seeds else []
    diffs = [_nanmean([a[s][c] - b[s][c] for s in seeds]) for c in cases]
    return {**paired_bootstrap(diffs, n_resamples=n_resamples), "seeds": seeds}


def _mean_std(per_seed: dict) -> dict:
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
                entry["iou"][organ or "overall"] = _mean_std({s: _nanmean(c.values()) for s, c in per_case.items()})
            entry["dice_overall"] = _mean_std({s: _nanmean([_nanmean(v) for v in c.values()]) for s, c in dice.items()})
            teacher = _case_values(table, "teacher", fraction)
            if row != "teacher" and teacher:
                entry["vs_teacher"] = {organ or "overall": _paired(_per_case(values, organ), _per_case(teacher, organ),
                                                                   n_resamples) for organ in [*organs, None]}
                entry["vs_teacher_per_seed"] = _seed_differences(table, (row, fraction), ("teacher", fraction))
            entries.append(entry)
    return entries


def _fmt(x: Optional[float], sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _interval(b: Mapping) -> str:
    if b["low"] is None:
        return f"Δ {_fmt(b['mean'], True)} (no interval: fewer than 2 test cases)"
    return f"Δ {_fmt(b['mean'], True)}, 95 % CI [{_fmt(b['low'], True)}, {_fmt(b['high'], True)}]"


def _few_cases(b: Mapping) -> str:
    n = b.get("n") or 0
    return "" if n >= MIN_CASES or n < 2 else (f"; only {n} test cases: a bootstrap over so few cases understates the "
                                               "uncertainty")


def _verdict(b: Mapping, seed_diffs: Sequence[float] = ()) -> str:
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
        out.append(_nanmean([va[seed][c] - vb[seed][c] for c in cases]))
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
    return {**boot, "per_seed": diffs, "verdict": _verdict(boot, diffs)}


def _per_seed(diffs: Sequence[float]) -> str:
    return f"; per seed Δ {' / '.join(_fmt(d, True) for d in diffs)}" if len(diffs) >= 2 else ""


def answer_lines(entries: Sequence[Mapping], table: Sequence[Mapping], *, fractions: Sequence[float],
                 seeds: Sequence[int], n_resamples: int = 2000) -> tuple[list, dict]:
    """The paper's two questions answered in words from the numbers, never claiming more than the intervals show.

    (a) Does ``pseudo-qc-kd`` beat ``teacher`` (same fraction) by more than the noise (interval over test cases
        above 0 and, with two or more seeds, a gain at every seed)?
    (b) Does ``pseudo-qc-kd`` at the smallest fraction reach ``supervised-all`` (fraction 1) quality?
    (c) Where ``pseudo-qc`` was run too: does the KD term add to the same filtered pseudo-labels (``pseudo-qc-kd``
        vs ``pseudo-qc``, same fraction; same rule as (a))?

    Returns
    -------
    lines : list of str
        Markdown lines.
    answers : dict
        The same as data (``a``: per fraction, ``b``, ``c``: per fraction where both rows ran), verdicts
        ``above``, ``below``, ``includes 0``, ``seeds disagree`` or ``unknown``, with the per-seed differences.
    """
    by_key = {(e["row"], e["fraction"]): e for e in entries}
    lines, answers = [], {"a": [], "b": None, "c": []}
    n_seeds = len(seeds)

    def answer(head: str, boot: Mapping, diffs: list, words: Mapping[str, str], means: str, fraction: float) -> dict:
        """Append the line that answers one question (``words`` per verdict); return its record."""
        v = _verdict(boot, diffs)
        lines.append(f"{head} {words[v]} ({means}, {_interval(boot)} over {boot['n']} test cases and "
                     f"{len(boot['seeds'])} seed(s){_per_seed(diffs)}){_few_cases(boot)}.")
        return {"fraction": fraction, "verdict": v, "per_seed": diffs, **{k: boot[k] for k in ("mean", "low", "high", "n")}}

    def versus(a: tuple, b: tuple) -> tuple:
        """(row, fraction) a minus b: the paired bootstrap over test cases and the per-seed differences."""
        c = compare_rows(table, a, b, n_resamples=n_resamples)
        return c, c["per_seed"]

    unknown = "**unknown**: too few test cases for an interval"
    seeds_disagree = ("**no**: the interval over test cases excludes 0, but not every seed shows the difference, so it "
                      "is not larger than the run-to-run noise")
    for fraction in sorted(fractions):
        method, teacher = by_key.get(("pseudo-qc-kd", fraction)), by_key.get(("teacher", fraction))
        head = f"**(a) Does the full method (pseudo-qc-kd) beat its teacher by more than the noise? Fraction {fraction:g}:**"
        if method is None or teacher is None or method["vs_teacher"] is None:
            lines.append(f"{head} not answered: rows pseudo-qc-kd and teacher were not both run at this fraction.")
            answers["a"].append({"fraction": fraction, "verdict": "not run"})
            continue
        words = {"above": "**yes**" + (" (at this one seed)" if n_seeds == 1 else "") + ": the interval excludes 0, the "
                          "method is better than its teacher beyond the noise",
                 "below": "**no**: the interval lies below 0, the method is worse than its teacher",
                 "includes 0": "**no**: the interval includes 0, so no gain beyond the noise is shown",
                 "seeds disagree": seeds_disagree, "unknown": unknown}
        means = f"mean IoU {_fmt(method['iou']['overall']['mean'])} vs teacher {_fmt(teacher['iou']['overall']['mean'])}"
        # the comparison with the teacher is already in the row's entry (`summarize_table`)
        answers["a"].append(answer(head, method["vs_teacher"]["overall"], method["vs_teacher_per_seed"], words, means,
                                   fraction))
    smallest = min(fractions)
    head = (f"**(b) Does pseudo-qc-kd at the smallest fraction ({smallest:g}) reach supervised-all (fraction 1) "
            f"quality?**")
    method, reference = by_key.get(("pseudo-qc-kd", smallest)), by_key.get(("supervised-all", 1.0))
    if smallest >= 1 or method is None or reference is None:
        why = "no fraction below 1 was run" if smallest >= 1 else "rows pseudo-qc-kd and supervised-all were not both run"
        lines.append(f"{head} not answered: {why}.")
        answers["b"] = {"fraction": smallest, "verdict": "not run"}
    else:
        b, diffs = versus(("pseudo-qc-kd", smallest), ("supervised-all", 1.0))
        words = {"above": "**yes, and beyond**: the interval lies above 0",
                 "below": "**no**: the interval lies below 0, it stays below supervised-all",
                 "seeds disagree": "**not shown**: the interval over test cases excludes 0, but not every seed agrees "
                                   "on the sign, so the difference is not larger than the run-to-run noise",
                 "includes 0": ("**not shown**: the interval includes 0, so no difference is detectable here; that is "
                                f"not proof of equal quality (it may be up to {_fmt(-b['low'])} IoU worse)"
                                if b["low"] is not None else "**not shown**"),
                 "unknown": unknown}
        means = f"mean IoU {_fmt(method['iou']['overall']['mean'])} vs {_fmt(reference['iou']['overall']['mean'])}"
        answers["b"] = answer(head, b, diffs, words, means, smallest)
    for fraction in sorted(fractions):
        method, no_kd = by_key.get(("pseudo-qc-kd", fraction)), by_key.get(("pseudo-qc", fraction))
        if method is None or no_kd is None:
            continue
        b, diffs = versus(("pseudo-qc-kd", fraction), ("pseudo-qc", fraction))
        words = {"above": "**yes**: the interval excludes 0" + (" (at this one seed)" if n_seeds == 1 else ""),
                 "below": "**no, it costs**: the interval lies below 0" + (" at every seed" if n_seeds > 1 else ""),
                 "includes 0": "**no**: the interval includes 0, no effect of KD beyond the noise",
                 "seeds disagree": seeds_disagree, "unknown": unknown}
        means = (f"mean IoU {_fmt(method['iou']['overall']['mean'])} with KD vs {_fmt(no_kd['iou']['overall']['mean'])} "
                 "without")
        head = (f"**(c) Does the KD term add to the filtered pseudo-labels (pseudo-qc-kd vs pseudo-qc)? Fraction "
                f"{fraction:g}:**")
        answers["c"].append(answer(head, b, diffs, words, means, fraction))
    if n_seeds == 1:
        lines.append("One seed: the std over seeds is unknown, and the intervals cover only the sampling of test "
                     "cases, not the randomness of training; run more `--seeds` before trusting a difference.")
    else:
        lines.append(f"Intervals: paired bootstrap over test cases ({n_resamples} resamples), each case's difference "
                     f"averaged over {n_seeds} seeds; the spread between seeds is the ± std in the table below.")
    return lines, answers


def quality_on_unlabeled(pseudolabels: os.PathLike | str, *, tau: float) -> dict:
    """The quality classifier on the unlabeled cases whose ground truth was given, and the accepted counts.

    Returns
    -------
    dict
        ``n`` (organ predictions with ground truth), ``auroc`` (detecting IoU < tau from P(good)), ``spearman``
        (predicted vs true IoU), ``cases``, ``cases_for_student``, ``organs_accepted``, ``organs_rejected``, and
        the mean true IoU of the accepted and of the rejected organs (``iou_accepted``, ``iou_rejected``; None
        without ground truth or when none was accepted / rejected).
    """
    from nnunet_medaka.quality.evaluate import method_metrics

    folder = Path(pseudolabels)
    summary = json.loads((folder / "pseudolabel_summary.json").read_text())
    out = {"cases": summary["finished"], "cases_for_student": len(summary["cases_for_student"]),
           "organs_accepted": summary["organs_accepted"], "organs_rejected": summary["organs_rejected"],
           "n": 0, "auroc": None, "spearman": None,
           "iou_accepted": summary.get("true_iou", {}).get("accepted_organs_mean"),
           "iou_rejected": summary.get("true_iou", {}).get("rejected_organs_mean")}
    with open(folder / "pseudolabels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["true_iou"] and r["p_good"]]
    if rows:
        m = method_metrics(np.array([float(r["p_good"]) for r in rows]), np.array([float(r["true_iou"]) for r in rows]),
                           tau, predicted_iou=np.array([float(r["predicted_iou"]) for r in rows]))
        out.update(n=m["n"], auroc=m["auroc"], spearman=m["spearman"])
    return out


def _plot(entries: Sequence[Mapping], organs: Sequence[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*organs, "overall"]
    grid = np.array([[np.nan if e["iou"][c]["mean"] is None else e["iou"][c]["mean"] for c in columns] for e in entries])
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3, 0.45 * len(entries) + 1.8))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(entries)), [f"{e['row']} @ {e['fraction']:g}" for e in entries])
    for i in range(len(entries)):
        for j in range(len(columns)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] < 0.5 else "black")
    fig.colorbar(image, ax=ax, label="mean IoU over test cases and seeds")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _markdown(results: Mapping, answer: list) -> str:
    organs = results["organs"]
    lines = [f"# Experiment on {results['dataset']} (preset {results['preset']})", "", *answer, "",
             f"Mean IoU on {results['n_test']} held-out test cases, mean ± std over seeds "
             f"({', '.join(map(str, results['seeds']))}); Δ vs teacher of the same fraction with its 95 % paired "
             "bootstrap interval; wall time: the row's own units / everything it needs (shared units included), "
             "summed over seeds.", "",
             "| row | fraction | IoU | Dice | Δ IoU vs teacher [95 % CI] | per seed Δ | wall own / total (s) |",
             "|---|---|---|---|---|---|---|"]
    def ms(m: Mapping) -> str:
        if m["mean"] is None:
            return "n/a"
        return f"{m['mean']:.3f}" + (f" ± {m['std']:.3f}" if m["std"] is not None else " (std n/a)")

    for e in results["rows"]:
        vs = e["vs_teacher"]
        delta = "—" if vs is None else (f"{_fmt(vs['overall']['mean'], True)} [{_fmt(vs['overall']['low'], True)}, "
                                       f"{_fmt(vs['overall']['high'], True)}]")
        wall = e.get("wall_s") or {}
        per_seed = " / ".join(_fmt(d, True) for d in e.get("vs_teacher_per_seed") or []) or "—"
        lines.append(f"| {e['row']} | {e['fraction']:g} | {ms(e['iou']['overall'])} | {ms(e['dice_overall'])} | {delta} | "
                     f"{per_seed} | {wall.get('own', 'n/a')} / {wall.get('total', 'n/a')} |")
    lines += ["", "Mean IoU per organ (± std over seeds):", "",
              "| row | fraction | " + " | ".join(organs) + " |", "|---|---|" + "---|" * len(organs)]
    for e in results["rows"]:
        lines.append(f"| {e['row']} | {e['fraction']:g} | " + " | ".join(ms(e["iou"][o]) for o in organs) + " |")
    quality = results.get("quality") or []
    if quality:
        lines += ["", f"Pseudo-labels and the quality filter (tau {results['settings']['tau']}), per fraction and seed: "
                  "AUROC of detecting IoU < tau and Spearman of predicted vs true IoU, on the unlabeled cases whose "
                  "ground truth was given (evaluation only).", "",
                  "| fraction | seed | organ predictions with ground truth | AUROC | Spearman | pseudo-qc: cases accepted | "
                  "organs accepted | true IoU accepted / rejected organs | pseudo-all: cases used |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for q in quality:
            lines.append(f"| {q['fraction']:g} | {q['seed']} | {q['n']} | {_fmt(q['auroc'])} | {_fmt(q['spearman'])} | "
                         f"{q['cases_for_student']}/{q['cases']} | {q['organs_accepted']}/"
                         f"{q['organs_accepted'] + q['organs_rejected']} | {_fmt(q.get('iou_accepted'))} / "
                         f"{_fmt(q.get('iou_rejected'))} | {'n/a' if q.get('all_cases') is None else q['all_cases']} |")
    lines += ["", f"Per case and organ: `results.csv`; everything above as data: `results.json`; plot: "
              f"`{Path(results['paths']['plot']).name}`; logs: `logs/`; state: `experiment_state.json`."]
    return "\n".join(lines) + "\n"


def write_experiment_results(out: os.PathLike | str, table: Sequence[Mapping], *, dataset: str, preset: str,
                             settings: Mapping, rows: Sequence[str], fractions: Sequence[float],
                             seeds: Sequence[int], organs: Sequence[str], n_test: int, quality: Sequence[Mapping] = (),
                             wall: Optional[Mapping] = None, n_resamples: int = 2000) -> dict:
    """Write ``results.csv``, ``results.json``, ``results.md`` and ``iou_heatmap.png`` into ``out`` (atomically).

    Parameters
    ----------
    table : sequence of mapping
        One dict per row × fraction × seed × test case × organ (`CSV_COLUMNS`).
    quality : sequence of mapping
        Per (fraction, seed) `quality_on_unlabeled` results, with ``fraction``, ``seed`` and ``all_cases``.
    wall : mapping, optional
        ``(row, fraction) -> {"own": s, "total": s}``.

    Returns
    -------
    dict
        Paths of the files written.
    """
    out = Path(out)
    entries = summarize_table(table, rows=rows, fractions=fractions, organs=organs, n_resamples=n_resamples)
    for e in entries:
        e["wall_s"] = (wall or {}).get((e["row"], e["fraction"]))
    answer, answers = answer_lines(entries, table, fractions=fractions, seeds=seeds, n_resamples=n_resamples)
    plot = _plot(entries, organs, out / ".iou_heatmap.tmp.png",
                 f"{dataset}: mean IoU, {n_test} test cases, seeds {', '.join(map(str, seeds))}") if entries else None
    if plot is not None:
        os.replace(plot, out / "iou_heatmap.png")
    results = {"dataset": dataset, "preset": preset, "settings": dict(settings), "rows_run": list(rows),
               "fractions": list(fractions), "seeds": list(seeds), "organs": list(organs), "n_test": n_test,
               "answers": answers, "answer_text": answer, "rows": entries, "quality": list(quality),
               "n_bootstrap": n_resamples,
               "paths": {"csv": str(out / "results.csv"), "plot": str(out / "iou_heatmap.png"), "logs": str(out / "logs")}}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in table:
        writer.writerow([r["row"], f"{r['fraction']:g}", r["seed"], r["case"], r["organ"], f"{r['IoU']:.6f}",
                         f"{r['Dice']:.6f}"])
    for name, text in (("results.csv", buffer.getvalue()), ("results.md", _markdown(results, answer))):
        tmp = out / f".{name}.tmp{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    write_json_atomic(out / "results.json", results)
    return {k: str(out / k) for k in ("results.csv", "results.md", "results.json", "iou_heatmap.png")}
