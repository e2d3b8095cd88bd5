"""Teacher vs KD student on one experiment dataset, through the stock nnU-Net commands.

Given a raw dataset made by ``split`` (labeled ``imagesTr``, held-out ``imagesTs``/``labelsTs``), this plans
and preprocesses it, trains a teacher (``-tr SupervisedTrainer``) and a KD student (``-tr KDTrainer``
against that teacher) with one schedule, predicts the test set with each and evaluates both with
``nnUNetv2_evaluate_folder``. Each nnU-Net call runs in a subprocess with its own log file, so what is
measured is exactly what a user running those commands gets. `experiment_environ` is also the environment of
``run``'s and ``experiment``'s stock commands. The ``nnunet-medaka experiment`` command (the paper's ablation over
fractions and seeds) is `nnunet_medaka.pipeline.experiment_command`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from nnunet_medaka.config import MedakaConfig
from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)

__all__ = ["Schedule", "experiment_environ", "run_teacher_student"]

CONFIGURATION = "3d_fullres"


@dataclass(frozen=True)
class Schedule:
    """Training schedule shared by teacher and student, plus the network variant."""

    epochs: int
    iterations: int
    val_iterations: int = 2
    small_plans: Optional[dict] = None  # keyword arguments of write_small_plans; None keeps nnU-Net's plans
    fold: str = "all"  # "all": train on every labeled case (few of them); the test set is held out anyway
    kd_weight: float = MedakaConfig.kd_weight
    kd_temperature: float = MedakaConfig.kd_temperature


def experiment_environ(work_dir: Optional[Path], *, device: str) -> dict:
    """Environment for the stock commands: plugin visible, nnU-Net's CPU/compile knobs, each dataset's own config
    file; the nnU-Net folders below ``work_dir`` (created), or as the current environment has them (None)."""
    from nnunet_medaka.environment import plugin_environ

    env = plugin_environ(root=work_dir)
    env.setdefault("nnUNet_compile", "f" if device == "cpu" else "t")  # compiling only pays on long GPU runs
    env.setdefault("nnUNet_def_n_proc", str(min(4, os.cpu_count() or 1)))
    env.pop("nnunet_medaka_config", None)
    return env


def run_teacher_student(
    experiment: os.PathLike | str,
    *,
    dataset_id: int,
    work_dir: os.PathLike | str,
    env: dict,
    schedule: Schedule,
    device: str = "cpu",
    step: Callable[[str], None] = log.info,
) -> dict:
    """Plan, train teacher and KD student, predict and evaluate the held-out test set.

    Parameters
    ----------
    experiment : path
        Raw dataset folder (``$nnUNet_raw/DatasetXXX_Name``) with ``imagesTr``, ``imagesTs`` and ``labelsTs``.
    dataset_id : int
        Its number.
    work_dir : path
        Receives ``logs/`` and ``predictions/{teacher,student}/``.
    env : dict
        Environment from :func:`experiment_environ`.
    schedule : Schedule
        Shared schedule and network variant.
    device : {"cpu", "cuda"}
    step : callable
        Receives a line before each stage (progress).

    Returns
    -------
    dict
        ``scores`` (per role: per organ Dice/IoU and mean), ``timings_s``, ``models`` (model folders),
        ``predictions``.
    """
    from nnunet_medaka.config import update_config_file
    from nnunet_medaka.environment import planning_environ
    from nnunet_medaka.training.evaluation import per_label_scores
    from nnunet_medaka.environment import run_stock_command
    from nnunet_medaka.training.plans import write_small_plans

    experiment, work_dir = Path(experiment), Path(work_dir)
    for sub in ("imagesTr", "imagesTs", "labelsTs"):
        if not (experiment / sub).is_dir():
            raise MedakaError(f"{experiment / sub}: missing; make the experiment dataset with `nnunet-medaka split ... --test N`")
    labels = json.loads((experiment / "dataset.json").read_text())["labels"]
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    timings: dict = {}

    def timed(name: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        log.info("      done in %.0f s", timings[name])

    step(f"planning and preprocessing {experiment.name} (nnUNetv2_plan_and_preprocess)")
    timed("plan_and_preprocess", lambda: run_stock_command(
        "nnUNetv2_plan_and_preprocess",
        ["-d", dataset_id, "-c", CONFIGURATION, "-np", 2, "-npfp", 2, "--verify_dataset_integrity"],
        env=planning_environ(env), log_file=logs / "plan_and_preprocess.log"))
    preprocessed = Path(env["nnUNet_preprocessed"]) / experiment.name
    plans = "nnUNetPlans"
    if schedule.small_plans is not None:
        plans = write_small_plans(preprocessed, **schedule.small_plans).stem
    results = Path(env["nnUNet_results"]) / experiment.name
    models = {"teacher": results / f"SupervisedTrainer__{plans}__{CONFIGURATION}",
              "student": results / f"KDTrainer__{plans}__{CONFIGURATION}"}
    update_config_file(preprocessed / "nnunet_medaka.json", [
        ("num_epochs", schedule.epochs), ("iterations_per_epoch", schedule.iterations),
        ("val_iterations_per_epoch", schedule.val_iterations), ("mirroring", False),
        ("teacher", str(models["teacher"])), ("teacher_folds", [schedule.fold]),
        ("kd_weight", schedule.kd_weight), ("kd_temperature", schedule.kd_temperature),
    ])

    train_env = dict(env)
    train_env.setdefault("nnUNet_n_proc_DA", "0" if device == "cpu" else "8")
    n_test = len(list((experiment / "imagesTs").iterdir()))
    scores, predictions = {}, {}
    for role, trainer in (("teacher", "SupervisedTrainer"), ("student", "KDTrainer")):
        step(f"training the {role}: nnUNetv2_train {dataset_id} {CONFIGURATION} {schedule.fold} -tr {trainer} -p {plans} "
             f"({schedule.epochs} epochs x {schedule.iterations} iterations, {device})")
        timed(f"train_{role}", lambda: run_stock_command(
            "nnUNetv2_train", [dataset_id, CONFIGURATION, schedule.fold, "-tr", trainer, "-p", plans, "-device", device],
            env=train_env, log_file=logs / f"train_{role}.log"))
        step(f"predicting the {n_test} test cases with the {role} and evaluating (nnUNetv2_predict, nnUNetv2_evaluate_folder)")
        pred = work_dir / "predictions" / role

        def predict_and_evaluate() -> None:
            run_stock_command("nnUNetv2_predict", [
                "-i", experiment / "imagesTs", "-o", pred, "-d", dataset_id, "-c", CONFIGURATION, "-tr", trainer,
                "-p", plans, "-f", schedule.fold, "-device", device, "--disable_tta", "-npp", 0, "-nps", 0,
            ], env=env, log_file=logs / f"predict_{role}.log")
            run_stock_command("nnUNetv2_evaluate_folder", [
                experiment / "labelsTs", pred, "-djfile", models[role] / "dataset.json", "-pfile", models[role] / "plans.json",
            ], env=env, log_file=logs / f"evaluate_{role}.log")

        timed(f"predict_evaluate_{role}", predict_and_evaluate)
        scores[role] = per_label_scores(pred / "summary.json", labels)
        predictions[role] = str(pred)
    return {"scores": scores, "timings_s": timings, "plans": plans,
            "models": {k: str(v) for k, v in models.items()}, "predictions": predictions}
