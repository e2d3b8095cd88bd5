"""Quality classifier on real data: MSD Task04 hippocampus (../shared), teacher 5-fold CV through the stock commands.

Converts the shared cases (``convert msd``), plans and preprocesses one configuration, trains the teacher
(``nnUNetv2_train D C k -tr SupervisedTrainer --npz``, k = 0..4) with a short CPU schedule, then runs
``nnunet-medaka qc train`` (features of every out-of-fold prediction + corrupted copies, grouped CV report) and
prints one JSON object: the real out-of-fold IoU spread, and per organ and overall the classifier's and every
baseline's AUROC / AUPRC (IoU < tau), Spearman, AURC, plus whether the goal (AUROC >= 0.90, Spearman >= 0.80 per
organ, classifier beating every baseline on AUROC and AURC) is met.

    python benchmarks/quality_hippocampus.py --work-dir bench_output/quality_hippo [--epochs 32 --iterations 25]

The ``quick`` preset's teacher (the CPU protocol): ``--epochs 30 --iterations 100 --lr 0.05 --patch 56 40``.

Default network: nnU-Net's 2d plans with a small CPU variant (features 16/32/64/128, batch 8, nnU-Net's patch).

``--skip-training`` reuses a finished cross-validation in the work dir (e.g. to try another ``--tau``).
"""
import argparse
import json
import logging
import os
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msd_hippocampus"
DATASET_ID, DATASET_NAME = 4, "Hippocampus"


def main() -> None:
    from nnunet_medaka.config import update_config_file
    from nnunet_medaka.environment import planning_environ, plugin_environ, run_stock_command

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, default=Path("bench_output/quality_hippocampus"))
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--configuration", default="2d")
    p.add_argument("--epochs", type=int, default=32)
    p.add_argument("--iterations", type=int, default=25)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.03, help="initial learning rate (0.03 leaves the all-background "
                                                           "phase sooner on CPU schedules: benchmarks/protocol_hippocampus.py)")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads per training (1: no oversubscription)")
    p.add_argument("--parallel", type=int, default=2, help="folds trained at the same time")
    p.add_argument("--features", type=int, nargs="*", default=[16, 32, 64, 128],
                   help="small CPU network: features per stage (nothing after the flag: nnU-Net's own plans)")
    p.add_argument("--batch", type=int, default=8, help="batch size of the small plans")
    p.add_argument("--patch", type=int, nargs="+", default=None,
                   help="patch size of the small plans (default: nnU-Net's own; the quick preset uses 56 40)")
    p.add_argument("--tau", default="0.7", help="IoU threshold of a good pseudo-label, or 'auto' (median real IoU)")
    p.add_argument("--corruptions", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--no-tta", action="store_true",
                   help="skip the TTA agreement baseline (it re-runs each fold's network on its held-out cases)")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--qc-folds", type=int, nargs="+", default=None,
                   help="teacher folds the quality classifier learns from (default: all --folds)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.work_dir.resolve()
    env = plugin_environ(root=work)
    env.update(nnUNet_compile="f", nnUNet_def_n_proc="2", nnUNet_n_proc_DA="0")
    env.pop("nnunet_medaka_config", None)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                            "nnUNet_extTrainer")})
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    timings = {}
    started = time.perf_counter()
    cfg = args.configuration
    plans = "nnUNetPlansQCSmall" if args.features else "nnUNetPlans"
    if not args.skip_training:
        from nnunet_medaka.conversion.convert import convert_msd

        t0 = time.perf_counter()
        raw = Path(env["nnUNet_raw"]) / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
        if not raw.is_dir():
            convert_msd(args.source, dataset_id=DATASET_ID, dataset_name=DATASET_NAME, labels="anterior=1,posterior=2",
                        channel_names="MRI", out_dir=env["nnUNet_raw"])
        run_stock_command("nnUNetv2_plan_and_preprocess", ["-d", DATASET_ID, "-c", cfg, "-np", 2, "-npfp", 2,
                                                           "--verify_dataset_integrity"],
                          env=planning_environ(env), log_file=logs / "plan_and_preprocess.log")
        preprocessed = Path(env["nnUNet_preprocessed"]) / raw.name
        if args.features:  # small CPU network, nnU-Net's own patch
            from nnunet_medaka.training.plans import write_small_plans

            own = json.loads((preprocessed / "nnUNetPlans.json").read_text())["configurations"][cfg]["patch_size"]
            write_small_plans(preprocessed, target_plans=plans, configuration=cfg, patch_size=args.patch or own,
                              features_per_stage=args.features, batch_size=args.batch)
        update_config_file(preprocessed / "nnunet_medaka.json", [
            ("num_epochs", args.epochs), ("iterations_per_epoch", args.iterations),
            ("val_iterations_per_epoch", 2), ("mirroring", False), ("initial_lr", args.lr),
            ("cpu_threads", args.cpu_threads)])
        timings["convert_plan_preprocess"] = round(time.perf_counter() - t0, 1)
        def train_fold(fold: int) -> None:
            t0 = time.perf_counter()
            logging.info("teacher fold %d: nnUNetv2_train %d %s %d -tr SupervisedTrainer -p %s --npz", fold, DATASET_ID,
                         cfg, fold, plans)
            run_stock_command("nnUNetv2_train", [DATASET_ID, cfg, fold, "-tr", "SupervisedTrainer", "-p", plans,
                                                 "-device", args.device, "--npz"], env=env,
                              log_file=logs / f"train_fold{fold}.log")
            timings[f"train_fold{fold}"] = round(time.perf_counter() - t0, 1)

        # the split file first (nnU-Net writes it on the first training; parallel folds must not race for it)
        from nnunetv2.utilities.crossval_split import generate_crossval_split

        cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
        from nnunet_medaka.files import write_json_atomic

        if not (preprocessed / "splits_final.json").is_file():
            write_json_atomic(preprocessed / "splits_final.json", generate_crossval_split(cases, seed=12345,
                                                                                          n_splits=args.folds))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            list(pool.map(train_fold, range(args.folds)))
    from nnunet_medaka.quality.commands import train_quality

    t0 = time.perf_counter()
    tau = args.tau if args.tau == "auto" else float(args.tau)
    folder = train_quality(str(DATASET_ID), cfg, plans=plans, folds=args.qc_folds, tau=tau, corruptions_per_organ=args.corruptions, seed=args.seed,
                           overwrite=True, tta=not args.no_tta, progress=False)
    timings["qc_train"] = round(time.perf_counter() - t0, 1)
    report = json.loads((folder / "evaluation" / "report.json").read_text())
    real = report["metrics"]["real"]
    table = {organ: {m: {k: v[k] for k in ("auroc", "auprc", "spearman", "aurc", "mae") if k in v}
                     for m, v in methods.items()} for organ, methods in real.items()}
    spread = {organ: {k: methods["classifier"][k] for k in ("n", "n_bad", "iou_min", "iou_median", "iou_max")}
              for organ, methods in real.items()}
    goal = {}
    for organ, methods in real.items():
        c = methods["classifier"]
        beats = all(c["auroc"] is not None and (b["auroc"] is None or c["auroc"] > b["auroc"]) and c["aurc"] < b["aurc"]
                    for m, b in methods.items() if m != "classifier")
        goal[organ] = {"auroc_ge_0.90": bool(c["auroc"] is not None and c["auroc"] >= 0.90),
                       "spearman_ge_0.80": bool(c["spearman"] is not None and c["spearman"] >= 0.80),
                       "beats_every_baseline_auroc_and_aurc": bool(beats)}
    print(json.dumps({
        "data": "MSD Task04 hippocampus, 100-case development subset (real MRI, CC-BY-SA 4.0)",
        "teacher": f"SupervisedTrainer -p {plans}, {cfg}, {args.folds}-fold CV, {args.epochs} epochs x {args.iterations} "
                   f"iterations, lr {args.lr}, patch {args.patch or 'nnU-Net'}, {args.device}",
        "qc_teacher_folds": args.qc_folds or list(range(args.folds)), "tau": report["tau"], "summary": report["summary"],
        "real_oof_iou_spread": spread, "real_oof_metrics": table, "goal": goal,
        "all_rows_overall_classifier": report["metrics"]["all"]["overall"]["classifier"],
        "quality_folder": str(folder), "timings_s": timings, "total_s": round(time.perf_counter() - started, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
