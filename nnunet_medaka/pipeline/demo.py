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
# A patch about the size of a cropped fish, so that every step sees every organ; 3 stages, few features.
SMALL_PLANS = {"target_plans": "nnUNetPlansSmall", "patch_size": (28, 24, 72), "features_per_stage": (16, 32, 64)}

__all__ = ["run_demo"]


def _prepare_work_dir(work_dir: Path, overwrite: bool) -> None:
    if work_dir.exists():
        if not (work_dir / MARKER).is_file() and not overwrite:
            raise MedakaError(f"{work_dir}: exists and was not made by the demo; choose another --work-dir "
                              "or pass --overwrite to replace it")
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    (work_dir / MARKER).write_text("made by nnunet-medaka demo; safe to delete\n")


def run_demo(
    work_dir: os.PathLike | str = "demo_output",
    *,
    seed: int = 0,
    n_specimens: int = 12,
    n_labeled: int = 4,
    n_test: int = 6,
    size: int = 80,
    epochs: int = 20,
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
        Per-organ Dice/IoU for ``teacher`` and ``student``, timings and paths (also in ``demo_summary.json``),
        and ``table``, the comparison as text.
    """
    from nnunet_medaka.conversion.convert import convert_microct
    from nnunet_medaka.training.evaluation import comparison_table, plot_comparison
    from nnunet_medaka.pipeline.experiment import Schedule, experiment_environ, run_teacher_student
    from nnunet_medaka.conversion.phantom import make_phantoms
    from nnunet_medaka.conversion.split import split_dataset

    if n_labeled + n_test > n_specimens:
        raise MedakaError(f"--labeled {n_labeled} + --test {n_test} exceeds --specimens {n_specimens}")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    work_dir = Path(work_dir).expanduser().resolve()
    _prepare_work_dir(work_dir, overwrite)
    env = experiment_environ(work_dir, device=device)
    started = time.perf_counter()
    counter = iter(range(1, 100))

    def step(text: str) -> None:
        log.info("[%d/8] %s", next(counter), text)

    step(f"making {n_specimens} synthetic Medaka phantom specimens (micro-CT TIFF stacks + organ masks)")
    phantoms = make_phantoms(work_dir / "phantom", n_labeled=n_specimens, n_unlabeled=2, seed=seed, size=size)
    step("converting them to an nnU-Net raw dataset (convert microct --crop) and splitting off the test set (split)")
    raw = env["nnUNet_raw"]
    source = convert_microct(phantoms["root"], dataset_id=SOURCE_ID, dataset_name="MedakaPhantom",
                             organs=phantoms["organs_file"], out_dir=raw, crop=True)  # 2.5x fewer voxels
    experiment = split_dataset(source, dataset_id=EXPERIMENT_ID, dataset_name="MedakaPhantomFewLabels",
                               n_labeled=n_labeled, n_test=n_test, seed=seed, out_dir=raw)
    schedule = Schedule(epochs=epochs, iterations=iterations, small_plans=SMALL_PLANS)
    result = run_teacher_student(experiment, dataset_id=EXPERIMENT_ID, work_dir=work_dir, env=env, schedule=schedule,
                                 device=device, step=step)
    plot = plot_comparison(result["scores"], work_dir / "iou_per_organ.png",
                           title=f"SYNTHETIC phantoms: IoU on {n_test} test specimens ({n_labeled} labeled for training)")
    summary = {
        "data": "synthetic Medaka phantoms (not real micro-CT)",
        **result,
        "total_s": round(time.perf_counter() - started, 1),
        "settings": {"seed": seed, "specimens": n_specimens, "labeled": n_labeled, "test": n_test, "size": size,
                     "epochs": epochs, "iterations_per_epoch": iterations, "device": device},
        "paths": {"work_dir": str(work_dir), "plot": str(plot), "logs": str(work_dir / "logs")},
    }
    (work_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["table"] = comparison_table(result["scores"])
    return summary


def _run(args: argparse.Namespace) -> int:
    summary = run_demo(args.work_dir, seed=args.seed, n_specimens=args.specimens, n_labeled=args.labeled,
                       n_test=args.test, size=args.size, epochs=args.epochs, iterations=args.iterations,
                       device=args.device, overwrite=args.overwrite)
    print()
    print(f"Teacher vs KD student on {args.test} held-out SYNTHETIC phantom specimens "
          f"({args.labeled} labeled for training, {args.epochs} epochs x {args.iterations} iterations, small network):")
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
    p.add_argument("--epochs", type=_positive, default=20)
    p.add_argument("--iterations", type=_positive, default=10, help="iterations per epoch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace --work-dir even if the demo did not make it")
    p.set_defaults(func=_run)
