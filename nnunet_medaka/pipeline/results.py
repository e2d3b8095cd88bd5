"""What a finished run shows a person: teacher vs student per organ, pseudo-labels accepted, the quality
classifier's accuracy, where everything is; as ``results.json``, ``results.md`` and two PNGs."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

from nnunet_medaka.config import write_json_atomic
from nnunet_medaka.errors import MedakaError

__all__ = ["RESULTS_FILE", "print_run_summary", "run_summary_text", "write_run_results", "write_overlays"]

RESULTS_FILE = "results.json"
_COLOURS = ((0.90, 0.10, 0.10), (0.10, 0.70, 0.20), (0.15, 0.35, 0.95), (0.95, 0.75, 0.10), (0.70, 0.20, 0.80),
            (0.10, 0.80, 0.85), (0.95, 0.45, 0.10), (0.55, 0.35, 0.15), (0.95, 0.50, 0.75), (0.50, 0.80, 0.30))


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _quality_summary(quality_dir: Path) -> Optional[dict]:
    """The quality classifier's grouped-CV accuracy on the teacher's real out-of-fold predictions."""
    report = _read_json(quality_dir / "evaluation" / "report.json")
    if report is None:
        return None
    real = report.get("metrics", {}).get("real", {})
    keep = ("n", "n_bad", "iou_min", "iou_median", "iou_max", "auroc", "auprc", "spearman", "aurc")
    return {"tau": report.get("tau"), "summary": report.get("summary"),
            "real": {organ: {k: methods.get("classifier", {}).get(k) for k in keep} for organ, methods in real.items()}}


def write_run_results(out: Path, scores: Mapping, *, raw: Path, file_ending: str, labels: Mapping[str, int],
                      quality_dir: Path, pseudo_dir: Path, settings: Mapping, models: Mapping[str, Path]) -> dict:
    """Write ``results.json``, ``results.md``, ``iou_per_organ.png`` and ``overlays.png`` into the run folder."""
    from nnunet_medaka.training.evaluation import comparison_table, plot_comparison

    pseudo = _read_json(pseudo_dir / "pseudolabel_summary.json")
    quality = _quality_summary(quality_dir)
    n_test = sum(1 for p in (raw / "labelsTs").iterdir() if p.name.endswith(file_ending))
    title = f"IoU on {n_test} held-out test cases ({raw.name})"
    plot = plot_comparison(scores, out / "iou_per_organ.png", title=title)
    overlays = write_overlays(out / "overlays.png", raw / "imagesTs", raw / "labelsTs",
                              {role: out / "predictions" / role for role in scores}, file_ending, labels)
    delta = scores["student"]["mean"]["IoU"] - scores["teacher"]["mean"]["IoU"]
    results = {
        "dataset": raw.name, "preset": settings["preset"], "scores": scores,
        "student_minus_teacher_mean_iou": round(delta, 4), "student_init": settings.get("student_init", "random"),
        "pseudo_labels": pseudo, "quality_classifier": quality,
        "paths": {"run": str(out), "plot": str(plot), "overlays": str(overlays), "logs": str(out / "logs"),
                  "predictions": str(out / "predictions"), "pseudo_labels": str(pseudo_dir),
                  "quality": str(quality_dir), "raw": str(raw), "models": {k: str(v) for k, v in models.items()}},
    }
    write_json_atomic(out / RESULTS_FILE, results)
    text = run_summary_text(results, table=comparison_table(scores))
    (out / "results.md").write_text(text + "\n")
    return {"results": str(out / RESULTS_FILE), "markdown": str(out / "results.md"), "plot": str(plot),
            "overlays": str(overlays)}


def run_summary_text(results: Mapping, *, table: Optional[str] = None) -> str:
    """The summary a person reads: the answer first, then the table, the filter, the classifier and the paths."""
    from nnunet_medaka.training.evaluation import comparison_table

    delta = results["student_minus_teacher_mean_iou"]
    # judged at the printed precision: a +0.0001 difference reads as "the same as", not "higher than"
    verdict = "higher than" if delta >= 0.0005 else "the same as" if delta > -0.0005 else "lower than"
    lines = [f"# Run on {results['dataset']} (preset {results['preset']})", "",
             f"Mean IoU over organs on the held-out test cases: teacher "
             f"{results['scores']['teacher']['mean']['IoU']:.3f}, KD student "
             f"{results['scores']['student']['mean']['IoU']:.3f}: the student is {verdict} its teacher "
             f"(Δ {delta:+.3f}) in this single run. One run at one seed is no evidence either way when the difference "
             "is within the run-to-run spread; `nnunet-medaka experiment --seeds` measures that."
             + (" The student started from its teacher's weights (`student_init=teacher`), so it trained for the "
                "teacher's schedule and then its own: a gain over the teacher is not a KD effect by itself "
                "(`--set student_init=random` for equal schedules)." if results.get("student_init") == "teacher" else ""),
             "", "```",
             table or comparison_table(results["scores"]), "```"]
    pseudo = results.get("pseudo_labels")
    if pseudo:
        lines += ["", f"Pseudo-labels: {pseudo['finished']} unlabeled cases, acceptance `{pseudo['acceptance']}`: "
                  f"{pseudo['cases_accepted']} accepted, {pseudo['cases_partial']} partly, {pseudo['cases_rejected']} "
                  f"rejected; {len(pseudo['cases_for_student'])} went into the student dataset."]
        per_organ = pseudo.get("per_organ", {})
        if per_organ:
            lines.append("Accepted per organ: " + ", ".join(f"{o} {v['accepted']}/{v['accepted'] + v['rejected']}"
                                                            for o, v in per_organ.items()) + ".")
        truth = pseudo.get("true_iou")
        if truth:
            lines.append(f"True IoU (ground truth of the unlabeled cases, evaluation only): accepted organs "
                         f"{_fmt(truth.get('accepted_organs_mean'))}, rejected {_fmt(truth.get('rejected_organs_mean'))}.")
    quality = results.get("quality_classifier")
    if quality:
        lines += ["", f"Quality classifier, grouped cross-validation on the teacher's real out-of-fold predictions "
                  f"(tau {quality['tau']}): {quality.get('summary') or ''}"]
        for organ, m in quality.get("real", {}).items():
            lines.append(f"- {organ}: AUROC {_fmt(m['auroc'])}, Spearman {_fmt(m['spearman'])}, AURC {_fmt(m['aurc'])} "
                         f"over {m['n']} predictions ({m['n_bad']} with IoU < tau; true IoU {_fmt(m['iou_min'])}–"
                         f"{_fmt(m['iou_max'])})")
    paths = results["paths"]
    lines += ["", f"Plot: {paths['plot']}  ", f"Overlays: {paths['overlays']}  ", f"Logs: {paths['logs']}  ",
              f"Pseudo-labels: {paths['pseudo_labels']}  ", f"Quality model and report: {paths['quality']}"]
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_run_summary(out: os.PathLike | str) -> None:
    results = _read_json(Path(out) / RESULTS_FILE)
    if results is None:
        raise MedakaError(f"{Path(out) / RESULTS_FILE}: missing; the run has not finished (rerun to resume)")
    print(run_summary_text(results))


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
