"""The method's steps, each written once: a function over files plus the stock command lines it stands for.

Every step works on a `Unit`: one raw dataset in ``split``'s layout (labeled, unlabeled pool, test cases), its
settings, the folders it writes (`nnunet_medaka.pipeline.layout.UnitFolders`) and how its stock commands run.
``run`` is the graph of one unit (`nnunet_medaka.pipeline.run`); ``experiment`` builds the graph of every
fraction x seed from the same steps (`nnunet_medaka.pipeline.experiment_units`). Each function returns a
`nnunet_medaka.pipeline.engine.Step`; the graphs name the nodes, their inputs and their dependencies.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from nnunet_medaka.files import remove, write_json_atomic
from nnunet_medaka.pipeline.engine import Step
from nnunet_medaka.pipeline.layout import UnitFolders
from nnunet_medaka.training.plans import width_plans_name, write_width_plans
from nnunet_medaka.training.stock import (
    STUDENT_TRAINER, TEACHER_TRAINER, Model, cmd, evaluate_args, fold_finished, plans_name, predict_args,
    threads_per_training, train_args, train_environ,
)

__all__ = ["Unit", "build_student_step", "evaluate_step", "predict_and_score", "pseudolabel_step", "quality_step",
           "train_step"]


@dataclass
class Unit:
    """One teacher/student unit.

    Attributes
    ----------
    raw : Path
        Its raw dataset (``imagesTr``/``labelsTr``, ``imagesUnlabeled`` [+ ``labelsUnlabeled_gt``], ``imagesTs``/
        ``labelsTs``); its name is also the teacher's folder name in ``$nnUNet_preprocessed``/``_results``.
    dataset_id, settings, seed, device, env
        Its id, resolved settings (`nnunet_medaka.training.presets.resolve_settings`), training and quality seed,
        and the device and environment of its stock commands.
    folders, logs, log_prefix
        Where it writes; each stock command's log is ``logs/<log_prefix><name>.log``.
    teacher : Model, optional
        The teacher of a later self-training round (the previous round's students, every fold); default the
        ``SupervisedTrainer`` cross-validation on ``raw``. Students keep the plans named after ``raw`` either way.
    """

    raw: Path
    dataset_id: int
    settings: dict
    seed: int
    device: str
    env: dict
    folders: UnitFolders
    logs: Path
    log_prefix: str = ""
    teacher: Optional[Model] = None

    @property
    def configuration(self) -> str:
        return self.settings["configuration"]

    @property
    def plans(self) -> str:
        return plans_name(self.settings)

    @property
    def folds(self) -> list:
        return list(range(self.settings["cv_folds"]))

    @property
    def mirroring(self) -> bool:
        return bool(self.settings["mirroring"])

    @property
    def roots(self) -> dict:
        return {v: Path(self.env[v]) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}

    @property
    def student_plans(self) -> str:
        """The plans name of every student dataset made from this unit, in every round (``build-student``'s
        default for a first-round teacher)."""
        return f"{self.plans}From{self.dataset_id:03d}"

    @property
    def preprocessed(self) -> Path:
        return self.roots["nnUNet_preprocessed"] / self.raw.name

    def model(self, trainer: str = TEACHER_TRAINER, dataset: Optional[tuple[int, str]] = None) -> Model:
        """The teacher (default), or a model of ``trainer`` on the student dataset ``(id, name)`` made from it."""
        if dataset is None and trainer == TEACHER_TRAINER and self.teacher is not None:
            return self.teacher
        if dataset is None:
            return Model(self.dataset_id, trainer, self.plans, self.configuration,
                         self.roots["nnUNet_results"] / self.raw.name)
        plans = self.student_plans
        if self.settings.get("student_width") is not None:  # a narrower network of the same plans
            plans = width_plans_name(plans, self.settings["student_width"])
        return Model(dataset[0], trainer, plans, self.configuration, self.roots["nnUNet_results"] / dataset[1])

    def stock(self, script: str, args: Sequence, name: str, env: Optional[dict] = None) -> None:
        from nnunet_medaka.environment import run_stock_command

        self.logs.mkdir(parents=True, exist_ok=True)
        run_stock_command(script, list(args), env=env or self.env, log_file=self.logs / f"{self.log_prefix}{name}.log")


def train_step(unit: Unit, model: Model, folds: Sequence, *, role: str, npz: bool = False,
               fresh: Callable[[object], list] = lambda fold: [], parallel: int = 1, threads: Optional[int] = None,
               private_configs: bool = False) -> Step:
    """``nnUNetv2_train`` on ``folds`` (``parallel`` at a time), skipping finished folds and continuing interrupted
    ones (``--c``). A KD student trains fold k against the teacher's fold k (leak-free), fold ``all`` against the
    teacher's fold ensemble; fold ``all`` skips nnU-Net's final validation (its validation cases are its training
    cases).

    The config keys a training needs of its own (its teacher fold, its share of the cores) go into the dataset's
    config file, or, with ``private_configs`` (trainings of one dataset at the same time in other steps), into a
    copy that only this training reads (``$nnunet_medaka_config``).
    """
    from nnunet_medaka.config import CONFIG_ENV_VAR, update_config_file

    s = unit.settings
    kd = model.trainer == STUDENT_TRAINER
    extra = ["--npz"] if npz else []
    config = unit.roots["nnUNet_preprocessed"] / model.results.name / "nnunet_medaka.json"

    def teacher_folds(fold) -> list:  # fold k distils from teacher fold k (leak-free), fold all from the ensemble
        return unit.folds if fold == "all" else [fold]

    def own(fold, n_threads: Optional[int]) -> list:
        keys = [("cpu_threads", n_threads)] if n_threads is not None or not private_configs else []
        if fold == "all":  # its validation cases would be its training cases
            keys.append(("final_validation", False))
        if model.dataset_id != unit.dataset_id:  # a student dataset: labeled + pseudo-labeled cases
            keys += [("labeled_share", s["labeled_share"]), ("augmentation", s["student_augmentation"]),
                     ("finetune_epochs", s["student_finetune"])]
        if kd:
            keys += [("teacher", str(unit.model().folder)), ("teacher_folds", teacher_folds(fold)),
                     ("kd_weight", s["kd_weight"]), ("kd_temperature", s["kd_temperature"])]
        return keys

    def train(fold: int, n: int, n_threads: Optional[int], say) -> None:
        env = train_environ(unit.env, unit.device, n_threads)
        if private_configs or fold == "all":  # fold all's keys must not reach other trainings of this dataset
            copy = unit.folders.configs / f"{role}_fold{fold}.json"
            copy.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(copy, json.loads(config.read_text()) if config.is_file() else {})
            update_config_file(copy, own(fold, n_threads))
            env[CONFIG_ENV_VAR] = str(copy)
        else:
            update_config_file(config, own(fold, n_threads))
        against = "the teacher's fold ensemble" if fold == "all" else f"teacher fold {fold}"
        say(f"fold {fold}: " + (f"training against {against}" if kd else "training")
            + (f" ({n} folds at a time, {n_threads} thread(s) each)" if n > 1 else ""))
        unit.stock("nnUNetv2_train", train_args(model, fold, unit.device, extra, fresh(fold)),
                   f"train_{role}_fold{fold}", env=env)

    def run(say) -> dict:
        pending = [f for f in folds if not fold_finished(model, f, npz=npz,
                                                         validation=bool(s["final_validation"]) and f != "all")]
        for f in sorted(set(folds) - set(pending)):
            say(f"fold {f}: finished earlier")
        n = max(1, min(parallel, len(pending)))
        n_threads = threads if threads is not None else threads_per_training(s["cpu_threads"], unit.device, n)
        # folds are independent nnU-Net processes: on a CPU two small trainings with one thread each finish
        # sooner than one after the other with two threads each (measured; docs, "run")
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(train, f, n, n_threads, say) for f in pending]
        failures = [fu.exception() for fu in futures if fu.exception() is not None]
        if failures:
            raise failures[0]
        return {"model": str(model.folder), **({"fold": folds[0]} if len(folds) == 1 else {"folds": list(folds)})}

    def commands() -> list:
        train = lambda f: cmd("nnUNetv2_train", [model.dataset_id, model.configuration, f, "-tr", model.trainer, "-p",
                                                 model.plans, "-device", unit.device, *extra, *fresh(f)])
        if kd:
            return [cmd("nnunet-medaka", ["config", "-d", model.dataset_id, "--set=teacher_folds=["
                                          + ",".join(map(str, teacher_folds(f))) + "]"]) + " && " + train(f) for f in folds]
        return [train(f) for f in folds]

    return Step(commands, run, reset=lambda: remove(*(model.folder / f"fold_{f}" for f in folds)))


def quality_step(unit: Unit, extra: Sequence[Model] = ()) -> Step:
    """The quality classifier from the teacher's out-of-fold predictions (``nnunet-medaka qc train``), with the
    out-of-fold predictions of the ``extra`` cross-validations of the same labeled cases as more training rows."""
    s, folder, t = unit.settings, unit.folders.quality, unit.model()
    extra_args = [a for m in extra for a in ("--extra-teacher", f"{m.dataset_id}:{m.trainer}:{m.plans}")]

    def run(say) -> dict:
        from nnunet_medaka.quality.commands import train_quality

        train_quality(str(t.dataset_id), t.configuration, trainer=t.trainer, plans=t.plans, folds=unit.folds,
                      tau=s["tau"], corruptions_per_organ=s["corruptions_per_organ"], seed=unit.seed, output=folder,
                      overwrite=True, progress=False,
                      extra_teachers=[(str(m.dataset_id), m.trainer, m.plans) for m in extra])
        return {"folder": str(folder)}

    commands = lambda: [cmd("nnunet-medaka", [
        "qc", "train", "-d", t.dataset_id, "-c", t.configuration, *(["-tr", t.trainer] if t.trainer != TEACHER_TRAINER
                                                                     else []), "-p", t.plans, "-f", ",".join(map(str, unit.folds)),
        "--tau", s["tau"], "--corruptions", s["corruptions_per_organ"], "--seed", unit.seed, *extra_args, "-o", folder])]
    return Step(commands, run, reset=lambda: remove(folder))


def pseudolabel_inputs(settings: dict) -> dict:
    """The pseudo-label settings a stage's inputs record beyond acceptance, only where they differ from the old
    behaviour (so folders made before a setting existed resume as they were)."""
    return {**({"filter": settings["filter"]} if settings.get("filter", "quality") != "quality" else {}),
            **({"voxel_confidence": settings["voxel_confidence"]} if settings.get("voxel_confidence") is not None
               else {})}


def pseudolabel_step(unit: Unit, output: Path, *, acceptance: str, quality: Optional[Path], ground_truth: Optional[Path]
                     ) -> Step:
    """The teacher's fold ensemble on the unlabeled pool, scored and filtered (``nnunet-medaka pseudolabel``)."""
    teacher = unit.model().folder
    by = unit.settings.get("filter", "quality") if acceptance != "none" else "quality"  # what decides (--filter)
    gate = unit.settings.get("voxel_confidence")  # voxel gating, any acceptance

    def run(say) -> dict:
        from nnunet_medaka.pseudolabel.predict import pseudolabel

        gt = ground_truth if ground_truth is not None and ground_truth.is_dir() else None
        result = pseudolabel(teacher, unit.raw, output, folds=unit.folds, quality_model=quality, acceptance=acceptance,
                             mirroring=unit.mirroring, device=unit.device, ground_truth=gt, teacher_raw=unit.raw,
                             progress=False, filter_by=by, voxel_confidence=gate)
        return {"folder": str(output), "summary": result.get("summary")}

    commands = lambda: [cmd("nnunet-medaka", [
        "pseudolabel", "-m", teacher, "-f", *unit.folds, "-i", unit.raw, "-o", output, *(["-q", quality] if quality else []),
        "--acceptance", acceptance, *(["--filter", by] if by != "quality" else []),
        *(["--voxel-confidence", gate] if gate is not None else []), "-device", unit.device,
        *([] if unit.mirroring else ["--disable-tta"])])]
    return Step(commands, run, reset=lambda: remove(output))


def build_student_step(unit: Unit, source: Path, dataset: tuple[int, str], *, settings: list, keep: Sequence[str],
                       allow_empty: bool = False, reset: Sequence[Path] = ()) -> Step:
    """Labeled + accepted pseudo-labeled cases as a new dataset ``(id, DatasetXXX_Name)`` on the teacher's plans
    (``nnunet-medaka build-student``); the outputs keep ``keep`` of what it returns."""
    ident, name = dataset
    short = name.split("_", 1)[1]

    def run(say) -> dict:
        from nnunet_medaka.pseudolabel.student import build_student

        remove(unit.roots["nnUNet_results"] / name)  # models of an earlier student dataset under this id
        built = build_student(source, ident, short, teacher_raw=unit.raw, settings=settings, overwrite=True,
                              allow_empty=allow_empty, plans_name=plans)
        if width is not None:
            write_width_plans(built["preprocessed"], source_plans=built["plans"], configuration=unit.configuration,
                              width=width)
        return {k: built[k] for k in keep}

    width = unit.settings.get("student_width")
    # a later round's teacher is itself a student dataset: its students keep the first round's plans name
    plans = unit.student_plans if unit.teacher is not None else None
    commands = lambda: [cmd("nnunet-medaka", ["build-student", source, "-d", ident, "-n", short, "--teacher-raw", unit.raw,
                                              *(["--plans-name", plans] if plans else []), "--overwrite"])] + ([
        f"# the student's plans with {width:g} of the feature maps per stage: {unit.model(dataset=dataset).plans}"]
        if width is not None else [])
    return Step(commands, run, reset=(lambda: remove(*reset)) if reset else None)


def predict_and_score(unit: Unit, model: Model, folds: Sequence[int], role: str) -> Path:
    """Predict the unit's test cases with ``model`` (``folds`` ensembled) and evaluate them; the summary file."""
    target = unit.folders.predictions(role)
    remove(target)  # a half-finished prediction of a killed run
    unit.stock("nnUNetv2_predict", predict_args(model, unit.raw / "imagesTs", target, folds, unit.device,
                                                unit.mirroring), f"predict_{role}")
    unit.stock("nnUNetv2_evaluate_folder", evaluate_args(unit.raw / "labelsTs", target, model.folder), f"evaluate_{role}")
    return target / "summary.json"


def evaluate_step(unit: Unit, model: Model, folds: Sequence[int], role: str, *, model_placeholder: bool = False
                  ) -> tuple[Callable[[], list], Callable[[], Path]]:
    """(commands, work) of scoring one model on the test cases: ``nnUNetv2_predict`` + ``nnUNetv2_evaluate_folder``.
    With ``model_placeholder`` the listing says ``MODEL`` for the model folder (not known before training)."""
    target = unit.folders.predictions(role)
    commands = lambda: [
        cmd("nnUNetv2_predict", predict_args(model, unit.raw / "imagesTs", target, folds, unit.device, unit.mirroring)),
        cmd("nnUNetv2_evaluate_folder", evaluate_args(unit.raw / "labelsTs", target,
                                                      "MODEL" if model_placeholder else model.folder))]
    return commands, lambda: predict_and_score(unit, model, folds, role)
