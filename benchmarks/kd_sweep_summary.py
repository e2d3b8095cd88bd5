"""Table of the KD settings sweep run with ``protocol_hippocampus.py --teacher-tag``.

Reads ``WORK/results/<tag>_seed<k>.json`` of every student tag ending in ``_<teacher-tag>`` and of the teacher, pairs
each student with the teacher of the same seed, reads the logged loss terms from each student's checkpoint, and prints
one JSON object (per setting: seeds, mean Dice and IoU, the student − teacher difference per seed, the gradient norm
of each loss term over the last five epochs) followed by the same as a Markdown table.

    python benchmarks/kd_sweep_summary.py --work-dir bench_output/proto --teacher-tag 2d_b8_f16_e30x100_lr0.05

``--eval-set unlabeled`` tables the scores on the unlabeled pool (``protocol_hippocampus.py --eval-set unlabeled``,
files ``<tag>_seed<k>_unlabeled.json``) instead of the test set.
"""
import argparse
import json
import re
import statistics
from pathlib import Path

import numpy as np
import torch


def loss_term_summary(checkpoint: Path) -> dict:
    """Epoch means of the KD trainer's logged loss terms and per-term gradient norms (before kd_weight and before
    nnU-Net's clipping at 12), over the first and the last five epochs: does one term dominate the step?"""
    log = torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]
    out = {}
    for key in ("train_loss_supervised", "train_loss_kd", "train_grad_norm_supervised", "train_grad_norm_kd"):
        values = np.asarray(log.get(key, []), dtype=float)
        if np.isfinite(values).any():
            out[key] = {"first5": round(float(np.nanmean(values[:5])), 4), "last5": round(float(np.nanmean(values[-5:])), 4)}
    return out


def _mean_std(values: list) -> str:
    if len(values) == 1:
        return f"{values[0]:+.3f}"
    return f"{statistics.mean(values):+.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, default=Path("bench_output/proto"))
    p.add_argument("--teacher-tag", required=True)
    p.add_argument("--eval-set", choices=("test", "unlabeled"), default="test")
    args = p.parse_args()

    results = args.work_dir / "results"
    suffix = "" if args.eval_set == "test" else re.escape(f"_{args.eval_set}")
    pattern = re.compile(rf"^(?P<setting>.+)_{re.escape(args.teacher_tag)}_seed(?P<seed>\d+){suffix}\.json$")
    teacher_file = re.compile(rf"^{re.escape(args.teacher_tag)}_seed(\d+){suffix}\.json$")
    teacher = {int(m.group(1)): json.loads(f.read_text()) for f in sorted(results.glob("*.json"))
               if (m := teacher_file.match(f.name))}
    settings: dict = {}
    for f in sorted(results.glob("*.json")):
        if (m := pattern.match(f.name)) is not None:
            settings.setdefault(m.group("setting"), {})[int(m.group("seed"))] = json.loads(f.read_text())

    rows = {}
    for setting, runs in sorted(settings.items()):
        seeds = sorted(runs)
        dice = [runs[s]["scores"]["mean"]["Dice"] for s in seeds]
        delta = [runs[s]["scores"]["mean"]["Dice"] - teacher[s]["scores"]["mean"]["Dice"] for s in seeds if s in teacher]
        terms = [loss_term_summary(Path(runs[s]["model"]) / "fold_all" / "checkpoint_final.pth") for s in seeds]
        norms = {k: round(statistics.mean(t[k]["last5"] for t in terms if k in t), 3)
                 for k in ("train_grad_norm_supervised", "train_grad_norm_kd") if any(k in t for t in terms)}
        rows[setting] = {"seeds": seeds, "mean_dice": dice,
                         "mean_iou": [runs[s]["scores"]["mean"]["IoU"] for s in seeds],
                         "per_organ_dice": {o: [runs[s]["scores"][o]["Dice"] for s in seeds]
                                            for o in runs[seeds[0]]["scores"] if o != "mean"},
                         "dice_minus_teacher": [round(d, 4) for d in delta], "grad_norm_last5_epochs": norms}
    print(json.dumps({"teacher_tag": args.teacher_tag, "eval_set": args.eval_set,
                      "teacher_mean_dice": {s: teacher[s]["scores"]["mean"]["Dice"] for s in sorted(teacher)},
                      "settings": rows}, indent=2))

    print("\n| setting | seeds | mean Dice | mean IoU | Δ Dice vs teacher (same seed) | grad norm supervised / KD (last 5 epochs) |")
    print("|---|---|---|---|---|---|")
    for setting, row in rows.items():
        norms = row["grad_norm_last5_epochs"]
        grad = (f"{norms.get('train_grad_norm_supervised', float('nan')):.3f} / "
                f"{norms.get('train_grad_norm_kd', float('nan')):.3f}") if norms else "–"
        dice = _mean_std(row["mean_dice"]).lstrip("+")
        iou = _mean_std(row["mean_iou"]).lstrip("+")
        print(f"| {setting} | {', '.join(map(str, row['seeds']))} | {dice} | {iou} | "
              f"{_mean_std(row['dice_minus_teacher']) if row['dice_minus_teacher'] else '–'} | {grad} |")


if __name__ == "__main__":
    main()
