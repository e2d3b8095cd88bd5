"""The quality classifier's training table, built from a teacher's cross-validation outputs.

``find_teacher_cv`` locates and checks ``nnUNet_results/DatasetX/Trainer__Plans__config/fold_k/validation/{case}.npz``
(made by ``nnUNetv2_train D C k --npz``) for every fold of ``splits_final.json``, with the raw images and ground
truth. ``build_table`` turns each out-of-fold prediction into one row per organ (features + true IoU) and adds
rows for synthetic corruptions of it (``corrupt.py``), plus the ground truth's own features (the reference for the
relative features).

Rows are plain dicts; ``write_rows`` / ``read_rows`` store them as CSV (``features.csv``, ``reference.csv``).
"""
from __future__ import annotations

import csv
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import read_json

__all__ = ["TeacherCV", "find_teacher_cv", "read_image", "read_probabilities", "build_table", "write_rows",
           "read_rows", "ID_COLUMNS"]

ID_COLUMNS = ("case", "organ", "label", "source", "real", "fold", "iou")


@dataclass
class TeacherCV:
    """A teacher's cross-validation outputs, checked complete."""

    dataset: str
    trainer: str
    plans: str
    configuration: str
    model_folder: Path
    raw_folder: Path
    labels: dict  # organ -> label id, background excluded
    folds: list
    cases: dict  # case -> {"fold", "npz", "images", "label"}
    reader: str
    file_ending: str
    command: str = field(default="")

    @property
    def identity(self) -> dict:
        return {"dataset": self.dataset, "trainer": self.trainer, "plans": self.plans,
                "configuration": self.configuration, "folds": list(self.folds), "model_folder": self.model_folder.name,
                "image_reader_writer": self.reader}


def organ_labels(dataset_json: dict, source: str) -> dict:
    """Organ name -> label id from a dataset.json ``labels`` (background dropped; region labels refused)."""
    labels = {}
    for name, value in dataset_json.get("labels", {}).items():
        if name in ("background", "ignore"):
            continue
        if not isinstance(value, int):
            raise MedakaError(f"{source}: label {name!r} is {value!r}; the quality classifier needs one integer "
                              "label per organ (region-based training is not supported)")
        labels[name] = value
    if not labels:
        raise MedakaError(f"{source}: no organ labels in 'labels'")
    return labels


def find_teacher_cv(dataset: str, configuration: str, trainer: str = "SupervisedTrainer",
                    plans: str = "nnUNetPlans", folds: Optional[Sequence[int]] = None) -> TeacherCV:
    """Locate and check a teacher's complete cross-validation with probabilities.

    Parameters
    ----------
    dataset : str
        Dataset id (``4``) or name (``Dataset004_Hippocampus``).
    configuration, trainer, plans : str
        As given to ``nnUNetv2_train`` (``-tr``, ``-p``).
    folds : sequence of int, optional
        Folds to use; default every fold of ``splits_final.json``.

    Raises
    ------
    MedakaError
        Naming the missing piece and the ``nnUNetv2_train`` command that makes it: no model folder, no split file,
        a fold not trained, a fold validated without ``--npz``, a validation case missing, label sets that differ,
        raw images or ground truth missing.
    """
    from nnunet_medaka.environment import nnunet_folder, preprocessed_dataset_folder

    preprocessed = preprocessed_dataset_folder(str(dataset))
    name = preprocessed.name
    did = name[len("Dataset"):len("Dataset") + 3]
    train_cmd = f"nnUNetv2_train {int(did)} {configuration} FOLD -tr {trainer} -p {plans} --npz"
    model_folder = nnunet_folder("nnUNet_results") / name / f"{trainer}__{plans}__{configuration}"
    if not model_folder.is_dir():
        others = sorted(p.name for p in model_folder.parent.glob(f"*__*__{configuration}") if p.is_dir())
        split = preprocessed / "splits_final.json"
        n = len(read_json(split, expect=list)) if split.is_file() else 5
        raise MedakaError(f"{model_folder}: no cross-validation outputs of this teacher; run `{train_cmd}` for every "
                          f"fold (FOLD = {' '.join(map(str, range(n)))})" + (
                              f", or pass the trainer (-tr) and plans (-p) of a teacher this dataset has: "
                              f"{', '.join(others)}" if others else ""))
    splits = read_json(preprocessed / "splits_final.json", what="the cross-validation split", expect=list,
                       fix=f"the cross-validation has not been run; run `{train_cmd}` for every fold")
    if not isinstance(splits, list) or not splits:
        raise MedakaError(f"{preprocessed / 'splits_final.json'}: expected a list of {{'train', 'val'}} folds")
    wanted = list(range(len(splits))) if folds is None else [int(f) for f in folds]
    bad = [f for f in wanted if not 0 <= f < len(splits)]
    if bad:
        raise MedakaError(f"folds {bad}: {preprocessed / 'splits_final.json'} has folds 0..{len(splits) - 1}")
    raw_folder = nnunet_folder("nnUNet_raw") / name
    raw_json = read_json(raw_folder / "dataset.json", what="the raw dataset",
                         fix=f"the raw dataset {name} must stay in nnUNet_raw (its images and labelsTr are needed)")
    model_json = read_json(model_folder / "dataset.json", what="written by nnUNetv2_train", fix=f"run `{train_cmd}`")
    model_plans = read_json(model_folder / "plans.json", what="written by nnUNetv2_train", fix=f"run `{train_cmd}`")
    labels = organ_labels(model_json, str(model_folder / "dataset.json"))
    raw_labels = organ_labels(raw_json, str(raw_folder / "dataset.json"))
    if labels != raw_labels:
        raise MedakaError(f"label sets differ: the teacher {model_folder} was trained with {labels}, the raw dataset "
                          f"{raw_folder / 'dataset.json'} has {raw_labels}; retrain the teacher (`{train_cmd}`) "
                          "after changing the labels")
    from nnunet_medaka.conversion.raw_dataset import list_cases

    # nnU-Net's own lister (get_filenames_of_train_images_and_targets) starts a process pool for a directory
    # listing; a pool that finishes while a worker is still starting can lose that worker's SIGTERM (Python clears
    # pending signals after fork) and hang its shutdown for good (seen in a self-training run). Same rules, no pool.
    files = {case: {"images": [str(p) for p in entry["images"]], "label": str(entry["label"])}
             for case, entry in list_cases(raw_folder, raw_json).items()}
    cases = {}
    for fold in wanted:
        validation = model_folder / f"fold_{fold}" / "validation"
        cmd = train_cmd.replace("FOLD", str(fold))
        if not validation.is_dir():
            raise MedakaError(f"fold {fold} missing: {validation} does not exist; run `{cmd}`")
        for case in splits[fold]["val"]:
            npz = validation / f"{case}.npz"
            if not npz.is_file():
                seg = validation / f"{case}{raw_json['file_ending']}"
                if seg.is_file():
                    raise MedakaError(f"fold {fold} was validated without --npz: {npz} missing (only {seg.name}); "
                                      f"rerun its validation with probabilities: `{cmd} --val`")
                raise MedakaError(f"fold {fold}: {npz} missing (training unfinished?); run `{cmd}`")
            if case not in files:
                raise MedakaError(f"case {case}: in {preprocessed / 'splits_final.json'} but not in the raw dataset "
                                  f"{raw_folder}; restore its image and label")
            entry = files[case]
            missing = [p for p in [*entry["images"], entry["label"]] if not os.path.isfile(p)]
            if missing:
                raise MedakaError(f"case {case}: raw file(s) missing: {missing}; restore them in {raw_folder}")
            cases[case] = {"fold": fold, "npz": npz, "images": list(entry["images"]), "label": entry["label"]}
    return TeacherCV(dataset=name, trainer=trainer, plans=plans, configuration=configuration,
                     model_folder=model_folder, raw_folder=raw_folder, labels=labels, folds=wanted, cases=cases,
                     reader=model_plans.get("image_reader_writer", "SimpleITKIO"), file_ending=raw_json["file_ending"],
                     command=train_cmd)


def _reader(name: str):
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

    return recursive_find_reader_writer_by_name(name)()


def read_image(files: Sequence[os.PathLike | str], reader: str = "SimpleITKIO") -> tuple[np.ndarray, list]:
    """(image (C, Z, Y, X) float32, spacing in array order) read with nnU-Net's reader, as nnU-Net reads it."""
    image, props = _reader(reader).read_images([str(f) for f in files])
    return image.astype(np.float32, copy=False), [float(s) for s in props["spacing"]]


def read_segmentation(file: os.PathLike | str, reader: str = "SimpleITKIO") -> np.ndarray:
    seg, _ = _reader(reader).read_seg(str(file))
    return np.asarray(seg[0]).astype(np.int16)


def read_probabilities(npz: os.PathLike | str) -> np.ndarray:
    """The ``probabilities`` array of an nnU-Net ``.npz`` (K, Z, Y, X), with a clear error when absent."""
    try:
        with np.load(npz) as data:
            if "probabilities" not in data.files:
                raise MedakaError(f"{npz}: no 'probabilities' array (keys {data.files}); write it with "
                                  "`nnUNetv2_predict --save_probabilities` or `nnUNetv2_train ... --npz`")
            return data["probabilities"].astype(np.float32, copy=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise MedakaError(f"{npz}: not a readable .npz, truncated or corrupt ({type(e).__name__}: {e}); write it "
                          "again with `nnUNetv2_train DATASET CONFIG FOLD --val --npz` for its fold") from None


def build_table(cv: TeacherCV, *, corruptions_per_organ: int = 4, seed: int = 0,
                progress: bool = True) -> tuple[list, list]:
    """Feature rows of every out-of-fold prediction and its corrupted copies, and the ground truth's rows.

    Parameters
    ----------
    cv : TeacherCV
        From ``find_teacher_cv``.
    corruptions_per_organ : int
        Corrupted copies per case and organ (kinds drawn in turn from a seeded shuffle of ``CORRUPTIONS``).
    seed : int
        The same seed gives the same table.

    Returns
    -------
    (list, list)
        ``rows``: one dict per (case, organ, source) with ``ID_COLUMNS`` and the raw features, ``source`` being
        ``"oof"`` (the real out-of-fold prediction) or ``"corrupt:<kind>"``; ``reference``: one dict per (case,
        organ) with the ground truth's raw features.
    """
    from tqdm import tqdm

    from nnunet_medaka.quality.corrupt import CORRUPTIONS, corrupt
    from nnunet_medaka.quality.features import iou, organ_features

    rows, reference = [], []
    labels = cv.labels
    k = max(labels.values()) + 1
    for index, (case, info) in enumerate(tqdm(sorted(cv.cases.items()), desc="quality features", unit="case",
                                              disable=not progress)):
        rng = np.random.default_rng([seed, index])
        image, spacing = read_image(info["images"], cv.reader)
        truth = read_segmentation(info["label"], cv.reader)
        probs = read_probabilities(info["npz"])
        if probs.shape[0] != k:
            raise MedakaError(f"{info['npz']}: {probs.shape[0]} probability channels, the teacher's labels {labels} "
                              f"need {k}; label sets differ: rerun `{cv.command.replace('FOLD', str(info['fold']))}`")
        if probs.shape[1:] != image.shape[1:] or truth.shape != image.shape[1:]:
            raise MedakaError(f"case {case}: probabilities {probs.shape[1:]}, image {image.shape[1:]} and label "
                              f"{truth.shape} differ in shape; the validation outputs do not belong to these raw files")
        onehot = np.stack([truth == c for c in range(k)]).astype(np.float32)
        for organ, f in organ_features(image, onehot, labels, spacing, segmentation=truth).items():
            reference.append({"case": case, "organ": organ, "fold": info["fold"], **f})
        base = {"case": case, "fold": info["fold"]}
        seg = np.argmax(probs, axis=0)
        for organ, f in organ_features(image, probs, labels, spacing, segmentation=seg).items():
            rows.append({**base, "organ": organ, "label": labels[organ], "source": "oof", "real": 1,
                         "iou": iou(seg == labels[organ], truth == labels[organ]), **f})
        kinds = list(CORRUPTIONS)
        for organ in labels:
            order = [kinds[i] for i in rng.permutation(len(kinds))]
            for j in range(corruptions_per_organ):
                kind = order[j % len(order)]
                damaged_probs, damaged = corrupt(probs, labels, organ, kind, rng)
                dseg = np.argmax(damaged_probs, axis=0)
                feats = organ_features(image, damaged_probs, labels, spacing, segmentation=dseg, organs=damaged)
                for o in damaged:
                    rows.append({**base, "organ": o, "label": labels[o], "source": f"corrupt:{kind}", "real": 0,
                                 "iou": iou(dseg == labels[o], truth == labels[o]), **feats[o]})
    return rows, reference


def write_rows(path: os.PathLike | str, rows: Sequence[dict]) -> None:
    """Write rows as CSV atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    columns = list(rows[0]) if rows else list(ID_COLUMNS)
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


_TEXT = {"case", "organ", "source", "decision_method"}


def read_rows(path: os.PathLike | str) -> list:
    """Rows written by ``write_rows``; numbers come back as float (``label``, ``fold``, ``real`` as int)."""
    path = Path(path)
    if not path.is_file():
        raise MedakaError(f"{path}: missing; make it with `nnunet-medaka qc train`")
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {}
            for key, value in r.items():
                if key in _TEXT:
                    row[key] = value
                elif key in ("label", "fold", "real"):
                    row[key] = int(float(value))
                else:
                    row[key] = float(value) if value not in ("", "nan") else float("nan")
            out.append(row)
    return out
