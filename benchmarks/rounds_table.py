"""Self-training rounds of several ``nnunet-medaka run --set rounds=N`` folders (one per seed), side by side.

Each run folder holds the test-set evaluation of its teacher (the fold ensemble), its supervised baseline (fold
``all``) and every round's students (``predictions/<role>/summary.json``, ``rounds/round<r>/predictions/student/``).
For every round: mean IoU ± std over the runs, its difference to the teacher ensemble and to the previous round,
each with its 95 % paired bootstrap interval over test cases (each case's difference averaged over seeds), per
seed, and the verdict by the rule of the experiment's ``results.md``. Prints one JSON object, then a Markdown table.

``--against NAME=RESULTS_CSV`` adds one student row (``--row``, ``--fraction``) of an ``experiment`` run on the same
units (the run folders reused its teachers: the teacher's scores must match case for case) and compares every round
with it, e.g. round 1's fold students with the experiment's single fold-``all`` student on the same pseudo-labels.

    python benchmarks/rounds_table.py rounds_s0 rounds_s1 rounds_s2
    python benchmarks/rounds_table.py rounds_s0 rounds_s1 rounds_s2 --against "fold all=results.csv" \\
        --row pseudo-qc-kd --fraction 0.3
"""
import argparse
import json
import statistics
from pathlib import Path

from nnunet_medaka.pipeline.layout import RunLayout
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.training.comparison import (compare_rows, format_comparison, read_case_scores, read_results_csv,
                                                 summarize_table)


def _table(run: Path) -> list:
    """The run's test scores as rows of an experiment's results table (``fraction`` 1: one labeled set): its
    teacher, supervised baseline and the students of every round its rounds table (``rounds.json``) says ran."""
    layout = RunLayout(run)
    results = json.loads(layout.results.read_text())
    seed = json.loads(layout.settings.read_text())["seed"]
    dataset = json.loads((Path(results["paths"]["raw"]) / "dataset.json").read_text())
    summaries = {role: layout.predictions(role) for role in ("teacher", "supervised")}
    summaries["round 1"] = layout.predictions("student")
    rounds = json.loads(layout.rounds.read_text())["rounds"] if layout.rounds.is_file() else []
    summaries.update({f"round {r['round']}": layout.round(r["round"]).predictions("student")
                      for r in rounds if r["round"] >= 2 and r["ran"]})
    table = []
    for row, folder in summaries.items():
        scores = read_case_scores(folder / "summary.json", dataset["labels"], dataset["file_ending"])
        table += [{"row": row, "fraction": 1.0, "seed": seed, "case": case, "organ": organ, **values}
                  for case, organs in scores.items() for organ, values in organs.items()]
    return table


def _seed_means(table: list, row: str) -> list:
    """The row's mean IoU per seed."""
    return list(summarize_table(table, rows=[row], fractions=[1.0], organs=[])[0]["iou"]["overall"]["per_seed"].values())


def _experiment_row(args: argparse.Namespace, table: list) -> list:
    """The ``--against`` experiment's ``--row`` as rows of this table (fraction 1, the run folders' seeds), after
    checking that its teacher scored every case as the runs' teacher did (the same models on the same cases)."""
    name, sep, path = args.against.partition("=")
    if not sep or not name or not path or args.fraction is None:
        raise SystemExit("--against NAME=RESULTS_CSV needs --fraction (and --row, default pseudo-qc-kd)")
    theirs = [r for r in read_results_csv(Path(path)) if r["fraction"] == args.fraction]
    seeds = {r["seed"] for r in table}
    key = lambda r: (r["seed"], r["case"], r["organ"])
    ours_teacher = {key(r): r["IoU"] for r in table if r["row"] == "teacher"}
    their_teacher = {key(r): r["IoU"] for r in theirs if r["row"] == "teacher" and r["seed"] in seeds}
    same = ours_teacher.keys() == their_teacher.keys() and all(
        abs(v - their_teacher[k]) < 1e-5 for k, v in ours_teacher.items())  # results.csv keeps 6 decimals
    if not same:
        raise MedakaError(f"{path}: its teacher's test scores at fraction {args.fraction:g} differ from the run "
                          "folders' teacher: the runs did not reuse this experiment's teachers, so their rows are not "
                          "paired; pass the results.csv of the experiment whose unit datasets the runs used")
    rows = [dict(r, row=name, fraction=1.0) for r in theirs if r["row"] == args.row and r["seed"] in seeds]
    if not rows:
        raise SystemExit(f"{path}: no row {args.row!r} at fraction {args.fraction:g}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders, one per seed")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--against", metavar="NAME=RESULTS_CSV", help="an experiment's results.csv on the same units")
    p.add_argument("--row", default="pseudo-qc-kd", help="the experiment's row to compare with (with --against)")
    p.add_argument("--fraction", type=float, help="the experiment's labeled fraction (with --against)")
    args = p.parse_args()

    table = [r for run in args.runs for r in _table(run)]
    other = _experiment_row(args, table) if args.against else None
    rows = list(dict.fromkeys(r["row"] for r in table))
    table += other or []
    out = []
    for i, row in enumerate(rows):
        seeds = _seed_means(table, row)
        e = {"row": row, "mean_iou": statistics.mean(seeds), "std": statistics.stdev(seeds) if len(seeds) > 1 else None,
             "per_seed": seeds}
        if row != "teacher":
            e["vs_teacher"] = compare_rows(table, (row, 1.0), ("teacher", 1.0), n_resamples=args.bootstrap)
        if row.startswith("round ") and row != "round 1":
            e["vs_previous"] = compare_rows(table, (row, 1.0), (rows[i - 1], 1.0), n_resamples=args.bootstrap)
        if other and row.startswith("round "):
            e["vs_against"] = compare_rows(table, (row, 1.0), (other[0]["row"], 1.0), n_resamples=args.bootstrap)
        out.append(e)
    if other:
        seeds = _seed_means(table, other[0]["row"])
        out.append({"row": other[0]["row"], "mean_iou": statistics.mean(seeds), "per_seed": seeds,
                    "std": statistics.stdev(seeds) if len(seeds) > 1 else None,
                    "vs_teacher": compare_rows(table, (other[0]["row"], 1.0), ("teacher", 1.0),
                                               n_resamples=args.bootstrap)})
    print(json.dumps({"runs": [str(r) for r in args.runs], "rows": out}, indent=2))
    keys = ("vs_teacher", "vs_previous") + (("vs_against",) if other else ())
    print("\n| model | mean IoU ± std | Δ vs teacher ensemble [95 % CI] (per seed; verdict) | "
          "Δ vs previous round [95 % CI] (per seed; verdict) |"
          + (f" Δ vs {other[0]['row']} [95 % CI] (per seed; verdict) |" if other else ""))
    print("|---|---|---|---|" + ("---|" if other else ""))
    for e in out:
        std = f" ± {e['std']:.3f}" if e["std"] is not None else ""
        cells = [format_comparison(e[k]) if k in e else "—" for k in keys]
        print(f"| {e['row']} | {e['mean_iou']:.3f}{std} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
