"""What ``pseudolabel`` and ``build-student`` start from, checked before any work: the teacher model folder, the
unlabeled images and the teacher's labeled cases.

Plain functions over files (no torch): every problem is a `MedakaError` naming the file or option and the fix.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import read_json

__all__ = ["Teacher", "UnlabeledImages", "find_unlabeled_images", "labeled_case_ids", "parse_folds", "resolve_teacher",
           "teacher_raw_dataset"]


@dataclass(frozen=True)
class Teacher:
    """A trained nnU-Net model folder and the identity of the predictions it makes."""

    folder: Path
    folds: tuple
    checkpoint: str
    checkpoints: dict  # fold -> path
    plans: dict
    dataset_json: dict
    trainer: str
    plans_name: str
    configuration: str

    @property
    def dataset_name(self) -> str:
        return self.plans.get("dataset_name") or self.folder.parent.name

    @property
    def labels(self) -> dict:
        """Label name -> value, ``ignore`` excluded."""
        return {k: int(v) for k, v in self.dataset_json["labels"].items() if k != "ignore"}

    @property
    def organs(self) -> dict:
        """Organ name -> label value (background and ``ignore`` excluded), in label order."""
        return {k: v for k, v in sorted(self.labels.items(), key=lambda kv: kv[1]) if v != 0}

    @property
    def ignore_label(self) -> int:
        """nnU-Net's ignore label for this label set: the declared one, else max label + 1."""
        declared = self.dataset_json["labels"].get("ignore")
        return int(declared) if declared is not None else max(self.labels.values()) + 1

    def identity(self) -> dict:
        """What a quality model and the output folder record about the teacher."""
        return {"dataset": self.dataset_name, "trainer": self.trainer, "plans": self.plans_name,
                "configuration": self.configuration, "model_folder": self.folder.name, "folder": str(self.folder),
                "folds": list(self.folds), "checkpoint": self.checkpoint}


def parse_folds(folds: Sequence) -> tuple:
    """``["0", "1"]`` -> ``(0, 1)``; ``"all"`` stays a string (nnU-Net's fold trained on every case)."""
    out = []
    for f in folds:
        text = str(f)
        if text == "all":
            out.append("all")
        elif text.isdigit():
            out.append(int(text))
        else:
            raise MedakaError(f"fold {f!r}: expected a number >= 0 or 'all' (e.g. -f 0 1 2 3 4)")
    if not out or len(set(out)) != len(out):
        raise MedakaError(f"folds {list(folds)}: give one or more distinct folds (e.g. -f 0 or -f 0 1 2 3 4)")
    return tuple(out)


def resolve_teacher(folder: os.PathLike | str, folds: Sequence, checkpoint: str = "checkpoint_final.pth") -> Teacher:
    """Check a teacher model folder, its folds and checkpoints; read its plans and dataset.json.

    Parameters
    ----------
    folder : path
        ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``.
    folds : sequence
        Folds to ensemble (ints or ``"all"``).
    checkpoint : str
        Checkpoint file name in each ``fold_X``.

    Raises
    ------
    MedakaError
        If the folder, a fold or a checkpoint is missing, the folder name is not ``Trainer__Plans__configuration``,
        or the model is region-based or a cascade stage (not supported for pseudo-labels).
    """
    from nnunet_medaka.training.teacher_files import locate_teacher

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MedakaError(f"teacher {str(folder)!r}: no such folder. Give a trained nnU-Net model folder "
                          "(nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration) with --teacher")
    folds = parse_folds(folds)
    try:
        files = locate_teacher(folder, folds, checkpoint)
    except MedakaError as e:
        raise MedakaError(f"{e} (options -f/--folds and --checkpoint)") from None
    parts = files.folder.name.split("__")
    if len(parts) != 3:
        raise MedakaError(f"teacher {files.folder}: folder name should be Trainer__Plans__configuration as nnU-Net "
                          "writes it; point --teacher at that folder")
    trainer, plans_name, configuration = parts
    if configuration not in files.plans.get("configurations", {}):
        raise MedakaError(f"teacher {files.folder}: plans.json has no configuration {configuration!r}")
    labels = files.dataset_json.get("labels", {})
    if any(isinstance(v, (list, tuple)) for v in labels.values()) or files.dataset_json.get("regions_class_order"):
        raise MedakaError(f"teacher {files.folder}: region-based (sigmoid) labels are not supported for pseudo-labels")
    if files.plans["configurations"][configuration].get("previous_stage"):
        raise MedakaError(f"teacher {files.folder}: cascade stage {configuration!r} needs the previous stage's "
                          "segmentation; pseudo-label with a 3d_fullres or 2d teacher instead")
    return Teacher(files.folder, folds, checkpoint, dict(files.checkpoints), files.plans, files.dataset_json, trainer,
                   plans_name, configuration)


@dataclass(frozen=True)
class UnlabeledImages:
    """The unlabeled cases to pseudo-label: case id -> channel files, plus ground truth for evaluation only."""

    folder: Path
    cases: dict  # case -> list of Path (channel order)
    ground_truth: Optional[Path]


def find_unlabeled_images(source: os.PathLike | str, teacher: Teacher,
                          ground_truth: Optional[os.PathLike | str] = None) -> UnlabeledImages:
    """List the unlabeled images and check them against the teacher's dataset.

    Parameters
    ----------
    source : path
        A folder of images named like nnU-Net's ``imagesTs`` (``CASE_0000.nii.gz``), or a raw dataset folder whose
        ``dataset.json`` declares ``"unlabeled_images"`` (as ``convert`` and ``split`` write it).
    teacher : Teacher
        Its ``dataset.json`` gives the expected channels and file ending.
    ground_truth : path, optional
        Folder of ``CASE<ending>`` label files, for evaluation only. For a raw dataset its declared
        ``"unlabeled_ground_truth"`` is used when this is not given.

    Raises
    ------
    MedakaError
        If the folder is missing or empty, a file has another ending than the teacher's dataset, a case has other
        channels than the teacher's, or the dataset's channel names differ from the teacher's.
    """
    source = Path(source).expanduser()
    if not source.is_dir():
        raise MedakaError(f"unlabeled images {str(source)!r}: no such folder")
    ending = teacher.dataset_json["file_ending"]
    channels = teacher.dataset_json["channel_names"]
    folder = source
    if (source / "dataset.json").is_file():
        ds = read_json(source / "dataset.json", what="the dataset's description")
        if not ds.get("unlabeled_images"):
            raise MedakaError(f"{source / 'dataset.json'}: declares no \"unlabeled_images\"; give the images folder "
                              f"itself (e.g. {source / 'imagesTs'}) or convert with `nnunet-medaka convert`/`split`")
        folder = source / ds["unlabeled_images"]
        if ds.get("file_ending") != ending:
            raise MedakaError(f"{source / 'dataset.json'}: file_ending {ds.get('file_ending')!r}, the teacher's dataset "
                              f"uses {ending!r}; convert the images to {ending}")
        if {str(k): v for k, v in ds.get("channel_names", {}).items()} != {str(k): v for k, v in channels.items()}:
            raise MedakaError(f"{source / 'dataset.json'}: channel_names {json.dumps(ds.get('channel_names'))}, the "
                              f"teacher was trained on {json.dumps(channels)}; the images must have the teacher's "
                              "channels in the same order")
        if ground_truth is None and ds.get("unlabeled_ground_truth") and (source / ds["unlabeled_ground_truth"]).is_dir():
            ground_truth = source / ds["unlabeled_ground_truth"]
        if not folder.is_dir():
            raise MedakaError(f"{folder}: declared as unlabeled_images in {source / 'dataset.json'} but missing")
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    found: dict = {}
    foreign = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith("."):
            continue
        m = pattern.match(f.name)
        if m and f.is_file():
            found.setdefault(m.group(1), {})[int(m.group(2))] = f
        else:
            foreign.append(f.name)
    if foreign:
        raise MedakaError(f"{folder}: {len(foreign)} file(s) not named CASE_XXXX{ending} like the teacher's dataset "
                          f"(file_ending {ending!r}), e.g. {foreign[:3]}; convert them to {ending} "
                          f"(`nnunet-medaka convert`) or move them out of the folder")
    if not found:
        raise MedakaError(f"{folder}: no images named CASE_0000{ending}; nothing to pseudo-label")
    n = len(channels)
    wrong = {case: sorted(ch) for case, ch in found.items() if sorted(ch) != list(range(n))}
    if wrong:
        example = ", ".join(f"{c} has channels {ch}" for c, ch in list(wrong.items())[:3])
        raise MedakaError(f"{folder}: the teacher takes {n} channel(s) {json.dumps(channels)} "
                          f"(files CASE_0000..CASE_{n - 1:04d}{ending}), but {example}")
    cases = {case: [found[case][c] for c in range(n)] for case in sorted(found)}
    if ground_truth is not None:
        ground_truth = Path(ground_truth).expanduser()
        if not ground_truth.is_dir():
            raise MedakaError(f"ground truth {str(ground_truth)!r}: no such folder (--ground-truth)")
    return UnlabeledImages(folder, cases, ground_truth)


def teacher_raw_dataset(teacher: Teacher, raw: Optional[os.PathLike | str] = None, *, required: bool) -> Optional[Path]:
    """The teacher's raw dataset folder: ``raw`` if given, else ``$nnUNet_raw/<dataset_name>``."""
    if raw is not None:
        path = Path(raw).expanduser()
    else:
        root = os.environ.get("nnUNet_raw")
        path = Path(root) / teacher.dataset_name if root else None
    if path is not None and (path / "dataset.json").is_file():
        return path
    if required:
        where = str(path) if path is not None else "$nnUNet_raw (not set)"
        raise MedakaError(f"teacher's raw dataset {teacher.dataset_name}: not found at {where}; set nnUNet_raw or give "
                          "--teacher-raw DatasetXXX folder")
    return None


def labeled_case_ids(teacher: Teacher, raw: Optional[Path]) -> Optional[set]:
    """Case ids the teacher was trained on: from its raw dataset, else its preprocessed ``splits_final.json``;
    None when neither is available."""
    if raw is not None:
        from nnunet_medaka.conversion.raw_dataset import list_cases

        return set(list_cases(raw, read_json(raw / "dataset.json", what="the teacher's raw dataset description")))
    root = os.environ.get("nnUNet_preprocessed")
    splits = Path(root) / teacher.dataset_name / "splits_final.json" if root else None
    if splits is not None and splits.is_file():
        data = json.loads(splits.read_text())
        return {c for s in data for c in [*s["train"], *s["val"]]}
    return None
