"""CPU training protocol on real data: teachers on MSD Task04 hippocampus over several seeds, through the stock commands.

Converts the shared cases (../shared/data/msd_hippocampus), splits off a seeded held-out test set and k labeled
cases (`split`), plans and preprocesses the chosen configuration, then for each seed: writes the dataset config
(schedule, ``initial_lr``, ``seed``), trains ``nnUNetv2_train D C all -tr SupervisedTrainer``, predicts the test set
with ``nnUNetv2_predict`` and scores it with ``nnUNetv2_evaluate_folder``. Each model folder is moved to
``WORK/models/<tag>_seed<k>`` so that seeds do not overwrite each other (and a later KD student can use one as its
teacher). Prints one JSON object: per seed per label Dice/IoU, mean ± std over seeds, wall times.

    python benchmarks/protocol_hippocampus.py --preset quick --seeds 0 1 2 [--epochs 30 --iterations 50 --lr 0.01]

With ``--teacher-tag T`` it trains KD students instead (``-tr KDTrainer``, same data, schedule and network), each
against the teacher of the same seed kept in ``WORK/models/T_seed<k>``; ``--kd-weight 0`` gives the no-KD arm with
the identical trainer (KD term weighted 0).

``--eval-set unlabeled`` scores the cases that are neither labeled nor test (the split keeps their ground truth
aside) instead of the test set: a validation set for confirming a choice that was read off the test cases.
``--evaluate-only`` predicts and scores the models already kept in ``WORK/models`` without training.
"""
import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from nnunet_medaka.config import update_config_file
from nnunet_medaka.conversion.convert import convert_msd
from nnunet_medaka.conversion.raw_dataset import UNLABELED_GT, UNLABELED_IMAGES
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.environment import planning_environ, run_stock_command
from nnunet_medaka.training.stock import stock_environ
from nnunet_medaka.training.evaluation import per_label_scores
from nnunet_medaka.training.plans import write_small_plans
from nnunet_medaka.training.presets import config_assignments, get_preset

SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msd_hippocampus"
DATASET_ID, DATASET_NAME = 5, "HippocampusFewLabels"


def prepare(env: dict, args, configuration: str) -> Path:
    """Convert, split and plan once; reused when the work folder already has them."""
    raw = Path(env["nnUNet_raw"])
    experiment = raw / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    if not experiment.is_dir():
        source = convert_msd(args.source, dataset_id=4, dataset_name="Hippocampus", labels="anterior=1,posterior=2",
                             channel_names="MRI", out_dir=raw)
        split_dataset(source, dataset_id=DATASET_ID, dataset_name=DATASET_NAME, n_labeled=args.labeled,
                      n_test=args.test, seed=args.split_seed, out_dir=raw)
    plans = json.loads(p.read_text()) if (p := Path(env["nnUNet_preprocessed"]) / experiment.name / "nnUNetPlans.json").is_file() else None
    if plans is None or not (p.parent / plans["configurations"][configuration]["data_identifier"]).is_dir():
        (args.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        run_stock_command("nnUNetv2_plan_and_preprocess", ["-d", DATASET_ID, "-c", configuration, "-np", 2, "-npfp", 2,
                                                           "--verify_dataset_integrity"],
                          env=planning_environ(env), log_file=args.work_dir / "logs" / f"plan_{configuration}.log")
    return experiment


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, default=Path("bench_output/protocol"))
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--labeled", type=int, default=20)
    p.add_argument("--test", type=int, default=30)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--preset", default="quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configuration", help="override the preset's configuration")
    p.add_argument("--epochs", type=int, help="override num_epochs")
    p.add_argument("--iterations", type=int, help="override iterations_per_epoch")
    p.add_argument("--lr", type=float, help="override initial_lr")
    p.add_argument("--features", type=int, nargs="+", help="small plans: features per stage (sets the stage count)")
    p.add_argument("--batch", type=int, help="small plans: batch size")
    p.add_argument("--patch", type=int, nargs="+", help="small plans: patch size")
    p.add_argument("--no-final-validation", action="store_true",
                   help="final_validation=false: skip nnU-Net's validation of fold all (its cases are the training cases)")
    p.add_argument("--threads", type=int, help="override cpu_threads (torch threads of each training)")
    p.add_argument("--tag", help="name of this variant (model folders, predictions)")
    p.add_argument("--teacher-tag", help="train KDTrainer students against WORK/models/<teacher-tag>_seed<k>")
    p.add_argument("--kd-weight", type=float, help="KD students: kd_weight (0 = the no-KD arm)")
    p.add_argument("--kd-temperature", type=float, help="KD students: kd_temperature")
    p.add_argument("--kd-scales", choices=("all", "full"), help="KD students: kd_scales")
    p.add_argument("--kd-warmup", type=int, help="KD students: kd_warmup (epochs of linear ramp of the KD weight)")
    p.add_argument("--student-init", choices=("random", "teacher"), default="random",
                   help="KD students: start from random weights or from the teacher's (nnUNetv2_train -pretrained_weights)")
    p.add_argument("--eval-set", choices=("test", "unlabeled"), default="test",
                   help="score the test set (default) or the unlabeled pool, whose ground truth the split keeps aside")
    p.add_argument("--evaluate-only", action="store_true", help="predict and score the kept models; no training")
    p.add_argument("--summarize-only", action="store_true",
                   help="train nothing: summarize WORK/results/<tag>_seed<k>.json of earlier runs (e.g. seeds run in parallel)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args()
    args.work_dir = args.work_dir.resolve()

    preset = get_preset(args.preset)
    for key, value in (("configuration", args.configuration), ("num_epochs", args.epochs),
                       ("iterations_per_epoch", args.iterations), ("initial_lr", args.lr), ("cpu_threads", args.threads)):
        if value is not None:
            preset[key] = value
    if args.no_final_validation:
        preset["final_validation"] = False
    if args.features or args.batch or args.patch:
        small = dict(preset["small_plans"] or {})
        for key, value in (("features_per_stage", args.features), ("batch_size", args.batch), ("patch_size", args.patch)):
            if value is not None:
                small[key] = value
        preset["small_plans"] = small
    configuration = preset["configuration"]
    tag = args.tag or f"{args.preset}_{configuration}"

    env = stock_environ(device=args.device, root=args.work_dir)
    env.update(nnUNet_def_n_proc=env.get("nnUNet_def_n_proc", "2"), PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    experiment = prepare(env, args, configuration)
    labels = json.loads((experiment / "dataset.json").read_text())["labels"]
    preprocessed = Path(env["nnUNet_preprocessed"]) / experiment.name

    def write_plans(plans: str) -> None:
        if preset["small_plans"] is not None:
            write_small_plans(preprocessed, configuration=configuration, **dict(preset["small_plans"], target_plans=plans))
        else:
            stock = json.loads((preprocessed / "nnUNetPlans.json").read_text())
            (preprocessed / f"{plans}.json").write_text(json.dumps(dict(stock, plans_name=plans), indent=2))
    train_env = dict(env)
    train_env.setdefault("nnUNet_n_proc_DA", "0" if args.device == "cpu" else "8")
    logs = args.work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fold = str(preset["fold"])
    images, truth = ("imagesTs", "labelsTs") if args.eval_set == "test" else (UNLABELED_IMAGES, UNLABELED_GT)
    suffix = "" if args.eval_set == "test" else f"_{args.eval_set}"
    runs = {}
    for seed in args.seeds if not args.summarize_only else ():
        name = f"{tag}_seed{seed}"
        kept = args.work_dir / "models" / name
        train_s = None
        if not args.evaluate_only:
            # Each variant and seed trains under its own plans name (hence model folder) and config file, so that
            # runs can go side by side; the plans differ only in their name.
            plans = f"nnUNetPlans_{name}"
            write_plans(plans)
            config_file = args.work_dir / "configs" / f"{name}.json"
            config_file.parent.mkdir(parents=True, exist_ok=True)
            config_file.unlink(missing_ok=True)
            kd, init = [], []
            if args.teacher_tag:
                teacher = args.work_dir / "models" / f"{args.teacher_tag}_seed{seed}"
                kd = [("teacher", str(teacher)), ("teacher_folds", [fold])]
                kd += [(k, v) for k, v in (("kd_weight", args.kd_weight), ("kd_temperature", args.kd_temperature),
                                           ("kd_scales", args.kd_scales), ("kd_warmup", args.kd_warmup)) if v is not None]
                if args.student_init == "teacher":
                    init = ["-pretrained_weights", teacher / f"fold_{fold}" / "checkpoint_final.pth"]
            update_config_file(config_file, config_assignments(preset) + [("seed", seed)] + kd)
            train_env["nnunet_medaka_config"] = str(config_file)
            trainer = "KDTrainer" if args.teacher_tag else "SupervisedTrainer"
            model = Path(env["nnUNet_results"]) / experiment.name / f"{trainer}__{plans}__{configuration}"
            if model.exists():
                shutil.rmtree(model)
            t0 = time.perf_counter()
            run_stock_command("nnUNetv2_train", [DATASET_ID, configuration, fold, "-tr", trainer, "-p", plans,
                                                 "-device", args.device, *init], env=train_env,
                              log_file=logs / f"train_{name}.log")
            train_s = time.perf_counter() - t0
            if kept.exists():
                shutil.rmtree(kept)
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(model), kept)
        elif not kept.is_dir():
            raise SystemExit(f"{kept}: no kept model to evaluate; train it first (drop --evaluate-only)")
        pred = args.work_dir / "predictions" / f"{name}{suffix}"
        if pred.exists():
            shutil.rmtree(pred)
        t0 = time.perf_counter()
        run_stock_command("nnUNetv2_predict_from_modelfolder", [
            "-i", experiment / images, "-o", pred, "-m", kept, "-f", fold, "-device", args.device,
            "--disable_tta", "-npp", 1, "-nps", 1], env=env, log_file=logs / f"predict_{name}{suffix}.log")
        run_stock_command("nnUNetv2_evaluate_folder", [experiment / truth, pred, "-djfile", kept / "dataset.json",
                                                       "-pfile", kept / "plans.json"], env=env,
                          log_file=logs / f"evaluate_{name}{suffix}.log")
        scores = per_label_scores(pred / "summary.json", labels)
        runs[seed] = {"scores": scores, "eval_set": args.eval_set,
                      "train_s": round(train_s, 1) if train_s is not None else None,
                      "predict_evaluate_s": round(time.perf_counter() - t0, 1), "model": str(kept)}
        (args.work_dir / "results").mkdir(exist_ok=True)
        (args.work_dir / "results" / f"{name}{suffix}.json").write_text(json.dumps({"seed": seed, **runs[seed]}, indent=2))
        print(json.dumps({"seed": seed, **runs[seed]}), flush=True)
    if args.summarize_only:
        for seed in args.seeds:
            runs[seed] = json.loads((args.work_dir / "results" / f"{tag}_seed{seed}{suffix}.json").read_text())

    organs = [k for k in labels if k != "background"]
    summary = {}
    for organ in organs + ["mean"]:
        for metric in ("Dice", "IoU"):
            vals = [r["scores"][organ][metric] if organ != "mean" else statistics.mean(r["scores"][o][metric] for o in organs)
                    for r in runs.values()]
            summary[f"{organ}_{metric}"] = {"mean": round(statistics.mean(vals), 4),
                                            "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                                            "min": round(min(vals), 4), "max": round(max(vals), 4)}
    print(json.dumps({"data": "MSD Task04 hippocampus (real MRI, CC-BY-SA 4.0)", "labeled": args.labeled,
                      "test": args.test, "eval_set": args.eval_set, "split_seed": args.split_seed, "tag": tag,
                      "teacher_tag": args.teacher_tag,
                      "kd": {k: getattr(args, k) for k in ("kd_weight", "kd_temperature", "kd_scales", "kd_warmup",
                                                           "student_init")},
                      "settings": preset, "seeds": args.seeds, "runs": runs, "summary": summary,
                      "cpu_cores": os.cpu_count(), "total_s": round(time.perf_counter() - started, 1)}, indent=2))


if __name__ == "__main__":
    main()
