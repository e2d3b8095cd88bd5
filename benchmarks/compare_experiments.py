"""Compare one row of two ``nnunet-medaka experiment`` folders that differ in one setting (e.g. ``kd_weight``).

Both experiments must share the split, seeds, teachers and pseudo-labels (the second run of the same folder with one
``--set`` changed redoes only the units that read it), so that only the compared row's students differ. Per fraction,
prints the mean IoU of each, the paired difference B − A with its bootstrap interval over test cases and per seed,
and the verdict by the rule of ``results.md`` (interval excludes 0 *and* every seed has that sign). One JSON object,
then the same as Markdown lines.

    python benchmarks/compare_experiments.py exp_kd1/results.csv exp/results.csv --row pseudo-qc-kd \\
        --names "kd_weight 1" "kd_weight 0.3"
"""
import argparse
import json
import statistics
from pathlib import Path

from nnunet_medaka.training.comparison import compare_rows, read_results_csv, summarize_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="results.csv of experiment A")
    p.add_argument("b", type=Path, help="results.csv of experiment B")
    p.add_argument("--row", default="pseudo-qc-kd", help="row to compare (default pseudo-qc-kd)")
    p.add_argument("--names", nargs=2, default=("A", "B"), metavar=("A", "B"), help="what differs, for the output")
    p.add_argument("--bootstrap", type=int, default=2000)
    args = p.parse_args()

    a, b = read_results_csv(args.a), read_results_csv(args.b)
    tag_a, tag_b = f"{args.row} [{args.names[0]}]", f"{args.row} [{args.names[1]}]"
    table = ([dict(r, row=tag_a) for r in a if r["row"] == args.row]
             + [dict(r, row=tag_b) for r in b if r["row"] == args.row])
    fractions = sorted({r["fraction"] for r in table if r["row"] == tag_a}
                       & {r["fraction"] for r in table if r["row"] == tag_b})
    if not fractions:
        raise SystemExit(f"row {args.row!r} is not in both files at a common fraction; check --row and the files")
    out = []
    for fraction in fractions:
        c = compare_rows(table, (tag_b, fraction), (tag_a, fraction), n_resamples=args.bootstrap)
        # each side's mean IoU per seed, as results.md computes it (cases: mean over organs; NaN left out)
        per_seed = [list(e["iou"]["overall"]["per_seed"].values())
                    for e in summarize_table(table, rows=[tag_a, tag_b], fractions=[fraction], organs=[])]
        out.append({"fraction": fraction, "mean_iou": dict(zip(args.names, per_seed)), "b_minus_a": c})
    print(json.dumps({"row": args.row, "a": str(args.a), "b": str(args.b), "names": list(args.names),
                      "comparisons": out}, indent=2))
    for o in out:
        c = o["b_minus_a"]
        ms = {k: f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}"
              for k, v in o["mean_iou"].items()}
        interval = f"[{c['low']:+.3f}, {c['high']:+.3f}]" if c["low"] is not None else "(no interval)"
        print(f"- fraction {o['fraction']:g}: {args.row} mean IoU {ms[args.names[0]]} ({args.names[0]}) vs "
              f"{ms[args.names[1]]} ({args.names[1]}); {args.names[1]} − {args.names[0]} {c['mean']:+.3f} {interval} "
              f"over {c['n']} test cases, per seed {' / '.join(f'{d:+.3f}' for d in c['per_seed'])}: {c['verdict']}")


if __name__ == "__main__":
    main()
