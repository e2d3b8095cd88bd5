"""``nnunet-medaka qc train|score|evaluate``: the quality classifier over files, and its command line.

``qc train`` finds the teacher's cross-validation outputs, builds the training table (real out-of-fold
predictions + corrupted copies), fits the model and writes, next to the teacher::

    nnUNet_results/DatasetX/Trainer__Plans__config/quality/
      quality_model.joblib   the model (format: nnunet_medaka.quality.score)
      features.json          feature names and meanings, tau, accept threshold, teacher identity, settings
      features.csv           the training table: one row per case, organ and source (oof / corrupt:<kind>)
      reference.csv          the ground truth's features per case and organ (reference of the relative features)
      evaluation/            the grouped cross-validation report (see ``qc evaluate``)

``qc score`` scores ``nnUNetv2_predict --save_probabilities`` outputs (``{case}.npz`` + the images) to CSV and JSON;
``qc evaluate`` (re)writes the report from a quality folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)

__all__ = ["train_quality", "evaluate_quality", "score_files", "score_predictions", "add_parser"]

QUALITY_FOLDER = "quality"


def train_quality(dataset: str, configuration: str, *, trainer: str = "SupervisedTrainer", plans: str = "nnUNetPlans",
                  folds: Optional[Sequence[int]] = None, tau: float | str = 0.7, corruptions_per_organ: int = 4,
                  seed: int = 0, accept_threshold: Optional[float] = None, cv_folds: int = 5,
                  output: Optional[os.PathLike | str] = None, evaluate: bool = True, overwrite: bool = False,
                  tta: bool = False, progress: bool = True, extra_teachers: Sequence[tuple] = ()) -> Path:
    """Train a quality model on a teacher's cross-validation outputs; returns the quality folder.

    Parameters
    ----------
    dataset, configuration, trainer, plans : str
        The teacher, as given to ``nnUNetv2_train`` (trained on every fold with ``--npz``).
    folds : sequence of int, optional
        Teacher folds to learn from (default every fold of ``splits_final.json``).
    tau : float or "auto"
        A pseudo-label is good when its IoU >= tau; ``"auto"``: the median IoU of the real out-of-fold predictions.
    corruptions_per_organ : int
        Synthetic corrupted copies per case and organ (0: real out-of-fold predictions only).
    seed : int
        Seed of the corruptions, the grouped CV and the estimators.
    accept_threshold : float, optional
        Fixed operating point on P(good); default chosen by grouped CV (Youden J).
    cv_folds : int
        Folds of the grouped cross-validation (threshold choice, evaluation).
    output : path, optional
        Quality folder; default ``<teacher model folder>/quality``.
    evaluate : bool
        Also write the grouped-CV report into ``<output>/evaluation``.
    overwrite : bool
        Replace an existing quality folder.
    extra_teachers : sequence of (dataset, trainer, plans)
        Other cross-validations of the same labeled cases (e.g. a weaker or earlier teacher, or the teacher of an
        earlier self-training round): their out-of-fold predictions are real mistakes of real networks, added as
        training rows (``source`` ``oof:<model>``, like the corruptions not ``real``: the classifier is still judged
        and its threshold chosen on this teacher's own out-of-fold predictions). Cases the teacher did not
        validate are left out, so the grouped CV keeps every case on one side.
    tta : bool
        Also compute the test-time-augmentation agreement baseline (``quality.tta``): each fold's network re-run
        on its held-out cases, mirrored. Evaluated on the real out-of-fold rows; not a classifier feature.
    """
    from nnunet_medaka.files import write_json_atomic
    from nnunet_medaka.quality.features import FEATURE_DESCRIPTIONS, FEATURE_NAMES
    from nnunet_medaka.quality.model import fit_quality_model, signal_thresholds
    from nnunet_medaka.quality.score import MODEL_FILE, save_quality_model
    from nnunet_medaka.quality.table import build_table, find_teacher_cv, write_rows

    if tau != "auto" and not 0 < float(tau) < 1:
        raise MedakaError(f"--tau {tau}: expected an IoU threshold strictly between 0 and 1, or 'auto'")
    if corruptions_per_organ < 0:
        raise MedakaError(f"--corruptions {corruptions_per_organ}: expected 0 or more")
    _check_cv_folds(cv_folds)
    cv = find_teacher_cv(dataset, configuration, trainer, plans, folds)
    folder = Path(output) if output else cv.model_folder / QUALITY_FOLDER
    if folder.exists() and not overwrite:
        raise MedakaError(f"{folder}: exists; pass --overwrite to replace it")
    rows, reference = build_table(cv, corruptions_per_organ=corruptions_per_organ, seed=seed, progress=progress)
    extra_sources = []
    for x_dataset, x_trainer, x_plans in extra_teachers:
        other = find_teacher_cv(str(x_dataset), configuration, x_trainer, x_plans, folds)
        if other.labels != cv.labels:
            raise MedakaError(f"extra teacher {other.model_folder}: labels {other.labels} differ from the teacher's "
                              f"{cv.labels}; give a cross-validation of the same labels")
        other.cases = {c: info for c, info in other.cases.items() if c in cv.cases}
        tag = f"oof:{other.model_folder.parent.name}/{other.model_folder.name}"
        extra, _ = build_table(other, corruptions_per_organ=0, seed=seed, progress=progress)
        rows += [{**r, "source": tag, "real": 0} for r in extra]
        extra_sources.append({"model": str(other.model_folder), "cases": len(other.cases), "rows": len(extra)})
    if tta:
        from nnunet_medaka.quality.tta import tta_agreement

        agreement = {}
        for fold in cv.folds:
            held_out = {c: info["images"] for c, info in cv.cases.items() if info["fold"] == fold}
            agreement.update(tta_agreement(cv.model_folder, fold, held_out, cv.labels, progress=progress))
        for r in rows:  # corrupted copies have no network output to re-run
            r["tta_dice"] = agreement[r["case"]][r["organ"]] if r["real"] else float("nan")
    if tau == "auto":  # the median real out-of-fold IoU: both classes occur among the real predictions
        import numpy as np

        tau = round(float(np.median([r["iou"] for r in rows if r["real"]])), 4)
        tau = min(max(tau, 1e-4), 0.9999)
        log.info("tau=auto: %s (median IoU of the real out-of-fold predictions)", tau)
    tau = float(tau)
    n_real = sum(r["real"] for r in rows)
    n_bad_real = sum(1 for r in rows if r["real"] and r["iou"] < tau)
    if n_bad_real in (0, n_real):
        log.warning("tau=%s: the real out-of-fold predictions are all %s; metrics on them will be undefined "
                    "(choose a tau inside their IoU range)", tau, "good" if n_bad_real == 0 else "bad")
    identity = {**cv.identity, "file_ending": cv.file_ending,
                "n_channels": len(next(iter(cv.cases.values()))["images"])}
    settings = {"tau": tau, "corruptions_per_organ": corruptions_per_organ, "seed": seed, "cv_folds": cv_folds,
                "signal_thresholds": signal_thresholds(rows, tau), "extra_teachers": extra_sources}
    model = fit_quality_model(rows, reference, cv.labels, tau=tau, teacher=identity, seed=seed,
                              accept_threshold=accept_threshold, n_splits=cv_folds, training_info=settings)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_quality_model(model, tmp / MODEL_FILE)
        write_rows(tmp / "features.csv", rows)
        write_rows(tmp / "reference.csv", reference)
        write_json_atomic(tmp / "features.json", {
            "feature_names": list(FEATURE_NAMES), "descriptions": FEATURE_DESCRIPTIONS, "tau": model.tau,
            "accept_threshold": model.accept_threshold, "labels": model.labels, "teacher": model.teacher,
            "training": model.training, "versions": model.versions,
            "signals": "image, the teacher's softmax and its argmax only; no fold-ensemble disagreement "
                       "(contaminated on labeled cases)"})
        if evaluate:
            from nnunet_medaka.quality.evaluate import evaluate_rows, write_report

            result = evaluate_rows(rows, reference, cv.labels, tau=tau, n_splits=cv_folds, seed=seed,
                                   accept_threshold=accept_threshold, progress=progress)
            write_report(result, tmp / "evaluation")
            log.info("%s", result["summary"])
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("quality model: %s (tau %.2f, accept when P(good) >= %.3f)", folder / MODEL_FILE, model.tau,
             model.accept_threshold)
    return folder


def _check_cv_folds(cv_folds: int) -> None:
    if isinstance(cv_folds, bool) or not isinstance(cv_folds, int) or cv_folds < 2:
        raise MedakaError(f"--cv-folds {cv_folds}: expected a whole number >= 2 (grouped cross-validation over cases)")


def evaluate_quality(quality_folder: os.PathLike | str, *, output: Optional[os.PathLike | str] = None,
                     tau: Optional[float] = None, cv_folds: Optional[int] = None, overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Grouped-CV report of a quality folder's classifier and the baselines; returns the result dict."""
    from nnunet_medaka.quality.evaluate import evaluate_rows, write_report
    from nnunet_medaka.quality.score import load_quality_model
    from nnunet_medaka.quality.table import read_rows

    if tau is not None and not 0 < float(tau) < 1:
        raise MedakaError(f"--tau {tau}: expected an IoU threshold strictly between 0 and 1 (as qc train takes it)")
    if cv_folds is not None:
        _check_cv_folds(cv_folds)
    folder = Path(quality_folder)
    model = load_quality_model(folder)
    rows = read_rows(folder / "features.csv")
    reference = read_rows(folder / "reference.csv")
    tau = model.tau if tau is None else tau
    fixed = model.accept_threshold if model.training.get("accept_threshold_rule") == "given" else None
    result = evaluate_rows(rows, reference, model.labels, tau=tau, seed=model.seed, accept_threshold=fixed,
                           n_splits=cv_folds or int(model.training.get("cv_folds", 5)), progress=progress)
    write_report(result, Path(output) if output else folder / "evaluation", overwrite=True if output is None else overwrite)
    return result


def _prediction_identity(folder: Path) -> tuple[Optional[dict], Optional[dict]]:
    """(labels, teacher identity) from the dataset.json / plans.json nnUNetv2_predict writes beside predictions."""
    labels = teacher = None
    if (folder / "dataset.json").is_file():
        from nnunet_medaka.quality.table import organ_labels

        labels = organ_labels(json.loads((folder / "dataset.json").read_text()), str(folder / "dataset.json"))
    if (folder / "plans.json").is_file():
        plans = json.loads((folder / "plans.json").read_text())
        teacher = {"dataset": plans.get("dataset_name"), "plans": plans.get("plans_name")}
    return labels, teacher


def score_files(model, npz: os.PathLike | str, image_files: Sequence[os.PathLike | str]) -> dict:
    """``score_case`` on one ``{case}.npz`` and its image files (read as nnU-Net reads them)."""
    from nnunet_medaka.quality.score import score_case
    from nnunet_medaka.quality.table import read_image, read_probabilities

    image, spacing = read_image(image_files, model.teacher.get("image_reader_writer", "SimpleITKIO"))
    probabilities = read_probabilities(npz)
    if probabilities.shape[1:] != image.shape[1:]:
        raise MedakaError(f"{npz}: probabilities of shape {probabilities.shape[1:]} but image {image_files[0]} has "
                          f"{image.shape[1:]}; give the images these predictions were made from")
    return score_case(model, image, probabilities, spacing)


def score_predictions(model_path: os.PathLike | str, predictions: os.PathLike | str, images: os.PathLike | str,
                      output: os.PathLike | str, *, overwrite: bool = False, progress: bool = True) -> list:
    """Score every ``{case}.npz`` in ``predictions`` and write ``output`` (CSV) and its ``.json`` twin.

    Raises
    ------
    MedakaError
        No ``.npz`` probabilities, an image missing for a case, or a model for other organs or another teacher.
    """
    from tqdm import tqdm

    from nnunet_medaka.files import write_json_atomic
    from nnunet_medaka.quality.score import check_compatible, load_quality_model
    from nnunet_medaka.quality.table import write_rows

    model = load_quality_model(model_path)
    predictions, images, output = Path(predictions), Path(images), Path(output)
    files = [predictions] if predictions.is_file() else sorted(predictions.glob("*.npz"))
    if not files:
        raise MedakaError(f"{predictions}: no .npz probabilities; predict with `nnUNetv2_predict -i IMAGES -o "
                          f"{predictions} ... --save_probabilities`")
    json_out = output.with_suffix(".json")
    if not overwrite and (output.exists() or json_out.exists()):
        raise MedakaError(f"{output}: exists; pass --overwrite to replace it")
    labels, teacher = _prediction_identity(files[0].parent)
    check_compatible(model, labels=labels, teacher=teacher)
    ending = model.teacher.get("file_ending", ".nii.gz")
    n_channels = int(model.teacher.get("n_channels", 1))
    jobs = []
    for npz in files:
        case = npz.name[: -len(".npz")]
        image_files = [images / f"{case}_{c:04d}{ending}" for c in range(n_channels)]
        missing = [str(p) for p in image_files if not p.is_file()]
        if missing:
            raise MedakaError(f"predictions without images: {npz.name} has no image {missing[0]}; give the folder the "
                              "predictions were made from with -i (nnU-Net names images CASE_0000"
                              f"{ending})")
        jobs.append((case, npz, image_files))
    rows, per_case = [], {}
    for case, npz, image_files in tqdm(jobs, desc="quality scores", unit="case", disable=not progress):
        scores = score_files(model, npz, image_files)
        per_case[case] = scores
        for organ, s in scores.items():
            rows.append({"case": case, "organ": organ, "predicted_iou": s["predicted_iou"], "p_good": s["p_good"],
                         "accept": int(s["accept"]), "accept_threshold": model.accept_threshold, "tau": model.tau})
    output.parent.mkdir(parents=True, exist_ok=True)
    write_rows(output, rows)
    write_json_atomic(json_out, {"model": str(model.path), "tau": model.tau,
                                 "accept_threshold": model.accept_threshold, "teacher": model.teacher,
                                 "scores": per_case})
    return rows


def _tau(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number in (0, 1) or 'auto'") from None


def _folds(text: Optional[str]) -> Optional[list]:
    return None if text is None else [int(f) for f in text.replace(",", " ").split()]


def _extra_teacher(text: str) -> tuple:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected DATASET:TRAINER:PLANS, e.g. 4:SupervisedTrainer:nnUNetPlans")
    return tuple(parts)


def _run_train(args: argparse.Namespace) -> int:
    train_quality(args.dataset, args.configuration, trainer=args.trainer, plans=args.plans, folds=args.folds,
                  tau=args.tau, corruptions_per_organ=args.corruptions, seed=args.seed,
                  accept_threshold=args.accept_threshold, cv_folds=args.cv_folds, output=args.output,
                  evaluate=not args.no_evaluate, overwrite=args.overwrite, tta=args.tta,
                  extra_teachers=args.extra_teacher or ())
    return 0


def _run_score(args: argparse.Namespace) -> int:
    rows = score_predictions(args.model, args.predictions, args.images, args.output, overwrite=args.overwrite)
    accepted = sum(r["accept"] for r in rows)
    print(f"{len(rows)} organ predictions scored, {accepted} accepted -> {args.output}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    result = evaluate_quality(args.quality_folder, output=args.output, tau=args.tau, cv_folds=args.cv_folds,
                              overwrite=args.overwrite)
    print(result["summary"])
    overall = result["metrics"].get("real", result["metrics"]["all"])["overall"]
    for method, m in overall.items():
        fmt = lambda v: "   n/a" if v is None else f"{v:6.3f}"  # noqa: E731
        print(f"  {method:18s} AUROC {fmt(m['auroc'])}  AUPRC {fmt(m['auprc'])}  Spearman {fmt(m['spearman'])}  "
              f"AURC {fmt(m['aurc'])}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    qc = subparsers.add_parser("qc", help="quality classifier: train on the teacher's CV, score pseudo-labels, evaluate",
                               description="Learn each pseudo-label's IoU per organ from the teacher's "
                                           "cross-validation outputs (nnUNetv2_train ... --npz), score new predictions, "
                                           "and report how well it detects bad ones against simple baselines.")
    sub = qc.add_subparsers(dest="qc_command", metavar="{train,score,evaluate}")
    sub.required = True

    t = sub.add_parser("train", help="train a quality model on a teacher's cross-validation outputs",
                       description="Needs every fold trained with `nnUNetv2_train D C FOLD -tr T -p P --npz`. Writes "
                                   "<teacher folder>/quality/ (model, features, report).")
    t.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    t.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres or 2d")
    t.add_argument("-tr", dest="trainer", default="SupervisedTrainer", help="teacher trainer (default %(default)s)")
    t.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default %(default)s)")
    t.add_argument("-f", dest="folds", type=_folds, default=None, help="folds, e.g. '0,1,2' (default: all of splits_final.json)")
    t.add_argument("--tau", type=_tau, default=0.7,
                   help="a pseudo-label is good when IoU >= tau (default %(default)s); 'auto': the median IoU of the "
                        "real out-of-fold predictions")
    t.add_argument("--corruptions", type=int, default=4, help="corrupted copies per case and organ (default %(default)s)")
    t.add_argument("--accept-threshold", type=float, default=None,
                   help="fixed operating point on P(good) (default: chosen by grouped CV, Youden J)")
    t.add_argument("--cv-folds", type=int, default=5, help="grouped cross-validation folds (default %(default)s)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--extra-teacher", action="append", type=_extra_teacher, metavar="DATASET:TRAINER:PLANS",
                   help="another cross-validation of the same labeled cases (trained with --npz), whose out-of-fold "
                   "predictions become training rows of real mistakes; repeatable")
    t.add_argument("-o", dest="output", default=None, help="quality folder (default <teacher folder>/quality)")
    t.add_argument("--no-evaluate", action="store_true", help="skip the grouped-CV report")
    t.add_argument("--overwrite", action="store_true", help="replace an existing quality folder")
    t.add_argument("--tta", action="store_true",
                   help="also evaluate the test-time-augmentation agreement baseline (re-runs each fold's network "
                        "on its held-out cases, mirrored)")
    t.set_defaults(func=_run_train)

    s = sub.add_parser("score", help="score nnUNetv2_predict --save_probabilities outputs per case and organ",
                       description="Writes a CSV (case, organ, predicted_iou, p_good, accept) and a JSON twin.")
    s.add_argument("model", help="quality folder or quality_model.joblib")
    s.add_argument("predictions", help="folder of {case}.npz (or one .npz)")
    s.add_argument("-i", dest="images", required=True, help="folder of the images they were predicted from")
    s.add_argument("-o", dest="output", required=True, help="output CSV (a .json with the same stem is written too)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_run_score)

    e = sub.add_parser("evaluate", help="grouped-CV report: classifier vs baselines (JSON, CSV, PNG)",
                       description="Grouped cross-validation over labeled cases of the quality folder's training "
                                   "table: AUROC/AUPRC for IoU < tau, Spearman, MAE, AURC, per organ and overall, real "
                                   "out-of-fold predictions alone and with corrupted copies.")
    e.add_argument("quality_folder", help="folder written by `qc train`")
    e.add_argument("-o", dest="output", default=None, help="report folder (default <quality_folder>/evaluation)")
    e.add_argument("--tau", type=float, default=None, help="evaluate at another tau (default: the model's)")
    e.add_argument("--cv-folds", type=int, default=None)
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=_run_evaluate)
