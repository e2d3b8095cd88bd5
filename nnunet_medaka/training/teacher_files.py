"""The KD teacher's files and its compatibility with a student, checked before any weights are loaded.

A teacher is any ``nnUNet_results/DatasetXXX/Trainer__Plans__configuration`` folder, one fold or several folds
(averaged as an ensemble). Compatibility is checked on the plans and dataset.json: same labels, same input
channels, identical preprocessing (so the teacher sees exactly the arrays it was trained on) and a student patch
size the teacher network can process. Every problem is reported at once in one `MedakaError` that names the
field, both values and the fix. Plain functions over JSON files: no torch here.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import read_json

__all__ = [
    "TeacherFiles",
    "check_input_channels",
    "check_labels",
    "check_patch_size",
    "check_preprocessing",
    "locate_teacher",
    "sha256_file",
    "verify_compatibility",
]


MOVE_PLANS_FIX = ("derive the student's plans from the teacher's, e.g. `nnUNetv2_move_plans_between_datasets -s TEACHER_ID "
                  "-t STUDENT_ID -sp TEACHER_PLANS -tp STUDENT_PLANS`, then `nnUNetv2_preprocess` the student with them")


# Normalization schemes that do not read the plans' foreground intensity properties; for any other scheme
# (CTNormalization, custom ones) the properties are part of the preprocessing and must match.
_SCHEMES_WITHOUT_INTENSITY_PROPERTIES = frozenset(
    {"ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization", "RGBTo01Normalization"})


@dataclass(frozen=True)
class TeacherFiles:
    """What was found in a teacher model folder."""

    folder: Path
    plans: dict
    dataset_json: dict
    checkpoints: dict  # fold -> checkpoint path


def locate_teacher(folder, folds: Sequence[int], checkpoint_name: str) -> TeacherFiles:
    """Find a teacher's plans, dataset.json and one checkpoint per requested fold.

    Parameters
    ----------
    folder : path
        The model folder, ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``.
    folds : sequence of int
        Folds to use (their checkpoints are averaged as an ensemble).
    checkpoint_name : str
        File name inside each ``fold_X`` folder, e.g. ``checkpoint_final.pth``.

    Returns
    -------
    TeacherFiles

    Raises
    ------
    MedakaError
        Naming every missing folder or file, what exists instead, and the config key to change.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MedakaError(f"config key 'teacher' is {str(folder)!r}: no such folder. Set it to a trained nnU-Net model "
                          "folder (nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration) with "
                          "`nnunet-medaka config -d DATASET --set teacher=PATH`")
    folder = folder.resolve()
    problems = []
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            problems.append(f"{folder / name} is missing (the folder does not look like a trained nnU-Net model folder)")
    available = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
    checkpoints = {}
    for fold in folds:
        path = folder / f"fold_{fold}" / checkpoint_name
        if not path.parent.is_dir():
            problems.append(f"teacher_folds includes {fold}, but {path.parent} does not exist "
                            f"(available: {', '.join(available) or 'none'}); train that fold or change teacher_folds")
        elif not path.is_file():
            present = sorted(p.name for p in path.parent.glob("*.pth"))
            problems.append(f"teacher_checkpoint is {checkpoint_name!r}, but {path} does not exist (fold_{fold} has: "
                            f"{', '.join(present) or 'no checkpoints'}); finish that training or change teacher_checkpoint")
        else:
            checkpoints[fold] = path
    if problems:
        raise MedakaError("teacher: " + "; ".join(problems))
    plans = read_json(folder / "plans.json", what="the teacher's plans, written by nnUNetv2_train")
    dataset_json = read_json(folder / "dataset.json", what="the teacher's dataset.json, written by nnUNetv2_train")
    return TeacherFiles(folder, plans, dataset_json, checkpoints)


def _labels_without_ignore(dataset_json: dict) -> dict:
    return {k: v for k, v in dataset_json.get("labels", {}).items() if k != "ignore"}


def check_labels(teacher_dataset_json: dict, student_dataset_json: dict) -> list:
    """Problems if the teacher predicts other classes than the student's (an ``ignore`` label may differ).

    Returns
    -------
    list of str
        Empty when compatible.
    """
    t, s = _labels_without_ignore(teacher_dataset_json), _labels_without_ignore(student_dataset_json)
    problems = []
    if t != s:
        problems.append(f"dataset.json 'labels' differ: teacher {json.dumps(t)}, student {json.dumps(s)}; the teacher "
                        "must predict exactly the student's classes (same names and values). Relabel the student "
                        "dataset or pick a teacher trained on these labels")
    t_order, s_order = teacher_dataset_json.get("regions_class_order"), student_dataset_json.get("regions_class_order")
    if t_order != s_order:
        problems.append(f"dataset.json 'regions_class_order' differs: teacher {t_order}, student {s_order}")
    return problems


def check_input_channels(teacher_plans: dict, teacher_configuration: str, teacher_dataset_json: dict,
                         student_plans: dict, student_configuration: str, student_dataset_json: dict) -> list:
    """Problems if the teacher network takes a different number of input channels than the student gets."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    t_pm, s_pm = PlansManager(teacher_plans), PlansManager(student_plans)
    t = determine_num_input_channels(t_pm, t_pm.get_configuration(teacher_configuration), teacher_dataset_json)
    s = determine_num_input_channels(s_pm, s_pm.get_configuration(student_configuration), student_dataset_json)
    if t != s:
        return [f"input channels differ: teacher configuration {teacher_configuration!r} takes {t} "
                f"(channel_names {json.dumps(teacher_dataset_json.get('channel_names'))}), the student gets {s} "
                f"(channel_names {json.dumps(student_dataset_json.get('channel_names'))}); use a teacher trained on the "
                "same image channels (cascade stages also take the previous stage's segmentation)"]
    return []


def _close(a, b, rel: float = 1e-6) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    return a == b


def check_preprocessing(teacher_plans: dict, teacher_configuration: str,
                        student_plans: dict, student_configuration: str) -> list:
    """Problems if the student's arrays are preprocessed differently from the teacher's training data.

    Compared: ``transpose_forward``, ``image_reader_writer``, and per configuration ``spacing``,
    ``normalization_schemes``, ``use_mask_for_norm``, ``resampling_fn_data`` (+ kwargs), ``preprocessor_name``,
    and the foreground intensity properties of every channel whose normalization reads them (e.g. CT).
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    t_cfg = PlansManager(teacher_plans).get_configuration(teacher_configuration).configuration
    s_cfg = PlansManager(student_plans).get_configuration(student_configuration).configuration
    fields = [(f"plans '{k}'", teacher_plans.get(k), student_plans.get(k)) for k in ("transpose_forward", "image_reader_writer")]
    fields += [(f"configuration '{k}'", t_cfg.get(k), s_cfg.get(k)) for k in (
        "spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data", "resampling_fn_data_kwargs",
        "preprocessor_name")]
    schemes = t_cfg.get("normalization_schemes") or []
    t_int = teacher_plans.get("foreground_intensity_properties_per_channel", {})
    s_int = student_plans.get("foreground_intensity_properties_per_channel", {})
    for channel, scheme in enumerate(schemes):
        if scheme not in _SCHEMES_WITHOUT_INTENSITY_PROPERTIES:
            key = str(channel)
            fields.append((f"plans 'foreground_intensity_properties_per_channel'[{key}] (used by {scheme})",
                           t_int.get(key), s_int.get(key)))
    differing = [f"{name}: teacher {json.dumps(t)}, student {json.dumps(s)}" for name, t, s in fields if not _close(t, s)]
    if not differing:
        return []
    return [f"preprocessing differs between the teacher ({teacher_plans.get('plans_name')}/{teacher_configuration}) and the "
            f"student ({student_plans.get('plans_name')}/{student_configuration}): " + "; ".join(differing)
            + f". The teacher would see differently preprocessed data. Fix: {MOVE_PLANS_FIX}"]


def check_patch_size(patch_size: Sequence[int], teacher_plans: dict, teacher_configuration: str) -> list:
    """Problems if the teacher network cannot process the student's patches (axes count, total stride)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(teacher_plans).get_configuration(teacher_configuration)
    strides = cm.pool_op_kernel_sizes
    patch = [int(p) for p in patch_size]
    if len(strides[0]) != len(patch):
        return [f"patch_size {patch} has {len(patch)} axes, the teacher network ({teacher_configuration!r}) is "
                f"{len(strides[0])}D; use a teacher of the same dimensionality"]
    total = [math.prod(int(s[axis]) for s in strides) for axis in range(len(patch))]
    if any(p % t for p, t in zip(patch, total)):
        suggestion = [max(t, round(p / t) * t) for p, t in zip(patch, total)]
        return [f"student configuration 'patch_size' {patch} is not a multiple of the teacher network's total stride "
                f"{total} per axis (teacher 'strides' {[list(s) for s in strides]}); set the student's patch_size to "
                f"multiples of it (e.g. {suggestion}) or use the teacher's plans for the student"]
    return []


def verify_compatibility(teacher: TeacherFiles, teacher_configuration: str, *, student_plans: dict,
                         student_configuration: str, student_dataset_json: dict) -> None:
    """Run every compatibility check and raise one error listing all problems.

    Raises
    ------
    MedakaError
        If labels, input channels, preprocessing or patch size do not fit.
    """
    if teacher_configuration not in teacher.plans.get("configurations", {}):
        raise MedakaError(f"teacher {teacher.folder}: its checkpoints were trained with configuration "
                          f"{teacher_configuration!r}, which {teacher.folder / 'plans.json'} does not define")
    s_patch = student_plans["configurations"][student_configuration].get("patch_size")
    if s_patch is None:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        s_patch = PlansManager(student_plans).get_configuration(student_configuration).patch_size
    problems = (check_labels(teacher.dataset_json, student_dataset_json)
                + check_input_channels(teacher.plans, teacher_configuration, teacher.dataset_json,
                                       student_plans, student_configuration, student_dataset_json)
                + check_preprocessing(teacher.plans, teacher_configuration, student_plans, student_configuration)
                + check_patch_size(s_patch, teacher.plans, teacher_configuration))
    if problems:
        raise MedakaError(f"teacher {teacher.folder} is incompatible with the student: " + " | ".join(problems))


def sha256_file(path, chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
