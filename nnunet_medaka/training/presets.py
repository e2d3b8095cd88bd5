"""Training presets as plain data: the schedules and network variants that ``run`` and ``experiment`` read.

Each preset is a dict of
    configuration         nnU-Net configuration to plan, preprocess and train ("2d", "3d_fullres")
    small_plans           None (nnU-Net's own plans for that configuration) or keyword arguments of
                          `nnunet_medaka.training.plans.write_small_plans` (network width, patch, batch)
    num_epochs, iterations_per_epoch, val_iterations_per_epoch, initial_lr, mirroring, cpu_threads,
    final_validation      config keys (`nnunet_medaka.config.MedakaConfig`) written to the dataset's config file
    fold                  the nnU-Net fold to train ("all": every labeled case; the test set is held out anyway)

Where each preset's numbers come from: docs/results (protocol.md for ``quick``, demo.md for ``cpu-demo``).

``quick`` is the CPU protocol chosen by measurement on MSD hippocampus (benchmarks/protocol_hippocampus.py);
``cpu-demo`` is the schedule of ``nnunet-medaka demo`` on synthetic phantoms (minutes on a CPU); ``full`` is nnU-Net's own schedule.
"""
from __future__ import annotations

import copy
import json
from typing import Optional

from nnunet_medaka.config import MedakaConfig
from nnunet_medaka.errors import MedakaError

__all__ = ["PRESETS", "PRESET_RUN_DEFAULTS", "RUN_DEFAULTS", "config_assignments", "get_preset", "resolve_settings",
           "student_recipe"]

PRESETS: dict = {
    "cpu-demo": {
        # nnU-Net's 2d configuration with a narrow network: on 2 CPU cores 3d_fullres learned nothing but the eyes
        # in 350 iterations, while 2d reached mean Dice ~0.6 on 9 synthetic organs (docs/results/demo.md)
        "configuration": "2d",
        "small_plans": {"target_plans": "nnUNetPlansDemo", "features_per_stage": [16, 32, 64, 128],
                        "batch_size": 8, "patch_size": None},
        "num_epochs": 28, "iterations_per_epoch": 50, "val_iterations_per_epoch": 5,
        "initial_lr": 0.1, "mirroring": False, "cpu_threads": None, "final_validation": True, "fold": "all",
    },
    "quick": {
        # The CPU protocol chosen by measurement on MSD hippocampus (20 labeled, 30 test cases, seeds 0-2): mean
        # Dice 0.807 +- 0.007 in ~17 min of training per model on 2 CPU cores (docs/results/protocol.md).
        "configuration": "2d",
        "small_plans": {"target_plans": "nnUNetPlansQuick", "features_per_stage": [16, 32, 64, 128],
                        "batch_size": 8, "patch_size": [56, 40]},
        "num_epochs": 30, "iterations_per_epoch": 100, "val_iterations_per_epoch": 5,
        # final_validation stays on: `run` needs the cross-validation predictions (the protocol benchmark turns it
        # off for fold "all", whose validation cases are its training cases)
        "initial_lr": 0.05, "mirroring": False, "cpu_threads": None, "final_validation": True, "fold": "all",
    },
    "full": {
        "configuration": "3d_fullres",
        "small_plans": None,
        "num_epochs": 1000, "iterations_per_epoch": 250, "val_iterations_per_epoch": 50,
        "initial_lr": 0.01, "mirroring": True, "cpu_threads": None, "final_validation": True, "fold": 0,
    },
}

# the choices of `nnunet-medaka pseudolabel --filter` (nnunet_medaka.pseudolabel.predict.FILTERS, a later stage)
FILTERS = ("quality", "fold_agreement", "soft_dice_confidence", "mean_max_softmax", "auto")
_CONFIG_KEYS = ("num_epochs", "iterations_per_epoch", "val_iterations_per_epoch", "initial_lr", "mirroring",
                "cpu_threads", "final_validation")


def get_preset(name: str) -> dict:
    """A copy of the named preset.

    Raises
    ------
    MedakaError
        If there is no such preset.
    """
    if name not in PRESETS:
        raise MedakaError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def config_assignments(preset: dict) -> list:
    """The preset's config-file keys as ``(key, value)`` pairs for `nnunet_medaka.config.update_config_file`."""
    return [(k, preset[k]) for k in _CONFIG_KEYS]


# Settings of the method on top of the training preset (`nnunet_medaka.training.presets`); all overridable.
RUN_DEFAULTS = {
    "cv_folds": 5,  # teacher cross-validation folds: the quality classifier's training data
    # the student trains on every case it may use (fold "all": all labeled + accepted pseudo-labeled cases) and
    # distils from the teacher's fold ensemble, which made the pseudo-labels; a list of CV folds instead trains
    # one student per fold (fold k distils from teacher fold k) and ensembles them like the teacher
    "student_folds": ["all"],
    "seed": 0,
    "tau": 0.7,  # a pseudo-label is good when its IoU >= tau
    "acceptance": "case",  # case | organ | none (see nnunet_medaka.pseudolabel.acceptance)
    "corruptions_per_organ": 4,
    "kd_weight": MedakaConfig.kd_weight,  # the KD trainer's own defaults (docs/results: kd_weight)
    "kd_temperature": MedakaConfig.kd_temperature,
    "parallel_folds": 1,  # teacher folds trained at the same time (CPU: the cores are shared out between them)
    "student_init": "random",  # random | teacher: start the student from its teacher fold's weights
    # what decides which pseudo-labels are used: the quality classifier's P(good), a label-free signal of the
    # teacher's ensemble, or auto: whichever ranked the teacher's out-of-fold predictions best (the classifier only
    # when it beats every signal), as `nnunet-medaka pseudolabel --filter`. auto by measurement: on unlabeled pools
    # the signals ranked pseudo-labels better than the classifier, and students were never worse for it
    # (docs/reference/settings.md)
    "filter": "auto",
    # share of a student's training samples drawn from the labeled cases; None: nnU-Net's uniform draw over cases
    "labeled_share": MedakaConfig.labeled_share,
    # voxel gating of the pseudo-labels (`pseudolabel --voxel-confidence`): None, or a probability below which a
    # voxel's pseudo-label becomes the ignore label
    "voxel_confidence": None,
    # the students' training augmentation (config key `augmentation`): nnunet, or da5 (nnU-Net's heavier pipeline,
    # the noisy-student recipe); the teacher and the supervised baseline keep nnU-Net's
    "student_augmentation": MedakaConfig.augmentation,
    # the students' last epochs draw only the labeled cases (config key `finetune_epochs`): a final fine-tune on the
    # labeled cases; 0: none
    "student_finetune": MedakaConfig.finetune_epochs,
    # None: the students have the teacher's network; a share in (0, 1): every stage that much narrower (same plans
    # otherwise), a smaller student distilled from the teacher ensemble
    "student_width": None,
    # self-training rounds: after round r its student (every CV fold, ensembled) is round r+1's teacher; a round
    # runs only when the previous student's out-of-fold Dice on the labeled cases beat its own teacher's by more
    # than round_min_gain (the evidence available without test labels)
    "rounds": 1,
    "round_min_gain": 0.0,
    # experiment only: None, or the students' unlabeled pool cut to this many cases (a seeded, nested draw per seed
    # from each unit's pool; the teacher and its pseudo-labels are shared by every pool size): the pool-size curve
    "pool_size": None,
}
# Per-preset method defaults, each chosen by measurement (docs/results, CHANGELOG.md): cpu-demo accepts per organ (a teacher of
# a few minutes has a weak organ in every case), starts the student from its teacher and keeps kd_weight 1; quick
# starts the student from its teacher (the short schedule leaves the teacher undertrained).
PRESET_RUN_DEFAULTS = {"cpu-demo": {"cv_folds": 2, "parallel_folds": 2, "acceptance": "organ", "student_init": "teacher",
                                    "kd_weight": 1.0},
                       "quick": {"student_init": "teacher"}}


def student_recipe(settings: dict) -> dict:
    """The student trainings' own settings (the pipeline's `train_step` puts them in a student dataset's config)
    that differ from their defaults: part of a student training's fingerprint, so that changing one retrains the
    students; defaults are left out, so folders made before a key existed resume as they were."""
    keys = ("labeled_share", "student_augmentation", "student_finetune")
    return {k: settings[k] for k in keys if settings[k] != RUN_DEFAULTS[k]}


def resolve_settings(preset: str, overrides: Optional[dict] = None) -> dict:
    """The run's settings: the training preset, then the method's defaults, then ``overrides``.

    Raises
    ------
    MedakaError
        For an unknown preset or key, or a value out of range.
    """
    settings = {"preset": preset, **get_preset(preset), **RUN_DEFAULTS, **PRESET_RUN_DEFAULTS.get(preset, {})}
    unknown = [k for k in (overrides or {}) if k not in settings or k == "preset"]
    if unknown:
        raise MedakaError(f"unknown run setting{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; known: "
                          f"{', '.join(sorted(k for k in settings if k != 'preset'))}")
    settings.update(overrides or {})
    problems = [f"{key}={json.dumps(settings[key])}: expected {want}" for key, want in _setting_problems(settings)]
    if problems:
        raise MedakaError("; ".join(problems))
    return settings


def _whole(v, low: int) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= low


def _setting_problems(s: dict) -> list:
    """(key, what it should be) for every setting out of its rules: the config file's rules for its keys
    (`nnunet_medaka.config.check_value`), the method's own for the rest."""
    from nnunet_medaka.config import check_value

    out = [(k, check_value(k, s[k])) for k in (*_CONFIG_KEYS, "kd_weight", "kd_temperature", "labeled_share")]
    out.append(("student_augmentation", check_value("augmentation", s["student_augmentation"])))
    ft = s["student_finetune"]
    out.append(("student_finetune", check_value("finetune_epochs", ft) or (
        None if not _whole(s["num_epochs"], 1) or ft < s["num_epochs"] else
        f"fewer than num_epochs ({s['num_epochs']}): the student must train on its pseudo-labels first")))
    w = s["student_width"]
    out.append(("student_width", None if w is None or (not isinstance(w, bool) and isinstance(w, (int, float))
                                                       and 0 < w < 1) else "null or a share in (0, 1)"))
    if w is not None and s["student_init"] == "teacher":  # the teacher's weights do not fit a narrower network
        out.append(("student_width", "null with student_init=teacher, or set student_init=random for a narrower "
                                     "student (it cannot start from the teacher's wider weights)"))
    out.append(("rounds", None if _whole(s["rounds"], 1) else "a whole number >= 1"))
    g = s["round_min_gain"]
    out.append(("round_min_gain", None if not isinstance(g, bool) and isinstance(g, (int, float)) and -1 <= g <= 1
                else "a Dice difference in [-1, 1] (-1: run every round)"))
    if _whole(s["rounds"], 2) and _whole(s["cv_folds"], 2) and s["student_folds"] != list(range(s["cv_folds"])):
        out.append(("student_folds", f"every cross-validation fold, {list(range(s['cv_folds']))}, with rounds="
                                     f"{s['rounds']}: the next round's teacher is the students' fold ensemble, whose "
                                     "out-of-fold predictions train its quality classifier and decide the early stop"))
    if _whole(s["rounds"], 2) and w is not None:
        out.append(("student_width", "null with rounds > 1 (a narrower student does not become the next teacher "
                                     "here); distil a narrower student from the last round's run instead"))
    out.append(("pool_size", None if s["pool_size"] is None or _whole(s["pool_size"], 1) else
                "null (the whole pool) or a whole number >= 1"))
    out.append(("seed", None if _whole(s["seed"], 0) and s["seed"] < 2**31 else "an integer from 0 to 2**31 - 1"))
    out.append(("cv_folds", None if _whole(s["cv_folds"], 2) else
                "a whole number >= 2 (the quality classifier learns from out-of-fold predictions)"))
    folds = s["student_folds"]
    good = folds == ["all"] or (isinstance(folds, list) and folds and all(
        _whole(f, 0) and _whole(s["cv_folds"], 2) and f < s["cv_folds"] for f in folds))
    out.append(("student_folds", None if good else '["all"] (one student on every case) or a non-empty list of '
                f"cross-validation folds{' among 0..' + str(s['cv_folds'] - 1) if _whole(s['cv_folds'], 2) else ''}"))
    out.append(("parallel_folds", None if _whole(s["parallel_folds"], 1) else "a whole number >= 1"))
    out.append(("corruptions_per_organ", None if _whole(s["corruptions_per_organ"], 0) else "a whole number >= 0"))
    tau = s["tau"]
    out.append(("tau", None if tau == "auto" or (not isinstance(tau, bool) and isinstance(tau, (int, float))
                                                and 0 < tau < 1) else 'a number in (0, 1), or "auto"'))
    out.append(("student_init", None if s["student_init"] in ("random", "teacher") else
                "random (nnU-Net's initialisation) or teacher (start from the teacher fold's weights)"))
    out.append(("acceptance", None if s["acceptance"] in ("case", "organ", "none") else "case, organ or none"))
    out.append(("filter", None if s["filter"] in FILTERS and s["filter"] != "fold_agreement" else
                "auto, quality, soft_dice_confidence or mean_max_softmax (fold_agreement needs a threshold of its own: "
                "`nnunet-medaka pseudolabel --filter fold_agreement --threshold T`)"))
    v = s["voxel_confidence"]
    out.append(("voxel_confidence", None if v is None or (not isinstance(v, bool) and isinstance(v, (int, float))
                                                          and 0 < v <= 1) else "null or a probability in (0, 1]"))
    out.append(("configuration", None if isinstance(s["configuration"], str) and s["configuration"] else
                "an nnU-Net configuration, e.g. 2d or 3d_fullres"))
    out.append(("small_plans", None if s["small_plans"] is None or isinstance(s["small_plans"], dict) else
                "null or an object of write_small_plans arguments"))
    return [(k, want) for k, want in out if want is not None]

