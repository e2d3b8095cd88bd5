"""Self-training rounds of ``run`` (``--set rounds=N``): the students of round r are the teacher of round r+1.

Round 1 is the run's own stages. Every later round repeats the method with the previous round's students as its
teacher, in every sense the first round had one: their fold ensemble pseudo-labels the unlabeled pool again, a
quality classifier is trained on *their* out-of-fold predictions (so ``filter`` and its thresholds follow the new
teacher; the earlier teachers' out-of-fold predictions join its training rows as more real mistakes), a new student
dataset is built from the labeled cases plus the newly accepted pseudo-labels, and new students train every
cross-validation fold with KD against fold k of the new teacher. That is why ``rounds > 1`` asks for
``student_folds`` = every CV fold: a round's students must leave labeled cases out to become a teacher.

Early stop. Round r runs only when round r-1's students beat their own teacher on the evidence a user has without
test labels: the mean out-of-fold Dice on the labeled cases from nnU-Net's final validation, by more than
``round_min_gain``. The evidence is slightly optimistic for students: the pseudo-labels a fold-k student learns
from were made by an ensemble that had seen fold k's validation cases (its KD teacher, fold k, had not). The
rounds table names, by the same evidence, which round's model to deploy (never students it puts below their
teacher, even where a negative ``round_min_gain`` let their round run), and scores every round on the test cases.

Nodes: ``round<r>/quality`` (the early-stop decision, then ``qc train``), ``round<r>/pseudolabel``,
``round<r>/student-dataset``, ``round<r>/student``, ``round<r>/evaluate``, and one ``rounds`` node that writes
``rounds.json``, ``rounds.md`` and ``rounds.png``. A stopped round's nodes finish at once and say why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from nnunet_medaka.files import read_json, remove, write_json_atomic, write_text_atomic
from nnunet_medaka.pipeline.engine import Step
from nnunet_medaka.pipeline.layout import RunLayout
from nnunet_medaka.pipeline.steps import (
    Unit, build_student_step, evaluate_step, pseudolabel_step, quality_step, train_step,
)
from nnunet_medaka.training.stock import STUDENT_TRAINER, Model

__all__ = ["ROUND_STEPS", "chosen_round", "round_dataset", "round_steps", "rounds_step", "rounds_summary_text"]

ROUND_STEPS = ("quality", "pseudolabel", "student-dataset", "student", "evaluate")
DECISION_FILE = "decision.json"


def round_dataset(layout: RunLayout, raw_root: Path, r: int, first: tuple[int, str], *, record: bool) -> tuple[int, str]:
    """``(id, DatasetXXX_Name)`` of round r's student dataset: the one the run recorded, else the first free id
    after the first round's (recorded in ``student_dataset.json`` unless ``record`` is False, as in a dry run)."""
    from nnunet_medaka.conversion.raw_dataset import free_dataset_ids, reserve_dataset_ids, taken_dataset_ids

    info = read_json(layout.student, what="the run's student dataset id") if layout.student.is_file() else {}
    rounds = info.get("rounds", {})
    if str(r) in rounds:
        return int(rounds[str(r)]["id"]), rounds[str(r)]["name"]
    taken = taken_dataset_ids(raw_root, except_owner=layout.student) | {first[0]} | {int(v["id"]) for v in rounds.values()}
    ident = free_dataset_ids(1, first[0] + 1, taken, fix=f"free one in {raw_root}")[0]
    name = f"Dataset{ident:03d}_{first[1].split('_', 1)[1]}Round{r}"
    if record:
        write_json_atomic(layout.student, {**info, "rounds": {**rounds, str(r): {"id": ident, "name": name}}})
        reserve_dataset_ids(raw_root, [ident], owner=layout.student)
    return ident, name


def _decision(folder: Path) -> Optional[dict]:
    file = folder / DECISION_FILE
    return read_json(file, what="a round's early-stop decision") if file.is_file() else None


def _evidence(students: Model, teacher: Model, folds: list, min_gain: float) -> dict:
    """Out-of-fold Dice of a round's students and of their teacher on the labeled cases, and whether the students
    improved on it by more than ``min_gain``."""
    from nnunet_medaka.training.evaluation import out_of_fold_dice

    s, t = out_of_fold_dice(students.folder, folds), out_of_fold_dice(teacher.folder, folds)
    gain = s["dice"] - t["dice"]
    return {"students_dice": round(s["dice"], 4), "teacher_dice": round(t["dice"], 4), "gain": round(gain, 4),
            "n_cases": s["n_cases"], "min_gain": min_gain, "improved": gain > min_gain}


def _gated(step: Step, folder: Path, r: int) -> Step:
    """``step``, unless round r was stopped: then it finishes at once and says so."""
    def run(say) -> dict:
        decision = _decision(folder)
        if decision is None or not decision["continue"]:
            say(f"round {r} stopped: {decision['reason'] if decision else 'no decision recorded'}")
            return {"stopped": True}
        return step.run(say)

    return Step(step.commands, run, step.reset)


def round_steps(r: int, *, unit: Unit, previous: Model, earlier: Sequence[Model], dataset: tuple[int, str],
                layout: RunLayout, kd: list, init: Callable, ground_truth: Path, last: bool,
                prior_folder: Optional[Path]) -> dict:
    """Round r's steps by name (`ROUND_STEPS`): ``unit`` has the round's folders and ``previous`` (round r-1's
    students) as its teacher; ``earlier`` the models before it, oldest first (the last one is round r-1's teacher,
    the early-stop evidence; all of them add their out-of-fold predictions, real mistakes, to the quality
    classifier's training rows); ``prior_folder`` round r-1's folder (None for r = 2, whose previous round is the
    run's own stages)."""
    s = unit.settings
    folder = unit.folders.folder
    student = unit.model(STUDENT_TRAINER, dataset)
    quality = quality_step(unit, extra=earlier)
    previous_teacher = earlier[-1]

    def decide(say) -> dict:
        prior = _decision(prior_folder) if prior_folder is not None else {"continue": True}
        if prior is None or not prior["continue"]:
            decision = {"round": r, "continue": False, "reason": f"round {r - 1} did not run"}
        else:
            evidence = _evidence(previous, previous_teacher, unit.folds, s["round_min_gain"])
            decision = {"round": r, "continue": evidence["improved"], "evidence": evidence,
                        "reason": f"round {r - 1}'s students' out-of-fold Dice on the labeled cases "
                                  f"{evidence['students_dice']:.4f} vs their teacher's {evidence['teacher_dice']:.4f} "
                                  f"({evidence['n_cases']} cases): a gain of {evidence['gain']:+.4f}, "
                                  f"{'more' if evidence['improved'] else 'not more'} than round_min_gain "
                                  f"{s['round_min_gain']:g}"}
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / DECISION_FILE, decision)
        say(("round %d runs: " if decision["continue"] else "round %d stopped: ") % r + decision["reason"])
        if not decision["continue"]:
            return {"decision": decision}
        return {"decision": decision, **quality.run(say)}

    def evaluate() -> Step:
        commands, work = evaluate_step(unit, student, unit.folds, "student", model_placeholder=True)
        return Step(commands, lambda say: {"summary": str(work())}, reset=lambda: remove(unit.folders.predictions("student")))

    kd = [(k, v) for k, v in kd if k != "teacher"] + [("teacher", str(previous.folder))]
    return {
        "quality": Step(lambda: [f"# round {r} runs when round {r - 1}'s students beat their teacher's out-of-fold "
                                 f"Dice by more than {s['round_min_gain']:g}", *quality.commands()], decide,
                        reset=lambda: remove(folder / DECISION_FILE, unit.folders.quality)),
        "pseudolabel": _gated(pseudolabel_step(unit, unit.folders.pseudolabels, acceptance=s["acceptance"],
                                               quality=unit.folders.quality, ground_truth=ground_truth), folder, r),
        "student-dataset": _gated(build_student_step(
            unit, unit.folders.pseudolabels, dataset, settings=kd, keep=("raw", "preprocessed", "plans", "labeled", "pseudo"),
            reset=[unit.roots["nnUNet_raw"] / dataset[1], unit.roots["nnUNet_preprocessed"] / dataset[1]]), folder, r),
        # every fold, as the first round's students: they leave labeled cases out, so they can teach the next round
        "student": _gated(train_step(unit, student, unit.folds, role="student", npz=not last, fresh=init), folder, r),
        "evaluate": _gated(evaluate(), folder, r),
    }


def rounds_step(layout: RunLayout, *, n_rounds: int, teacher: Model, students: Mapping[int, Model], folds: list,
                labels: Mapping[str, int], min_gain: float, student_init: str) -> Step:
    """The rounds table: per round its decision, out-of-fold evidence, pseudo-labels and test scores, the round
    whose model the evidence picks, and a plot; ``rounds.json``, ``rounds.md``, ``rounds.png`` in the run folder."""
    def run(say) -> dict:
        from nnunet_medaka.training.evaluation import out_of_fold_dice, per_label_scores

        first = read_json(layout.results, what="the first round's results")
        rows = [{"round": 0, "model": "teacher", "ran": True, "oof_dice": round(out_of_fold_dice(teacher.folder, folds)["dice"], 4),
                 "test": first["scores"]["teacher"]["mean"]}]
        for r in range(1, n_rounds + 1):
            folders = layout if r == 1 else layout.round(r)  # a run folder is the first round's unit folder
            decision = {"continue": True, "reason": "the run's own stages"} if r == 1 else _decision(folders.folder)
            row = {"round": r, "model": str(students[r].folder), "ran": bool(decision and decision["continue"]),
                   "reason": decision["reason"] if decision else "not decided"}
            if row["ran"]:
                pseudo = read_json(folders.pseudolabels / "pseudolabel_summary.json", what="the pseudo-labels' summary")
                row.update(oof_dice=round(out_of_fold_dice(students[r].folder, folds)["dice"], 4),
                           test=per_label_scores(folders.predictions("student") / "summary.json", labels)["mean"],
                           pseudo={k: pseudo.get(k) for k in ("cases_accepted", "cases_partial", "cases_rejected")}
                           | {"for_student": len(pseudo.get("cases_for_student", [])),
                              "true_iou": pseudo.get("true_iou")})
            rows.append(row)
        chosen = chosen_round(rows, min_gain)
        results = {"rounds": rows, "chosen_round": chosen, "baseline": first.get("baseline", "teacher"),
                   "baseline_test": first["scores"][first.get("baseline", "teacher")]["mean"],
                   "scores": {k: v["mean"] for k, v in first["scores"].items()}, "min_gain": min_gain,
                   "student_init": student_init}
        write_json_atomic(layout.rounds, results)
        write_text_atomic(layout.rounds_markdown, rounds_summary_text(results) + "\n")
        _plot(results, layout.rounds_plot)
        say(f"rounds table: {layout.rounds_markdown}")
        return {"rounds": str(layout.rounds), "chosen_round": chosen}

    return Step(lambda: [f"# the rounds table: {layout.rounds_markdown}"], run,
                reset=lambda: remove(layout.rounds, layout.rounds_markdown, layout.rounds_plot))


def chosen_round(rows: Sequence[Mapping], min_gain: float) -> int:
    """The round whose model to deploy by the label-free evidence: walk the chain while each round's students beat
    the model before them on out-of-fold Dice by more than ``min_gain`` and by more than nothing.

    A negative ``round_min_gain`` makes later rounds run for measurement; it never picks students that the
    evidence says are worse than their teacher (a pilot run with ``-1`` picked round 2 at a lower out-of-fold
    Dice than round 1's)."""
    chosen = 0
    for row in rows[1:]:
        if not (row["ran"] and row["oof_dice"] - rows[chosen]["oof_dice"] > max(min_gain, 0.0)):
            break
        chosen = row["round"]
    return chosen


def rounds_summary_text(results: Mapping) -> str:
    """The rounds table a person reads: the answer first (which round the evidence picks, and how it did on the
    test cases against the stronger baseline), then one line per round."""
    rows, chosen = results["rounds"], results["chosen_round"]
    base, base_iou = results["baseline"], results["baseline_test"]["IoU"]
    pick = rows[chosen]
    lines = ["# Self-training rounds", "",
             f"By the out-of-fold Dice on the labeled cases (no test label used), the model to deploy is "
             + ("the teacher itself: no round's students beat their teacher" if chosen == 0 else
                f"round {chosen}'s students") + f"; on the test cases its mean IoU is {pick['test']['IoU']:.3f} "
             f"against {base_iou:.3f} for the stronger baseline ({base}), Δ {pick['test']['IoU'] - base_iou:+.3f} "
             "(one run at one seed: no evidence either way within the run-to-run spread).", "",
             "| round | model | out-of-fold Dice | test mean Dice | test mean IoU | Δ IoU vs baseline | pseudo-labels "
             "accepted / partly / rejected (true IoU accepted vs rejected) | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if not row["ran"]:
            lines.append(f"| {row['round']} | — | — | — | — | — | — | stopped: {row['reason']} |")
            continue
        p = row.get("pseudo")
        truth = (p or {}).get("true_iou") or {}
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
        pseudo = (f"{p['cases_accepted']} / {p['cases_partial']} / {p['cases_rejected']} ({fmt(truth.get('accepted_organs_mean'))}"
                  f" vs {fmt(truth.get('rejected_organs_mean'))})" if p else "—")
        name = "teacher (CV ensemble)" if row["round"] == 0 else f"students of round {row['round']} (CV ensemble)"
        lines.append(f"| {row['round']} | {name} | {row['oof_dice']:.4f} | {row['test']['Dice']:.3f} | "
                     f"{row['test']['IoU']:.3f} | {row['test']['IoU'] - base_iou:+.3f} | {pseudo} | "
                     f"{'chosen' if row['round'] == chosen else ''} |")
    lines += ["", "Out-of-fold Dice: nnU-Net's final validation of every fold on the labeled cases it left out; a "
              "student's is slightly optimistic (its pseudo-labels came from an ensemble that saw those cases). "
              f"A round runs only when the previous students beat their teacher by more than {results['min_gain']:g}; "
              f"the model to deploy is the last round of the chain whose students beat the model before them by more "
              f"than {max(results['min_gain'], 0.0):g}."]
    if results.get("student_init") == "teacher":
        lines.append("Budgets: with `student_init=teacher` round r's students started from round r-1's, so they trained "
                     "r+1 schedules in a chain; the supervised baseline trained two (teacher fold 0, then its own).")
    else:
        lines.append("Budgets: every round's students trained one schedule from random weights, as the baselines did; "
                     "the rounds together cost N times the student's training.")
    return "\n".join(lines)


def _plot(results: Mapping, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in results["rounds"] if r["ran"]]
    x = [r["round"] for r in ran]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(x, [r["oof_dice"] for r in ran], "o-", color="tab:blue")
    axes[0].set(title="out-of-fold Dice, labeled cases\n(the early-stop evidence)", xlabel="round (0: teacher)")
    axes[1].plot(x, [r["test"]["IoU"] for r in ran], "o-", color="tab:green", label="round's model")
    styles = {"teacher": ("tab:gray", "--"), "supervised": ("tab:orange", ":")}
    for role, iou in results["scores"].items():
        if role in styles:
            axes[1].axhline(iou["IoU"], color=styles[role][0], linestyle=styles[role][1], label=role)
    axes[1].axvline(results["chosen_round"], color="black", alpha=0.2, linewidth=6, label="chosen")
    axes[1].set(title="mean IoU, held-out test cases", xlabel="round (0: teacher)")
    axes[1].legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.set_xticks(x)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
