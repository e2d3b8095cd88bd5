"""``nnunet-medaka run``: the whole method in one resumable command, through nnU-Net's stock commands.

From an nnU-Net raw dataset laid out as ``split`` writes it (labeled ``imagesTr``/``labelsTr``, unlabeled
``imagesUnlabeled/`` declared in dataset.json, optional ``labelsUnlabeled_gt/``, held-out ``imagesTs``/``labelsTs``)
to a trained and evaluated KD student. Stages, each logged with the stock command it corresponds to:

1. ``plan``: ``nnUNetv2_plan_and_preprocess`` (+ the preset's small network variant) and the teacher's schedule;
2. ``teacher``: ``nnUNetv2_train -tr SupervisedTrainer --npz`` on every cross-validation fold;
3. ``quality``: the quality classifier learned from the out-of-fold predictions (``nnunet-medaka qc train``);
4. ``pseudolabel``: the teacher's fold ensemble on the unlabeled scans, scored and filtered (``pseudolabel``);
5. ``student-dataset``: labeled + accepted pseudo-labeled cases on the teacher's plans (``build-student``);
6. ``student``: ``nnUNetv2_train -tr KDTrainer`` against the frozen teacher of the same fold (leak-free);
7. ``evaluate``: ``nnUNetv2_predict`` + ``nnUNetv2_evaluate_folder`` for teacher and student on the test cases.

The run folder holds ``run_state.json`` (see `nnunet_medaka.pipeline.state`): a run killed anywhere continues
where it stopped, a finished stage is never redone, a stage whose inputs changed is redone and says why.
Inside the training stages nnU-Net's own resume (``--c``) continues a fold from its latest checkpoint, and the
pseudo-label stage skips the cases it finished.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

from nnunet_medaka.config import MedakaConfig
from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)

__all__ = ["RUN_DEFAULTS", "resolve_settings", "run_pipeline"]

STATE_FILE = "run_state.json"
SETTINGS_FILE = "run_settings.json"
TEACHER_TRAINER, STUDENT_TRAINER = "SupervisedTrainer", "KDTrainer"
# Settings of the method on top of the training preset (`nnunet_medaka.training.presets`); all overridable.
RUN_DEFAULTS = {
    "cv_folds": 5,  # teacher cross-validation folds: the quality classifier's training data
    "student_folds": [0],  # student folds trained; teacher and student are compared on the same folds
    "seed": 0,
    "tau": 0.7,  # a pseudo-label is good when its IoU >= tau
    "acceptance": "case",  # case | organ | none (see nnunet_medaka.pseudolabel.acceptance)
    "corruptions_per_organ": 4,
    # the KD trainer's own defaults (kd_weight 0.3: README, "kd_weight 0.3, confirmed on a validation split")
    "kd_weight": MedakaConfig.kd_weight,
    "kd_temperature": MedakaConfig.kd_temperature,
    "parallel_folds": 1,  # teacher folds trained at the same time (CPU: the cores are shared out between them)
    "student_init": "random",  # random | teacher: start the student from its teacher fold's weights
}
# cpu-demo: a teacher trained for minutes has some weak organ in every case, so case-level acceptance would
# accept no case; organ-level keeps each case and masks its rejected organs (ignore label). A student trained
# from scratch for the same few minutes stayed far below its teacher; started from the teacher's weights it did
# not (README, "The demo").
# quick: on MSD hippocampus a student started from its teacher's weights ended +0.015 mean Dice above a student
# from random weights (3 seeds), with or without the KD term: the short schedule leaves the teacher undertrained
# and the student's training continues it (README, "KD settings on the protocol"). `experiment` always starts
# students from random weights so that every row has the same schedule.
# cpu-demo keeps kd_weight 1: 0.3 was confirmed with case-level acceptance on real data; in the demo, where
# organ-level acceptance ignores most organs of the pseudo-labeled cases, one run each gave 1 the better student
# (README, "The demo").
PRESET_RUN_DEFAULTS = {"cpu-demo": {"cv_folds": 2, "parallel_folds": 2, "acceptance": "organ", "student_init": "teacher",
                                    "kd_weight": 1.0},
                       "quick": {"student_init": "teacher"}}


def resolve_settings(preset: str, overrides: Optional[dict] = None) -> dict:
    """The run's settings: the training preset, then the method's defaults, then ``overrides``.

    Raises
    ------
    MedakaError
        For an unknown preset or key.
    """
    from nnunet_medaka.training.presets import get_preset

    settings = {"preset": preset, **get_preset(preset), **RUN_DEFAULTS, **PRESET_RUN_DEFAULTS.get(preset, {})}
    for key, value in (overrides or {}).items():
        if key not in settings or key in ("preset", "measured"):
            raise MedakaError(f"unknown run setting {key!r}; known: {', '.join(sorted(k for k in settings if k not in ('preset', 'measured')))}")
        settings[key] = value
    if not isinstance(settings["cv_folds"], int) or settings["cv_folds"] < 2:
        raise MedakaError(f"cv_folds={settings['cv_folds']!r}: expected a whole number >= 2 (the quality classifier "
                          "learns from out-of-fold predictions)")
    bad = [f for f in settings["student_folds"] if not isinstance(f, int) or not 0 <= f < settings["cv_folds"]]
    if bad or not settings["student_folds"]:
        raise MedakaError(f"student_folds={settings['student_folds']!r}: expected folds among 0..{settings['cv_folds'] - 1}")
    if isinstance(settings["parallel_folds"], bool) or not isinstance(settings["parallel_folds"], int) \
            or settings["parallel_folds"] < 1:
        raise MedakaError(f"parallel_folds={settings['parallel_folds']!r}: expected a whole number >= 1")
    if settings["student_init"] not in ("random", "teacher"):
        raise MedakaError(f"student_init={settings['student_init']!r}: expected random (nnU-Net's initialisation) or "
                          "teacher (start from the teacher fold's weights, nnUNetv2_train -pretrained_weights)")
    if settings["acceptance"] not in ("case", "organ", "none"):
        raise MedakaError(f"acceptance={settings['acceptance']!r}: expected case, organ or none")
    return settings


def _raw_dataset(dataset: str) -> tuple[Path, int, dict]:
    """The raw dataset folder, its id and dataset.json, checked for everything the run needs."""
    from nnunet_medaka.environment import nnunet_folder

    raw_root = nnunet_folder("nnUNet_raw")
    if str(dataset).isdigit():
        matches = sorted(raw_root.glob(f"Dataset{int(dataset):03d}_*"))
    else:
        matches = [raw_root / str(dataset)] if (raw_root / str(dataset)).is_dir() else []
    if len(matches) != 1:
        raise MedakaError(f"dataset {dataset!r}: {'no' if not matches else 'several'} matching folder(s) in "
                          f"nnUNet_raw={raw_root}; convert it first (`nnunet-medaka convert` then `nnunet-medaka split`)")
    raw = matches[0]
    dataset_json = json.loads((raw / "dataset.json").read_text()) if (raw / "dataset.json").is_file() else None
    if dataset_json is None:
        raise MedakaError(f"{raw}/dataset.json: missing; make the dataset with `nnunet-medaka convert`")
    problems = []
    unlabeled = raw / dataset_json.get("unlabeled_images", "imagesUnlabeled")
    for folder, what in ((raw / "imagesTr", "labeled images"), (raw / "labelsTr", "labels"),
                         (unlabeled, "unlabeled images (the pool for pseudo-labels)"),
                         (raw / "imagesTs", "test images"), (raw / "labelsTs", "test labels")):
        if not folder.is_dir() or not any(folder.iterdir()):
            problems.append(f"{folder}: no {what}")
    if problems:
        raise MedakaError("; ".join(problems) + ". `nnunet-medaka split SOURCE --labeled K --test N` writes this layout")
    return raw, int(raw.name[7:10]), dataset_json


def _prepare_out(out: Path, settings: dict, overwrite: bool) -> None:
    """Create the run folder, or check that an existing one belongs to a run (resumed) or may be replaced."""
    from nnunet_medaka.config import write_json_atomic

    is_run = (out / STATE_FILE).is_file() or (out / SETTINGS_FILE).is_file()
    if out.exists() and not is_run and any(out.iterdir()):
        if not overwrite:
            raise MedakaError(f"{out}: exists and holds no {STATE_FILE} (not a run folder); choose another --out or "
                              "pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / SETTINGS_FILE, settings)  # first: it marks the folder as a run's
    (out / "logs").mkdir(exist_ok=True)


def _cmd(script: str, args: Sequence) -> str:
    return shlex.join([script, *[str(a) for a in args]])


def _write_cv_splits(preprocessed: Path, labeled: Sequence[str], folds: int, seed: int) -> None:
    """``splits_final.json`` with ``folds`` folds over the labeled cases (seeded), as nnU-Net would write it."""
    from sklearn.model_selection import KFold

    from nnunet_medaka.config import write_json_atomic

    cases = sorted(labeled)
    if len(cases) < folds:
        raise MedakaError(f"{len(cases)} labeled cases cannot make {folds} cross-validation folds; lower cv_folds")
    splits = [{"train": [cases[i] for i in tr], "val": [cases[i] for i in va]}
              for tr, va in KFold(folds, shuffle=True, random_state=seed).split(cases)]
    existing = preprocessed / "splits_final.json"
    if not existing.is_file() or json.loads(existing.read_text()) != splits:
        write_json_atomic(existing, splits)


def _train_fold_args(dataset_id: int, configuration: str, fold, trainer: str, plans: str, device: str,
                     model: Path, extra: Sequence = (), fresh: Sequence = ()) -> list:
    """``nnUNetv2_train`` arguments for one fold; ``--c`` when a checkpoint of an interrupted run exists, else the
    ``fresh`` arguments (nnU-Net refuses ``-pretrained_weights`` together with ``--c``)."""
    args = [dataset_id, configuration, fold, "-tr", trainer, "-p", plans, "-device", device, *extra]
    fold_dir = model / f"fold_{fold}"
    if any((fold_dir / c).is_file() for c in ("checkpoint_latest.pth", "checkpoint_final.pth")):
        args.append("--c")
    else:
        args.extend(fresh)
    return args


def _fold_finished(model: Path, fold, npz: bool) -> bool:
    fold_dir = model / f"fold_{fold}"
    done = (fold_dir / "checkpoint_final.pth").is_file() and (fold_dir / "validation" / "summary.json").is_file()
    return done and (not npz or any((fold_dir / "validation").glob("*.npz")))


def run_pipeline(
    dataset: str,
    out: os.PathLike | str,
    *,
    preset: str = "quick",
    overrides: Optional[dict] = None,
    student_id: Optional[int] = None,
    device: str = "auto",
    dry_run: bool = False,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
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

    Returns
    -------
    dict
        Per stage ``outputs``, ``skipped`` and ``seconds``, and ``results`` (the evaluation) when finished.
    """
    from nnunet_medaka.pipeline.state import RunState, Stage, files_fingerprint, run_stages

    settings = resolve_settings(preset, overrides)
    raw, dataset_id, dataset_json = _raw_dataset(dataset)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(out).expanduser().resolve()
    short_name = raw.name.split("_", 1)[1]
    student_id = _student_id(out, dataset_id) if student_id is None else int(student_id)
    if not 1 <= student_id <= 999:
        raise MedakaError(f"student dataset id {student_id}: nnU-Net dataset ids run from 1 to 999; pass --student-id")
    student_short = f"{short_name}Student"
    student_name = f"Dataset{student_id:03d}_{student_short}"
    from nnunet_medaka.environment import nnunet_folder

    env_paths = {v: nnunet_folder(v) for v in ("nnUNet_preprocessed", "nnUNet_results")}  # clear error when unset
    preprocessed = env_paths["nnUNet_preprocessed"] / raw.name
    configuration = settings["configuration"]
    plans = settings["small_plans"]["target_plans"] if settings["small_plans"] else "nnUNetPlans"
    teacher_model = env_paths["nnUNet_results"] / raw.name / f"{TEACHER_TRAINER}__{plans}__{configuration}"
    folds = list(range(settings["cv_folds"]))
    unlabeled = raw / dataset_json.get("unlabeled_images", "imagesUnlabeled")
    unlabeled_gt = raw / dataset_json.get("unlabeled_ground_truth", "labelsUnlabeled_gt")
    labeled = sorted(p.name[: -len(dataset_json["file_ending"])] for p in (raw / "labelsTr").iterdir()
                     if p.name.endswith(dataset_json["file_ending"]))
    quality_dir, pseudo_dir, pred_dir = out / "quality", out / "pseudolabels", out / "predictions"
    logs = out / "logs"
    mirroring = bool(settings["mirroring"])
    student = {}  # filled by the student-dataset stage (or its record when skipped)

    if not dry_run:
        _prepare_out(out, settings, overwrite)
        owner = out / "student_dataset.json"
        taken = sorted(Path(os.environ["nnUNet_raw"]).glob(f"Dataset{student_id:03d}_*"))
        if taken and not owner.is_file():
            raise MedakaError(f"student dataset id {student_id} is taken by {taken[0]}; pass --student-id with a free id")
        if not owner.is_file():
            from nnunet_medaka.config import write_json_atomic

            write_json_atomic(owner, {"id": student_id, "name": student_name})

    from nnunet_medaka.pipeline.experiment import experiment_environ

    env = experiment_environ(None, device=device)

    def stock(script: str, args: Sequence, log_name: str, **kwargs) -> None:
        from nnunet_medaka.environment import run_stock_command

        run_stock_command(script, list(args), env=kwargs.get("env", env), log_file=logs / f"{log_name}.log")

    # 1. plan
    plan_args = ["-d", dataset_id, "-c", configuration, "-np", 2, "-npfp", 2, "--verify_dataset_integrity"]

    def plan() -> dict:
        from nnunet_medaka.config import update_config_file
        from nnunet_medaka.environment import planning_environ
        from nnunet_medaka.training.plans import write_small_plans
        from nnunet_medaka.training.presets import config_assignments

        stock("nnUNetv2_plan_and_preprocess", plan_args, "plan_and_preprocess", env=planning_environ(env))
        if settings["small_plans"]:
            write_small_plans(preprocessed, configuration=configuration, **settings["small_plans"])
        update_config_file(preprocessed / "nnunet_medaka.json",
                           [*config_assignments(settings), ("seed", settings["seed"])])
        _write_cv_splits(preprocessed, labeled, settings["cv_folds"], settings["seed"])
        return {"preprocessed": str(preprocessed), "plans": plans}

    # 2. teacher cross-validation
    def teacher_commands() -> list:
        return [_cmd("nnUNetv2_train", [dataset_id, configuration, f, "-tr", TEACHER_TRAINER, "-p", plans, "-device",
                                        device, "--npz"]) for f in folds]

    def teacher() -> dict:
        from concurrent.futures import ThreadPoolExecutor

        from nnunet_medaka.config import update_config_file

        pending = [f for f in folds if not _fold_finished(teacher_model, f, npz=True)]
        for f in sorted(set(folds) - set(pending)):
            say(f"      fold {f}: finished earlier")
        workers = max(1, min(settings["parallel_folds"], len(pending)))
        threads = _threads_per_training(settings, device, workers)
        update_config_file(preprocessed / "nnunet_medaka.json", [("cpu_threads", threads)])

        def train(f: int) -> None:
            say(f"      fold {f}: training" + (f" ({workers} folds at a time, {threads} thread(s) each)" if workers > 1 else ""))
            stock("nnUNetv2_train", _train_fold_args(dataset_id, configuration, f, TEACHER_TRAINER, plans, device,
                                                     teacher_model, ["--npz"]), f"train_teacher_fold{f}",
                  env=_train_environ(env, device, threads))

        # folds are independent nnU-Net processes: on a CPU two small trainings with one thread each finish
        # sooner than one after the other with two threads each (measured, README "run")
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(train, f) for f in pending]
        failures = [fu.exception() for fu in futures if fu.exception() is not None]
        if failures:
            raise failures[0]
        return {"model": str(teacher_model), "folds": folds}

    # 3. quality classifier
    def quality() -> dict:
        from nnunet_medaka.quality.commands import train_quality

        folder = train_quality(str(dataset_id), configuration, trainer=TEACHER_TRAINER, plans=plans, folds=folds,
                               tau=settings["tau"], corruptions_per_organ=settings["corruptions_per_organ"],
                               seed=settings["seed"], output=quality_dir, overwrite=True, progress=False)
        return {"folder": str(folder)}

    # 4. pseudo-labels
    def pseudo() -> dict:
        from nnunet_medaka.pseudolabel.predict import pseudolabel

        result = pseudolabel(teacher_model, raw, pseudo_dir, folds=folds, quality_model=quality_dir,
                             acceptance=settings["acceptance"], mirroring=mirroring, device=device,
                             ground_truth=unlabeled_gt if unlabeled_gt.is_dir() else None, teacher_raw=raw,
                             progress=False)
        return {"folder": str(pseudo_dir), "summary": result.get("summary")}

    # 5. student dataset
    def student_dataset() -> dict:
        from nnunet_medaka.pseudolabel.student import build_student
        from nnunet_medaka.training.presets import config_assignments

        kd = [*config_assignments(settings), ("seed", settings["seed"]), ("teacher", str(teacher_model)),
              ("kd_weight", settings["kd_weight"]), ("kd_temperature", settings["kd_temperature"])]
        built = build_student(pseudo_dir, student_id, student_short, teacher_raw=raw, settings=kd, overwrite=True)
        return {k: built[k] for k in ("raw", "preprocessed", "plans", "configuration", "labeled", "pseudo", "ignore",
                                      "train_command")}

    def student_model() -> Path:
        return env_paths["nnUNet_results"] / student_name / f"{STUDENT_TRAINER}__{student['plans']}__{configuration}"

    # 6. KD student: each fold against the teacher of the same fold
    def student_init_args(fold: int) -> list:
        # nnU-Net transfers every weight but the output layers (seg_layers), which start fresh
        if settings["student_init"] != "teacher":
            return []
        return ["-pretrained_weights", teacher_model / f"fold_{fold}" / "checkpoint_final.pth"]

    def student_commands() -> list:
        p = student.get("plans", f"{plans}From{dataset_id:03d}")
        return [_cmd("nnunet-medaka", ["config", "-d", student_id, f"--set=teacher_folds=[{f}]"]) + " && "
                + _cmd("nnUNetv2_train", [student_id, configuration, f, "-tr", STUDENT_TRAINER, "-p", p, "-device", device,
                                          *student_init_args(f)])
                for f in settings["student_folds"]]

    def train_student() -> dict:
        from nnunet_medaka.config import update_config_file

        model = student_model()
        for f in settings["student_folds"]:
            if (model / f"fold_{f}" / "checkpoint_final.pth").is_file() and \
                    (model / f"fold_{f}" / "validation" / "summary.json").is_file():
                say(f"      fold {f}: finished earlier")
                continue
            update_config_file(Path(student["preprocessed"]) / "nnunet_medaka.json", [("teacher_folds", [f])])
            say(f"      fold {f}: training against teacher fold {f}")
            stock("nnUNetv2_train", _train_fold_args(student_id, configuration, f, STUDENT_TRAINER, student["plans"],
                                                     device, model, fresh=student_init_args(f)), f"train_student_fold{f}",
                  env=_train_environ(env, device))
        return {"model": str(model)}

    # 7. evaluation on the held-out test cases
    def predict_args(role: str) -> list:
        ident, trainer, p = ((dataset_id, TEACHER_TRAINER, plans) if role == "teacher" else
                             (student_id, STUDENT_TRAINER, student.get("plans", f"{plans}From{dataset_id:03d}")))
        return ["-i", raw / "imagesTs", "-o", pred_dir / role, "-d", ident, "-c", configuration, "-tr", trainer, "-p", p,
                "-f", *settings["student_folds"], "-device", device, "-npp", 0, "-nps", 0,
                *([] if mirroring else ["--disable_tta"])]

    def evaluate_commands() -> list:
        return [c for role in ("teacher", "student") for c in (
            _cmd("nnUNetv2_predict", predict_args(role)),
            _cmd("nnUNetv2_evaluate_folder", [raw / "labelsTs", pred_dir / role, "-djfile", "MODEL/dataset.json",
                                              "-pfile", "MODEL/plans.json"]))]

    def evaluate() -> dict:
        from nnunet_medaka.pipeline.results import write_run_results
        from nnunet_medaka.training.evaluation import per_label_scores

        from concurrent.futures import ThreadPoolExecutor

        models = {"teacher": teacher_model, "student": student_model()}

        def predict_and_score(role: str) -> dict:
            model, target = models[role], pred_dir / role
            if target.exists():
                shutil.rmtree(target)  # a half-finished prediction from a killed run
            stock("nnUNetv2_predict", predict_args(role), f"predict_{role}")
            stock("nnUNetv2_evaluate_folder", [raw / "labelsTs", target, "-djfile", model / "dataset.json",
                                               "-pfile", model / "plans.json"], f"evaluate_{role}")
            return per_label_scores(target / "summary.json", dataset_json["labels"])

        # teacher and student predict side by side: each nnU-Net process spends much of its time starting up
        with ThreadPoolExecutor(2) as pool:
            futures = {role: pool.submit(predict_and_score, role) for role in models}
        scores = {role: future.result() for role, future in futures.items()}
        files = write_run_results(out, scores, raw=raw, file_ending=dataset_json["file_ending"],
                                  labels=dataset_json["labels"], quality_dir=quality_dir, pseudo_dir=pseudo_dir,
                                  settings=settings, models=models)
        return {"scores": scores, "files": files}

    stages = [
        Stage("plan", lambda: [_cmd("nnUNetv2_plan_and_preprocess", plan_args)],
              lambda: {"raw": files_fingerprint([raw / "imagesTr", raw / "labelsTr", raw / "dataset.json"]),
                       "settings": {k: settings[k] for k in ("configuration", "small_plans", "num_epochs",
                                                             "iterations_per_epoch", "val_iterations_per_epoch",
                                                             "initial_lr", "mirroring", "seed", "cv_folds")}},
              plan),
        Stage("teacher", teacher_commands, lambda: {"folds": folds, "device": device}, teacher,
              reset=lambda: _remove(teacher_model)),
        Stage("quality", lambda: [_cmd("nnunet-medaka", ["qc", "train", "-d", dataset_id, "-c", configuration, "-p", plans,
                                                         "-f", ",".join(map(str, folds)), "--tau", settings["tau"],
                                                         "--corruptions", settings["corruptions_per_organ"],
                                                         "--seed", settings["seed"], "-o", quality_dir])],
              lambda: {k: settings[k] for k in ("tau", "corruptions_per_organ")}, quality,
              reset=lambda: _remove(quality_dir)),
        Stage("pseudolabel", lambda: [_cmd("nnunet-medaka", ["pseudolabel", "-m", teacher_model, "-f", *folds, "-i", raw,
                                                             "-o", pseudo_dir, "-q", quality_dir, "--acceptance",
                                                             settings["acceptance"], "-device", device,
                                                             *([] if mirroring else ["--disable-tta"])])],
              lambda: {"images": files_fingerprint([unlabeled]), "acceptance": settings["acceptance"],
                       "mirroring": mirroring}, pseudo, reset=lambda: _remove(pseudo_dir)),
        Stage("student-dataset", lambda: [_cmd("nnunet-medaka", ["build-student", pseudo_dir, "-d", student_id,
                                                                 "-n", student_short, "--teacher-raw", raw,
                                                                 "--overwrite"])],
              lambda: {"student_id": student_id, "kd": [settings["kd_weight"], settings["kd_temperature"]]},
              _remember(student, student_dataset)),
        Stage("student", student_commands, lambda: {"folds": settings["student_folds"], "init": settings["student_init"]},
              train_student,
              reset=lambda: _remove(student_model()) if student else None),
        Stage("evaluate", evaluate_commands, lambda: {"test": files_fingerprint([raw / "imagesTs", raw / "labelsTs"])},
              evaluate, reset=lambda: _remove(pred_dir)),
    ]
    if dry_run:
        say(f"run of {raw.name} with preset {preset!r} into {out} (dry run: nothing is executed)")
        say(f"disk estimate: {_disk_estimate(raw, unlabeled, settings) / 2**30:.2f} GiB")
    state = RunState(out / STATE_FILE)
    if not dry_run and "student-dataset" in state.stages:
        student.update(state.stages["student-dataset"]["outputs"])
    results = run_stages(stages, state, log=say, dry_run=dry_run)
    if "evaluate" in results:
        results["results"] = results["evaluate"]["outputs"]
    return results


def _student_id(out: Path, dataset_id: int) -> int:
    """The run's student dataset id: the one it recorded, else the first id above ``dataset_id + 100`` (wrapping
    below 1000) with no dataset in ``nnUNet_raw``."""
    owner = out / "student_dataset.json"
    if owner.is_file():
        return int(json.loads(owner.read_text())["id"])
    raw_root = Path(os.environ["nnUNet_raw"])
    for offset in range(100, 1099):
        candidate = (dataset_id + offset - 1) % 999 + 1
        if candidate != dataset_id and not any(raw_root.glob(f"Dataset{candidate:03d}_*")):
            return candidate
    raise MedakaError(f"no free dataset id in {raw_root}; pass --student-id")


def _remove(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _remember(target: dict, fn: Callable[[], dict]) -> Callable[[], dict]:
    """Run ``fn`` and keep its outputs in ``target`` for the stages after it."""
    def wrapped() -> dict:
        outputs = fn()
        target.update(outputs)
        return outputs
    return wrapped


def _train_environ(env: dict, device: str, threads: Optional[int] = None) -> dict:
    train_env = dict(env)
    train_env.setdefault("nnUNet_n_proc_DA", "0" if device == "cpu" else str(min(8, os.cpu_count() or 1)))
    if threads is not None:  # BLAS/OpenMP pools of a training that shares the CPU with others
        train_env["OMP_NUM_THREADS"] = str(threads)
    return train_env


def _threads_per_training(settings: dict, device: str, workers: int) -> Optional[int]:
    """Torch threads of each of ``workers`` simultaneous CPU trainings: the setting, else the cores shared out;
    None (nnU-Net's choice) for a single training or on a GPU."""
    if device != "cpu" or workers == 1 or settings["cpu_threads"] is not None:
        return settings["cpu_threads"]
    return max(1, (os.cpu_count() or 1) // workers)


def _disk_estimate(raw: Path, unlabeled: Path, settings: dict) -> int:
    """Bytes a run writes, roughly: preprocessed float32 arrays (teacher and student datasets), out-of-fold and
    pseudo-label probabilities of the teacher kept only in memory, segmentations, checkpoints."""
    def raw_bytes(folder: Path) -> int:
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0

    images = raw_bytes(raw / "imagesTr") + raw_bytes(unlabeled)
    # compressed NIfTI expands ~3x to float32 arrays; the student re-preprocesses labeled + pseudo cases;
    # --npz keeps the out-of-fold probabilities (one float32 map per class)
    n_classes = 10
    return int(images * 3 * 2 + raw_bytes(raw / "imagesTr") * 3 * n_classes + 50e6 * (settings["cv_folds"] + 2))


def parse_set(text: str) -> tuple:
    """``KEY=VALUE`` of ``--set``: the value as JSON when it parses, else as text."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. cv_folds=3")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _run(args: argparse.Namespace) -> int:
    from nnunet_medaka.pipeline.results import print_run_summary

    run_pipeline(args.dataset, args.out, preset=args.preset, overrides=dict(args.set or []),
                 student_id=args.student_id, device=args.device, dry_run=args.dry_run,
                 overwrite=args.overwrite)
    if not args.dry_run:
        print_run_summary(Path(args.out))
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
