"""One student row of several ``nnunet-medaka experiment`` runs that differ in a student setting, side by side.

The runs must share the split, seeds, teachers and pseudo-labels (one experiment folder run again with one ``--set``
changed redoes only the student units; copy its ``results.csv`` away before each rerun). For each run: the row's mean
IoU ± std over seeds, its difference to the teacher's fold ensemble of the same run (the fair baseline) and to the
first run's row (the base recipe), each with its 95 % paired bootstrap interval over test cases, per seed, and the
verdict by the rule of ``results.md`` (interval excludes 0 *and* every seed has that sign). Prints one JSON object,
then a Markdown table.

    python benchmarks/recipes_table.py --row pseudo-all --fraction 0.3 \\
        "base=exp_base.csv" "labeled_share 0.5=exp_share.csv" "pool 20=exp_pool20.csv"
"""
import argparse
import json
import statistics
from pathlib import Path

from nnunet_medaka.training.comparison import compare_rows, format_comparison, read_results_csv, summarize_table


def _per_seed_means(table: list, row: str, fraction: float) -> list:
    entry = summarize_table(table, rows=[row], fractions=[fraction], organs=[])
    return list(entry[0]["iou"]["overall"]["per_seed"].values()) if entry else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="NAME=RESULTS_CSV", help="the first is the base recipe")
    p.add_argument("--row", default="pseudo-all", help="the student row to compare (default pseudo-all)")
    p.add_argument("--fraction", type=float, required=True, help="labeled fraction, as in the experiment")
    p.add_argument("--bootstrap", type=int, default=2000)
    args = p.parse_args()

    runs = []
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{spec!r}: expected NAME=RESULTS_CSV")
        runs.append((name, read_results_csv(Path(path))))
    base_name, base = runs[0]
    tag = lambda name: f"{args.row} [{name}]"
    out = []
    for name, table in runs:
        mine = [dict(r, row=tag(name)) for r in table if r["row"] == args.row]
        if not mine:
            raise SystemExit(f"{name}: no row {args.row!r} at fraction {args.fraction:g}; check --row and the file")
        teacher = [r for r in table if r["row"] == "teacher"]
        seeds = _per_seed_means(mine, tag(name), args.fraction)
        entry = {"name": name, "mean_iou": statistics.mean(seeds), "std": statistics.stdev(seeds) if len(seeds) > 1
                 else None, "per_seed": seeds,
                 "vs_teacher": compare_rows(mine + teacher, (tag(name), args.fraction), ("teacher", args.fraction),
                                            n_resamples=args.bootstrap)}
        if name != base_name:
            base_rows = [dict(r, row=tag(base_name)) for r in base if r["row"] == args.row]
            entry["vs_base"] = compare_rows(mine + base_rows, (tag(name), args.fraction),
                                            (tag(base_name), args.fraction), n_resamples=args.bootstrap)
        out.append(entry)
    teacher_seeds = _per_seed_means(base, "teacher", args.fraction)
    print(json.dumps({"row": args.row, "fraction": args.fraction, "teacher_mean_iou": teacher_seeds,
                      "runs": out}, indent=2))
    print(f"\nteacher fold ensemble: {statistics.mean(teacher_seeds):.3f} ± "
          f"{statistics.stdev(teacher_seeds) if len(teacher_seeds) > 1 else 0:.3f} (base run)\n")
    print(f"| {args.row} recipe | mean IoU ± std | Δ vs teacher ensemble [95 % CI] (per seed; verdict) | "
          f"Δ vs {base_name} [95 % CI] (per seed; verdict) |")
    print("|---|---|---|---|")
    for e in out:
        std = f" ± {e['std']:.3f}" if e["std"] is not None else ""
        print(f"| {e['name']} | {e['mean_iou']:.3f}{std} | {format_comparison(e['vs_teacher'])} | "
              f"{format_comparison(e['vs_base']) if 'vs_base' in e else '—'} |")


if __name__ == "__main__":
    main()
