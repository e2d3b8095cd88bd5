"""Per-dataset plugin settings: one JSON file, validated once, read by the trainers.

The file lives beside nnU-Net's plans, ``nnUNet_preprocessed/DatasetXXX_Name/nnunet_medaka.json``.
The environment variable ``nnunet_medaka_config`` points at another file instead (for one run, say).
Trainers cannot take constructor arguments (nnU-Net passes exactly ``plans, configuration, fold,
dataset_json, device``), so this file is how every setting reaches them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import read_json, write_json_atomic

CONFIG_FILE_NAME = "nnunet_medaka.json"
CONFIG_ENV_VAR = "nnunet_medaka_config"
RESOLVED_FILE_NAME = "nnunet_medaka_resolved_config.json"

__all__ = [
    "CONFIG_ENV_VAR",
    "CONFIG_FILE_NAME",
    "MedakaConfig",
    "check_value",
    "config_path",
    "load_config",
    "parse_assignment",
    "parse_set",
    "update_config_file",
    "validate_config",
]


@dataclass(frozen=True)
class MedakaConfig:
    """Resolved plugin settings for one dataset; defaults equal stock nnU-Net's."""

    # schedule (SupervisedTrainer and KDTrainer)
    num_epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    mirroring: bool = True  # test-time mirroring in the final validation
    final_validation: bool = True  # run nnU-Net's final validation (predict the fold's validation cases) after training
    seed: Optional[int] = None  # seeds Python, numpy and torch in the trainer and nnU-Net's data loading; None: unseeded
    initial_lr: float = 1e-2  # nnU-Net's SGD initial learning rate (poly schedule)
    cpu_threads: Optional[int] = None  # torch threads when training on CPU; None: nnU-Net's choice (every core)
    # share of training samples drawn from the labeled cases of a student dataset (one listing its pseudo-labeled
    # cases); None: nnU-Net's uniform draw over cases, so the share is the labeled cases' share of the cases
    labeled_share: Optional[float] = None
    # training-time augmentation: "nnunet" (nnUNetTrainer's pipeline) or "da5" (nnU-Net's own heavier one,
    # nnUNetTrainerDA5: more rotation and scaling, and noise, blur, sharpening, local gamma, blank rectangles ...),
    # the noisy-student recipe's "stronger augmentation for the student"
    augmentation: str = "nnunet"
    # the last epochs of a student's training draw only its labeled cases: a final fine-tune on the labeled cases at
    # the poly schedule's lowest learning rates (AbdomenCT-1K's self-training baseline); 0: none
    finetune_epochs: int = 0
    # knowledge distillation (KDTrainer)
    teacher: Optional[str] = None
    teacher_folds: tuple = (0,)
    teacher_checkpoint: str = "checkpoint_final.pth"
    kd_temperature: float = 2.0
    # 0.3: measured better than 1 in the method's setting, on the test split and confirmed on a validation split
    # (docs/results/ablation-hippocampus.md)
    kd_weight: float = 0.3
    kd_scope: str = "all"
    kd_scales: str = "all"
    kd_warmup: int = 0  # epochs over which the KD weight ramps linearly from 0 to kd_weight; 0: full weight at once

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["teacher_folds"] = list(self.teacher_folds)
        return d


def _positive_int(v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, int):
        return "an integer"
    return None if v >= 1 else "an integer >= 1"


def _boolean(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else "true or false"


def _number(low: float, inclusive: bool) -> Callable[[Any], Optional[str]]:
    want = f"a number {'>=' if inclusive else '>'} {low:g}"

    def check(v: Any) -> Optional[str]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return want + " (finite)"
        return None if (v >= low if inclusive else v > low) else want

    return check


def _optional_path(v: Any) -> Optional[str]:
    return None if v is None or (isinstance(v, str) and v.strip()) else "a folder path (string) or null"


def _non_empty_string(v: Any) -> Optional[str]:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def _as_fold_list(v: Any) -> Any:
    # A single fold given as a scalar (`--set teacher_folds=0`, `teacher_folds=all`) means a one-element list.
    if v == "all" or (isinstance(v, int) and not isinstance(v, bool)):
        return [v]
    return v


def _fold_list(v: Any) -> Optional[str]:
    # nnU-Net folds are numbers, or "all" for a model trained on every case (`nnUNetv2_train D C all`)
    want = 'a fold (a number >= 0 or "all") or a non-empty list of distinct folds, e.g. 0, [0, 1, 2, 3, 4] or "all"'
    v = _as_fold_list(v)
    if not isinstance(v, (list, tuple)) or not v:
        return want
    valid = [f == "all" or (isinstance(f, int) and not isinstance(f, bool) and f >= 0) for f in v]
    return None if all(valid) and len(set(v)) == len(v) else want


def _optional_seed(v: Any) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**31:
        return "null or an integer from 0 to 2**31 - 1"
    return None


def _optional_positive_int(v: Any) -> Optional[str]:
    return None if v is None else (None if _positive_int(v) is None else "null or an integer >= 1")


def _learning_rate(v: Any) -> Optional[str]:
    want = "a number > 0 and <= 1 (nnU-Net's default is 0.01)"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return want
    return None if 0 < v <= 1 else want


def _optional_share(v: Any) -> Optional[str]:
    want = "null or a number > 0 and < 1"
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return want
    return None if 0 < v < 1 else want


def _non_negative_int(v: Any) -> Optional[str]:
    if isinstance(v, bool) or not isinstance(v, int):
        return "an integer"
    return None if v >= 0 else "an integer >= 0"


def _one_of(*choices: str) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


_CHECKS: dict[str, Callable[[Any], Optional[str]]] = {
    "num_epochs": _positive_int,
    "iterations_per_epoch": _positive_int,
    "val_iterations_per_epoch": _positive_int,
    "mirroring": _boolean,
    "final_validation": _boolean,
    "seed": _optional_seed,
    "initial_lr": _learning_rate,
    "cpu_threads": _optional_positive_int,
    "labeled_share": _optional_share,
    "augmentation": _one_of("nnunet", "da5"),
    "finetune_epochs": _non_negative_int,
    "teacher": _optional_path,
    "teacher_folds": _fold_list,
    "teacher_checkpoint": _non_empty_string,
    "kd_temperature": _number(0, inclusive=False),
    "kd_weight": _number(0, inclusive=True),
    "kd_scope": _one_of("all", "pseudo"),
    "kd_scales": _one_of("all", "full"),
    "kd_warmup": _non_negative_int,
}
assert set(_CHECKS) == {f.name for f in dataclasses.fields(MedakaConfig)}


def check_value(key: str, value: Any) -> Optional[str]:
    """What a config key's value should be when ``value`` is not that (e.g. ``"an integer >= 1"``), else None.

    The one set of rules for these keys, also applied by ``run``, ``experiment`` and ``demo`` to their settings."""
    return _CHECKS[key](value)


def validate_config(values: Mapping[str, Any], *, source: str = "config") -> MedakaConfig:
    """Check raw settings and fill in defaults.

    Parameters
    ----------
    values : mapping
        Key/value pairs as read from JSON. Missing keys take their defaults.
    source : str
        Where the values came from, for error messages (usually the file path).

    Returns
    -------
    MedakaConfig
        The resolved settings.

    Raises
    ------
    MedakaError
        Listing every unknown key and every value of the wrong type or range at once.
    """
    if not isinstance(values, Mapping):
        raise MedakaError(f"{source}: expected a JSON object of settings, got {type(values).__name__}")
    problems = []
    for key, value in values.items():
        if key not in _CHECKS:
            problems.append(f"unknown key {key!r} (known keys: {', '.join(sorted(_CHECKS))})")
            continue
        want = _CHECKS[key](value)
        if want is not None:
            problems.append(f"key {key!r} is {json.dumps(value)}, expected {want}")
    if problems:
        raise MedakaError(f"{source}: " + "; ".join(problems) + ". Fix the file or use `nnunet-medaka config --set KEY=VALUE`.")
    resolved = dict(values)
    if "teacher_folds" in resolved:
        resolved["teacher_folds"] = tuple(_as_fold_list(resolved["teacher_folds"]))
    for key in ("kd_temperature", "kd_weight", "initial_lr"):
        if key in resolved:
            resolved[key] = float(resolved[key])
    return MedakaConfig(**resolved)


def config_path(preprocessed_dataset_folder: os.PathLike | str) -> Path:
    """Config file for a dataset: ``$nnunet_medaka_config`` if set, else the file beside the plans."""
    override = os.environ.get(CONFIG_ENV_VAR)
    if override:
        return Path(override).expanduser().resolve()
    return Path(preprocessed_dataset_folder) / CONFIG_FILE_NAME


def load_config(preprocessed_dataset_folder: os.PathLike | str) -> tuple[MedakaConfig, Optional[Path]]:
    """Read and validate the dataset's config.

    Parameters
    ----------
    preprocessed_dataset_folder : path
        ``nnUNet_preprocessed/DatasetXXX_Name``.

    Returns
    -------
    config : MedakaConfig
        Resolved settings (all defaults when no file exists).
    path : pathlib.Path or None
        The file that was read, or None when there was none.

    Raises
    ------
    MedakaError
        If the file named by ``nnunet_medaka_config`` is missing, or the file is invalid.
    """
    path = config_path(preprocessed_dataset_folder)
    if not path.is_file():
        if os.environ.get(CONFIG_ENV_VAR):
            raise MedakaError(f"{CONFIG_ENV_VAR}={os.environ[CONFIG_ENV_VAR]}: no such file; unset the variable or create the file")
        return MedakaConfig(), None
    return validate_config(read_json(path, what="settings", fix="fix the file or delete it to start from defaults"), source=str(path)), path


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` from the command line; VALUE is JSON if it parses, else a plain string.

    Examples
    --------
    >>> parse_assignment("num_epochs=5")
    ('num_epochs', 5)
    >>> parse_assignment("teacher=/data/results/Dataset001/model")
    ('teacher', '/data/results/Dataset001/model')
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise MedakaError(f"--set {text!r}: expected KEY=VALUE, e.g. --set num_epochs=50")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def parse_set(text: str) -> tuple[str, Any]:
    """`parse_assignment` as an argparse ``type`` (``--set KEY=VALUE`` of ``run``, ``experiment``, ``demo``)."""
    try:
        return parse_assignment(text)
    except MedakaError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def update_config_file(path: os.PathLike | str, assignments: Iterable[tuple[str, Any]]) -> MedakaConfig:
    """Apply assignments to a config file (created if missing), validating before anything is written.

    ``KEY=null`` removes a key so that it falls back to its default.
    """
    path = Path(path)
    if path.is_dir():
        raise MedakaError(f"{path}: is a folder, expected the settings file (JSON); point {CONFIG_ENV_VAR} at a file "
                          "or unset it")
    data = read_json(path, what="settings", fix="fix the file or delete it to start from defaults") if path.is_file() else {}
    for key, value in assignments:
        if value is None and key != "teacher":
            data.pop(key, None)
        else:
            data[key] = value
    resolved = validate_config(data, source=str(path))
    if not path.parent.is_dir():
        raise MedakaError(f"{path.parent}: folder does not exist; run nnUNetv2_plan_and_preprocess for this dataset first")
    write_json_atomic(path, data)
    return resolved


# ``nnunet-medaka config``: create, edit, validate and show a dataset's config file.

def _run_config(args: argparse.Namespace) -> int:
    from nnunet_medaka.environment import preprocessed_dataset_folder

    folder = preprocessed_dataset_folder(args.dataset)
    path = config_path(folder)
    if os.environ.get(CONFIG_ENV_VAR):
        print(f"note: {CONFIG_ENV_VAR} is set, so this edits {path}")
    if args.set:
        assignments = [parse_assignment(a) for a in args.set]
        for key, value in assignments:
            if key == "teacher" and isinstance(value, str) and not Path(value).expanduser().is_dir():
                raise MedakaError(f"--set teacher={value}: no such folder; give a trained model folder "
                                  "(nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration)")
        config = update_config_file(path, assignments)
        print(f"wrote {path}")
    else:
        config, found = load_config(folder)
        if found is None:
            print(f"{path} does not exist yet: all defaults apply (create it with --set KEY=VALUE)")
        else:
            print(f"{path} is valid")
    if args.show or not args.set:
        print(json.dumps(config.to_dict(), indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config",
        help="create, edit, validate or show a dataset's nnunet_medaka.json (read by the plugin trainers)",
        description=f"The file lives in nnUNet_preprocessed/DatasetXXX_Name/nnunet_medaka.json "
        f"(or where ${CONFIG_ENV_VAR} points). Without --set it validates and shows the resolved settings.",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set a key (JSON value, e.g. num_epochs=50, teacher_folds=[0,1], mirroring=false; KEY=null resets); repeatable")
    p.add_argument("--show", action="store_true", help="print the resolved settings after --set")
    p.set_defaults(func=_run_config)
