"""``nnunet-medaka pseudolabel``: the teacher predicts unlabeled scans, the quality model scores each prediction while
its probabilities are in memory, and the accepted pseudo-labels are written for the student dataset.

The prediction is nnU-Net's own: ``nnUNetPredictor`` initialised from the teacher's model folder (fold ensemble,
sliding window, Gaussian weighting, optional mirroring), nnU-Net's preprocessor for the input and nnU-Net's export
back to the original geometry (``convert_predicted_logits_to_segmentation_with_correct_shape``), so the label maps
equal ``nnUNetv2_predict``'s. Probability maps never reach the disk.

Resumable: a case is finished exactly when ``records/CASE.json`` exists; it is written after the label file was
renamed into place (label files are written to a hidden temporary name first). A killed run is resumed by running
the same command again. Shardable like ``nnUNetv2_predict``: ``--num-parts N --part-id I`` processes every N-th case
of the sorted case list; ``nnunet-medaka pseudolabel-merge`` then writes the table (byte-identical to one run).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from nnunet_medaka.files import check_complete, resolve_device, write_json_atomic
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pseudolabel.acceptance import ACCEPTANCE_MODES, apply_organ_rejection, decide, gate_voxels
from nnunet_medaka.pseudolabel.inputs import (
    Teacher, find_unlabeled_images, labeled_case_ids, resolve_teacher, teacher_raw_dataset,
)
from nnunet_medaka.pseudolabel.outputs import (
    FAILED_FILE, finished_cases, prepare_output, remove_stale_temporaries, write_record, write_results,
)
from nnunet_medaka.pseudolabel.signals import SIGNALS, ensemble_logits, organ_signals

log = logging.getLogger(__name__)

__all__ = ["Scorer", "pseudolabel"]

# (image (C,Z,Y,X), probabilities (K,Z,Y,X), spacing) -> {organ: {"predicted_iou": float, "p_good": float, ...}}
Scorer = Callable[[np.ndarray, np.ndarray, Sequence[float]], dict]
FILTERS = ("quality", *SIGNALS, "auto")  # see --filter
SETTINGS_FORMAT = "nnunet-medaka-pseudolabels"


def _check_options(acceptance: str, threshold: Optional[float], ignore_band: int, band_probability: Optional[float],
                   num_parts: int, part_id: int, has_model: bool, filter_by: str = "quality",
                   voxel_confidence: Optional[float] = None) -> None:
    if acceptance not in ACCEPTANCE_MODES:
        raise MedakaError(f"--acceptance {acceptance!r}: expected one of {', '.join(ACCEPTANCE_MODES)}")
    if filter_by not in FILTERS:
        raise MedakaError(f"--filter {filter_by!r}: expected one of {', '.join(FILTERS)}")
    if acceptance != "none" and not has_model and filter_by in ("quality", "auto"):
        raise MedakaError(f"--acceptance {acceptance} filters pseudo-labels with a quality model, but none was given; "
                          "add --quality-model PATH (train one with `nnunet-medaka qc train`) or use --acceptance none")
    if acceptance != "none" and not has_model and threshold is None:
        raise MedakaError(f"--filter {filter_by} needs its threshold: give --threshold, or a --quality-model whose "
                          "`qc train` chose one on the teacher's out-of-fold predictions")
    if threshold is not None and not 0 <= threshold <= 1:
        raise MedakaError(f"--threshold {threshold}: expected a probability in [0, 1]")
    if isinstance(ignore_band, bool) or not isinstance(ignore_band, int) or ignore_band < 0:
        raise MedakaError(f"--ignore-band {ignore_band!r}: expected a whole number of voxels >= 0")
    if voxel_confidence is not None and not 0 < voxel_confidence <= 1:
        raise MedakaError(f"--voxel-confidence {voxel_confidence}: expected a probability in (0, 1] (voxels whose "
                          "top probability is below it become the ignore label)")
    if band_probability is not None and not 0 < band_probability <= 1:
        raise MedakaError(f"--band-probability {band_probability}: expected a probability in (0, 1]")
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise MedakaError(f"--num-parts {num_parts} --part-id {part_id}: expected num_parts >= 1 and "
                          "0 <= part_id < num_parts (as nnUNetv2_predict)")


def _device(name: str):
    import torch

    name = resolve_device(name)
    if name not in ("cpu", "cuda", "mps"):
        raise MedakaError(f"-device {name!r}: expected cpu, cuda, mps or auto")
    if name == "cuda" and not torch.cuda.is_available():
        raise MedakaError("-device cuda: no CUDA device visible; use -device cpu")
    return torch.device(name)


def _predictor(teacher: Teacher, *, device, mirroring: bool, tile_step_size: float):
    """nnU-Net's predictor for the teacher (`nnunet_medaka.environment.nnunet_predictor`)."""
    from nnunet_medaka.environment import nnunet_predictor

    return nnunet_predictor(teacher.folder, teacher.folds, teacher.checkpoint, device=device, mirroring=mirroring,
                            tile_step_size=tile_step_size)


def _quality_scorer(quality_model, teacher: Teacher) -> tuple[Scorer, float, str, dict]:
    from nnunet_medaka.quality.score import check_compatible, load_quality_model, score_case

    model = load_quality_model(quality_model)
    identity = {k: v for k, v in teacher.identity().items() if k in ("dataset", "trainer", "plans", "configuration",
                                                                     "model_folder")}
    check_compatible(model, labels=teacher.organs, teacher=identity, n_channels=len(teacher.labels))
    return (lambda image, probabilities, spacing: score_case(model, image, probabilities, spacing),
            float(model.accept_threshold), str(model.path), dict(model.training))


def pseudolabel(
    teacher: os.PathLike | str,
    images: os.PathLike | str,
    output: os.PathLike | str,
    *,
    folds: Sequence = (0,),
    checkpoint: str = "checkpoint_final.pth",
    quality_model: Optional[os.PathLike | str] = None,
    acceptance: Optional[str] = None,
    threshold: Optional[float] = None,
    ignore_band: int = 2,
    band_probability: Optional[float] = 0.1,
    ground_truth: Optional[os.PathLike | str] = None,
    teacher_raw: Optional[os.PathLike | str] = None,
    mirroring: bool = True,
    tile_step_size: float = 0.5,
    device: str = "auto",
    num_parts: int = 1,
    part_id: int = 0,
    overwrite: bool = False,
    scorer: Optional[Scorer] = None,
    progress: bool = True,
    filter_by: str = "quality",
    voxel_confidence: Optional[float] = None,
) -> dict:
    """Pseudo-label unlabeled images with a teacher and decide which pseudo-labels the student may use.

    Parameters
    ----------
    teacher : path
        Teacher model folder ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``.
    images : path
        Folder of ``CASE_XXXX<ending>`` images, or a raw dataset declaring ``"unlabeled_images"``.
    output : path
        Output folder (see `nnunet_medaka.pseudolabel.outputs`). Running again resumes.
    folds, checkpoint
        Teacher folds (ensembled, as nnU-Net averages them) and checkpoint file name.
    quality_model : path, optional
        Quality model (``nnunet-medaka qc train``); needed for ``case`` and ``organ`` acceptance.
    acceptance : {"case", "organ", "none"}, optional
        Granularity of the filter (see `nnunet_medaka.pseudolabel.acceptance`); default ``case`` with a quality
        model, ``none`` without.
    threshold : float, optional
        Accept an organ when ``p_good >= threshold``; default the quality model's ``accept_threshold``.
    ignore_band, band_probability
        Organ acceptance: dilation radius (voxels) and probability defining the uncertain band set to ignore.
    ground_truth : path, optional
        Labels of the unlabeled images, for the ``true_iou`` column only (never used for decisions).
    teacher_raw : path, optional
        The teacher's raw dataset (default ``$nnUNet_raw/<its dataset>``), to refuse case ids of labeled cases.
    mirroring, tile_step_size
        nnU-Net's test-time mirroring and sliding-window step.
    device : {"auto", "cpu", "cuda", "mps"}
    num_parts, part_id : int
        Process only cases ``part_id::num_parts`` of the sorted list (as ``nnUNetv2_predict``).
    overwrite : bool
        Start again in an existing output folder made with other settings (deletes its results).
    scorer : callable, optional
        Instead of a quality model: ``scorer(image, probabilities, spacing) -> {organ: {"p_good": ..., ...}}``
        (tests, custom filters); ``threshold`` then defaults to 0.5.
    progress : bool
        Show a progress bar (cases/s).
    filter_by : {"quality", "fold_agreement", "soft_dice_confidence", "mean_max_softmax", "auto"}
        What ``threshold`` applies to: the quality model's ``p_good``, or a label-free signal
        (`nnunet_medaka.pseudolabel.signals`); for a signal the default threshold is the one ``qc train`` chose on
        the teacher's out-of-fold predictions (Youden J), which the folds' agreement has none of. ``auto``: the one
        the quality model's training chose on those predictions (`nnunet_medaka.quality.model.choose_filter`);
        the settings record it and why (``filter_reason``).
    voxel_confidence : float, optional
        Voxel gating: in every label map written, voxels whose ensemble top probability is below this become the
        ignore label (`nnunet_medaka.pseudolabel.acceptance.gate_voxels`); off by default.

    Returns
    -------
    dict
        ``processed``, ``skipped`` (already finished), ``failed`` (case -> error), ``seconds``, ``cases_per_second``,
        ``peak_rss_mb`` and, when the run is complete, ``summary``.

    Raises
    ------
    MedakaError
        Before any prediction, for every bad input (teacher, images, quality model, options, output folder).
    """
    if acceptance is None:
        acceptance = "none" if quality_model is None and scorer is None and (
            filter_by == "quality" or threshold is None) else "case"
    _check_options(acceptance, threshold, ignore_band, band_probability, num_parts, part_id,
                   quality_model is not None or scorer is not None, filter_by, voxel_confidence)
    t = resolve_teacher(teacher, folds, checkpoint)
    unlabeled = find_unlabeled_images(images, t, ground_truth)
    labeled = labeled_case_ids(t, teacher_raw_dataset(t, teacher_raw, required=teacher_raw is not None))
    if labeled is None:
        log.warning("teacher's labeled cases not found (no raw dataset or splits_final.json for %s): case ids are not "
                    "checked against them here; build-student checks them", t.dataset_name)
    else:
        clash = sorted(set(unlabeled.cases) & labeled)
        if clash:
            raise MedakaError(f"{unlabeled.folder}: case ids {clash[:5]} are also labeled cases of the teacher's dataset "
                              f"{t.dataset_name}; rename the unlabeled images (case ids must be unique in the student "
                              "dataset)")
    model_path, given, filter_reason = None, threshold, None
    if filter_by == "auto" and quality_model is None:
        raise MedakaError("--filter auto chooses by the evidence a quality model holds; add --quality-model PATH "
                          "(`nnunet-medaka qc train`)")
    if quality_model is not None:
        scorer, model_threshold, model_path, training = _quality_scorer(quality_model, t)
        if filter_by == "auto":
            if "auto_filter" not in training:
                raise MedakaError(f"--filter auto: the quality model {model_path} was trained before `qc train` "
                                  "compared the filters; retrain it (`nnunet-medaka qc train ... --overwrite`) or name "
                                  "a filter")
            filter_by, filter_reason = training["auto_filter"], f"auto: {training['auto_filter_reason']}"
            log.info("--filter auto -> %s (%s)", filter_by, training["auto_filter_reason"])
        by_signal = training.get("signal_thresholds") or {}
        threshold = (model_threshold if filter_by == "quality" else by_signal.get(filter_by)) if given is None else given
        if threshold is None and acceptance != "none":
            raise MedakaError(f"--filter {filter_by}: the quality model {model_path} holds no threshold for it (`qc "
                              "train` chooses one for mean_max_softmax and soft_dice_confidence only; the folds' "
                              "agreement cannot be measured on their own training cases); give --threshold")
    elif scorer is not None:
        threshold = 0.5 if threshold is None else threshold
        model_path = "custom scorer"
    output = Path(output).expanduser().resolve()
    cases = sorted(unlabeled.cases)
    settings = {
        "format": SETTINGS_FORMAT,
        "teacher": t.identity(),
        "labels": t.labels,
        "ignore_label": t.ignore_label,
        "channel_names": t.dataset_json["channel_names"],
        "file_ending": t.dataset_json["file_ending"],
        "images": str(unlabeled.folder.resolve()),
        "ground_truth": str(unlabeled.ground_truth.resolve()) if unlabeled.ground_truth else None,
        "cases": cases,
        "acceptance": acceptance,
        **({"filter": filter_by} if filter_by != "quality" else {}),  # absent: folders made before resume
        **({"filter_reason": filter_reason} if filter_reason else {}),
        "threshold": threshold,
        "ignore_band": ignore_band if acceptance == "organ" else None,
        "band_probability": band_probability if acceptance == "organ" else None,
        **({"voxel_confidence": voxel_confidence} if voxel_confidence is not None else {}),  # absent: older folders
        "quality_model": model_path,
        "mirroring": bool(mirroring),
        "tile_step_size": float(tile_step_size),
    }
    prepare_output(output, settings, overwrite)
    mine = cases[part_id::num_parts]
    remove_stale_temporaries(output, mine)
    done = finished_cases(output, mine)
    todo = [c for c in mine if c not in done]
    if done:
        log.info("resuming: %d of %d cases of this part already finished", len(done), len(mine))
    result = {"output": str(output), "part": [part_id, num_parts], "processed": 0, "skipped": len(done), "failed": {},
              "seconds": 0.0, "cases_per_second": None, "peak_rss_mb": None}
    if todo:
        result.update(_run_cases(t, unlabeled, output, todo, settings, scorer, device, progress, part_id, num_parts))
    if num_parts == 1:
        result["summary"] = write_results(output)
    else:
        log.info("part %d of %d done; when every part has finished run `nnunet-medaka pseudolabel-merge %s`",
                 part_id, num_parts, output)
    return result


def _run_cases(t: Teacher, unlabeled, output: Path, todo: list, settings: dict, scorer: Optional[Scorer],
               device_name: str, progress: bool, part_id: int, num_parts: int) -> dict:
    import resource

    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from tqdm import tqdm

    from nnunet_medaka.quality.features import iou

    device = _device(device_name)
    predictor = _predictor(t, device=device, mirroring=settings["mirroring"], tile_step_size=settings["tile_step_size"])
    pm, cm, lm = predictor.plans_manager, predictor.configuration_manager, predictor.label_manager
    rw = pm.image_reader_writer_class()
    preprocessor = cm.preprocessor_class(verbose=False)
    ending = settings["file_ending"]
    organs = t.organs
    n_labels = len(t.labels)
    ignore_label = settings["ignore_label"]
    by = settings.get("filter", "quality")  # what decides: the quality model's p_good or a signal (--filter)

    def load(case: str):
        """Read and preprocess one case (in a helper thread, overlapping the previous case's prediction)."""
        start = time.perf_counter()
        files = [str(f) for f in unlabeled.cases[case]]
        try:
            for f in files:  # a truncated .nii.gz would be read zero-filled: a failed case, never a pseudo-label
                check_complete(f)
            image, properties = rw.read_images(files)
            data, _, properties = preprocessor.run_case_npy(image, None, properties, pm, cm, predictor.dataset_json)
        except Exception as e:  # noqa: BLE001 - any reader error means this input is unreadable
            return None, f"{type(e).__name__}: {e}".replace("\n", " ")
        truth = None
        if unlabeled.ground_truth is not None:
            gt_file = unlabeled.ground_truth / f"{case}{ending}"
            if gt_file.is_file():
                try:
                    truth = rw.read_seg(str(gt_file))[0][0]
                except Exception as e:  # noqa: BLE001
                    log.warning("%s: ground truth %s unreadable (%s); no true IoU for it", case, gt_file, e)
                if truth is not None and truth.shape != image.shape[1:]:
                    log.warning("%s: ground truth shape %s differs from the image %s; no true IoU", case, truth.shape,
                                image.shape[1:])
                    truth = None
        return (image, properties, data, truth, time.perf_counter() - start), None

    failed = {}
    processed = 0
    started = time.perf_counter()
    bar = tqdm(total=len(todo), unit="case", desc=f"pseudolabel{'' if num_parts == 1 else f' part {part_id}/{num_parts}'}",
               disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, todo[0])
        for i, case in enumerate(todo):
            loaded, error = pending.result()
            if i + 1 < len(todo):
                pending = pool.submit(load, todo[i + 1])
            if error is not None:
                failed[case] = error
                write_json_atomic(output / "failures" / f"{case}.json",
                                  {"case": case, "files": [str(f) for f in unlabeled.cases[case]], "error": error})
                log.error("%s: cannot be read (%s); skipped, listed in %s", case, error, FAILED_FILE)
                bar.update()
                continue
            image, properties, data, truth, t_read = loaded
            t0 = time.perf_counter()
            logits, fold_maps = ensemble_logits(predictor, torch.from_numpy(data))
            del data
            t1 = time.perf_counter()
            segmentation, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits, pm, cm, lm, properties, return_probabilities=True)
            del logits
            t2 = time.perf_counter()
            # label-free signals (records and table; --filter decides with one of them): no extra network pass
            signals = organ_signals(probabilities, segmentation, {} if lm.has_regions else organs, fold_maps)
            t_signals = time.perf_counter() - t2
            scores = None if scorer is None else scorer(image, probabilities, list(properties["spacing"]))
            organ_decisions, case_decision = decide(scores if by == "quality" else signals, list(organs),
                                                    settings["acceptance"], settings["threshold"],
                                                    key="p_good" if by == "quality" else by)
            t3 = time.perf_counter()
            rejected = [organs[o] for o, d in organ_decisions.items() if d == "reject"]
            if case_decision == "partial":
                label_map = apply_organ_rejection(segmentation, probabilities, rejected, ignore_label,
                                                  ignore_band=settings["ignore_band"],
                                                  band_probability=settings["band_probability"])
            else:
                label_map = segmentation
            if settings.get("voxel_confidence") is not None:
                label_map = gate_voxels(label_map, probabilities, settings["voxel_confidence"], ignore_label)
            del probabilities
            counts = np.bincount(segmentation.ravel(), minlength=n_labels)
            label_file = Path("labels") / f"{case}{ending}"
            target = output / label_file
            tmp = target.with_name(f".{case}.tmp{os.getpid()}{ending}")
            rw.write_seg(label_map, str(tmp), properties)
            os.replace(tmp, target)
            t4 = time.perf_counter()
            record = {
                "case": case,
                "images": [str(Path(f).resolve()) for f in unlabeled.cases[case]],
                "label_file": str(label_file),
                "organs": [{
                    "organ": organ, "label": label, "voxels": int(counts[label]),
                    "predicted_iou": None if scores is None else float(scores[organ]["predicted_iou"]),
                    "p_good": None if scores is None else float(scores[organ]["p_good"]),
                    **signals.get(organ, dict.fromkeys(SIGNALS)),
                    "decision": organ_decisions[organ],
                    "true_iou": None if truth is None else float(iou(segmentation == label, truth == label)),
                } for organ, label in organs.items()],
                "case_decision": case_decision,
                "ignored_voxels": int(np.count_nonzero(label_map == ignore_label)) if label_map is not segmentation else 0,
                "voxels_total": int(label_map.size),
                "seconds": {"read_preprocess": round(t_read, 4), "predict": round(t1 - t0, 4),
                            "export": round(t2 - t1, 4), "signals": round(t_signals, 4),
                            "score": round(t3 - t2 - t_signals, 4), "write": round(t4 - t3, 4)},
            }
            write_record(output, record)
            processed += 1
            bar.update()
    bar.close()
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timing = {"part": [part_id, num_parts], "device": str(device), "cases": processed, "failed": len(failed),
              "seconds": round(seconds, 3), "cases_per_second": round(processed / seconds, 4) if seconds else None,
              "peak_rss_mb": round(peak_mb, 1)}
    write_json_atomic(output / "runs" / f"part-{part_id}-of-{num_parts}.json", timing)
    return {"processed": processed, "failed": failed, "seconds": timing["seconds"],
            "cases_per_second": timing["cases_per_second"], "peak_rss_mb": timing["peak_rss_mb"]}
