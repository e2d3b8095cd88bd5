"""Pseudo-labeling throughput: ``nnunet-medaka pseudolabel`` against plain ``nnUNetv2_predict`` on the same cases.

Runs, interleaved ``--repeats`` times on the same images and machine:

``stock_seq``   ``nnUNetv2_predict ... -npp 0 -nps 0`` (nnU-Net in one process, as ``pseudolabel`` runs it)
``stock_mp``    ``nnUNetv2_predict`` with its default worker pools (``-npp 3 -nps 3``)
``pl_none``     ``nnunet-medaka pseudolabel --acceptance none`` (prediction + records, no quality scoring)
``pl_quality``  ``nnunet-medaka pseudolabel -q MODEL`` (prediction + in-memory quality scoring)

and prints one JSON object: per run the command's wall time, cases/s (whole command, start-up included), the
in-loop cases/s that ``pseudolabel`` reports, and the peak memory of the whole process tree (sum of the RSS of the
command and its workers, sampled every 0.1 s); medians over repeats; and the quality scoring's share
(``pl_quality`` against ``stock_seq``; the issue's goal is <= 10 % on top of nnU-Net's own prediction time).

Images: ``--images DIR`` (nnU-Net naming), or ``--oof-fold K`` to take the teacher's fold-K validation cases (never
seen by that fold) from its raw dataset, linked under new case ids ``u_<case>`` so that they act as unlabeled
scans with ground truth. Without ``--quality-model`` a *stand-in* model is written: real feature computation
(``score_case``), decision trees on the organ index only, so its timing is representative and its decisions are
meaningless (the output says so).

    python benchmarks/pseudolabel_throughput.py --teacher RESULTS/Dataset004_Hippocampus/SupervisedTrainer__P__2d \\
        --teacher-raw RAW/Dataset004_Hippocampus --oof-fold 0 --work-dir bench_output/pl_throughput --disable-tta
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def _tree_rss_kb(root: int) -> int:
    """Sum of VmRSS over ``root`` and all its descendants (from /proc)."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def timed(cmd: list, env: dict, log: Path) -> dict:
    """Run a command; wall seconds and the peak RSS of its process tree."""
    peak = [0]
    with open(log, "w") as out:
        out.write("$ " + " ".join(map(str, cmd)) + "\n")
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)

        def sample():
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        sampler.join()
    if code != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed (exit {code}); see {log}")
    return {"wall_s": round(wall, 2), "peak_tree_rss_mb": round(peak[0] / 1024, 1)}


def oof_cases(teacher: Path, raw: Path, preprocessed: Path, fold: int, out: Path, limit: int) -> tuple[Path, Path]:
    """Link the teacher fold's validation cases as unlabeled images ``u_<case>`` (+ their labels as ground truth)."""
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    dataset = json.loads((teacher / "dataset.json").read_text())
    ending, n_channels = dataset["file_ending"], len(dataset["channel_names"])
    images, gt = out / "images", out / "gt"
    shutil.rmtree(out, ignore_errors=True)
    images.mkdir(parents=True)
    gt.mkdir()
    cases = sorted(splits[fold]["val"])[:limit] if limit else sorted(splits[fold]["val"])
    for case in cases:
        for c in range(n_channels):
            os.link(raw / "imagesTr" / f"{case}_{c:04d}{ending}", images / f"u_{case}_{c:04d}{ending}")
        os.link(raw / "labelsTr" / f"{case}{ending}", gt / f"u_{case}{ending}")
    return images, gt


def standin_quality_model(path: Path, teacher: Path) -> Path:
    """A quality model with real features and trivial trees (timing only)."""
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    from nnunet_medaka.quality.features import FEATURE_NAMES
    from nnunet_medaka.quality.score import QualityModel, save_quality_model

    labels = {k: int(v) for k, v in json.loads((teacher / "dataset.json").read_text())["labels"].items()
              if k not in ("background", "ignore")}
    organs = sorted(labels, key=labels.get)
    x = np.zeros((len(organs), len(FEATURE_NAMES)))
    x[:, 0] = np.arange(len(organs))
    good = [i % 2 for i in range(len(organs))] if len(organs) > 1 else [1]
    trainer, plans, configuration = teacher.name.split("__")
    model = QualityModel(
        labels=labels, tau=0.5, accept_threshold=0.5,
        teacher={"dataset": teacher.parent.name, "trainer": trainer, "plans": plans, "configuration": configuration,
                 "model_folder": teacher.name},
        feature_names=tuple(FEATURE_NAMES), reference={},
        regressor=DecisionTreeRegressor().fit(x, np.asarray(good, float)),
        classifier=DecisionTreeClassifier().fit(x, good) if len(set(good)) > 1 else None,
        training={"note": "stand-in for timing; decisions are meaningless"})
    return save_quality_model(model, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, required=True, help="model folder Trainer__Plans__configuration")
    p.add_argument("--folds", nargs="+", default=["0"])
    p.add_argument("--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--images", type=Path, help="unlabeled images (nnU-Net naming)")
    p.add_argument("--ground-truth", type=Path)
    p.add_argument("--oof-fold", type=int, help="use this teacher fold's validation cases as the unlabeled images")
    p.add_argument("--teacher-raw", type=Path, help="teacher's raw dataset (for --oof-fold)")
    p.add_argument("--teacher-preprocessed", type=Path, help="teacher's preprocessed dataset (splits_final.json)")
    p.add_argument("--cases", type=int, default=0, help="at most this many cases (0: all)")
    p.add_argument("--quality-model", type=Path)
    p.add_argument("--work-dir", type=Path, default=Path("bench_output/pseudolabel_throughput"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--disable-tta", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", nargs="+", default=["stock_seq", "pl_none", "pl_quality", "stock_mp"])
    args = p.parse_args()

    from nnunet_medaka.environment import plugin_environ

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    teacher = args.teacher.resolve()
    results_root = teacher.parent.parent
    env = plugin_environ()
    env.update(nnUNet_results=str(results_root), nnUNet_raw=str(work / "raw"),
               nnUNet_preprocessed=str(work / "preprocessed"), nnUNet_compile="f", nnUNet_def_n_proc="2")
    for k in ("nnUNet_raw", "nnUNet_preprocessed"):
        Path(env[k]).mkdir(exist_ok=True)
    if args.oof_fold is not None:
        pre = args.teacher_preprocessed or Path(str(teacher.parent).replace("nnUNet_results", "nnUNet_preprocessed"))
        images, gt = oof_cases(teacher, args.teacher_raw, pre, args.oof_fold, work / "cases", args.cases)
    else:
        images, gt = args.images, args.ground_truth
    n_cases = len({f.name.rsplit("_", 1)[0] for f in images.iterdir()})
    quality = args.quality_model or standin_quality_model(work / "standin_quality.joblib", teacher)
    trainer, plans, configuration = teacher.name.split("__")
    dataset = teacher.parent.name
    tta = ["--disable_tta"] if args.disable_tta else []
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def command(run: str, out: Path) -> list:
        if run.startswith("stock"):
            workers = ["-npp", "0", "-nps", "0"] if run == "stock_seq" else ["-npp", "3", "-nps", "3"]
            return [VENV_BIN / "nnUNetv2_predict", "-i", images, "-o", out, "-d", dataset, "-c", configuration, "-tr",
                    trainer, "-p", plans, "-f", *args.folds, "-chk", args.checkpoint, "-device", args.device, *tta, *workers,
                    "--disable_progress_bar"]
        cmd = [VENV_BIN / "nnunet-medaka", "pseudolabel", "-m", teacher, "-f", *args.folds, "-chk", args.checkpoint, "-i", images, "-o", out,
               "-device", args.device, "--quiet", *(["--disable-tta"] if args.disable_tta else [])]
        if gt is not None:
            cmd += ["--ground-truth", gt]
        return cmd + (["-q", quality] if run == "pl_quality" else ["--acceptance", "none"])

    measured: dict = {run: [] for run in args.runs}
    for repeat in range(args.repeats):
        for run in args.runs:
            out = work / "out" / f"{run}_{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            result = timed(command(run, out), env, logs / f"{run}_{repeat}.log")
            result["cases_per_s"] = round(n_cases / result["wall_s"], 4)
            if run.startswith("pl"):
                timing = json.loads((out / "runs" / "part-0-of-1.json").read_text())
                result["in_loop_cases_per_s"] = timing["cases_per_second"]
                records = [json.loads(f.read_text()) for f in sorted((out / "records").glob("*.json"))]
                result["score_s_per_case"] = round(statistics.mean(r["seconds"]["score"] for r in records), 4)
                result["predict_s_per_case"] = round(statistics.mean(r["seconds"]["predict"] for r in records), 4)
                result["export_s_per_case"] = round(statistics.mean(r["seconds"]["export"] for r in records), 4)
            measured[run].append(result)
            print(run, repeat, json.dumps(result), file=sys.stderr, flush=True)

    def median(run, key):
        values = [r[key] for r in measured.get(run, []) if r.get(key) is not None]
        return statistics.median(values) if values else None

    summary = {run: {k: median(run, k) for k in measured[run][0]} for run in measured}
    report = {"teacher": str(teacher), "folds": args.folds, "checkpoint": args.checkpoint, "cases": n_cases, "tta": not args.disable_tta,
              "device": args.device, "repeats": args.repeats, "quality_model": str(quality),
              "quality_model_is_standin": args.quality_model is None, "runs": measured, "median": summary}
    if "pl_quality" in summary and "stock_seq" in summary:
        report["pl_quality_wall_over_stock_seq"] = round(summary["pl_quality"]["wall_s"] / summary["stock_seq"]["wall_s"], 3)
    if "pl_quality" in summary and "pl_none" in summary:
        report["quality_scoring_share_of_wall"] = round(
            (summary["pl_quality"]["wall_s"] - summary["pl_none"]["wall_s"]) / summary["pl_none"]["wall_s"], 3)
        report["score_over_predict_in_loop"] = round(
            summary["pl_quality"]["score_s_per_case"] / (summary["pl_quality"]["predict_s_per_case"]
                                                         + summary["pl_quality"]["export_s_per_case"]), 3)
    for run in ("pl_none", "pl_quality"):
        out = work / "out" / f"{run}_0"
        if (out / "pseudolabel_summary.json").is_file():
            report[f"{run}_summary"] = json.loads((out / "pseudolabel_summary.json").read_text())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
