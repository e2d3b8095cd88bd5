"""``nnunet-medaka demo``: the whole pipeline, small, on synthetic Medaka phantoms, through stock nnU-Net.

Steps: synthetic micro-CT specimens -> ``convert microct`` -> experiment split (few labeled cases,
held-out test set) -> ``nnUNetv2_plan_and_preprocess`` -> teacher (``-tr SupervisedTrainer``) ->
KD student (``-tr KDTrainer`` against the frozen teacher) -> ``nnUNetv2_predict`` on the test set
-> ``nnUNetv2_evaluate_folder`` -> Dice/IoU per organ, teacher vs student.

The data are synthetic and the network is a small CPU variant of nnU-Net's plans with a short
schedule, so the numbers show that the machinery works, not how well the method does on real fish.
The student here learns from the same labeled cases as the teacher plus the KD term; pseudo-labels
and the quality classifier join in with the ``pseudolabel``/``build-student`` stages.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)

MARKER = ".nnunet_medaka_demo"
SOURCE_ID, EXPERIMENT_ID = 801, 802
PLANS = "nnUNetPlansSmall"
CONFIGURATION = "3d_fullres"
FOLD = "all"  # few labeled cases: train on all of them, evaluate on the held-out test set

__all__ = ["run_demo"]


def _prepare_work_dir(work_dir: Path, overwrite: bool) -> None:
    if work_dir.exists():
        if not (work_dir / MARKER).is_file() and not overwrite:
            raise MedakaError(f"{work_dir}: exists and was not made by the demo; choose another --work-dir "
                              "or pass --overwrite to replace it")
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    (work_dir / MARKER).write_text("made by nnunet-medaka demo; safe to delete\n")


def _stage_environ(work_dir: Path) -> dict:
    from nnunet_medaka.environment import plugin_environ

    env = plugin_environ(root=work_dir)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[var]).mkdir(parents=True, exist_ok=True)
    env.setdefault("nnUNet_compile", "f")  # compiling costs more than it saves on runs this short
    env.setdefault("nnUNet_def_n_proc", str(min(4, os.cpu_count() or 1)))
    env.pop("nnunet_medaka_config", None)
    return env


def run_demo(
    work_dir: os.PathLike | str = "demo_output",
    *,
    seed: int = 0,
    n_specimens: int = 12,
    n_labeled: int = 4,
    n_test: int = 6,
    size: int = 80,
    epochs: int = 8,
    iterations: int = 10,
    device: str = "auto",
    overwrite: bool = False,
) -> dict:
    """Run the pipeline end to end on synthetic phantoms and compare teacher and student per organ.

    Parameters
    ----------
    work_dir : path
        Everything goes below it: specimens, nnU-Net folders, logs, predictions, the summary.
    seed : int
        Seed for the phantoms and the split.
    n_specimens, n_labeled, n_test : int
        Labeled phantom specimens made; how many train the teacher/student; how many are held out.
    size : int
        Phantom voxels along the body.
    epochs, iterations : int
        Schedule of both trainings (``num_epochs``, ``iterations_per_epoch``).
    device : {"auto", "cpu", "cuda"}
        ``auto`` takes the GPU when one is visible.
    overwrite : bool
        Replace a ``work_dir`` that the demo did not make.

    Returns
    -------
    dict
        Per-organ Dice/IoU for ``teacher`` and ``student``, timings and paths (also in ``demo_summary.json``).
    """
    from nnunet_medaka.config import update_config_file
    from nnunet_medaka.convert import convert_microct
    from nnunet_medaka.evaluation import comparison_table, per_label_scores, plot_comparison
    from nnunet_medaka.nnunet_commands import run_stock_command
    from nnunet_medaka.phantom import make_phantoms
    from nnunet_medaka.plans import write_small_plans
    from nnunet_medaka.split import split_dataset

    if n_labeled + n_test > n_specimens:
        raise MedakaError(f"--labeled {n_labeled} + --test {n_test} exceeds --specimens {n_specimens}")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    work_dir = Path(work_dir).expanduser().resolve()
    _prepare_work_dir(work_dir, overwrite)
    env = _stage_environ(work_dir)
    logs = work_dir / "logs"
    logs.mkdir()
    timings: dict = {}
    started = time.perf_counter()
    steps = 9

    def step(i: int, text: str):
        log.info("[%d/%d] %s", i, steps, text)
        return time.perf_counter()

    def done(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        log.info("      done in %.0f s", timings[name])

    t0 = step(1, f"making {n_specimens} synthetic Medaka phantom specimens (micro-CT TIFF stacks + organ masks)")
    phantoms = make_phantoms(work_dir / "phantom", n_labeled=n_specimens, n_unlabeled=2, seed=seed, size=size)
    done("phantom", t0)

    t0 = step(2, "converting them to an nnU-Net raw dataset (convert microct)")
    raw = env["nnUNet_raw"]
    source = convert_microct(phantoms["root"], dataset_id=SOURCE_ID, dataset_name="MedakaPhantom",
                             organs=phantoms["organs_file"], out_dir=raw)
    experiment = split_dataset(source, dataset_id=EXPERIMENT_ID, dataset_name="MedakaPhantomFewLabels",
                               n_labeled=n_labeled, n_test=n_test, seed=seed, out_dir=raw)
    labels = json.loads((experiment / "dataset.json").read_text())["labels"]
    done("convert_and_split", t0)

    t0 = step(3, f"planning and preprocessing {experiment.name} (nnUNetv2_plan_and_preprocess)")
    plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}  # the planner crashes with 0 (2.8.1)
    run_stock_command("nnUNetv2_plan_and_preprocess",
                      ["-d", EXPERIMENT_ID, "-c", CONFIGURATION, "-np", 2, "-npfp", 2, "--verify_dataset_integrity"],
                      env=plan_env, log_file=logs / "plan_and_preprocess.log")
    preprocessed = Path(env["nnUNet_preprocessed"]) / experiment.name
    write_small_plans(preprocessed, target_plans=PLANS)
    results = Path(env["nnUNet_results"]) / experiment.name
    teacher_folder = results / f"SupervisedTrainer__{PLANS}__{CONFIGURATION}"
    update_config_file(preprocessed / "nnunet_medaka.json", [
        ("num_epochs", epochs), ("iterations_per_epoch", iterations), ("val_iterations_per_epoch", 2),
        ("mirroring", False), ("teacher", str(teacher_folder)), ("teacher_folds", [FOLD]),
    ])
    done("plan_and_preprocess", t0)

    train_env = dict(env, nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0" if device == "cpu" else "4"))
    scores = {}
    for i, (role, trainer) in enumerate((("teacher", "SupervisedTrainer"), ("student", "KDTrainer"))):
        t0 = step(4 + 2 * i, f"training the {role}: nnUNetv2_train {EXPERIMENT_ID} {CONFIGURATION} {FOLD} -tr {trainer} "
                             f"({epochs} epochs x {iterations} iterations, {device})")
        run_stock_command("nnUNetv2_train", [EXPERIMENT_ID, CONFIGURATION, FOLD, "-tr", trainer, "-p", PLANS,
                                             "-device", device], env=train_env, log_file=logs / f"train_{role}.log")
        done(f"train_{role}", t0)
        t0 = step(5 + 2 * i, f"predicting the {n_test} test specimens with the {role} and evaluating (nnU-Net's own commands)")
        pred = work_dir / "predictions" / role
        run_stock_command("nnUNetv2_predict", ["-i", experiment / "imagesTs", "-o", pred, "-d", EXPERIMENT_ID,
                                               "-c", CONFIGURATION, "-tr", trainer, "-p", PLANS, "-f", FOLD,
                                               "-device", device, "--disable_tta", "-npp", 0, "-nps", 0],
                          env=env, log_file=logs / f"predict_{role}.log")
        model = results / f"{trainer}__{PLANS}__{CONFIGURATION}"
        run_stock_command("nnUNetv2_evaluate_folder", [experiment / "labelsTs", pred, "-djfile", model / "dataset.json",
                                                       "-pfile", model / "plans.json"],
                          env=env, log_file=logs / f"evaluate_{role}.log")
        scores[role] = per_label_scores(pred / "summary.json", labels)
        done(f"predict_evaluate_{role}", t0)

    t0 = step(steps, "writing the comparison")
    plot = plot_comparison(scores, work_dir / "iou_per_organ.png",
                           title=f"Synthetic phantoms: IoU on {n_test} test specimens ({n_labeled} labeled for training)")
    summary = {
        "data": "synthetic Medaka phantoms (not real micro-CT)",
        "scores": scores, "timings_s": timings, "total_s": round(time.perf_counter() - started, 1),
        "settings": {"seed": seed, "specimens": n_specimens, "labeled": n_labeled, "test": n_test, "size": size,
                     "epochs": epochs, "iterations_per_epoch": iterations, "device": device, "plans": PLANS},
        "paths": {"work_dir": str(work_dir), "plot": str(plot), "teacher": str(teacher_folder),
                  "student": str(results / f"KDTrainer__{PLANS}__{CONFIGURATION}"), "logs": str(logs)},
    }
    (work_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["table"] = comparison_table(scores)
    return summary


def _run(args: argparse.Namespace) -> int:
    summary = run_demo(args.work_dir, seed=args.seed, n_specimens=args.specimens, n_labeled=args.labeled,
                       n_test=args.test, size=args.size, epochs=args.epochs, iterations=args.iterations,
                       device=args.device, overwrite=args.overwrite)
    print()
    print(f"Teacher vs KD student on {args.test} held-out SYNTHETIC phantom specimens "
          f"({args.labeled} labeled for training, {args.epochs} epochs, small CPU network):")
    print(summary["table"])
    print(f"\nplot: {summary['paths']['plot']}\nsummary: {Path(summary['paths']['work_dir']) / 'demo_summary.json'}"
          f"\ntotal time: {summary['total_s']:.0f} s")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a whole number >= 1")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the pipeline end to end on synthetic phantoms and print teacher vs student Dice/IoU per organ",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--work-dir", default="demo_output", help="output folder (default: ./demo_output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--specimens", type=_positive, default=12, help="labeled phantom specimens to make (default 12)")
    p.add_argument("--labeled", type=_positive, default=4, help="of those, training cases (default 4)")
    p.add_argument("--test", type=_positive, default=6, help="of those, held-out test cases (default 6)")
    p.add_argument("--size", type=_positive, default=80, help="phantom voxels along the body (default 80)")
    p.add_argument("--epochs", type=_positive, default=8)
    p.add_argument("--iterations", type=_positive, default=10, help="iterations per epoch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace --work-dir even if the demo did not make it")
    p.set_defaults(func=_run)
