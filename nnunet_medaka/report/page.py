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
import logging
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence
from urllib.parse import quote

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import staged_folder, write_json_atomic
from nnunet_medaka.report.collect import collect_run, rank_cases
from nnunet_medaka.report.sections import (
    STYLE, copy_png, copy_unit_plots, curves_section, esc, fmt, html_figure, html_table, markdown_inline, pseudo_section,
    quality_section, results_section, rounds_section, safe_name, timings_section, write_thumbnails,
)
from nnunet_medaka.report.experiment_page import unit_anchor, unit_title

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_CASES", "MANIFEST_FILE", "build_report", "render_page"]

DEFAULT_MAX_CASES = 50
MANIFEST_FILE = "report.json"
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
    facts = [f"dataset <b>{esc(run.get('dataset') or 'unknown')}</b>",
             f"preset <b>{esc(run['settings'].get('preset') or results.get('preset') or '?')}</b>",
             "finished" if run["finished"] else '<span class="reject">not finished</span>']
    head = [f"<h1>{esc(title)}</h1>", f'<p>{", ".join(facts)}. Folder: <code>{esc(run["run"])}</code></p>',
            '<nav><a href="#results">results</a>' + ('<a href="#rounds">rounds</a>' if run.get("rounds") else "") + '<a href="#pseudo">pseudo-labels</a><a href="#quality">quality '
            'classifier</a><a href="#curves">learning curves</a><a href="#timings">timings</a></nav>']
    if run["missing"]:
        head.append('<div class="missing"><b>Not in this report (missing from the run folder):</b><ul>'
                    + "".join(f"<li>{esc(m)}</li>" for m in run["missing"]) + "</ul></div>")
    body = "\n".join([*head, results_section(run, links), rounds_section(run, links),
                      pseudo_section(run, ranked, thumbs, max_cases),
                      quality_section(run, links), curves_section(run, links), timings_section(run)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


# ---- the page of an experiment folder (nnunet_medaka.report.experiment_page reads it) ----------------------------
def _results_block(exp: Mapping, links: Mapping[str, str]) -> str:
    results = exp["results"]
    parts = ['<h2 id="results">1. Results on the held-out test cases</h2>']
    if not results:
        parts.append('<p class="missing">No results yet: the experiment has not finished (rerun its command to '
                     "resume; results.md is written at the end).</p>")
        return "\n".join(parts)
    for line in results.get("answer_text") or []:
        if line.strip() and not line.startswith("#"):
            parts.append(f"<p>{markdown_inline(line.strip())}</p>")

    def ms(m: Optional[Mapping]) -> str:
        if not m or m.get("mean") is None:
            return "n/a"
        return fmt(m["mean"]) + (f" ± {fmt(m['std'])}" if m.get("std") is not None else " (std n/a)")

    rows = []
    for e in results.get("rows") or []:
        vs = (e.get("vs_teacher") or {}).get("overall")
        delta = "—" if not vs else (f"{vs['mean']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]"
                                    if vs.get("mean") is not None else "n/a")
        rows.append([esc(e["row"]), esc(f"{e['fraction']:g}"), ms(e["iou"]["overall"]), ms(e.get("dice_overall")),
                     esc(delta)])
    parts.append(html_table(["row", "fraction", "IoU", "Dice", "Δ IoU vs teacher [95 % CI]"], rows, name_columns=2))
    parts.append(f'<p class="note">{esc(results.get("n_test"))} test cases; seeds '
                 f'{esc(", ".join(map(str, results.get("seeds") or [])))}; mean ± std over seeds. Per organ and per '
                 "case: results.md and results.csv in the experiment folder.</p>")
    if "iou_heatmap.png" in links:
        parts.append('<div class="plots">' + html_figure(links["iou_heatmap.png"], "Δ mean IoU vs the teacher of the same fraction (diverging, centred on 0), each cell with its mean IoU") + "</div>")
    return "\n".join(parts)


def _timings_block(exp: Mapping) -> str:
    rows, total = [], 0.0
    for name, record in exp["state"].items():
        seconds = (record or {}).get("seconds")
        total += seconds if isinstance(seconds, (int, float)) else 0.0
        rows.append([esc(name), fmt(seconds, 1) if seconds is not None else "n/a", esc((record or {}).get("finished"))])
    rows.append(["<b>total</b>", f"<b>{total:.1f}</b>", ""])
    return "\n".join(['<h2 id="timings">Unit timings</h2>',
                      '<p class="note">Every finished unit of experiment_state.json (units that ran side by side '
                      "overlap in time, so the total is CPU/GPU-side work, not wall time).</p>",
                      html_table(["unit", "seconds", "finished"], rows)])


def render_experiment_page(exp: Mapping, links: Mapping[str, str], unit_links: Mapping[str, Mapping[str, str]],
                           ranked: Mapping[str, list], thumbs: Mapping[str, Mapping[str, str]], max_cases: int) -> str:
    """The HTML text of an experiment's page; every string from the folder is escaped.

    ``links``: experiment-level copied plots; ``unit_links``, ``ranked``, ``thumbs``: per unit key, as for the run
    page (`report.page.render_page`).
    """
    settings = exp["settings"]
    title = f"nnunet-medaka experiment: {exp['run'].name}"
    facts = [f"dataset <b>{esc(settings.get('dataset') or exp['results'].get('dataset') or 'unknown')}</b>",
             f"preset <b>{esc(settings.get('preset') or '?')}</b>",
             f"rows {esc(', '.join(settings.get('rows') or []))}",
             f"fractions {esc(', '.join(f'{f:g}' for f in settings.get('fractions') or []))}",
             f"seeds {esc(', '.join(map(str, settings.get('seeds') or [])))}",
             "finished" if exp["finished"] else '<span class="reject">not finished</span>']
    nav = ['<a href="#results">results</a>'] + [f'<a href="#{unit_anchor(k)}">{esc(unit_title(k))}</a>' for k in exp["units"]]
    head = [f"<h1>{esc(title)}</h1>", f'<p>{", ".join(facts)}. Folder: <code>{esc(exp["run"])}</code></p>',
            "<nav>" + "".join(nav) + '<a href="#timings">timings</a></nav>']
    everything_missing = list(exp["missing"]) + [f"{unit_title(k)}: {m}" for k, u in exp["units"].items()
                                                 for m in u["missing"]]
    if everything_missing:
        head.append('<div class="missing"><b>Not in this report (missing from the experiment folder):</b><ul>'
                    + "".join(f"<li>{esc(m)}</li>" for m in everything_missing) + "</ul></div>")
    body = [*head, _results_block(exp, links)]
    for key, unit in exp["units"].items():
        anchor = unit_anchor(key)
        body.append(f'<h2 id="{anchor}">{esc(unit_title(key))}</h2>')
        body.append(pseudo_section(unit, ranked[key], thumbs[key], max_cases,
                                    heading="<h3>Pseudo-labels, ranked by predicted quality</h3>"))
        body.append(quality_section(unit, unit_links[key], heading="<h3>Quality classifier</h3>"))
        body.append(curves_section(unit, unit_links[key], heading="<h3>Learning curves</h3>", level=4))
    body.append(_timings_block(exp))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


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
    with staged_folder(out, overwrite=True) as built:
        links = {name: copy_png(path, built, name) for name, path in run["plots"].items()}
        links.update(copy_unit_plots(run, built, ""))
        thumbs = write_thumbnails(run, ranked[:max_cases], built, progress)
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
    with staged_folder(out, overwrite=True) as built:
        links = {name: copy_png(path, built, name) for name, path in exp["plots"].items()}
        unit_links, ranked, thumbs = {}, {}, {}
        for key, unit in exp["units"].items():
            sub = safe_name(key.replace("/", "_"))  # a case may be pseudo-labeled in every unit: one folder each
            unit_links[key] = copy_unit_plots(unit, built, f"{sub}/")
            ranked[key] = rank_cases(unit["pseudo"]["cases"])
            (built / sub).mkdir(exist_ok=True)
            drawn = write_thumbnails(unit, ranked[key][:max_cases], built / sub, progress)
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
