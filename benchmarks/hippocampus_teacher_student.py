"""Teacher vs KD student on real data: MSD Task04 hippocampus (../shared), through the stock nnU-Net commands.

Converts the shared cases, splits off a seeded held-out test set and k labeled cases, then runs
nnunet_medaka.pipeline.experiment.run_teacher_student (plan -> SupervisedTrainer teacher -> KDTrainer student ->
predict -> evaluate) and prints one JSON object with per-label Dice/IoU for both. On a CPU use a reduced
schedule (the defaults); on a GPU raise --epochs/--iterations and drop --small.

    python benchmarks/hippocampus_teacher_student.py --work-dir /tmp/hippo [--labeled 20 --test 30 --epochs 20]
"""
import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from nnunet_medaka.conversion.convert import convert_msd
from nnunet_medaka.pipeline.experiment import Schedule, experiment_environ, run_teacher_student
from nnunet_medaka.conversion.split import split_dataset

SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msd_hippocampus"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, default=Path("bench_output/hippocampus"))
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--labeled", type=int, default=20)
    p.add_argument("--test", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--iterations", type=int, default=25)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--full-plans", action="store_true", help="nnU-Net's own network instead of the small CPU variant")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)
    env = experiment_environ(args.work_dir.resolve(), device=args.device)
    started = time.perf_counter()
    source = convert_msd(args.source, dataset_id=4, dataset_name="Hippocampus", labels="anterior=1,posterior=2",
                         channel_names="MRI", out_dir=env["nnUNet_raw"])
    experiment = split_dataset(source, dataset_id=5, dataset_name="HippocampusFewLabels", n_labeled=args.labeled,
                               n_test=args.test, seed=args.seed, out_dir=env["nnUNet_raw"])
    small = None if args.full_plans else {"target_plans": "nnUNetPlansSmall", "patch_size": (40, 56, 40),
                                         "features_per_stage": (16, 32, 64, 128)}
    schedule = Schedule(epochs=args.epochs, iterations=args.iterations, small_plans=small)
    result = run_teacher_student(experiment, dataset_id=5, work_dir=args.work_dir, env=env, schedule=schedule,
                                 device=args.device)
    result.update(data="MSD Task04 hippocampus subset (real MRI, CC-BY-SA 4.0)", labeled=args.labeled, test=args.test,
                  seed=args.seed, epochs=args.epochs, iterations=args.iterations, device=args.device,
                  total_s=round(time.perf_counter() - started, 1))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
