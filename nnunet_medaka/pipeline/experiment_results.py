"""What ``nnunet-medaka experiment`` reports: the table of rows x fractions, the quality filter on the unlabeled
cases, wall times, and the answers to the paper's two questions, as ``results.md``, ``results.csv``,
``results.json`` and ``iou_heatmap.png``. The statistics are `nnunet_medaka.training.comparison`'s.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

from nnunet_medaka.files import write_json_atomic, write_text_atomic
from nnunet_medaka.pipeline.layout import ExperimentLayout
from nnunet_medaka.pseudolabel.signals import signals_table
from nnunet_medaka.training.comparison import CSV_COLUMNS, compare_rows, summarize_table, verdict
from nnunet_medaka.training.evaluation import plot_delta_heatmap

__all__ = ["answer_lines", "write_experiment_results"]

MIN_CASES = 10  # below this many test cases the answers add that the bootstrap understates the uncertainty


def _fmt(x: Optional[float], sign: bool = False) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3f}" if sign else f"{x:.3f}"


def _interval(b: Mapping) -> str:
    if b["low"] is None:
        return f"Δ {_fmt(b['mean'], True)} (no interval: fewer than 2 test cases)"
    return f"Δ {_fmt(b['mean'], True)}, 95 % CI [{_fmt(b['low'], True)}, {_fmt(b['high'], True)}]"


def _few_cases(b: Mapping) -> str:
    n = b.get("n") or 0
    few = f"; only {n} test cases: a bootstrap over so few cases understates the uncertainty"
    return "" if n >= MIN_CASES or n < 2 else few


def _per_seed(diffs: Sequence[float]) -> str:
    return f"; per seed Δ {' / '.join(_fmt(d, True) for d in diffs)}" if len(diffs) >= 2 else ""


def answer_lines(entries: Sequence[Mapping], table: Sequence[Mapping], *, fractions: Sequence[float],
                 seeds: Sequence[int], n_resamples: int = 2000) -> tuple[list, dict]:
    """The paper's two questions answered in words from the numbers, never claiming more than the intervals show.

    (a) Does ``pseudo-qc-kd`` beat the stronger fair baseline of the same fraction (``teacher``, scored as its fold
        ensemble, or ``supervised``, one model on all labeled cases; the higher mean IoU) by more than the noise
        (interval over test cases above 0 and, with two or more seeds, a gain at every seed)?
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
    lines, answers, n_seeds = [], {"a": [], "b": None, "c": []}, len(seeds)

    def answer(head: str, boot: Mapping, diffs: list, words: Mapping[str, str], means: str, fraction: float) -> dict:
        """Append the line that answers one question (``words`` per verdict); return its record."""
        v = verdict(boot, diffs)
        lines.append(f"{head} {words[v]} ({means}, {_interval(boot)} over {boot['n']} test cases and "
                     f"{len(boot['seeds'])} seed(s){_per_seed(diffs)}){_few_cases(boot)}.")
        return {"fraction": fraction, "verdict": v, "per_seed": diffs, **{k: boot[k] for k in ("mean", "low", "high", "n")}}

    def versus(a: tuple, b: tuple) -> tuple:  # a minus b: paired bootstrap over test cases, per-seed differences
        c = compare_rows(table, a, b, n_resamples=n_resamples)
        return c, c["per_seed"]

    unknown = "**unknown**: too few test cases for an interval"
    seeds_disagree = ("**no**: the interval over test cases excludes 0, but not every seed shows the difference, so it "
                      "is not larger than the run-to-run noise")
    for fraction in sorted(fractions):
        method = by_key.get(("pseudo-qc-kd", fraction))
        # the stronger of the fair baselines run at this fraction: the teacher's fold ensemble, one model on all
        baselines = [e for e in (by_key.get((r, fraction)) for r in ("teacher", "supervised")) if e is not None]
        base = max(baselines, key=lambda e: e["iou"]["overall"]["mean"] or -1.0, default=None)
        name = base["row"] if base else "teacher"
        head = (f"**(a) Does the full method (pseudo-qc-kd) beat the stronger fair baseline ({name}) by more than the "
                f"noise? Fraction {fraction:g}:**")
        if method is None or base is None:
            lines.append(f"{head} not answered: rows pseudo-qc-kd and teacher were not both run at this fraction.")
            answers["a"].append({"fraction": fraction, "verdict": "not run"})
            continue
        words = {"above": "**yes**" + (" (at this one seed)" if n_seeds == 1 else "") + f": the interval excludes 0, the "
                          f"method is better than {name} beyond the noise",
                 "below": f"**no**: the interval lies below 0, the method is worse than {name}",
                 "includes 0": "**no**: the interval includes 0, so no gain beyond the noise is shown",
                 "seeds disagree": seeds_disagree, "unknown": unknown}
        means = f"mean IoU {_fmt(method['iou']['overall']['mean'])} vs {name} {_fmt(base['iou']['overall']['mean'])}"
        answers["a"].append({**answer(head, *versus(("pseudo-qc-kd", fraction), (name, fraction)), words, means,
                                      fraction), "baseline": name})
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
                  "ground truth was given (evaluation only)"
                  + ("." if results["settings"].get("pool_size") is None else
                     f"; the students' pool is {results['settings']['pool_size']} cases of each unit's pool (setting "
                     "pool_size, a seeded draw), and everything here is measured on those."), "",
                  "| fraction | seed | organ predictions with ground truth | AUROC | Spearman | filter | pseudo-qc: cases "
                  "accepted | organs accepted | true IoU accepted / rejected organs | pseudo-all: cases used |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for q in quality:
            chosen = q.get("filter", "quality") + (" (auto)" if q.get("filter_reason") else "")
            lines.append(f"| {q['fraction']:g} | {q['seed']} | {q['n']} | {_fmt(q['auroc'])} | {_fmt(q['spearman'])} | "
                         f"{chosen} | "
                         f"{q['cases_for_student']}/{q['cases']} | {q['organs_accepted']}/"
                         f"{q['organs_accepted'] + q['organs_rejected']} | {_fmt(q.get('iou_accepted'))} / "
                         f"{_fmt(q.get('iou_rejected'))} | {'n/a' if q.get('all_cases') is None else q['all_cases']} |")
        for q in (q for q in quality if (q.get("signals") or {}).get("signals")):
            lines += ["", f"Every score of the pseudo-labels of fraction {q['fraction']:g}, seed {q['seed']}, against their "
                      "true IoU (higher score = better pseudo-label; AURC: lower is better):", "",
                      *signals_table(q["signals"], results["settings"]["tau"])]
            if q.get("filter_reason"):
                lines += ["", f"Filter of this seed, chosen without the pool's ground truth: "
                          f"{q['filter_reason'].removeprefix('auto: ')}."]
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
        Per (fraction, seed) `nnunet_medaka.pseudolabel.outputs.quality_on_unlabeled` results, with ``fraction``, ``seed`` and ``all_cases``.
    wall : mapping, optional
        ``(row, fraction) -> {"own": s, "total": s}``.

    Returns
    -------
    dict
        Paths of the files written.
    """
    layout = ExperimentLayout(Path(out))
    entries = summarize_table(table, rows=rows, fractions=fractions, organs=organs, n_resamples=n_resamples)
    for e in entries:
        e["wall_s"] = (wall or {}).get((e["row"], e["fraction"]))
    answer, answers = answer_lines(entries, table, fractions=fractions, seeds=seeds, n_resamples=n_resamples)
    plot = plot_delta_heatmap(entries, organs, layout.folder / ".iou_heatmap.tmp.png",
                 f"{dataset}: mean IoU, {n_test} test cases, seeds {', '.join(map(str, seeds))}") if entries else None
    if plot is not None:
        os.replace(plot, layout.heatmap)
    results = {"dataset": dataset, "preset": preset, "settings": dict(settings), "rows_run": list(rows),
               "fractions": list(fractions), "seeds": list(seeds), "organs": list(organs), "n_test": n_test,
               "answers": answers, "answer_text": answer, "rows": entries, "quality": list(quality),
               "n_bootstrap": n_resamples,
               "paths": {"csv": str(layout.csv), "plot": str(layout.heatmap), "logs": str(layout.logs)}}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in table:
        writer.writerow([r["row"], f"{r['fraction']:g}", r["seed"], r["case"], r["organ"], f"{r['IoU']:.6f}",
                         f"{r['Dice']:.6f}"])
    write_text_atomic(layout.csv, buffer.getvalue())
    write_text_atomic(layout.markdown, _markdown(results, answer))
    write_json_atomic(layout.results, results)
    return {p.name: str(p) for p in (layout.csv, layout.markdown, layout.results, layout.heatmap)}
