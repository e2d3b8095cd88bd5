"""``nnunet-medaka report RUN_DIR``: one HTML page (plus PNGs beside it) to review a run in a browser.

The page, in order: the results table (teacher vs student per organ, Dice and IoU, the difference) with the run's
plots; the pseudo-labels ranked by predicted quality, each case with three orthogonal mid-slices and its organs'
decisions; the quality classifier's evaluation plots and metrics; the teacher's and student's learning curves
(nnU-Net's ``progress.png`` of every fold); the stage timings. Whatever the run has not produced yet is listed at
the top instead. The folder is self-contained (relative links only, no scripts, no external resources) and is
built in a temporary folder beside its target, then renamed into place.
"""
from __future__ import annotations

import argparse
import contextlib
import html
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence
from urllib.parse import quote

from nnunet_medaka.config import write_json_atomic
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.report.collect import collect_run, rank_cases
from nnunet_medaka.report.experiment_page import unit_anchor, unit_title

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_CASES", "MANIFEST_FILE", "build_report", "render_page"]

DEFAULT_MAX_CASES = 50
MANIFEST_FILE = "report.json"
_METRIC_COLUMNS = ("n", "n_bad", "auroc", "auprc", "spearman", "aurc", "mae", "accepted_fraction",
                   "accepted_good_fraction", "accepted_mean_iou")
_STYLE = """
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


def _e(value) -> str:
    """HTML-escaped text of any value."""
    return html.escape("" if value is None else str(value), quote=True)


def _src(relative: str) -> str:
    """An escaped, URL-quoted relative link."""
    return _e(quote(relative.replace(os.sep, "/")))


def _fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "n/a"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return _e(value)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80] or "case"


def _copy(source: Path, folder: Path, name: str) -> str:
    """Copy a PNG into the report folder; returns its relative link."""
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return name


def _figure(link: str, caption: str) -> str:
    return f'<figure><img src="{_src(link)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], name_columns: int = 1) -> str:
    """An HTML table; header cells are escaped here, row cells must already be HTML."""
    head = "".join(f'<th class="name">{_e(h)}</th>' if i < name_columns else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="name">{c}</td>' if i < name_columns else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _delta(teacher, student) -> str:
    if teacher is None or student is None:
        return "n/a"
    d = float(student) - float(teacher)
    css = "better" if d > 0 else "worse" if d < 0 else ""
    return f'<span class="{css}">{d:+.3f}</span>'


def _results_section(run: Mapping, links: Mapping[str, str]) -> str:
    parts = ['<h2 id="results">1. Results on the held-out test cases</h2>']
    scores = run["scores"]
    if scores:
        teacher, student = scores.get("teacher", {}), scores.get("student", {})
        organs = [o for o in {**teacher, **student} if o != "mean"] + ["mean"]
        rows = []
        for organ in organs:
            t, s = teacher.get(organ, {}), student.get(organ, {})
            rows.append([f"<b>{_e(organ)}</b>" if organ == "mean" else _e(organ),
                         _fmt(t.get("Dice")), _fmt(s.get("Dice")), _delta(t.get("Dice"), s.get("Dice")),
                         _fmt(t.get("IoU")), _fmt(s.get("IoU")), _delta(t.get("IoU"), s.get("IoU"))])
        parts.append(_table(["organ", "Dice teacher", "Dice student", "Δ Dice", "IoU teacher", "IoU student",
                             "Δ IoU"], rows))
        parts.append('<p class="note">Δ = student − teacher; green: the student is higher. One run at one seed: a '
                     "difference within the run-to-run spread is no evidence either way.</p>")
    else:
        parts.append('<p class="missing">No test scores yet: the run\'s evaluate stage has not finished.</p>')
    figures = [_figure(links[k], c) for k, c in (("iou_per_organ.png", "IoU per organ, teacher vs student"),
                                                  ("overlays.png", "test cases: ground truth and predictions"))
               if k in links]
    if figures:
        parts.append('<div class="plots">' + "".join(figures) + "</div>")
    return "\n".join(parts)


def _legend(organs: Mapping[str, int], ignore_label: Optional[int]) -> str:
    from nnunet_medaka.report.thumbnails import IGNORE_COLOUR, label_colour

    def swatch(rgb) -> str:
        return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb)

    items = [f'<span class="swatch" style="background:{swatch(label_colour(v))}"></span>{_e(name)} (label {v})'
             for name, v in organs.items()]
    if ignore_label is not None:
        items.append(f'<span class="swatch" style="background:{swatch(IGNORE_COLOUR)}"></span>ignored '
                     f"(label {_e(ignore_label)}: organs rejected by the quality filter)")
    return '<p class="note">Colours:' + "".join(items) + "</p>"


def _decision(text: Optional[str]) -> str:
    if not text:
        return "n/a"
    css = {"accept": "accept", "reject": "reject", "partial": "partial"}.get(text, "")
    mark = {"accept": "✔ ", "reject": "✘ ", "partial": "◐ "}.get(text, "")
    return f'<span class="{css}">{mark}{_e(text)}</span>'


def _pseudo_section(run: Mapping, ranked: Sequence[str], thumbs: Mapping[str, str], max_cases: int,
                    heading: str = '<h2 id="pseudo">2. Pseudo-labels, ranked by predicted quality</h2>') -> str:
    pseudo = run["pseudo"]
    cases = pseudo["cases"]
    parts = [heading]
    summary = pseudo.get("summary")
    if summary:
        parts.append(f"<p>{_e(summary.get('finished'))} unlabeled cases pseudo-labeled, acceptance "
                     f"<code>{_e(summary.get('acceptance'))}</code>: {_e(summary.get('cases_accepted'))} accepted, "
                     f"{_e(summary.get('cases_partial'))} partly, {_e(summary.get('cases_rejected'))} rejected; "
                     f"{_e(len(summary.get('cases_for_student') or []))} went into the student's training set.</p>")
    if not cases:
        parts.append('<p class="missing">No pseudo-labels yet.</p>')
        return "\n".join(parts)
    shown = ranked[:max_cases]
    parts.append(f'<p class="note">Ranked by the mean predicted IoU over organs (best first). Showing '
                 f"{len(shown)} of {len(cases)} cases" + (f" (capped at {max_cases}; use --max-cases to show more)"
                                                         if len(shown) < len(cases) else "") +
                 ". Each image: three orthogonal slices through the centre of the pseudo-labelled organs. "
                 "True IoU needs the unlabeled cases' ground truth and is n/a without it.</p>")
    parts.append(_legend(run["labels"], run["ignore_label"]))
    for rank, case in enumerate(shown, 1):
        entry = cases[case]
        rows = [[_e(o.get("organ")), _decision(o.get("decision")), _fmt(o.get("predicted_iou")), _fmt(o.get("p_good")),
                 _fmt(o.get("true_iou")), _e(o.get("voxels"))] for o in entry["organs"]]
        block = [f'<div class="case" id="case-{_e(_safe_name(case))}"><h3>#{rank} {_e(case)}: '
                 f"{_decision(entry.get('case_decision'))}</h3>"]
        block.append('<div class="body">')
        if case in thumbs:
            block.append(f'<img src="{_src(thumbs[case])}" alt="{_e(case)}: axial, coronal and sagittal slices">')
        else:
            why = [w for w, missing in (("image", entry.get("image") is None),
                                        ("pseudo-label map", entry.get("label_map") is None)) if missing]
            block.append(f'<p class="missing">No picture: {_e(" and ".join(why) or "thumbnail failed")} not found.</p>')
        block.append(_table(["organ", "decision", "predicted IoU", "P(good)", "true IoU", "voxels"], rows))
        block.append("</div></div>")
        parts.append("".join(block))
    return "\n".join(parts)


def _quality_section(run: Mapping, links: Mapping[str, str],
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
                     f"when its IoU ≥ tau = {_e(report.get('tau'))}: {_e(report.get('summary'))}</p>")
        methods = report.get("methods") or {}
        if methods:
            parts.append('<p class="note">Methods: ' + "; ".join(f"<code>{_e(k)}</code>: {_e(v)}"
                                                              for k, v in methods.items()) + ".</p>")
    figures = [_figure(links[p.name], p.stem.replace("_", " ")) for p in quality["plots"] if p.name in links]
    if figures:
        parts.append('<div class="plots">' + "".join(figures) + "</div>")
    if quality["metrics"]:
        columns = [c for c in _METRIC_COLUMNS if c in quality["metrics"][0]]
        rows = [[_e(r.get("subset")), _e(r.get("organ")), _e(r.get("method")),
                 *[_e(r.get(c)) if c in ("n", "n_bad") else _fmt(r.get(c)) for c in columns]]
                for r in quality["metrics"]]
        parts.append('<p class="note">Metrics (metrics.csv): "real" rows are the teacher\'s real out-of-fold '
                     'predictions, "all" adds the synthetic corruptions; n/a where only one class occurs.</p>')
        parts.append('<div class="wide">' + _table(["subset", "organ", "method", *[c.replace("_", " ") for c in columns]],
                                                  rows, name_columns=3) + "</div>")
    return "\n".join(parts)


def _curves_section(run: Mapping, links: Mapping[str, str], heading: str = '<h2 id="curves">4. Learning curves</h2>',
                    level: int = 3) -> str:
    parts = [heading,
             '<p class="note">nnU-Net\'s progress.png of every trained fold: losses, pseudo Dice, learning rate and '
             "epoch time.</p>"]
    for role, model in run["models"].items():
        parts.append(f"<h{level}>{_e(role)}</h{level}>")
        if model["folder"] is not None:
            parts.append(f'<p class="note">{_e(model["folder"])}</p>')
        figures = [_figure(links[f"{role}/{fold}"], f"{role} {fold}") for fold, png in model["folds"]
                   if f"{role}/{fold}" in links]
        parts.append('<div class="plots">' + "".join(figures) + "</div>" if figures
                     else f'<p class="missing">No learning curve of the {_e(role)} found.</p>')
    return "\n".join(parts)


def _timings_section(run: Mapping) -> str:
    rows, total = [], 0.0
    for name, entry in run["stages"].items():
        entry = entry or {}
        seconds = entry.get("seconds")
        if isinstance(seconds, (int, float)):
            total += seconds
        rows.append([_e(name), _fmt(seconds, 1) if seconds is not None else "n/a",
                     _fmt(seconds / 60, 1) if isinstance(seconds, (int, float)) else "n/a",
                     _e(entry.get("finished")) if entry.get("finished") else '<span class="reject">not finished</span>'])
    rows.append(["<b>total</b>", f"<b>{total:.1f}</b>", f"<b>{total / 60:.1f}</b>", ""])
    parts = ['<h2 id="timings">5. Stage timings</h2>', _table(["stage", "seconds", "minutes", "finished"], rows)]
    settings = run["settings"]
    if settings:
        rows = [[_e(k), _e(v)] for k, v in settings.items()]
        parts.append("<details><summary>Run settings (run_settings.json)</summary>"
                     + _table(["setting", "value"], rows, name_columns=2) + "</details>")
    return "\n".join(parts)


def render_page(run: Mapping, links: Mapping[str, str], ranked: Sequence[str], thumbs: Mapping[str, str],
                max_cases: int) -> str:
    """The HTML text of the report.

    Parameters
    ----------
    run
        What `collect_run` returned.
    links
        Copied plots: key (file name, or ``ROLE/fold_K`` for learning curves) -> link relative to the page.
    ranked
        Case ids in display order.
    thumbs
        Case id -> relative link of its thumbnail.
    max_cases
        Largest number of cases shown.

    Returns
    -------
    str
        A complete HTML document; every string from the run is escaped.
    """
    results = run["results"]
    title = f"nnunet-medaka run: {run['run'].name}"
    facts = [f"dataset <b>{_e(run.get('dataset') or 'unknown')}</b>",
             f"preset <b>{_e(run['settings'].get('preset') or results.get('preset') or '?')}</b>",
             "finished" if run["finished"] else '<span class="reject">not finished</span>']
    head = [f"<h1>{_e(title)}</h1>", f'<p>{", ".join(facts)}. Folder: <code>{_e(run["run"])}</code></p>',
            '<nav><a href="#results">results</a><a href="#pseudo">pseudo-labels</a><a href="#quality">quality '
            'classifier</a><a href="#curves">learning curves</a><a href="#timings">timings</a></nav>']
    if run["missing"]:
        head.append('<div class="missing"><b>Not in this report (missing from the run folder):</b><ul>'
                    + "".join(f"<li>{_e(m)}</li>" for m in run["missing"]) + "</ul></div>")
    body = "\n".join([*head, _results_section(run, links), _pseudo_section(run, ranked, thumbs, max_cases),
                      _quality_section(run, links), _curves_section(run, links), _timings_section(run)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


# ---- the page of an experiment folder (nnunet_medaka.report.experiment_page reads it) ----------------------------

def _markdown_inline(text: str) -> str:
    """Escaped text with markdown's **bold** and `code` kept (the answer lines of results.md)."""
    out = html.escape(text, quote=True)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _results_block(exp: Mapping, links: Mapping[str, str]) -> str:
    results = exp["results"]
    parts = ['<h2 id="results">1. Results on the held-out test cases</h2>']
    if not results:
        parts.append('<p class="missing">No results yet: the experiment has not finished (rerun its command to '
                     "resume; results.md is written at the end).</p>")
        return "\n".join(parts)
    for line in results.get("answer_text") or []:
        if line.strip() and not line.startswith("#"):
            parts.append(f"<p>{_markdown_inline(line.strip())}</p>")

    def ms(m: Optional[Mapping]) -> str:
        if not m or m.get("mean") is None:
            return "n/a"
        return _fmt(m["mean"]) + (f" ± {_fmt(m['std'])}" if m.get("std") is not None else " (std n/a)")

    rows = []
    for e in results.get("rows") or []:
        vs = (e.get("vs_teacher") or {}).get("overall")
        delta = "—" if not vs else (f"{vs['mean']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]"
                                    if vs.get("mean") is not None else "n/a")
        rows.append([_e(e["row"]), _e(f"{e['fraction']:g}"), ms(e["iou"]["overall"]), ms(e.get("dice_overall")),
                     _e(delta)])
    parts.append(_table(["row", "fraction", "IoU", "Dice", "Δ IoU vs teacher [95 % CI]"], rows, name_columns=2))
    parts.append(f'<p class="note">{_e(results.get("n_test"))} test cases; seeds '
                 f'{_e(", ".join(map(str, results.get("seeds") or [])))}; mean ± std over seeds. Per organ and per '
                 "case: results.md and results.csv in the experiment folder.</p>")
    if "iou_heatmap.png" in links:
        parts.append('<div class="plots">' + _figure(links["iou_heatmap.png"], "mean IoU, rows × organs") + "</div>")
    return "\n".join(parts)


def _timings_block(exp: Mapping) -> str:
    rows, total = [], 0.0
    for name, record in exp["state"].items():
        seconds = (record or {}).get("seconds")
        total += seconds if isinstance(seconds, (int, float)) else 0.0
        rows.append([_e(name), _fmt(seconds, 1) if seconds is not None else "n/a", _e((record or {}).get("finished"))])
    rows.append(["<b>total</b>", f"<b>{total:.1f}</b>", ""])
    return "\n".join(['<h2 id="timings">Unit timings</h2>',
                      '<p class="note">Every finished unit of experiment_state.json (units that ran side by side '
                      "overlap in time, so the total is CPU/GPU-side work, not wall time).</p>",
                      _table(["unit", "seconds", "finished"], rows)])


def render_experiment_page(exp: Mapping, links: Mapping[str, str], unit_links: Mapping[str, Mapping[str, str]],
                           ranked: Mapping[str, list], thumbs: Mapping[str, Mapping[str, str]], max_cases: int) -> str:
    """The HTML text of an experiment's page; every string from the folder is escaped.

    ``links``: experiment-level copied plots; ``unit_links``, ``ranked``, ``thumbs``: per unit key, as for the run
    page (`report.page.render_page`).
    """
    settings = exp["settings"]
    title = f"nnunet-medaka experiment: {exp['run'].name}"
    facts = [f"dataset <b>{_e(settings.get('dataset') or exp['results'].get('dataset') or 'unknown')}</b>",
             f"preset <b>{_e(settings.get('preset') or '?')}</b>",
             f"rows {_e(', '.join(settings.get('rows') or []))}",
             f"fractions {_e(', '.join(f'{f:g}' for f in settings.get('fractions') or []))}",
             f"seeds {_e(', '.join(map(str, settings.get('seeds') or [])))}",
             "finished" if exp["finished"] else '<span class="reject">not finished</span>']
    nav = ['<a href="#results">results</a>'] + [f'<a href="#{unit_anchor(k)}">{_e(unit_title(k))}</a>' for k in exp["units"]]
    head = [f"<h1>{_e(title)}</h1>", f'<p>{", ".join(facts)}. Folder: <code>{_e(exp["run"])}</code></p>',
            "<nav>" + "".join(nav) + '<a href="#timings">timings</a></nav>']
    everything_missing = list(exp["missing"]) + [f"{unit_title(k)}: {m}" for k, u in exp["units"].items()
                                                 for m in u["missing"]]
    if everything_missing:
        head.append('<div class="missing"><b>Not in this report (missing from the experiment folder):</b><ul>'
                    + "".join(f"<li>{_e(m)}</li>" for m in everything_missing) + "</ul></div>")
    body = [*head, _results_block(exp, links)]
    for key, unit in exp["units"].items():
        anchor = unit_anchor(key)
        body.append(f'<h2 id="{anchor}">{_e(unit_title(key))}</h2>')
        body.append(_pseudo_section(unit, ranked[key], thumbs[key], max_cases,
                                    heading="<h3>Pseudo-labels, ranked by predicted quality</h3>"))
        body.append(_quality_section(unit, unit_links[key], heading="<h3>Quality classifier</h3>"))
        body.append(_curves_section(unit, unit_links[key], heading="<h3>Learning curves</h3>", level=4))
    body.append(_timings_block(exp))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _write_thumbnails(run: Mapping, ranked: Sequence[str], folder: Path, progress: bool) -> dict:
    from tqdm import tqdm

    from nnunet_medaka.report.thumbnails import write_case_thumbnail

    cases = run["pseudo"]["cases"]
    todo = [c for c in ranked if cases[c].get("label_map") is not None or cases[c].get("image") is not None]
    thumbs = {}
    for i, case in enumerate(tqdm(todo, desc="thumbnails", unit="case", disable=not progress)):
        entry = cases[case]
        name = f"cases/{i + 1:03d}_{_safe_name(case)}.png"
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


def _copy_unit_plots(run: Mapping, built: Path, prefix: str) -> dict:
    """Copy a run's (or an experiment unit's) quality plots and learning curves below ``built/prefix``; returns
    the links keyed as the page sections look them up (plot file name, ``ROLE/fold_K``)."""
    links = {p.name: _copy(p, built, f"{prefix}quality/{p.name}") for p in run["quality"]["plots"]}
    for role, model in run["models"].items():
        for fold, png in model["folds"]:
            if png is not None:
                links[f"{role}/{fold}"] = _copy(png, built, f"{prefix}curves/{_safe_name(role)}_{_safe_name(fold)}.png")
    return links


@contextlib.contextmanager
def _staged(out: Path):
    """A temporary folder beside ``out`` to build a report in; renamed to ``out`` when the block succeeds, removed
    when it fails, so a half-built report never replaces a finished one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield built
        os.chmod(built, 0o755)
        _replace(built, out)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise


def _replace(built: Path, out: Path) -> None:
    """Move the finished folder ``built`` to ``out``, replacing an earlier report there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(built, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_report(run_dir: os.PathLike | str, out: Optional[os.PathLike | str] = None, *,
                 max_cases: int = DEFAULT_MAX_CASES, progress: bool = True) -> Path:
    """Write the review page of a run folder.

    Parameters
    ----------
    run_dir
        The ``--out`` folder of ``nnunet-medaka run`` or ``nnunet-medaka experiment`` (finished or not).
    out
        Report folder (default ``RUN_DIR/report``); replaced as a whole when it holds an earlier report.
    max_cases
        Largest number of pseudo-labelled cases shown (best predicted quality first); per fraction and seed for
        an experiment.
    progress
        Show a tqdm progress bar while drawing thumbnails.

    Returns
    -------
    Path
        The written ``index.html``.

    Raises
    ------
    MedakaError
        When ``run_dir`` is no run folder, ``max_cases`` is below 0, or ``out`` is a non-empty folder that holds
        no earlier report (it is never overwritten).
    """
    if isinstance(max_cases, bool) or not isinstance(max_cases, int) or max_cases < 0:
        raise MedakaError(f"max_cases={max_cases!r}: expected a whole number ≥ 0")
    run_dir = Path(run_dir).resolve()
    out = Path(out).resolve() if out is not None else run_dir / "report"
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_FILE).is_file())):
        raise MedakaError(f"{out}: exists and is not an earlier report; give another -o folder")
    from nnunet_medaka.report.experiment_page import is_experiment

    if is_experiment(run_dir):
        return _build_experiment_report(run_dir, out, max_cases, progress)
    run = collect_run(run_dir)
    ranked = rank_cases(run["pseudo"]["cases"])
    with _staged(out) as built:
        links = {name: _copy(path, built, name) for name, path in run["plots"].items()}
        links.update(_copy_unit_plots(run, built, ""))
        thumbs = _write_thumbnails(run, ranked[:max_cases], built, progress)
        (built / "index.html").write_text(render_page(run, links, ranked, thumbs, max_cases), encoding="utf-8")
        write_json_atomic(built / MANIFEST_FILE, {
            "format": "nnunet-medaka-report", "run": str(run_dir), "finished": run["finished"],
            "cases": len(ranked), "cases_shown": len(thumbs), "max_cases": max_cases, "images": sorted(
                [*links.values(), *thumbs.values()]), "missing": run["missing"]})
    return out / "index.html"


def _build_experiment_report(exp_dir: Path, out: Path, max_cases: int, progress: bool) -> Path:
    """`build_report` for an ``nnunet-medaka experiment`` folder: one page, a subfolder of pictures per unit."""
    from nnunet_medaka.report.experiment_page import collect_experiment, experiment_manifest

    exp = collect_experiment(exp_dir)
    with _staged(out) as built:
        links = {name: _copy(path, built, name) for name, path in exp["plots"].items()}
        unit_links, ranked, thumbs = {}, {}, {}
        for key, unit in exp["units"].items():
            sub = _safe_name(key.replace("/", "_"))  # a case may be pseudo-labeled in every unit: one folder each
            unit_links[key] = _copy_unit_plots(unit, built, f"{sub}/")
            ranked[key] = rank_cases(unit["pseudo"]["cases"])
            (built / sub).mkdir(exist_ok=True)
            drawn = _write_thumbnails(unit, ranked[key][:max_cases], built / sub, progress)
            thumbs[key] = {case: f"{sub}/{name}" for case, name in drawn.items()}
        (built / "index.html").write_text(render_experiment_page(exp, links, unit_links, ranked, thumbs, max_cases),
                                          encoding="utf-8")
        images = [*links.values(), *[v for m in unit_links.values() for v in m.values()],
                  *[v for m in thumbs.values() for v in m.values()]]
        write_json_atomic(built / MANIFEST_FILE, {**experiment_manifest(exp), "max_cases": max_cases,
                                                  "images": sorted(images), "missing": exp["missing"]})
    return out / "index.html"


def _run(args: argparse.Namespace) -> int:
    page = build_report(args.run_dir, args.out, max_cases=args.max_cases, progress=not args.no_progress)
    print(f"report: {page}")
    print(f"open it in a browser: file://{quote(str(page))}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write an HTML page to review a run or an experiment: results, pseudo-labels with thumbnails, "
             "quality classifier, learning curves, timings",
        description="Write one self-contained HTML page (index.html plus PNGs beside it; no scripts, no external "
        "resources) that reviews a `nnunet-medaka run` folder: teacher vs student per organ, the pseudo-labels "
        "ranked by predicted quality with three mid-slices each, the quality classifier's evaluation, nnU-Net's "
        "learning curves and the stage timings. Given an `nnunet-medaka experiment` folder, the page shows the "
        "answers and the rows x fractions table, then the same pieces per fraction and seed (--max-cases per "
        "unit). Works on an unfinished run or experiment: it says what is missing.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `nnunet-medaka run` or `experiment`")
    p.add_argument("-o", "--out", metavar="DIR", help="report folder (default: RUN_DIR/report; an earlier report "
                   "there is replaced)")
    p.add_argument("--max-cases", type=int, default=DEFAULT_MAX_CASES, metavar="N",
                   help=f"pseudo-labelled cases shown, best predicted quality first (default {DEFAULT_MAX_CASES})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
