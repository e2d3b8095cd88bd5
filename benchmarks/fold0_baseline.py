"""The old baseline beside the new ones: each teacher's fold 0 alone, scored on an experiment's test cases.

Earlier versions of ``run`` and ``experiment`` scored the teacher as its cross-validation fold 0, a model trained on
(k-1)/k of the labeled cases, while the students learned from pseudo-labels of the ensemble of all folds. This
script predicts the test cases of every (fraction, seed) of a finished experiment with teacher fold 0 alone
(``nnUNetv2_predict -f 0``, ``nnUNetv2_evaluate_folder``: stock commands, logged into ``OUT``), adds those scores as
the row ``teacher-fold0`` and compares every row with it and with the stronger of the two fair baselines
(``teacher``: the fold ensemble; ``supervised``: one model on every labeled case), by the rule of ``results.md``
(paired bootstrap over test cases, and per seed). One JSON object, then the same as Markdown lines.

    python benchmarks/fold0_baseline.py /work/exp --out /work/exp_fold0
"""
import argparse
import json
from pathlib import Path

from nnunet_medaka.environment import nnunet_folder, run_stock_command
from nnunet_medaka.files import read_json
from nnunet_medaka.pipeline.layout import ExperimentLayout, unit_key
from nnunet_medaka.training.comparison import compare_rows, mean_std, nanmean, read_case_scores, read_results_csv
from nnunet_medaka.training.presets import get_preset
from nnunet_medaka.training.stock import TEACHER_TRAINER, Model, evaluate_args, plans_name, predict_args, stock_environ


def fold0_rows(experiment: Path, out: Path, device: str, seeds=None) -> list:
    """``results.csv``-style lines of teacher fold 0 for every (fraction, seed) of the experiment (or ``seeds``)."""
    layout = ExperimentLayout(experiment)
    record, ids = read_json(layout.settings), read_json(layout.ids)
    settings = {**get_preset(record["preset"]), **record["settings"]}
    raw_root, results_root = nnunet_folder("nnUNet_raw"), nnunet_folder("nnUNet_results")
    lines = []
    for fraction in record["fractions"]:
        for seed in seeds or record["seeds"]:
            ident = ids[unit_key(fraction, seed)]
            raw = next(raw_root.glob(f"Dataset{ident:03d}_*"))
            dataset_json = read_json(raw / "dataset.json")
            model = Model(ident, TEACHER_TRAINER, plans_name(settings), settings["configuration"],
                          results_root / raw.name)
            target = out / f"f{fraction:g}_s{seed}"
            if not (target / "summary.json").is_file():
                env = stock_environ(device=device)
                run_stock_command("nnUNetv2_predict", predict_args(model, raw / "imagesTs", target, [0], device,
                                                                   bool(settings["mirroring"])),
                                  env=env, log_file=out / f"predict_f{fraction:g}_s{seed}.log")
                run_stock_command("nnUNetv2_evaluate_folder", evaluate_args(raw / "labelsTs", target, model.folder),
                                  env=env, log_file=out / f"evaluate_f{fraction:g}_s{seed}.log")
            labels = dataset_json["labels"]
            scores = read_case_scores(target / "summary.json", labels, dataset_json["file_ending"])
            for case, organs in sorted(scores.items()):
                for organ, values in organs.items():
                    lines.append({"row": "teacher-fold0", "fraction": float(fraction), "seed": int(seed), "case": case,
                                  "organ": organ, "IoU": values["IoU"], "Dice": values["Dice"]})
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path, help="a finished experiment folder")
    p.add_argument("--out", type=Path, required=True, help="folder for the fold-0 predictions and their logs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: the experiment's)")
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    table = [r for r in read_results_csv(ExperimentLayout(args.experiment).csv) if not args.seeds or r["seed"] in args.seeds]
    table += fold0_rows(args.experiment, args.out, args.device, args.seeds)
    rows = list(dict.fromkeys(r["row"] for r in table))
    fractions = sorted({r["fraction"] for r in table}, reverse=True)
    seeds = sorted({r["seed"] for r in table})
    result = {"experiment": str(args.experiment), "seeds": seeds, "fractions": {}}
    md = []
    for fraction in fractions:
        mean = {}
        for r in rows:  # per seed: the mean over test cases of the mean IoU over organs
            cases: dict = {}
            for t in table:
                if t["row"] == r and t["fraction"] == fraction:
                    cases.setdefault(t["seed"], {}).setdefault(t["case"], []).append(t["IoU"])
            if cases:
                mean[r] = mean_std({s: nanmean([nanmean(v) for v in c.values()]) for s, c in sorted(cases.items())})
        strongest = max((r for r in ("teacher", "supervised") if r in mean), key=lambda r: mean[r]["mean"])
        entry = {"stronger_baseline": strongest, "rows": {}}
        md += [f"Fraction {fraction:g}, seeds {', '.join(map(str, seeds))}; Δ mean IoU with its 95 % paired bootstrap "
               f"interval over test cases and per seed; stronger fair baseline: {strongest}.", "",
               "| row | mean IoU ± std over seeds | per seed | Δ vs teacher fold 0 (old baseline) | "
               f"Δ vs {strongest} (stronger fair baseline) |", "|---|---|---|---|---|"]
        cell = lambda c: (f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] (per seed "
                          + ", ".join(f"{d:+.3f}" for d in c["per_seed"]) + f"; {c['verdict']})")
        for r, m in mean.items():
            vs_old = compare_rows(table, (r, fraction), ("teacher-fold0", fraction), n_resamples=args.bootstrap)
            vs_fair = compare_rows(table, (r, fraction), (strongest, fraction), n_resamples=args.bootstrap)
            entry["rows"][r] = {"iou": m, "vs_fold0": vs_old, "vs_stronger": vs_fair}
            std = "n/a" if m["std"] is None else f"{m['std']:.3f}"
            md.append(f"| {r} | {m['mean']:.3f} ± {std} | " + ", ".join(f"{v:.3f}" for v in m["per_seed"].values())
                      + (" | — |" if r == "teacher-fold0" else f" | {cell(vs_old)} |")
                      + (" — |" if r == strongest else f" {cell(vs_fair)} |"))
        md.append("")
        result["fractions"][f"{fraction:g}"] = entry
    print(json.dumps(result, indent=1, default=str))
    print("\n".join(md))


if __name__ == "__main__":
    main()
