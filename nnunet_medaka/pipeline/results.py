"""What a finished run shows a person: teacher vs student per organ, pseudo-labels accepted, the quality
classifier's accuracy, where everything is; as ``results.json``, ``results.md`` and two PNGs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

from nnunet_medaka.files import read_json, write_json_atomic, write_text_atomic
from nnunet_medaka.pipeline.layout import RunLayout
from nnunet_medaka.training.comparison import stronger_baseline

__all__ = ["RESULTS_FILE", "print_run_summary", "run_summary_text", "write_run_results"]

RESULTS_FILE = RunLayout.RESULTS


def _quality_summary(quality_dir: Path) -> Optional[dict]:
    """The quality classifier's grouped-CV accuracy on the teacher's real out-of-fold predictions."""
    if not (quality_dir / "evaluation" / "report.json").is_file():
        return None
    report = read_json(quality_dir / "evaluation" / "report.json", what="the quality classifier's report")
    real = report.get("metrics", {}).get("real", {})
    keep = ("n", "n_bad", "iou_min", "iou_median", "iou_max", "auroc", "auprc", "spearman", "aurc")
    return {"tau": report.get("tau"), "summary": report.get("summary"),
            "real": {organ: {k: methods.get("classifier", {}).get(k) for k in keep} for organ, methods in real.items()}}


def write_run_results(layout: RunLayout, scores: Mapping, *, raw: Path, file_ending: str, labels: Mapping[str, int],
                      settings: Mapping, models: Mapping[str, Path]) -> dict:
    """Write ``results.json``, ``results.md``, ``iou_per_organ.png`` and ``overlays.png`` into the run folder."""
    from nnunet_medaka.training.evaluation import comparison_table, plot_comparison, write_overlays

    out, pseudo_dir, quality_dir = layout.folder, layout.pseudolabels, layout.quality
    summary_file = pseudo_dir / "pseudolabel_summary.json"
    pseudo = read_json(summary_file, what="the pseudo-labels' summary") if summary_file.is_file() else None
    quality = _quality_summary(quality_dir)
    count = lambda folder: sum(1 for p in (raw / folder).iterdir() if p.name.endswith(file_ending))
    title = f"IoU on {count('labelsTs')} held-out test cases ({raw.name})"
    plot = plot_comparison(scores, layout.plot, title=title)
    overlays = write_overlays(layout.overlays, raw / "imagesTs", raw / "labelsTs",
                              {role: layout.predictions(role) for role in scores}, file_ending, labels)
    baseline = stronger_baseline(scores)
    delta = scores["student"]["mean"]["IoU"] - scores[baseline]["mean"]["IoU"]
    results = {
        "dataset": raw.name, "preset": settings["preset"], "scores": scores, "baseline": baseline,
        "student_minus_baseline_mean_iou": round(delta, 4), "student_init": settings.get("student_init", "random"),
        "cv_folds": settings["cv_folds"], "n_labeled": count("labelsTr"),
        "pseudo_labels": pseudo, "quality_classifier": quality,
        "paths": {"run": str(out), "plot": str(plot), "overlays": str(overlays), "logs": str(out / "logs"),
                  "predictions": str(out / "predictions"), "pseudo_labels": str(pseudo_dir),
                  "quality": str(quality_dir), "raw": str(raw), "models": {k: str(v) for k, v in models.items()}},
    }
    write_json_atomic(layout.results, results)
    write_text_atomic(layout.markdown, run_summary_text(results, table=comparison_table(scores, baseline)) + "\n")
    return {"results": str(layout.results), "markdown": str(layout.markdown), "plot": str(plot),
            "overlays": str(overlays)}


def run_summary_text(results: Mapping, *, table: Optional[str] = None) -> str:
    """The summary a person reads: the answer first, then the table, the filter, the classifier and the paths."""
    from nnunet_medaka.training.evaluation import comparison_table

    scores = results["scores"]
    baseline = results.get("baseline") or stronger_baseline(scores)  # run folders of earlier versions lack it
    delta = scores["student"]["mean"]["IoU"] - scores[baseline]["mean"]["IoU"]
    # judged at the printed precision: a +0.0001 difference reads as "the same as", not "higher than"
    verdict = "higher than" if delta >= 0.0005 else "the same as" if delta > -0.0005 else "lower than"
    iou = lambda role: f"{scores[role]['mean']['IoU']:.3f}"
    names = {"teacher": f"the teacher (the ensemble of its {results.get('cv_folds', 'CV')} folds)",
             "supervised": f"the supervised baseline (one model on all {results.get('n_labeled', 'the')} labeled cases)"}
    init = {"teacher": "from teacher fold 0's weights (`student_init=teacher`)"}.get(results.get("student_init"),
                                                                                     "from random weights")
    lines = [f"# Run on {results['dataset']} (preset {results['preset']})", "",
             f"Mean IoU over organs on the held-out test cases: teacher {iou('teacher')}"
             + (f", supervised {iou('supervised')}" if "supervised" in scores else "")
             + f", KD student {iou('student')}: the student is {verdict} the stronger baseline, {names[baseline]} "
             f"(Δ {delta:+.3f}), in this single run. One run at one seed is no evidence either way when the difference "
             "is within the run-to-run spread; `nnunet-medaka experiment --seeds` measures that."
             + (f" The student and the supervised baseline both started {init} and trained the same schedule on "
                "the same labeled cases, the student with the accepted pseudo-labels and KD as well: equal training "
                "budgets, so their difference is what the unlabeled scans added." if "supervised" in scores else ""),
             "", "```",
             table or comparison_table(scores, baseline), "```"]
    pseudo = results.get("pseudo_labels")
    if pseudo:
        by = {"quality": "the quality classifier's P(good)"}.get(pseudo.get("filter", "quality"), pseudo.get("filter"))
        rule = ("none, every pseudo-label is used" if pseudo["acceptance"] == "none" or pseudo.get("threshold") is None
                else f"{by} ≥ {pseudo['threshold']:.3f} per organ (unless given, the threshold `qc train` chose on "
                "the teacher's out-of-fold predictions)")
        reason = (pseudo.get("filter_reason") or "").removeprefix("auto: ")
        why = f" Chosen by `filter=auto`: {reason}." if reason else ""
        lines += ["", f"Pseudo-labels: {pseudo['finished']} unlabeled cases, acceptance `{pseudo['acceptance']}`: "
                  f"{pseudo['cases_accepted']} accepted, {pseudo['cases_partial']} partly, {pseudo['cases_rejected']} "
                  f"rejected; {len(pseudo['cases_for_student'])} went into the student dataset. Filter: {rule}.{why}"]
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
    print(run_summary_text(read_json(RunLayout(Path(out)).results, what="the run's results",
                                     fix="the run has not finished (rerun to resume)")))
