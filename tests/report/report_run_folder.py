"""A synthetic finished ``nnunet-medaka run`` folder for the report tests: images written with SimpleITK, tables,
JSON files and matplotlib PNGs in the layout ``run`` writes; nothing is trained."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# organ names with characters that must be escaped in HTML
ORGANS = {"background": 0, "swim <bladder> & co": 1, "eye": 2}
IGNORE = 3
# case -> (predicted IoU per organ, decision per organ, true IoU per organ or None)
CASES = {
    "fish&01": ((0.91, 0.85), ("accept", "accept"), (0.93, 0.80)),
    "fish_02": ((0.40, 0.75), ("reject", "accept"), (0.35, 0.78)),
    "fish_03": ((0.62, 0.20), ("accept", "reject"), (None, None)),
}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def _png(path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.linspace(1, 0.2, 20), label="train loss")
    ax.set_title(title)
    ax.legend()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def _write(array: np.ndarray, path: Path, spacing=(0.8, 0.8, 2.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=True)


def make_run_folder(root: Path) -> Path:
    """A finished-looking ``nnunet-medaka run`` folder under ``root``, with its raw dataset and model folders."""
    rng = np.random.default_rng(0)
    raw = root / "raw" / "Dataset950_Fish"
    out = root / "run"
    labels = {k: v for k, v in ORGANS.items()}
    (raw / "imagesUnlabeled").mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {**labels, "ignore": IGNORE}, "numTraining": 2,
        "file_ending": ".nii.gz", "unlabeled_images": "imagesUnlabeled"}))
    pseudo = out / "pseudolabels"
    zz, yy, xx = np.mgrid[:24, :64, :300]  # one side above the 256-pixel thumbnail cap
    rows = []
    for i, (case, (predicted, decisions, truth)) in enumerate(CASES.items()):
        image = rng.normal(100, 10, zz.shape).astype(np.float32)
        seg = np.zeros(zz.shape, np.uint8)
        bladder = ((zz - 12) / 6) ** 2 + ((yy - 30) / 12) ** 2 + ((xx - 120 - 20 * i) / 40) ** 2 < 1
        eye = ((zz - 12) / 4) ** 2 + ((yy - 32) / 6) ** 2 + ((xx - 220) / 8) ** 2 < 1
        image[bladder] += 80
        image[eye] += 150
        for mask, value, decision in ((bladder, 1, decisions[0]), (eye, 2, decisions[1])):
            seg[mask] = value if decision == "accept" else IGNORE
        _write(image, raw / "imagesUnlabeled" / f"{case}_0000.nii.gz")
        _write(seg, pseudo / "labels" / f"{case}.nii.gz")
        case_decision = "accept" if all(d == "accept" for d in decisions) else "partial"
        organs = []
        for (organ, value), p, d, t, mask in zip(list(ORGANS.items())[1:], predicted, decisions, truth, (bladder, eye)):
            row = {"case": case, "organ": organ, "label": value, "voxels": int(mask.sum()), "predicted_iou": p,
                   "p_good": p, "decision": d, "case_decision": case_decision, "true_iou": "" if t is None else t}
            rows.append(row)
            organs.append({**row, "true_iou": t})
        if i == 0:  # one case with a record naming its image; the others found through the settings' folder
            (pseudo / "records").mkdir(parents=True, exist_ok=True)
            (pseudo / "records" / f"{case}.json").write_text(json.dumps({
                "case": case, "images": [str(raw / "imagesUnlabeled" / f"{case}_0000.nii.gz")],
                "label_file": f"labels/{case}.nii.gz", "organs": organs, "case_decision": case_decision}))
    with (pseudo / "pseudolabels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (pseudo / "pseudolabel_settings.json").write_text(json.dumps({
        "labels": labels, "ignore_label": IGNORE, "file_ending": ".nii.gz", "images": str(raw / "imagesUnlabeled"),
        "cases": list(CASES), "acceptance": "organ"}))
    summary = {"cases": 3, "finished": 3, "failed": [], "acceptance": "organ", "threshold": 0.5, "cases_accepted": 1,
               "cases_partial": 2, "cases_rejected": 0, "cases_for_student": list(CASES)}
    (pseudo / "pseudolabel_summary.json").write_text(json.dumps(summary))

    evaluation = out / "quality" / "evaluation"
    plots = ["scatter_predicted_vs_true_iou.png", "roc_and_risk_coverage_real.png", "roc_and_risk_coverage_all.png",
             "per_organ_auroc.png"]
    for name in plots:
        _png(evaluation / name, name)
    (evaluation / "report.json").write_text(json.dumps({
        "summary": "classifier AUROC 0.81 on real out-of-fold predictions", "tau": 0.7, "plots": plots,
        "methods": {"classifier": "learned P(IoU >= tau)", "accept_all": "constant"}, "metrics": {"real": {}}}))
    with (evaluation / "metrics.csv").open("w", newline="") as f:
        f.write("subset,organ,method,n,n_bad,iou_min,iou_median,iou_max,auroc,auprc,spearman,aurc,mae,"
                "accepted_fraction,accepted_good_fraction,accepted_mean_iou\n")
        for organ in list(ORGANS)[1:]:
            f.write(f'real,"{organ}",classifier,8,3,0.1,0.6,0.9,0.81,0.7,0.66,0.2,0.05,0.6,0.9,0.8\n')
            f.write(f'real,"{organ}",accept_all,8,3,0.1,0.6,0.9,,,,0.3,,1.0,0.6,0.6\n')

    models = {"teacher": root / "res" / "Dataset950_Fish" / "SupervisedTrainer__nnUNetPlans__3d_fullres",
              "student": root / "res" / "Dataset951_FishStudent" / "KDTrainer__nnUNetPlans__3d_fullres"}
    for role, folder in models.items():
        for fold in ([0, 1] if role == "teacher" else [0]):
            _png(folder / f"fold_{fold}" / "progress.png", f"{role} fold {fold}")
    for name in ("iou_per_organ.png", "overlays.png"):
        _png(out / name, name)
    (out / "logs").mkdir()
    scores = {role: {"swim <bladder> & co": {"Dice": 0.8 + d, "IoU": 0.7 + d}, "eye": {"Dice": 0.6 + d, "IoU": 0.5 + d},
                     "mean": {"Dice": 0.7 + d, "IoU": 0.6 + d}} for role, d in (("teacher", 0.0), ("student", 0.02))}
    (out / "results.json").write_text(json.dumps({
        "dataset": raw.name, "preset": "quick", "scores": scores, "student_minus_teacher_mean_iou": 0.02,
        "pseudo_labels": summary, "quality_classifier": {"tau": 0.7},
        "paths": {"run": str(out), "plot": str(out / "iou_per_organ.png"), "overlays": str(out / "overlays.png"),
                  "logs": str(out / "logs"), "predictions": str(out / "predictions"), "pseudo_labels": str(pseudo),
                  "quality": str(out / "quality"), "raw": str(raw), "models": {k: str(v) for k, v in models.items()}}}))
    (out / "run_settings.json").write_text(json.dumps({"preset": "quick", "cv_folds": 2, "tau": 0.7,
                                                       "acceptance": "organ"}))
    stages = {}
    for name, seconds in (("plan", 12.5), ("teacher", 300.0), ("quality", 20.0), ("pseudolabel", 45.0),
                          ("student-dataset", 8.0), ("student", 200.0), ("evaluate", 30.0)):
        outputs = {"model": str(models["teacher"])} if name == "teacher" else {}
        if name == "student":
            outputs = {"model": str(models["student"])}
        if name == "evaluate":
            outputs = {"scores": scores}
        stages[name] = {"fingerprint": "0" * 16, "outputs": outputs, "seconds": seconds,
                        "finished": "2026-12-01T21:53:24+0000"}
    (out / "run_state.json").write_text(json.dumps({"version": 1, "stages": stages}))
    return out


def make_experiment_folder(root: Path) -> Path:
    """A synthetic ``nnunet-medaka experiment`` folder under ``root``: unit ``f1/s0`` with the run folder's
    pseudo-labels, quality evaluation and two trained models, unit ``f0.5/s0`` with a teacher fold only (no
    pseudo-labels: the page must say so), and results written from a hand-made table."""
    import shutil

    from nnunet_medaka.pipeline.experiment_results import write_experiment_results

    run = make_run_folder(root)
    models = {k: Path(v) for k, v in json.loads((run / "results.json").read_text())["paths"]["models"].items()}
    exp = root / "experiment"
    unit = exp / "units" / "f1_s0"
    unit.mkdir(parents=True)
    shutil.copytree(run / "pseudolabels", unit / "pseudolabels")
    shutil.copytree(run / "quality", unit / "quality")
    (exp / "units" / "f0.5_s0").mkdir()
    (exp / "experiment_settings.json").write_text(json.dumps({
        "dataset": "Dataset950_Fish", "preset": "quick", "rows": ["teacher", "pseudo-qc-kd"], "fractions": [1, 0.5],
        "seeds": [0]}))
    stages = {"plan": {"outputs": {}, "seconds": 10.0}}
    for name, model, fold in (("f1/s0/teacher/fold0", models["teacher"], 0),
                              ("f1/s0/pseudo-qc-kd/fold0", models["student"], 0),
                              ("f0.5/s0/teacher/fold1", models["teacher"], 1)):
        stages[name] = {"outputs": {"model": str(model), "fold": fold}, "seconds": 100.0}
    for record in stages.values():
        record.update(fingerprint="0" * 16, finished="2026-12-02T06:00:00+0000")
    (exp / "experiment_state.json").write_text(json.dumps({"version": 1, "stages": stages}))
    table = [{"row": row, "fraction": fraction, "seed": 0, "case": f"t{c}", "organ": organ,
              "IoU": 0.6 + 0.01 * c + (0.02 if row == "pseudo-qc-kd" else 0.0), "Dice": 0.7 + 0.01 * c}
             for row in ("teacher", "pseudo-qc-kd") for fraction in (1.0, 0.5) for c in range(4)
             for organ in ("swim <bladder> & co", "eye")]
    write_experiment_results(exp, table, dataset="Dataset950_Fish", preset="quick", settings={"tau": 0.7},
                             rows=["teacher", "pseudo-qc-kd"], fractions=[1.0, 0.5], seeds=[0],
                             organs=["swim <bladder> & co", "eye"], n_test=4, n_resamples=200)
    return exp
