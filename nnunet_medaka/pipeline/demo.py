"""``nnunet-medaka demo``: the whole method, small, on synthetic Medaka phantoms, through stock nnU-Net.

Steps: synthetic micro-CT specimens -> ``convert microct`` -> experiment split (a few labeled cases, an
unlabeled pool with its ground truth aside, a held-out test set) -> ``nnunet-medaka run`` with the ``cpu-demo``
preset: plan and preprocess, teacher cross-validation, the quality classifier trained on its out-of-fold
predictions, pseudo-labels of the unlabeled pool filtered by it or by the teacher's own confidence where that ranked
the out-of-fold predictions better (``filter=auto``), the student dataset, the KD student beside a supervised
baseline of equal budget, and their Dice/IoU per organ on the test set against the stronger baseline.

The data are synthetic and the network and schedule are small enough for a CPU, so the numbers show that the
machinery works end to end, not how well the method does on real fish. A killed demo resumes where it stopped
when run again with the same ``--work-dir``.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Optional

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import claim_folder, read_json, remove, write_json_atomic

log = logging.getLogger(__name__)

MARKER = ".nnunet_medaka_demo"
SOURCE_ID, EXPERIMENT_ID = 801, 802
RUN_FOLDER = "run"
DEMO_SPECIMENS = 22  # 6 labeled, 4 test, 12 unlabeled: more unlabeled scans than labeled ones (the method's setting)
DEMO_SIZE = 80  # phantom voxels along the body
# One "eyes" organ: the demo trains nnU-Net's 2d configuration (3d does not learn within minutes on a CPU), whose
# sagittal slices show the left and the right eye alike (docs/results/demo.md).
DEMO_MERGE_EYES = True

__all__ = ["run_demo"]


def _prepare_work_dir(work_dir: Path, overwrite: bool) -> bool:
    """Create ``work_dir``; True when it holds a demo to resume."""
    if claim_folder(work_dir, (MARKER,), what="a folder made by the demo", option="--work-dir", overwrite=overwrite) \
            and not overwrite:
        return (work_dir / RUN_FOLDER).is_dir()
    remove(work_dir)
    work_dir.mkdir(parents=True)
    (work_dir / MARKER).write_text("made by nnunet-medaka demo; safe to delete\n")
    return False


def run_demo(
    work_dir: os.PathLike | str = "demo_output",
    *,
    seed: int = 0,
    n_specimens: int = DEMO_SPECIMENS,
    n_labeled: int = 6,
    n_test: int = 4,
    size: Optional[int] = None,
    overrides: Optional[dict] = None,
    device: str = "auto",
    overwrite: bool = False,
    say=print,
) -> dict:
    """Run the method end to end on synthetic phantoms and compare the KD student with the baselines per organ.

    Parameters
    ----------
    work_dir : path
        Everything goes below it: specimens, nnU-Net folders, the run folder (logs, pseudo-labels, results).
    seed : int
        Seed for the phantoms and the split.
    n_specimens, n_labeled, n_test : int
        Phantom specimens made (all with ground truth); how many are labeled for training; how many are held
        out for testing. The rest form the unlabeled pool (their ground truth is used for evaluation only).
    size : int, optional
        Phantom voxels along the body; default ``DEMO_SIZE``.
    overrides : dict, optional
        Settings replacing the ``cpu-demo`` preset's (`nnunet_medaka.training.presets.resolve_settings`).
    device : {"auto", "cpu", "cuda"}
    overwrite : bool
        Replace a ``work_dir`` that the demo did not make, or start a finished demo afresh.

    Returns
    -------
    dict
        The run's results (``results.json``) and ``total_s``.
    """
    from nnunet_medaka.conversion.phantom import make_phantom_experiment
    from nnunet_medaka.environment import make_nnunet_folders
    from nnunet_medaka.pipeline.results import RESULTS_FILE
    from nnunet_medaka.pipeline.run import run_pipeline
    from nnunet_medaka.training.presets import resolve_settings

    if n_labeled + n_test >= n_specimens:
        raise MedakaError(f"--labeled {n_labeled} + --test {n_test} leaves no unlabeled specimen of --specimens "
                          f"{n_specimens}: the method needs unlabeled scans to pseudo-label")
    resolve_settings("cpu-demo", overrides)  # a bad override fails before any work
    size = size or DEMO_SIZE
    work_dir = Path(work_dir).expanduser().resolve()
    resuming = _prepare_work_dir(work_dir, overwrite)
    os.environ.update(make_nnunet_folders(work_dir))  # the demo's own nnUNet_raw/_preprocessed/_results
    started = time.perf_counter()
    raw = Path(os.environ["nnUNet_raw"])
    experiment = raw / f"Dataset{EXPERIMENT_ID:03d}_MedakaPhantomFewLabels"
    if not resuming or not (experiment / "dataset.json").is_file():
        say(f"making {n_specimens} SYNTHETIC Medaka phantom specimens ({size} voxels long, both eyes as one "
            "organ; micro-CT TIFF stacks + organ masks), converting them (convert microct --crop) and splitting them (split)")
        remove(work_dir / "phantom", *raw.glob("Dataset80[12]_*"))
        experiment = make_phantom_experiment(work_dir / "phantom", raw, n_specimens=n_specimens, n_labeled=n_labeled,
                                             n_test=n_test, seed=seed, size=size, ids=(SOURCE_ID, EXPERIMENT_ID),
                                             merge_eyes=DEMO_MERGE_EYES)
    else:
        say(f"resuming the demo in {work_dir}")
    run_pipeline(str(EXPERIMENT_ID), work_dir / RUN_FOLDER, preset="cpu-demo", overrides=overrides,
                 device=device, say=say)
    results = read_json(work_dir / RUN_FOLDER / RESULTS_FILE, what="the run's results")
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["data"] = "synthetic Medaka phantoms (not real micro-CT)"
    results["settings"] = {"seed": seed, "specimens": n_specimens, "labeled": n_labeled, "test": n_test,
                           "unlabeled": n_specimens - n_labeled - n_test, "size": size, "device": device}
    write_json_atomic(work_dir / "demo_summary.json", results)
    return results


def _run(args: argparse.Namespace) -> int:
    from nnunet_medaka.pipeline.results import print_run_summary

    overrides = dict(args.set or [])
    overrides.update({k: v for k, v in (("num_epochs", args.epochs), ("iterations_per_epoch", args.iterations))
                      if v is not None})
    summary = run_demo(args.work_dir, seed=args.seed, n_specimens=args.specimens, n_labeled=args.labeled,
                       n_test=args.test, size=args.size, overrides=overrides, device=args.device,
                       overwrite=args.overwrite)
    print(f"\nSYNTHETIC phantoms: {args.labeled} labeled, {summary['settings']['unlabeled']} unlabeled, "
          f"{args.test} test specimens; total time {summary['total_s']:.0f} s\n")
    print_run_summary(Path(args.work_dir) / RUN_FOLDER)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a whole number >= 1")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from nnunet_medaka.config import parse_set

    p = subparsers.add_parser(
        "demo",
        help="the whole method end to end on synthetic phantoms (teacher CV, quality classifier, pseudo-labels, "
        "KD student), with Dice/IoU per organ of teacher, supervised baseline and student",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--work-dir", default="demo_output", help="output folder (default: ./demo_output); rerun to resume")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--specimens", type=_positive, default=DEMO_SPECIMENS,
                   help=f"phantom specimens to make (default {DEMO_SPECIMENS})")
    p.add_argument("--labeled", type=_positive, default=6, help="of those, labeled training cases (default 6)")
    p.add_argument("--test", type=_positive, default=4, help="of those, held-out test cases (default 4); the rest "
                   "are the unlabeled pool")
    p.add_argument("--size", type=_positive, default=None, help=f"phantom voxels along the body (default {DEMO_SIZE})")
    p.add_argument("--epochs", type=_positive, default=None, help="override the cpu-demo preset's num_epochs")
    p.add_argument("--iterations", type=_positive, default=None, help="override its iterations_per_epoch")
    p.add_argument("--set", action="append", type=parse_set, metavar="KEY=VALUE",
                   help="override a cpu-demo preset or method setting, as in `nnunet-medaka run`; repeatable")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace --work-dir (also a finished demo)")
    p.set_defaults(func=_run)
