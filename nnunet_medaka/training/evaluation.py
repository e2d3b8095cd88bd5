"""Read nnU-Net's evaluation ``summary.json`` files and compare models per organ (table and plot)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from nnunet_medaka.errors import MedakaError

__all__ = ["per_label_scores", "comparison_table", "plot_comparison"]


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


def comparison_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Plain-text table, one row per organ, Dice and IoU columns per model (e.g. teacher, student)."""
    models = list(results)
    organs = list(next(iter(results.values())))
    head = ["organ"] + [f"{m} {metric}" for m in models for metric in ("Dice", "IoU")]
    if len(models) == 2:
        head.append("ΔIoU")
    rows = []
    for organ in organs:
        row = [organ] + [f"{results[m][organ][metric]:.3f}" for m in models for metric in ("Dice", "IoU")]
        if len(models) == 2:
            row.append(f"{results[models[1]][organ]['IoU'] - results[models[0]][organ]['IoU']:+.3f}")
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
