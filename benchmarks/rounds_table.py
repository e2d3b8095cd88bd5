"""Self-training rounds of several ``nnunet-medaka run --set rounds=N`` folders (one per seed), side by side.

Each run folder holds the test-set evaluation of its teacher (the fold ensemble), its supervised baseline (fold
``all``) and every round's students (``predictions/<role>/summary.json``, ``rounds/round<r>/predictions/student/``).
For every round: mean IoU ± std over the runs, its difference to the teacher ensemble and to the previous round,
each with its 95 % paired bootstrap interval over test cases (each case's difference averaged over seeds), per
seed, and the verdict by the rule of the experiment's ``results.md``. Prints one JSON object, then a Markdown table.

    python benchmarks/rounds_table.py rounds_s0 rounds_s1 rounds_s2
"""
import argparse
import json
import statistics
from pathlib import Path

from nnunet_medaka.pipeline.layout import RunLayout
from nnunet_medaka.training.comparison import compare_rows, format_comparison, read_case_scores, summarize_table


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders, one per seed")
    p.add_argument("--bootstrap", type=int, default=2000)
    args = p.parse_args()

    table = [r for run in args.runs for r in _table(run)]
    rows = list(dict.fromkeys(r["row"] for r in table))
    out = []
    for i, row in enumerate(rows):
        entry = summarize_table(table, rows=[row], fractions=[1.0], organs=[])[0]
        seeds = list(entry["iou"]["overall"]["per_seed"].values())
        e = {"row": row, "mean_iou": statistics.mean(seeds), "std": statistics.stdev(seeds) if len(seeds) > 1 else None,
             "per_seed": seeds}
        if row != "teacher":
            e["vs_teacher"] = compare_rows(table, (row, 1.0), ("teacher", 1.0), n_resamples=args.bootstrap)
        if row.startswith("round ") and row != "round 1":
            e["vs_previous"] = compare_rows(table, (row, 1.0), (rows[i - 1], 1.0), n_resamples=args.bootstrap)
        out.append(e)
    print(json.dumps({"runs": [str(r) for r in args.runs], "rows": out}, indent=2))
    print("\n| model | mean IoU ± std | Δ vs teacher ensemble [95 % CI] (per seed; verdict) | "
          "Δ vs previous round [95 % CI] (per seed; verdict) |")
    print("|---|---|---|---|")
    for e in out:
        std = f" ± {e['std']:.3f}" if e["std"] is not None else ""
        cells = [format_comparison(e[k]) if k in e else "—" for k in ("vs_teacher", "vs_previous")]
        print(f"| {e['row']} | {e['mean_iou']:.3f}{std} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
