"""Read nnU-Net's evaluation ``summary.json`` files and compare models per organ (table, bar plot, overlays)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

from nnunet_medaka.errors import MedakaError

__all__ = ["comparison_table", "out_of_fold_dice", "per_label_scores", "plot_comparison", "plot_delta_heatmap", "write_overlays"]


def per_label_scores(summary_file: os.PathLike | str, labels: Mapping[str, int]) -> dict:
    """Mean Dice and IoU per organ from a ``nnUNetv2_evaluate_folder`` summary.

    Parameters
    ----------
    summary_file : path
        ``summary.json`` written by nnU-Net's evaluation.
    labels : mapping
        ``dataset.json`` labels (name -> value); background is skipped.

    Returns
    -------
    dict
        ``{organ: {"Dice": float, "IoU": float}}`` plus ``"mean"`` over organs (nnU-Net's ``foreground_mean``).
    """
    path = Path(summary_file)
    if not path.is_file():
        raise MedakaError(f"{path}: no evaluation summary; run nnUNetv2_evaluate_folder first")
    summary = json.loads(path.read_text())
    scores = {}
    for name, value in labels.items():
        if name == "background" or name == "ignore" or str(value) not in summary["mean"]:
            continue
        metrics = summary["mean"][str(value)]
        scores[name] = {"Dice": float(metrics["Dice"]), "IoU": float(metrics["IoU"])}
    fg = summary["foreground_mean"]
    scores["mean"] = {"Dice": float(fg["Dice"]), "IoU": float(fg["IoU"])}
    return scores


def out_of_fold_dice(model_folder: os.PathLike | str, folds: Sequence) -> dict:
    """A cross-validation's mean Dice on its validation cases, from nnU-Net's own final validation.

    Each case's Dice is the mean over its organs (NaN organs, absent from prediction and reference, left out, as
    nnU-Net does); the mean is over every validation case of ``folds``.

    Returns
    -------
    dict
        ``{"dice": float, "n_cases": int}``.

    Raises
    ------
    MedakaError
        Naming the fold whose ``validation/summary.json`` is missing.
    """
    import math

    values = []
    for fold in folds:
        path = Path(model_folder) / f"fold_{fold}" / "validation" / "summary.json"
        if not path.is_file():
            raise MedakaError(f"{path}: no final validation of fold {fold}; train the fold to its end (with its "
                              "final validation) first")
        for entry in json.loads(path.read_text())["metric_per_case"]:
            dice = [float(m["Dice"]) for m in entry["metrics"].values() if not math.isnan(float(m["Dice"]))]
            if dice:
                values.append(sum(dice) / len(dice))
    if not values:
        raise MedakaError(f"{model_folder}: folds {list(folds)} validated no case with an organ")
    return {"dice": sum(values) / len(values), "n_cases": len(values)}


def comparison_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], baseline: Optional[str] = None) -> str:
    """Plain-text table, one row per organ, Dice and IoU columns per model (e.g. teacher, student), and the last
    model's IoU minus ``baseline``'s (default: the first model's when there are two)."""
    models = list(results)
    organs = list(next(iter(results.values())))
    baseline = baseline or (models[0] if len(models) == 2 else None)
    head = ["organ"] + [f"{m} {metric}" for m in models for metric in ("Dice", "IoU")]
    if baseline:
        head.append(f"ΔIoU vs {baseline}" if len(models) > 2 else "ΔIoU")
    rows = []
    for organ in organs:
        row = [organ] + [f"{results[m][organ][metric]:.3f}" for m in models for metric in ("Dice", "IoU")]
        if baseline:
            row.append(f"{results[models[-1]][organ]['IoU'] - results[baseline][organ]['IoU']:+.3f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in [head, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def plot_comparison(results: Mapping[str, Mapping[str, Mapping[str, float]]], out_file: os.PathLike | str, *,
                    metric: str = "IoU", title: str = "") -> Path:
    """Grouped bar chart of one metric per organ and model, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(results)
    organs = list(next(iter(results.values())))
    x = np.arange(len(organs))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(organs) + 2), 4))
    for i, model in enumerate(models):
        ax.bar(x + (i - (len(models) - 1) / 2) * width, [results[model][o][metric] for o in organs], width, label=model)
    ax.set_xticks(x, organs, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per organ")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out_file = Path(out_file)
    fig.savefig(out_file, dpi=120)
    plt.close(fig)
    return out_file


_COLOURS = ((0.90, 0.10, 0.10), (0.10, 0.70, 0.20), (0.15, 0.35, 0.95), (0.95, 0.75, 0.10), (0.70, 0.20, 0.80),
            (0.10, 0.80, 0.85), (0.95, 0.45, 0.10), (0.55, 0.35, 0.15), (0.95, 0.50, 0.75), (0.50, 0.80, 0.30))


def write_overlays(out_file: Path, images: Path, truth: Path, predictions: Mapping[str, Path], file_ending: str,
                   labels: Mapping[str, int], max_cases: int = 8) -> Path:
    """One row per test case: the axial slice through the organs' centre, with ground truth and each model's
    prediction in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    cases = sorted(p.name[: -len(file_ending)] for p in truth.iterdir() if p.name.endswith(file_ending))[:max_cases]
    columns = ["ground truth", *predictions]
    first = sitk.ReadImage(str(truth / f"{cases[0]}{file_ending}")).GetSize() if cases else (1, 1, 1)
    row_height = min(3.0, 3.0 * first[1] / max(first[0], 1)) + 0.35  # rows as tall as a slice, not more
    fig, axes = plt.subplots(len(cases), len(columns), figsize=(3 * len(columns), row_height * len(cases) + 0.6),
                             squeeze=False)
    palette = np.array([(0, 0, 0), *_COLOURS * (1 + len(labels) // len(_COLOURS))], dtype=float)
    for row, case in enumerate(cases):
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(images / f"{case}_0000{file_ending}"))).astype(np.float32)
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(truth / f"{case}{file_ending}")))
        z = int(np.round(np.mean(np.nonzero(gt)[0]))) if gt.any() else gt.shape[0] // 2
        lo, hi = np.percentile(image[z], (1, 99))
        grey = np.clip((image[z] - lo) / max(hi - lo, 1e-6), 0, 1)
        for col, name in enumerate(columns):
            seg = gt if name == "ground truth" else _read_or_none(predictions[name] / f"{case}{file_ending}")
            ax = axes[row][col]
            rgb = np.repeat(grey[..., None], 3, axis=2)
            if seg is not None:
                s = np.clip(seg[z].astype(int), 0, len(palette) - 1)
                mask = s > 0
                rgb[mask] = 0.45 * rgb[mask] + 0.55 * palette[s[mask]]
            ax.imshow(rgb, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(f"{case}\nz={z}", fontsize=8)
    from matplotlib.patches import Patch

    organs = [(name, value) for name, value in labels.items() if name not in ("background", "ignore")]
    fig.legend(handles=[Patch(color=palette[min(v, len(palette) - 1)], label=n) for n, v in organs],
               loc="lower center", ncol=min(len(organs), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / (row_height * len(cases) + 0.6) + 0.02 * (len(organs) > 5), 1, 1))
    out_file = Path(out_file)
    fig.savefig(out_file, dpi=90)
    plt.close(fig)
    return out_file


def _read_or_none(path: Path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) if path.is_file() else None


def plot_delta_heatmap(entries: Sequence[Mapping], organs: Sequence[str], path: Path, title: str) -> Path:
    """Rows x organs of `nnunet_medaka.training.comparison.summarize_table`'s entries: colour the Δ mean IoU against the teacher of the same fraction on a diverging scale centred
    on 0 (every row looks alike on an absolute 0-1 scale), each cell labelled with its mean IoU and its Δ."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*organs, "overall"]
    grid = np.array([[np.nan if e["iou"][c]["mean"] is None else e["iou"][c]["mean"] for c in columns] for e in entries])
    delta = np.array([[0.0 if not e.get("vs_teacher") else np.nan if e["vs_teacher"][c]["mean"] is None
                       else e["vs_teacher"][c]["mean"] for c in columns] for e in entries])
    span = max(0.02, float(np.nanmax(np.abs(delta))) if np.isfinite(delta).any() else 0.02)
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 3.5, 0.55 * len(entries) + 1.8))
    image = ax.imshow(delta, vmin=-span, vmax=span, cmap="RdBu", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(entries)), [f"{e['row']} @ {e['fraction']:g}" for e in entries])
    for i, e in enumerate(entries):
        for j in range(len(columns)):
            if not np.isnan(grid[i, j]):
                text = f"{grid[i, j]:.3f}" + ("" if not e.get("vs_teacher") or np.isnan(delta[i, j])
                                              else f"\n{delta[i, j]:+.3f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if abs(delta[i, j]) > 0.6 * span else "black")
    fig.colorbar(image, ax=ax, label="Δ mean IoU vs the teacher of the same fraction")
    ax.set_title(title + "\ncell: mean IoU over test cases and seeds, and its Δ vs the teacher", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
