"""``nnunet-medaka run``: the whole method in one resumable command, through nnU-Net's stock commands.

From an nnU-Net raw dataset laid out as ``split`` writes it (labeled ``imagesTr``/``labelsTr``, unlabeled
``imagesUnlabeled/`` declared in dataset.json, optional ``labelsUnlabeled_gt/``, held-out ``imagesTs``/``labelsTs``)
to a trained and evaluated KD student. Stages, each logged with the stock command it corresponds to:

1. ``plan``: ``nnUNetv2_plan_and_preprocess`` (+ the preset's small network variant) and the teacher's schedule;
2. ``teacher``: ``nnUNetv2_train -tr SupervisedTrainer --npz`` on every cross-validation fold;
3. ``quality``: the quality classifier learned from the out-of-fold predictions (``nnunet-medaka qc train``);
4. ``pseudolabel``: the teacher's fold ensemble on the unlabeled scans, scored and filtered (``pseudolabel``);
5. ``student-dataset``: labeled + accepted pseudo-labeled cases on the teacher's plans (``build-student``);
6. ``student``: ``nnUNetv2_train -tr KDTrainer`` against the frozen teacher ensemble (fold ``all``; fold k against
   teacher fold k), and beside it the ``supervised`` baseline: ``nnUNetv2_train -tr SupervisedTrainer`` fold ``all``
   on the labeled cases alone, from the same initial weights for the same schedule (an equal training budget);
7. ``evaluate``: ``nnUNetv2_predict`` + ``nnUNetv2_evaluate_folder`` on the test cases for the teacher (the ensemble
   of its folds, as a user deploys it), the supervised baseline and the student.

The run folder holds ``run_state.json`` (see `nnunet_medaka.pipeline.engine`): a run killed anywhere continues
where it stopped, a finished stage is never redone, a stage whose inputs changed is redone and says why.
Inside the training stages nnU-Net's own resume (``--c``) continues a fold from its latest checkpoint, and the
pseudo-label stage skips the cases it finished. The steps are those of ``experiment`` (`nnunet_medaka.pipeline.steps`).
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from nnunet_medaka.config import parse_set
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import claim_folder, files_fingerprint, read_json, remove, resolve_device, write_json_atomic
from nnunet_medaka.conversion.split import split_layout
from nnunet_medaka.pipeline.engine import Node, RunState, Step, print_events, run_graph
from nnunet_medaka.pipeline.layout import RUN_STAGES, RunLayout
from nnunet_medaka.pipeline.steps import (
    Unit, build_student_step, evaluate_step, pseudolabel_inputs, pseudolabel_step, quality_step, train_step,
)
from nnunet_medaka.training.estimate import describe, disk_estimate
from nnunet_medaka.training.presets import RUN_DEFAULTS, resolve_settings, student_recipe
from nnunet_medaka.training.stock import (
    STUDENT_TRAINER, cmd, plan_args, stock_environ, threads_per_training, write_cv_splits,
)

__all__ = ["run_pipeline"]


def _student_id(layout: RunLayout, raw_root: Path, dataset_id: int) -> int:
    """The run's student dataset id: the one it recorded, else the first id above ``dataset_id + 100`` (wrapping
    below 1000) with no dataset in ``nnUNet_raw``."""
    from nnunet_medaka.conversion.raw_dataset import free_dataset_ids, taken_dataset_ids

    if layout.student.is_file():
        return int(read_json(layout.student, what="the run's student dataset id")["id"])
    taken = taken_dataset_ids(raw_root) | {dataset_id}
    return free_dataset_ids(1, dataset_id + 100, taken, fix=f"free one in {raw_root} or pass --student-id")[0]


def _claim(layout: RunLayout, settings: dict, student: tuple[int, str], raw_root: Path, overwrite: bool) -> None:
    """Create the run folder (or resume or replace it) and record the settings and the student dataset's id."""
    if not claim_folder(layout.folder, RunLayout.MARKERS, what="a run folder", overwrite=overwrite):
        remove(layout.folder)
    layout.folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(layout.settings, settings)  # first: it marks the folder as a run's
    layout.logs.mkdir(exist_ok=True)
    taken = sorted(raw_root.glob(f"Dataset{student[0]:03d}_*"))
    if taken and not layout.student.is_file():
        raise MedakaError(f"student dataset id {student[0]} is taken by {taken[0]}; pass --student-id with a free id")
    if not layout.student.is_file():
        from nnunet_medaka.conversion.raw_dataset import reserve_dataset_ids

        write_json_atomic(layout.student, {"id": student[0], "name": student[1]})
        reserve_dataset_ids(raw_root, [student[0]], owner=layout.student)


def _plan_step(unit: Unit, labeled: list) -> Step:
    """Plan and preprocess the dataset, write the preset's network variant, config and cross-validation splits."""
    s = unit.settings

    def run(say) -> dict:
        from nnunet_medaka.config import update_config_file
        from nnunet_medaka.environment import planning_environ
        from nnunet_medaka.training.plans import write_small_plans
        from nnunet_medaka.training.presets import config_assignments

        unit.stock("nnUNetv2_plan_and_preprocess", plan_args(unit.dataset_id, unit.configuration),
                   "plan_and_preprocess", env=planning_environ(unit.env))
        if s["small_plans"]:
            write_small_plans(unit.preprocessed, configuration=unit.configuration, **s["small_plans"])
        update_config_file(unit.preprocessed / "nnunet_medaka.json", [*config_assignments(s), ("seed", s["seed"])])
        write_cv_splits(unit.preprocessed, labeled, s["cv_folds"], s["seed"])
        return {"preprocessed": str(unit.preprocessed), "plans": unit.plans}

    return Step(lambda: [cmd("nnUNetv2_plan_and_preprocess", plan_args(unit.dataset_id, unit.configuration))], run)


def _side_by_side(steps: dict, workers: int) -> Step:
    """Independent steps as one, ``workers`` at a time; its outputs are each step's, by name."""
    def run(say) -> dict:
        with ThreadPoolExecutor(workers) as pool:
            futures = {name: pool.submit(step.run, say) for name, step in steps.items()}
        return {name: f.result() for name, f in futures.items()}

    return Step(lambda: [c for step in steps.values() for c in step.commands()], run,
                reset=lambda: [step.reset() for step in steps.values() if step.reset])


def _evaluate_all(unit: Unit, models: dict, layout: RunLayout, raw: Path, dataset_json: dict) -> Step:
    """Every model on the test cases, side by side (each nnU-Net process spends much of its time starting up),
    then the run's results files."""
    # the teacher as a user deploys it (the ensemble of its folds, which made the pseudo-labels); the others' folds
    folds = {"teacher": unit.folds, "supervised": ["all"], "student": unit.settings["student_folds"]}
    parts = {role: evaluate_step(unit, m, folds[role], role, model_placeholder=True) for role, m in models.items()}

    def run(say) -> dict:
        from nnunet_medaka.pipeline.results import write_run_results
        from nnunet_medaka.training.evaluation import per_label_scores

        with ThreadPoolExecutor(len(parts)) as pool:
            futures = {role: pool.submit(work) for role, (_, work) in parts.items()}
        scores = {role: per_label_scores(f.result(), dataset_json["labels"]) for role, f in futures.items()}
        files = write_run_results(layout, scores, raw=raw, file_ending=dataset_json["file_ending"],
                                  labels=dataset_json["labels"], settings=unit.settings,
                                  models={role: m.folder for role, m in models.items()})
        return {"scores": scores, "files": files}

    return Step(lambda: [c for commands, _ in parts.values() for c in commands()], run,
                reset=lambda: remove(layout.folder / "predictions"))


def _round_nodes(unit: Unit, layout: RunLayout, raw_root: Path, first: tuple[int, str], teacher, student, kd: list,
                 unlabeled_gt: Path, dataset_json: dict, *, record: bool, after: list) -> list:
    """The nodes of rounds 2..N and the rounds table (`nnunet_medaka.pipeline.rounds`), each after every node
    before it."""
    from dataclasses import replace

    from nnunet_medaka.pipeline.rounds import ROUND_STEPS, round_dataset, round_steps, rounds_step

    s, n = unit.settings, unit.settings["rounds"]
    nodes, names = [], list(after)
    models = {0: teacher, 1: student}
    for r in range(2, n + 1):
        dataset = round_dataset(layout, raw_root, r, first, record=record)
        folders = layout.round(r)
        ru = replace(unit, folders=folders, log_prefix=f"round{r}_", teacher=models[r - 1])
        models[r] = ru.model(STUDENT_TRAINER, dataset)
        previous = models[r - 1]
        init = (lambda f, prev=previous: ["-pretrained_weights", prev.folder / f"fold_{f}" / "checkpoint_final.pth"]) \
            if s["student_init"] == "teacher" else (lambda f: [])
        steps = round_steps(r, unit=ru, previous=previous, earlier=[models[k] for k in range(r - 1)], dataset=dataset,
                            layout=layout, kd=kd, init=init, ground_truth=unlabeled_gt, last=r == n,
                            prior_folder=layout.round(r - 1).folder if r > 2 else None)
        inputs = {"round": r, "dataset": dataset[0], "min_gain": s["round_min_gain"]}
        for step in ROUND_STEPS:
            name = f"round{r}/{step}"
            nodes.append(Node(name, inputs, list(names), steps[step]))
            names.append(name)
    # "pick" names the rule of `chosen_round`: folders tabled by an earlier rule redo only this table
    nodes.append(Node("rounds", {"rounds": n, "pick": "improved by more than max(round_min_gain, 0)"}, list(names),
                      rounds_step(layout, n_rounds=n, teacher=teacher, students={r: models[r] for r in range(1, n + 1)},
                                  folds=unit.folds, labels=dataset_json["labels"], min_gain=s["round_min_gain"],
                                  student_init=s["student_init"])))
    return nodes


def run_pipeline(dataset: str, out: os.PathLike | str, *, preset: str = "quick", overrides: Optional[dict] = None,
                 student_id: Optional[int] = None, device: str = "auto", dry_run: bool = False,
                 overwrite: bool = False, say: Callable[[str], None] = print, on_event: Optional[Callable] = None
                 ) -> dict:
    """Run (or resume) the method on a raw dataset; see the module docstring for the stages.

    Parameters
    ----------
    dataset : str
        Raw dataset id or ``DatasetXXX_Name`` in ``$nnUNet_raw`` (layout of ``nnunet-medaka split``).
    out : path
        Run folder: state, settings, logs, quality model, pseudo-labels, predictions, results.
    preset : str
        Training preset (`nnunet_medaka.training.presets`).
    overrides : dict, optional
        Values replacing the preset's or the method's defaults (`RUN_DEFAULTS`).
    student_id : int, optional
        Id of the student dataset; default the first free id from the dataset's id + 100.
    device : {"auto", "cpu", "cuda"}
    dry_run : bool
        Print the stages, their stock commands and a disk estimate; run nothing.
    overwrite : bool
        Replace an ``out`` folder that is not a run folder.
    say : callable
        Receives each progress line.
    on_event : callable, optional
        Receives each progress event (`nnunet_medaka.pipeline.engine.Event`) instead of the printer.

    Returns
    -------
    dict
        Per stage ``outputs``, ``skipped`` and ``seconds``, and ``results`` (the evaluation) when finished.
    """
    from nnunet_medaka.environment import nnunet_folder
    from nnunet_medaka.training.presets import config_assignments

    settings = resolve_settings(preset, overrides)
    rounds = settings["rounds"]
    if settings["pool_size"] is not None:
        raise MedakaError(f"pool_size={settings['pool_size']}: a setting of `experiment` (the pool-size curve); `run` "
                          "pseudo-labels every image of the unlabeled folder, so put the scans you want there")
    if not settings["final_validation"]:
        raise MedakaError("final_validation=false: run's quality stage learns from the teacher's final validation "
                          "(its out-of-fold predictions); drop the setting")
    raw, dataset_id, dataset_json = split_layout(dataset)
    device = resolve_device(device)
    layout = RunLayout(Path(out).expanduser().resolve())
    raw_root = nnunet_folder("nnUNet_raw")
    nnunet_folder("nnUNet_preprocessed"), nnunet_folder("nnUNet_results")  # a clear error when unset
    student_id = _student_id(layout, raw_root, dataset_id) if student_id is None else int(student_id)
    if not 1 <= student_id <= 999:
        raise MedakaError(f"student dataset id {student_id}: nnU-Net dataset ids run from 1 to 999; pass --student-id")
    student_name = f"Dataset{student_id:03d}_{raw.name.split('_', 1)[1]}Student"
    ending = dataset_json["file_ending"]
    labeled = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").iterdir() if p.name.endswith(ending))
    if len(labeled) < max(3, settings["cv_folds"]):  # checked here so that --dry-run fails as the run would
        raise MedakaError(f"{raw / 'labelsTr'}: {len(labeled)} labeled case(s), fewer than cv_folds={settings['cv_folds']}"
                          " and the 3 the quality classifier's grouped cross-validation needs; label more cases or "
                          "lower cv_folds")
    if dry_run:
        claim_folder(layout.folder, RunLayout.MARKERS, what="a run folder", overwrite=overwrite)
    else:
        _claim(layout, settings, (student_id, student_name), raw_root, overwrite)

    unit = Unit(raw=raw, dataset_id=dataset_id, settings=settings, seed=settings["seed"], device=device,
                env=stock_environ(device=device), folders=layout, logs=layout.logs)
    teacher, student = unit.model(), unit.model(STUDENT_TRAINER, (student_id, student_name))
    models = {"teacher": teacher, "supervised": teacher, "student": student}  # supervised: the teacher's fold all
    unlabeled = raw / dataset_json.get("unlabeled_images", "imagesUnlabeled")
    unlabeled_gt = raw / dataset_json.get("unlabeled_ground_truth", "labelsUnlabeled_gt")
    # nnU-Net transfers every weight but the output layers (seg_layers), which start fresh; fold all starts from
    # teacher fold 0
    init = (lambda f: ["-pretrained_weights", teacher.folder / f"fold_{0 if f == 'all' else f}" / "checkpoint_final.pth"]) \
        if settings["student_init"] == "teacher" else (lambda f: [])
    kd = [*config_assignments(settings), ("seed", settings["seed"]), ("teacher", str(teacher.folder)),
          ("kd_weight", settings["kd_weight"]), ("kd_temperature", settings["kd_temperature"])]
    # on a CPU the student and its baseline train side by side with half the cores each (as the teacher's folds)
    side_threads = threads_per_training(settings["cpu_threads"], device, 1 if device == "cuda" else 2)
    plan_keys = ("configuration", "small_plans", "num_epochs", "iterations_per_epoch", "val_iterations_per_epoch",
                 "initial_lr", "mirroring", "seed", "cv_folds")
    steps = {  # name: (inputs, step), in the order of RUN_STAGES
        "plan": ({"raw": files_fingerprint([raw / "imagesTr", raw / "labelsTr", raw / "dataset.json"]),
                  "settings": {k: settings[k] for k in plan_keys}}, _plan_step(unit, labeled)),
        "teacher": ({"folds": unit.folds, "device": device},
                    train_step(unit, teacher, unit.folds, role="teacher", npz=True, parallel=settings["parallel_folds"])),
        "quality": ({k: settings[k] for k in ("tau", "corruptions_per_organ")}, quality_step(unit)),
        "pseudolabel": ({"images": files_fingerprint([unlabeled]), "acceptance": settings["acceptance"],
                         "mirroring": unit.mirroring, **pseudolabel_inputs(settings)},
                        pseudolabel_step(unit, layout.pseudolabels, acceptance=settings["acceptance"],
                                         quality=layout.quality, ground_truth=unlabeled_gt)),
        "student-dataset": ({"student_id": student_id, "kd": [settings["kd_weight"], settings["kd_temperature"]],
                             **({"width": settings["student_width"]} if settings["student_width"] is not None else {})},
                            build_student_step(unit, layout.pseudolabels, (student_id, student_name), settings=kd,
                                               keep=("raw", "preprocessed", "plans", "configuration", "labeled",
                                                     "pseudo", "ignore", "train_command"))),
        "student": ({"folds": settings["student_folds"], "init": settings["student_init"], "baseline": "supervised",
                     **student_recipe(settings),
                     **({"npz": True} if rounds > 1 else {})},  # out-of-fold probabilities: the next round's teacher
                    _side_by_side({"student": train_step(unit, student, settings["student_folds"], role="student",
                                                         fresh=init, threads=side_threads, npz=rounds > 1),
                                   "supervised": train_step(unit, teacher, ["all"], role="supervised", fresh=init,
                                                            threads=side_threads)},
                                  workers=1 if device == "cuda" else 2)),
        "evaluate": ({"test": files_fingerprint([raw / "imagesTs", raw / "labelsTs"]), "teacher_folds": unit.folds,
                      "roles": list(models)},
                     _evaluate_all(unit, models, layout, raw, dataset_json)),
    }
    nodes = [Node(name, steps[name][0], list(RUN_STAGES[:i]), steps[name][1]) for i, name in enumerate(RUN_STAGES)]
    if rounds > 1:
        nodes += _round_nodes(unit, layout, raw_root, (student_id, student_name), teacher, student, kd, unlabeled_gt,
                              dataset_json, record=not dry_run, after=[n.name for n in nodes])
    if dry_run:
        say(f"run of {raw.name} with preset {preset!r} into {layout.folder} (dry run: nothing is executed)")
        say(f"disk estimate: {disk_estimate(raw, unlabeled, settings, len(dataset_json['labels'])) / 2**30:.2f} GiB")
    if device == "cpu":  # the time of one training, measured before any work (warned about when over an hour)
        for line in describe(settings, raw, dataset_json, dry_run=dry_run,
                             threads=threads_per_training(settings["cpu_threads"], device, settings["parallel_folds"])):
            say(line)
    results = run_graph(nodes, RunState(layout.state), on_event=on_event or print_events(say), dry_run=dry_run,
                        chained=True)
    if "evaluate" in results:
        results["results"] = results["evaluate"]["outputs"]
    return results


def run_settings_rounds(out: Path) -> int:
    """The number of rounds a run folder was last run with."""
    return int(read_json(RunLayout(out).settings, what="the run's settings").get("rounds", 1))


def _run(args: argparse.Namespace) -> int:
    from nnunet_medaka.pipeline.results import print_run_summary

    run_pipeline(args.dataset, args.out, preset=args.preset, overrides=dict(args.set or []),
                 student_id=args.student_id, device=args.device, dry_run=args.dry_run,
                 overwrite=args.overwrite)
    if not args.dry_run:
        print_run_summary(Path(args.out))
        rounds = RunLayout(Path(args.out)).rounds_markdown
        if rounds.is_file() and run_settings_rounds(Path(args.out)) > 1:
            print("\n" + rounds.read_text().rstrip())
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from nnunet_medaka.training.presets import PRESETS

    p = subparsers.add_parser(
        "run", help="the whole method, resumable: teacher CV -> quality classifier -> pseudo-labels -> KD student -> "
        "evaluation", description=__doc__.split("\n\n")[1])
    p.add_argument("dataset", help="raw dataset id or DatasetXXX_Name in $nnUNet_raw (layout of `nnunet-medaka split`)")
    p.add_argument("--out", required=True, help="run folder (state, logs, pseudo-labels, results); rerun to resume")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="training preset (default quick)")
    p.add_argument("--set", action="append", type=parse_set, metavar="KEY=VALUE",
                   help=f"override a preset or method setting, e.g. cv_folds=3, num_epochs=50 (method keys: "
                   f"{', '.join(RUN_DEFAULTS)}); repeatable")
    p.add_argument("--student-id", type=int, help="id of the student dataset (default: the first free id from the dataset's id + 100)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dry-run", action="store_true", help="print the stages, their stock commands and a disk estimate")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that is not a run folder")
    p.set_defaults(func=_run)
