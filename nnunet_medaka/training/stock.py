"""nnU-Net's stock commands as the plugin runs them: command lines, environments, and "is this fold finished?".

Every stage that plans, trains, predicts or evaluates with nnU-Net builds its arguments here, so ``run``,
``experiment`` and their ``--dry-run`` listings print the same commands they execute.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from nnunet_medaka.errors import MedakaError

__all__ = ["Model", "cmd", "evaluate_args", "fold_finished", "plan_args", "plans_name", "predict_args", "stock_environ",
           "threads_per_training", "train_args", "train_environ", "write_cv_splits"]

TEACHER_TRAINER, STUDENT_TRAINER = "SupervisedTrainer", "KDTrainer"


@dataclass(frozen=True)
class Model:
    """A trained (or to be trained) nnU-Net model: dataset id, trainer, plans, configuration and result folder."""

    dataset_id: int
    trainer: str
    plans: str
    configuration: str
    results: Path  # $nnUNet_results/DatasetXXX_Name

    @property
    def folder(self) -> Path:
        return self.results / f"{self.trainer}__{self.plans}__{self.configuration}"


def cmd(script: str, args: Sequence) -> str:
    """A command line as a shell would take it."""
    return shlex.join([script, *[str(a) for a in args]])


def stock_environ(*, device: str, root: Optional[Path] = None) -> dict:
    """Environment of the stock commands: plugin visible, nnU-Net's CPU/compile knobs, no inherited dataset config;
    the nnU-Net folders below ``root`` (created), or as the current environment has them."""
    from nnunet_medaka.environment import plugin_environ

    env = plugin_environ(root=root)
    env.setdefault("nnUNet_compile", "f" if device == "cpu" else "t")  # compiling only pays on long GPU runs
    env.setdefault("nnUNet_def_n_proc", str(min(4, os.cpu_count() or 1)))
    env.pop("nnunet_medaka_config", None)
    return env


def train_environ(env: dict, device: str, threads: Optional[int] = None) -> dict:
    """``env`` for ``nnUNetv2_train``: data augmentation in the main process on a CPU, and the BLAS/OpenMP pools of
    a training that shares the CPU with others."""
    train_env = dict(env)
    train_env.setdefault("nnUNet_n_proc_DA", "0" if device == "cpu" else str(min(8, os.cpu_count() or 1)))
    if threads is not None:
        train_env["OMP_NUM_THREADS"] = str(threads)
    return train_env


def threads_per_training(cpu_threads: Optional[int], device: str, workers: int) -> Optional[int]:
    """Torch threads of each of ``workers`` simultaneous CPU trainings: ``cpu_threads`` when set, else the cores
    shared out; None (nnU-Net's choice) for a single training or on a GPU."""
    if device != "cpu" or workers == 1 or cpu_threads is not None:
        return cpu_threads
    return max(1, (os.cpu_count() or 1) // workers)


def plans_name(settings: dict) -> str:
    """The plans a preset trains with: its small network variant, else nnU-Net's own."""
    return settings["small_plans"]["target_plans"] if settings["small_plans"] else "nnUNetPlans"


def plan_args(dataset_id: int, configuration: str) -> list:
    return ["-d", dataset_id, "-c", configuration, "-np", 2, "-npfp", 2, "--verify_dataset_integrity"]


def train_args(model: Model, fold, device: str, extra: Sequence = (), fresh: Sequence = ()) -> list:
    """``nnUNetv2_train`` arguments for one fold; ``--c`` when a checkpoint of an interrupted run exists, else the
    ``fresh`` arguments (nnU-Net refuses ``-pretrained_weights`` together with ``--c``)."""
    args = [model.dataset_id, model.configuration, fold, "-tr", model.trainer, "-p", model.plans, "-device", device,
            *extra]
    fold_dir = model.folder / f"fold_{fold}"
    if any((fold_dir / c).is_file() for c in ("checkpoint_latest.pth", "checkpoint_final.pth")):
        return [*args, "--c"]
    return [*args, *fresh]


def fold_finished(model: Model, fold, *, npz: bool, validation: bool) -> bool:
    """A fold's training is complete: final checkpoint, and nnU-Net's final validation (with its ``--npz``
    probabilities) unless the config key ``final_validation`` turned it off."""
    fold_dir = model.folder / f"fold_{fold}"
    if not (fold_dir / "checkpoint_final.pth").is_file():
        return False
    if not validation:
        return True
    return (fold_dir / "validation" / "summary.json").is_file() and (
        not npz or any((fold_dir / "validation").glob("*.npz")))


def predict_args(model: Model, images: Path, target: Path, folds: Sequence, device: str, mirroring: bool) -> list:
    return ["-i", images, "-o", target, "-d", model.dataset_id, "-c", model.configuration, "-tr", model.trainer,
            "-p", model.plans, "-f", *folds, "-device", device, "-npp", 0, "-nps", 0,
            *([] if mirroring else ["--disable_tta"])]


def evaluate_args(labels: Path, predictions: Path, model_folder: Path | str) -> list:
    return [labels, predictions, "-djfile", f"{model_folder}/dataset.json", "-pfile", f"{model_folder}/plans.json"]


def write_cv_splits(preprocessed: Path, labeled: Sequence[str], folds: int, seed: int) -> None:
    """``splits_final.json`` with ``folds`` folds over the labeled cases (seeded), as nnU-Net would write it."""
    from sklearn.model_selection import KFold

    from nnunet_medaka.files import write_json_atomic

    cases = sorted(labeled)
    if len(cases) < folds:
        raise MedakaError(f"{len(cases)} labeled cases cannot make {folds} cross-validation folds; lower cv_folds")
    splits = [{"train": [cases[i] for i in tr], "val": [cases[i] for i in va]}
              for tr, va in KFold(folds, shuffle=True, random_state=seed).split(cases)]
    existing = preprocessed / "splits_final.json"
    if not existing.is_file() or json.loads(existing.read_text()) != splits:
        write_json_atomic(existing, splits)
