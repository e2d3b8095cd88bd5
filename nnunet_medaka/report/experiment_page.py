"""The review page of an ``nnunet-medaka experiment`` folder (``nnunet-medaka report EXPERIMENT_DIR``).

The page, in order: the answers to the paper's two questions and the results table (rows × fractions, mean IoU ±
std over seeds, Δ vs the teacher with its bootstrap interval) with the rows × organs heat map; then per fraction and
seed the pseudo-labels ranked by predicted quality (thumbnails, decisions, predicted and true IoU), the quality
classifier's evaluation and the learning curves of every model trained in it; last, the unit timings. What the
experiment has not produced yet is listed at the top. The pieces are those of the run page (`report.page`), read
from the experiment's layout (`pipeline.experiment_units`): ``units/<fraction>_<seed>/{pseudolabels,quality}``,
the model folders recorded in ``experiment_state.json``.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Mapping, Optional

from nnunet_medaka.report.collect import _folds, _read_json, collect_pseudolabels, collect_quality

__all__ = ["EXPERIMENT_FILES", "collect_experiment", "experiment_manifest", "is_experiment", "render_experiment_page"]

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


def _markdown_inline(text: str) -> str:
    """Escaped text with markdown's **bold** and `code` kept (the answer lines of results.md)."""
    out = html.escape(text, quote=True)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _results_block(exp: Mapping, links: Mapping[str, str]) -> str:
    from nnunet_medaka.report.page import _e, _figure, _fmt, _table

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
    from nnunet_medaka.report.page import _e, _fmt, _table

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
    from nnunet_medaka.report.page import _STYLE, _curves_section, _e, _pseudo_section, _quality_section

    settings = exp["settings"]
    title = f"nnunet-medaka experiment: {exp['run'].name}"
    facts = [f"dataset <b>{_e(settings.get('dataset') or exp['results'].get('dataset') or 'unknown')}</b>",
             f"preset <b>{_e(settings.get('preset') or '?')}</b>",
             f"rows {_e(', '.join(settings.get('rows') or []))}",
             f"fractions {_e(', '.join(f'{f:g}' for f in settings.get('fractions') or []))}",
             f"seeds {_e(', '.join(map(str, settings.get('seeds') or [])))}",
             "finished" if exp["finished"] else '<span class="reject">not finished</span>']
    nav = ['<a href="#results">results</a>'] + [f'<a href="#{_anchor(k)}">{_e(_unit_title(k))}</a>' for k in exp["units"]]
    head = [f"<h1>{_e(title)}</h1>", f'<p>{", ".join(facts)}. Folder: <code>{_e(exp["run"])}</code></p>',
            "<nav>" + "".join(nav) + '<a href="#timings">timings</a></nav>']
    everything_missing = list(exp["missing"]) + [f"{_unit_title(k)}: {m}" for k, u in exp["units"].items()
                                                 for m in u["missing"]]
    if everything_missing:
        head.append('<div class="missing"><b>Not in this report (missing from the experiment folder):</b><ul>'
                    + "".join(f"<li>{_e(m)}</li>" for m in everything_missing) + "</ul></div>")
    body = [*head, _results_block(exp, links)]
    for key, unit in exp["units"].items():
        anchor = _anchor(key)
        body.append(f'<h2 id="{anchor}">{_e(_unit_title(key))}</h2>')
        body.append(_pseudo_section(unit, ranked[key], thumbs[key], max_cases,
                                    heading="<h3>Pseudo-labels, ranked by predicted quality</h3>"))
        body.append(_quality_section(unit, unit_links[key], heading="<h3>Quality classifier</h3>"))
        body.append(_curves_section(unit, unit_links[key], heading="<h3>Learning curves</h3>", level=4))
    body.append(_timings_block(exp))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _unit_title(key: str) -> str:
    fraction, seed = key.split("/")
    return f"Fraction {fraction[1:]}, seed {seed[1:]}"


def _anchor(key: str) -> str:
    return "unit-" + re.sub(r"[^A-Za-z0-9]+", "-", key)


def experiment_manifest(exp: Mapping) -> dict:
    """What ``report.json`` records about an experiment page (besides the image list)."""
    return {"format": "nnunet-medaka-report", "kind": "experiment", "run": str(exp["run"]),
            "finished": exp["finished"], "units": list(exp["units"]),
            "cases": {k: len(u["pseudo"]["cases"]) for k, u in exp["units"].items()}}
