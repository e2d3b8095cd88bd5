"""The pieces of the review pages: HTML helpers, the sections a run page and each experiment unit show (results,
pseudo-labels with thumbnails, quality classifier, learning curves, timings), and the pictures they copy or draw.
Every string from a run folder is escaped."""
from __future__ import annotations

import html
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence
from urllib.parse import quote

log = logging.getLogger(__name__)

__all__ = ["METRIC_COLUMNS", "STYLE", "copy_png", "copy_unit_plots", "curves_section", "decision_span", "delta_span",
           "esc", "fmt", "html_figure", "html_table", "markdown_inline", "organ_legend", "pseudo_section",
           "quality_section", "results_section", "rounds_section", "safe_name", "src_link", "timings_section", "write_thumbnails"]

METRIC_COLUMNS = ("n", "n_bad", "auroc", "auprc", "spearman", "aurc", "mae", "accepted_fraction",
                   "accepted_good_fraction", "accepted_mean_iou")
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1150px;padding:1em 2em;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td.name,th.name{text-align:left}
.better{color:#0a7a2a;font-weight:600}.worse{color:#b00020;font-weight:600}
.missing{background:#fff6e0;border:1px solid #e8c26a;padding:.6em 1em}
.note{color:#555;font-size:.92em}
img{max-width:100%;height:auto;border:1px solid #ddd}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0;flex:1 1 420px}
figcaption{font-size:.85em;color:#555}
.case{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:1em 0}
.case h3{margin:.2em 0}.case .body{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.case .body img{max-width:720px}.accept{color:#0a7a2a;font-weight:600}.reject{color:#b00020;font-weight:600}
.partial{color:#a05a00;font-weight:600}
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #555;vertical-align:middle;margin:0 .3em 0 .8em}
nav a{margin-right:1em}.wide{overflow-x:auto}
"""


def esc(value) -> str:
    """HTML-escaped text of any value."""
    return html.escape("" if value is None else str(value), quote=True)


def src_link(relative: str) -> str:
    """An escaped, URL-quoted relative link."""
    return esc(quote(relative.replace(os.sep, "/")))


def fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "n/a"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return esc(value)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80] or "case"


def copy_png(source: Path, folder: Path, name: str) -> str:
    """Copy a PNG into the report folder; returns its relative link."""
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return name


def html_figure(link: str, caption: str) -> str:
    return f'<figure><img src="{src_link(link)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]], name_columns: int = 1) -> str:
    """An HTML table; header cells are escaped here, row cells must already be HTML."""
    head = "".join(f'<th class="name">{esc(h)}</th>' if i < name_columns else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="name">{c}</td>' if i < name_columns else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def delta_span(teacher, student) -> str:
    if teacher is None or student is None:
        return "n/a"
    d = float(student) - float(teacher)
    css = "better" if d > 0 else "worse" if d < 0 else ""
    return f'<span class="{css}">{d:+.3f}</span>'


def results_section(run: Mapping, links: Mapping[str, str]) -> str:
    parts = ['<h2 id="results">1. Results on the held-out test cases</h2>']
    scores = run["scores"]
    if scores:
        from nnunet_medaka.training.comparison import stronger_baseline

        baseline = stronger_baseline(scores) if "teacher" in scores else None
        roles = [r for r in ("teacher", "supervised", "student") if r in scores]
        base, student = scores.get(baseline, {}), scores.get("student", {})
        organs = [o for o in {**base, **student} if o != "mean"] + ["mean"]
        rows = []
        for organ in organs:
            b, s = base.get(organ, {}), student.get(organ, {})
            rows.append([f"<b>{esc(organ)}</b>" if organ == "mean" else esc(organ),
                         *[fmt(scores[r].get(organ, {}).get("Dice")) for r in roles], delta_span(b.get("Dice"), s.get("Dice")),
                         *[fmt(scores[r].get(organ, {}).get("IoU")) for r in roles], delta_span(b.get("IoU"), s.get("IoU"))])
        parts.append(html_table(["organ", *[f"Dice {r}" for r in roles], "Δ Dice", *[f"IoU {r}" for r in roles],
                                 "Δ IoU"], rows))
        parts.append(f'<p class="note">Δ = student − {esc(baseline)}, the stronger baseline (teacher: the ensemble of '
                     "its cross-validation folds; supervised: one model on every labeled case, same initial weights "
                     "and schedule as the student); green: the student is higher. One run at one seed: a "
                     "difference within the run-to-run spread is no evidence either way.</p>")
    else:
        parts.append('<p class="missing">No test scores yet: the run\'s evaluate stage has not finished.</p>')
    figures = [html_figure(links[k], c) for k, c in (("iou_per_organ.png", "IoU per organ, baselines and student"),
                                                  ("overlays.png", "test cases: ground truth and predictions"))
               if k in links]
    if figures:
        parts.append('<div class="plots">' + "".join(figures) + "</div>")
    return "\n".join(parts)


def rounds_section(run: Mapping, links: Mapping[str, str]) -> str:
    """The self-training rounds of a run with ``rounds > 1``: each round's decision, out-of-fold evidence and test
    scores, and the round the evidence picks (empty for a run of one round)."""
    table = run.get("rounds")
    if not table:
        return ""
    base = table["baseline_test"]["IoU"]
    rows = []
    for r in table["rounds"]:
        name = "teacher" if r["round"] == 0 else f"round {r['round']} students"
        if not r["ran"]:
            rows.append([esc(name), "—", "—", "—", f'<span class="reject">stopped</span>: {esc(r["reason"])}'])
            continue
        rows.append([f"<b>{esc(name)}</b>" if r["round"] == table["chosen_round"] else esc(name), fmt(r["oof_dice"], 4),
                     fmt(r["test"]["IoU"]), delta_span(base, r["test"]["IoU"]),
                     "chosen by the out-of-fold evidence" if r["round"] == table["chosen_round"] else ""])
    parts = ['<h2 id="rounds">Self-training rounds</h2>',
             html_table(["model", "out-of-fold Dice (labeled)", "test mean IoU", f"Δ IoU vs {table['baseline']}", "note"],
                        rows),
             f'<p class="note">A round runs only when the previous round\'s students beat their teacher\'s out-of-fold '
             f"Dice on the labeled cases by more than {fmt(table['min_gain'])}; the chosen model is picked by that "
             "evidence alone, never by the test scores shown beside it.</p>"]
    if "rounds.png" in links:
        parts.append('<div class="plots">' + html_figure(links["rounds.png"], "evidence and test IoU per round") + "</div>")
    return "\n".join(parts)


def organ_legend(organs: Mapping[str, int], ignore_label: Optional[int]) -> str:
    from nnunet_medaka.report.thumbnails import IGNORE_COLOUR, label_colour

    def swatch(rgb) -> str:
        return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb)

    items = [f'<span class="swatch" style="background:{swatch(label_colour(v))}"></span>{esc(name)} (label {v})'
             for name, v in organs.items()]
    if ignore_label is not None:
        items.append(f'<span class="swatch" style="background:{swatch(IGNORE_COLOUR)}"></span>ignored '
                     f"(label {esc(ignore_label)}: organs rejected by the quality filter)")
    return '<p class="note">Colours:' + "".join(items) + "</p>"


def decision_span(text: Optional[str]) -> str:
    if not text:
        return "n/a"
    css = {"accept": "accept", "reject": "reject", "partial": "partial"}.get(text, "")
    mark = {"accept": "✔ ", "reject": "✘ ", "partial": "◐ "}.get(text, "")
    return f'<span class="{css}">{mark}{esc(text)}</span>'


def pseudo_section(run: Mapping, ranked: Sequence[str], thumbs: Mapping[str, str], max_cases: int,
                    heading: str = '<h2 id="pseudo">2. Pseudo-labels, ranked by predicted quality</h2>') -> str:
    pseudo = run["pseudo"]
    cases = pseudo["cases"]
    parts = [heading]
    summary = pseudo.get("summary")
    if summary:
        parts.append(f"<p>{esc(summary.get('finished'))} unlabeled cases pseudo-labeled, acceptance "
                     f"<code>{esc(summary.get('acceptance'))}</code>: {esc(summary.get('cases_accepted'))} accepted, "
                     f"{esc(summary.get('cases_partial'))} partly, {esc(summary.get('cases_rejected'))} rejected; "
                     f"{esc(len(summary.get('cases_for_student') or []))} went into the student's training set.</p>")
    if not cases:
        parts.append('<p class="missing">No pseudo-labels yet.</p>')
        return "\n".join(parts)
    shown = ranked[:max_cases]
    parts.append(f'<p class="note">Ranked by the mean predicted IoU over organs (best first). Showing '
                 f"{len(shown)} of {len(cases)} cases" + (f" (capped at {max_cases}; use --max-cases to show more)"
                                                         if len(shown) < len(cases) else "") +
                 ". Each image: three orthogonal slices through the centre of the pseudo-labelled organs. "
                 "True IoU needs the unlabeled cases' ground truth and is n/a without it.</p>")
    parts.append(organ_legend(run["labels"], run["ignore_label"]))
    for rank, case in enumerate(shown, 1):
        entry = cases[case]
        rows = [[esc(o.get("organ")), decision_span(o.get("decision")), fmt(o.get("predicted_iou")), fmt(o.get("p_good")),
                 fmt(o.get("true_iou")), esc(o.get("voxels"))] for o in entry["organs"]]
        block = [f'<div class="case" id="case-{esc(safe_name(case))}"><h3>#{rank} {esc(case)}: '
                 f"{decision_span(entry.get('case_decision'))}</h3>"]
        block.append('<div class="body">')
        if case in thumbs:
            block.append(f'<img src="{src_link(thumbs[case])}" alt="{esc(case)}: axial, coronal and sagittal slices">')
        else:
            why = [w for w, missing in (("image", entry.get("image") is None),
                                        ("pseudo-label map", entry.get("label_map") is None)) if missing]
            block.append(f'<p class="missing">No picture: {esc(" and ".join(why) or "thumbnail failed")} not found.</p>')
        block.append(html_table(["organ", "decision", "predicted IoU", "P(good)", "true IoU", "voxels"], rows))
        block.append("</div></div>")
        parts.append("".join(block))
    return "\n".join(parts)


def quality_section(run: Mapping, links: Mapping[str, str],
                     heading: str = '<h2 id="quality">3. Quality classifier</h2>') -> str:
    quality = run["quality"]
    report = quality["report"]
    parts = [heading]
    if report is None and not quality["plots"]:
        parts.append('<p class="missing">No evaluation of the quality classifier in this run (no quality/evaluation '
                     "folder).</p>")
        return "\n".join(parts)
    if report:
        parts.append(f"<p>Grouped cross-validation on the teacher's out-of-fold predictions, a pseudo-label is good "
                     f"when its IoU ≥ tau = {esc(report.get('tau'))}: {esc(report.get('summary'))}</p>")
        methods = report.get("methods") or {}
        if methods:
            parts.append('<p class="note">Methods: ' + "; ".join(f"<code>{esc(k)}</code>: {esc(v)}"
                                                              for k, v in methods.items()) + ".</p>")
    figures = [html_figure(links[p.name], p.stem.replace("_", " ")) for p in quality["plots"] if p.name in links]
    if figures:
        parts.append('<div class="plots">' + "".join(figures) + "</div>")
    if quality["metrics"]:
        columns = [c for c in METRIC_COLUMNS if c in quality["metrics"][0]]
        rows = [[esc(r.get("subset")), esc(r.get("organ")), esc(r.get("method")),
                 *[esc(r.get(c)) if c in ("n", "n_bad") else fmt(r.get(c)) for c in columns]]
                for r in quality["metrics"]]
        parts.append('<p class="note">Metrics (metrics.csv): "real" rows are the teacher\'s real out-of-fold '
                     'predictions, "all" adds the synthetic corruptions; n/a where only one class occurs.</p>')
        parts.append('<div class="wide">' + html_table(["subset", "organ", "method", *[c.replace("_", " ") for c in columns]],
                                                  rows, name_columns=3) + "</div>")
    return "\n".join(parts)


def curves_section(run: Mapping, links: Mapping[str, str], heading: str = '<h2 id="curves">4. Learning curves</h2>',
                    level: int = 3) -> str:
    parts = [heading,
             '<p class="note">nnU-Net\'s progress.png of every trained fold: losses, pseudo Dice, learning rate and '
             "epoch time.</p>"]
    for role, model in run["models"].items():
        parts.append(f"<h{level}>{esc(role)}</h{level}>")
        if model["folder"] is not None:
            parts.append(f'<p class="note">{esc(model["folder"])}</p>')
        figures = [html_figure(links[f"{role}/{fold}"], f"{role} {fold}") for fold, png in model["folds"]
                   if f"{role}/{fold}" in links]
        parts.append('<div class="plots">' + "".join(figures) + "</div>" if figures
                     else f'<p class="missing">No learning curve of the {esc(role)} found.</p>')
    return "\n".join(parts)


def timings_section(run: Mapping) -> str:
    rows, total = [], 0.0
    for name, entry in run["stages"].items():
        entry = entry or {}
        seconds = entry.get("seconds")
        if isinstance(seconds, (int, float)):
            total += seconds
        rows.append([esc(name), fmt(seconds, 1) if seconds is not None else "n/a",
                     fmt(seconds / 60, 1) if isinstance(seconds, (int, float)) else "n/a",
                     esc(entry.get("finished")) if entry.get("finished") else '<span class="reject">not finished</span>'])
    rows.append(["<b>total</b>", f"<b>{total:.1f}</b>", f"<b>{total / 60:.1f}</b>", ""])
    parts = ['<h2 id="timings">5. Stage timings</h2>', html_table(["stage", "seconds", "minutes", "finished"], rows)]
    settings = run["settings"]
    if settings:
        rows = [[esc(k), esc(v)] for k, v in settings.items()]
        parts.append("<details><summary>Run settings (run_settings.json)</summary>"
                     + html_table(["setting", "value"], rows, name_columns=2) + "</details>")
    return "\n".join(parts)


def markdown_inline(text: str) -> str:
    """Escaped text with markdown's **bold** and `code` kept (the answer lines of results.md)."""
    out = html.escape(text, quote=True)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def write_thumbnails(run: Mapping, ranked: Sequence[str], folder: Path, progress: bool) -> dict:
    from tqdm import tqdm

    from nnunet_medaka.report.thumbnails import write_case_thumbnail

    cases = run["pseudo"]["cases"]
    todo = [c for c in ranked if cases[c].get("label_map") is not None or cases[c].get("image") is not None]
    thumbs = {}
    for i, case in enumerate(tqdm(todo, desc="thumbnails", unit="case", disable=not progress)):
        entry = cases[case]
        name = f"cases/{i + 1:03d}_{safe_name(case)}.png"
        (folder / "cases").mkdir(exist_ok=True)
        try:
            write_case_thumbnail(entry.get("image"), entry.get("label_map"), folder / name, run["labels"],
                                 ignore_label=run["ignore_label"], title=case)
        except Exception as e:  # noqa: BLE001 - one unreadable volume must not lose the whole page
            log.warning("%s: no thumbnail (%s)", case, e)
            run["missing"].append(f"{case}: thumbnail failed ({e})")
            continue
        thumbs[case] = name
    return thumbs


def copy_unit_plots(run: Mapping, built: Path, prefix: str) -> dict:
    """Copy a run's (or an experiment unit's) quality plots and learning curves below ``built/prefix``; returns
    the links keyed as the page sections look them up (plot file name, ``ROLE/fold_K``)."""
    links = {p.name: copy_png(p, built, f"{prefix}quality/{p.name}") for p in run["quality"]["plots"]}
    for role, model in run["models"].items():
        for fold, png in model["folds"]:
            if png is not None:
                links[f"{role}/{fold}"] = copy_png(png, built, f"{prefix}curves/{safe_name(role)}_{safe_name(fold)}.png")
    return links
