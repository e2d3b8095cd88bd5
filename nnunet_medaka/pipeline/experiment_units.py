"""The work of ``nnunet-medaka experiment`` as a graph of resumable units, each shared by every row that needs it.

Datasets (all new, in ``$nnUNet_raw/_preprocessed/_results``; ids recorded in ``OUT/datasets.json``):

``base``        hard links of the given dataset's labeled cases, planned and preprocessed **once**
                (``nnUNetv2_plan_and_preprocess`` + the preset's network variant): every row of every fraction and
                seed uses these plans, hence the same network, patch and normalisation;
``F<pct>S<s>``  one per (fraction, seed): the fraction's labeled cases (drawn with the seed from one permutation, so
                a smaller fraction's cases are part of a larger one's; fraction 1 = every labeled case), the other
                labeled cases added to the unlabeled pool with their labels as ``labelsUnlabeled_gt`` (as ``split``
                does), the same test cases. Its preprocessed folder holds hard links to the base's arrays of those
                cases (no second preprocessing: bit-identical input), its own seeded ``splits_final.json`` and config;
``...All/QC``   the student datasets of ``pseudo-all`` (every pseudo-label) and ``pseudo-qc``/``pseudo-qc-kd``
                (accepted ones), made by ``build-student``.

Units (``Node``), in the order they run, per (fraction, seed) ``u``:

``plan``                      the base dataset (once for the whole experiment)
``u/dataset``                 the unit's dataset
``u/teacher/fold<k>``         ``nnUNetv2_train -tr SupervisedTrainer --npz``: the ``teacher`` row, the KD teacher of
                              ``kd-only``/``pseudo-qc-kd`` fold k, and (all folds) the pseudo-label ensemble
``u/quality``                 the quality classifier from the teacher's out-of-fold predictions
``u/pseudolabel``             the teacher's fold ensemble on the unlabeled pool, scored and filtered (``acceptance``)
``u/pseudolabels-all``        the same pseudo-labels with every case accepted: derived from ``u/pseudolabel``'s
                              records and label files without predicting again (``acceptance=case`` keeps the
                              teacher's argmax for rejected cases); ``acceptance=organ`` rewrites rejected organs,
                              so there it is a second prediction with ``acceptance=none``
``u/data-all``, ``u/data-qc`` ``build-student`` on those (``data-qc`` may hold no pseudo-label: then the rows train
                              on the labeled cases alone, and results say 0 accepted)
``u/<row>/fold<k>``           the row's training: ``SupervisedTrainer`` for the no-KD rows (stock loss),
                              ``KDTrainer`` with ``teacher_folds=[k]`` (leak-free) for the KD rows
``u/<row>/evaluate``          ``nnUNetv2_predict`` + ``nnUNetv2_evaluate_folder`` on the test cases

A unit's fingerprint covers its own inputs and those of the units it depends on, and the state file records each
finished unit (`nnunet_medaka.pipeline.state`): adding rows, fractions or seeds adds units and redoes none; a
changed setting redoes exactly the units that read it and those below them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

from nnunet_medaka.config import write_json_atomic
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pipeline.graph import Node, node_fingerprints, run_nodes

__all__ = ["ROWS", "KD_ROWS", "PSEUDO_ROWS", "UnitGraph", "accept_all_view", "draw_labeled", "unit_key"]

ROWS = {
    "teacher": "SupervisedTrainer on the labeled fraction (the baseline)",
    "pseudo-all": "SupervisedTrainer on labeled + every pseudo-label (no quality filter, no KD)",
    "pseudo-qc": "SupervisedTrainer on labeled + accepted pseudo-labels (quality filter, no KD)",
    "pseudo-qc-kd": "KDTrainer on labeled + accepted pseudo-labels (quality filter + KD: the paper's method)",
    "kd-only": "KDTrainer on the labeled fraction alone, against the teacher of the same fold (no pseudo-labels)",
    "supervised-all": "SupervisedTrainer on every labeled case (fraction 1; the reference)",
}
PSEUDO_ROWS = ("pseudo-all", "pseudo-qc", "pseudo-qc-kd")
KD_ROWS = ("pseudo-qc-kd", "kd-only")
TEACHER, STUDENT = "SupervisedTrainer", "KDTrainer"
# a preprocessed case's files in nnU-Net 2.8.1 (blosc2), and those of the older numpy formats
_ARRAY_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl", ".npz", ".npy", "_seg.npy")


def unit_key(fraction: float, seed: int) -> str:
    """``f0.33/s0``: the unit's name in the state file and its folder below ``OUT/units``."""
    return f"f{fraction:g}/s{seed}"


def draw_labeled(cases: Sequence[str], fraction: float, seed: int) -> list:
    """The fraction's labeled cases: the first ``max(1, round(fraction * n))`` of a seeded permutation (sorted).

    One permutation per seed, so the cases of a smaller fraction are among those of a larger one; fraction 1 gives
    every case whatever the seed.
    """
    import numpy as np

    cases = sorted(cases)
    k = max(1, round(fraction * len(cases)))
    order = np.random.default_rng(seed).permutation(len(cases))
    return sorted(cases[i] for i in order[:k])


def _fold_finished(model: Path, fold: int, *, npz: bool, validation: bool) -> bool:
    """A fold's training is complete: final checkpoint, and nnU-Net's final validation (with its ``--npz``
    probabilities) unless the config key ``final_validation`` turned it off."""
    fold_dir = model / f"fold_{fold}"
    if not (fold_dir / "checkpoint_final.pth").is_file():
        return False
    if not validation:
        return True
    return (fold_dir / "validation" / "summary.json").is_file() and (
        not npz or any((fold_dir / "validation").glob("*.npz")))


def _remove(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def accept_all_view(source: os.PathLike | str, target: os.PathLike | str) -> dict:
    """A pseudolabel folder with every case of ``source`` accepted, without predicting again.

    ``source`` must have been made with ``acceptance`` ``case`` or ``none``: its label files are then the teacher's
    argmax for every case, rejected ones included. The label files are hard-linked, the records copied with every
    decision set to accept (scores and true IoU kept), and the table and summary written as ``pseudolabel`` would
    with ``--acceptance none``; ``build-student`` reads it like any pseudolabel folder.

    Returns
    -------
    dict
        The summary of the new folder.
    """
    from nnunet_medaka.pseudolabel.outputs import SETTINGS_FILE, read_records, read_settings, write_record, write_results

    source, target = Path(source), Path(target)
    settings = read_settings(source)
    if settings["acceptance"] not in ("case", "none"):
        raise MedakaError(f"{source}: acceptance {settings['acceptance']!r} rewrote rejected organs; an accept-all "
                          "view needs acceptance case or none")
    records, failures = read_records(source, settings["cases"])
    _remove(target)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    _remove(staging)
    for sub in ("labels", "records", "failures", "runs"):
        (staging / sub).mkdir(parents=True)
    write_json_atomic(staging / SETTINGS_FILE, {**settings, "acceptance": "none", "threshold": None,
                                                "derived_from": str(source)})
    for case, record in records.items():
        _link(source / record["label_file"], staging / record["label_file"])
        organs = [{**o, "decision": "accept"} for o in record["organs"]]
        write_record(staging, {**record, "organs": organs, "case_decision": "accept", "ignored_voxels": 0})
    for case, failure in failures.items():
        write_json_atomic(staging / "failures" / f"{case}.json", failure)
    summary = write_results(staging)
    os.replace(staging, target)
    return summary


class UnitGraph:
    """Builds the experiment's units; each node's ``run`` does its work through nnU-Net's stock commands.

    Parameters
    ----------
    raw : Path
        The given raw dataset (layout of ``split``).
    dataset_json : dict
        Its dataset.json.
    out : Path
        The experiment folder.
    settings : dict
        Resolved settings (`nnunet_medaka.pipeline.run.resolve_settings`).
    rows, fractions, seeds
        What to run (validated).
    ids : dict
        Dataset key (``base``, ``f0.33/s0``, ``f0.33/s0/all``, ``f0.33/s0/qc``) -> id.
    device : str
    env : dict
        Environment of the stock commands.
    say : callable
        Progress lines.
    """

    def __init__(self, *, raw: Path, dataset_json: dict, out: Path, settings: dict, rows: Sequence[str],
                 fractions: Sequence[float], seeds: Sequence[int], ids: dict, device: str, env: dict,
                 say: Callable[[str], None]):
        from nnunet_medaka.conversion.raw_dataset import cases_in_folder, list_cases
        from nnunet_medaka.environment import nnunet_folder

        self.raw, self.dataset_json, self.out, self.settings = raw, dataset_json, out, settings
        self.rows, self.fractions, self.seeds, self.ids = list(rows), list(fractions), list(seeds), ids
        self.device, self.env, self.say = device, env, say
        self.short = raw.name.split("_", 1)[1]
        self.roots = {v: nnunet_folder(v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        self.configuration = settings["configuration"]
        self.plans = settings["small_plans"]["target_plans"] if settings["small_plans"] else "nnUNetPlans"
        self.ending = dataset_json["file_ending"]
        n_channels = len(dataset_json["channel_names"])
        self.labeled = list_cases(raw, dataset_json)
        unlabeled = raw / dataset_json.get("unlabeled_images", "imagesUnlabeled")
        gt = raw / dataset_json.get("unlabeled_ground_truth", "labelsUnlabeled_gt")
        self.pool = cases_in_folder(unlabeled, gt if gt.is_dir() else None, self.ending, n_channels)
        for case in self.pool.values():
            if case["label"] is not None and not Path(case["label"]).is_file():
                case["label"] = None
        self.test = cases_in_folder(raw / "imagesTs", raw / "labelsTs", self.ending, n_channels)
        self.folds = list(range(settings["cv_folds"]))
        self.mirroring = bool(settings["mirroring"])
        # ``parallel_folds``: units run at the same time (trainings share the CPU cores out, as in ``run``)
        from nnunet_medaka.pipeline.run import _threads_per_training

        self.workers = settings["parallel_folds"]
        self.threads = _threads_per_training(settings, device, self.workers)

    # ---- names and folders -------------------------------------------------------------------------------------
    def dataset_name(self, key: str, ids: Optional[dict] = None) -> str:
        """``DatasetXXX_Name`` of a dataset key, with ``ids`` (default the graph's)."""
        ident = (self.ids if ids is None else ids)[key]
        if key == "base":
            return f"Dataset{ident:03d}_{self.short}Exp"
        parts = key.split("/")
        fraction, seed = float(parts[0][1:]), int(parts[1][1:])
        suffix = {"all": "All", "qc": "QC"}.get(parts[2], "") if len(parts) > 2 else ""
        return f"Dataset{ident:03d}_{self.short}F{round(fraction * 100):03d}S{seed}{suffix}"

    def folders(self, key: str) -> tuple[Path, Path, Path]:
        name = self.dataset_name(key)
        return tuple(self.roots[v] / name for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))

    def unit_dir(self, u: str) -> Path:
        return self.out / "units" / u.replace("/", "_")

    def model(self, u: str, row: str) -> tuple[int, Path, str, str]:
        """(dataset id, model folder, trainer, plans) of a row in unit ``u``."""
        if row in ("teacher", "kd-only", "supervised-all"):
            key, plans = u, self.plans
        else:
            key, plans = f"{u}/{'all' if row == 'pseudo-all' else 'qc'}", f"{self.plans}From{self.ids[u]:03d}"
        trainer = STUDENT if row in KD_ROWS else TEACHER
        return self.ids[key], self.folders(key)[2] / f"{trainer}__{plans}__{self.configuration}", trainer, plans

    def _stock(self, script: str, args: Sequence, log_name: str, env: Optional[dict] = None) -> None:
        from nnunet_medaka.environment import run_stock_command

        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        run_stock_command(script, list(args), env=env or self.env, log_file=logs / f"{log_name.replace('/', '_')}.log")

    # ---- the graph ---------------------------------------------------------------------------------------------
    def units(self) -> list:
        """(unit key, fraction, seed, rows evaluated in it), seed by seed so that every row gets a first result early."""
        out = []
        fractions = sorted(set(self.fractions) | ({1.0} if "supervised-all" in self.rows else set()), reverse=True)
        for seed in self.seeds:
            for fraction in fractions:
                rows = [r for r in self.rows if r != "supervised-all"] if fraction in self.fractions else []
                if fraction == 1.0 and "supervised-all" in self.rows:
                    rows.append("supervised-all")
                out.append((unit_key(fraction, seed), fraction, seed, ["teacher", *[r for r in rows if r != "teacher"]]))
        return out

    def dataset_keys(self) -> list:
        """Every dataset key the experiment needs (for id allocation)."""
        keys = ["base"]
        for u, _, _, rows in self.units():
            keys.append(u)
            if "pseudo-all" in rows:
                keys.append(f"{u}/all")
            if "pseudo-qc" in rows or "pseudo-qc-kd" in rows:
                keys.append(f"{u}/qc")
        return keys

    def nodes(self) -> list:
        """Every unit of work in run order (see the module docstring)."""
        s = self.settings
        nodes = [self._plan_node()]
        for u, fraction, seed, rows in self.units():
            trained = ["teacher" if r == "supervised-all" else r for r in rows]
            pseudo = any(r in PSEUDO_ROWS for r in rows)
            teacher_folds = list(dict.fromkeys([*s["student_folds"], *(self.folds if pseudo else [])]))
            nodes.append(self._dataset_node(u, fraction, seed))
            nodes += [self._train_node(u, "teacher", k) for k in teacher_folds]
            nodes.append(self._evaluate_node(u, "teacher"))
            if "kd-only" in rows:
                nodes += [self._train_node(u, "kd-only", k) for k in s["student_folds"]]
                nodes.append(self._evaluate_node(u, "kd-only"))
            if pseudo:
                nodes += [self._quality_node(u, seed), self._pseudolabel_node(u)]
            if "pseudo-all" in trained:
                nodes += [self._accept_all_node(u), self._student_data_node(u, "all", seed)]
                nodes += [self._train_node(u, "pseudo-all", k) for k in s["student_folds"]]
                nodes.append(self._evaluate_node(u, "pseudo-all"))
            if "pseudo-qc" in trained or "pseudo-qc-kd" in trained:
                nodes.append(self._student_data_node(u, "qc", seed))
                for row in ("pseudo-qc", "pseudo-qc-kd"):
                    if row in trained:
                        nodes += [self._train_node(u, row, k) for k in s["student_folds"]]
                        nodes.append(self._evaluate_node(u, row))
        self._assign_rows(nodes)
        return nodes

    def evaluations(self) -> list:
        """(row, fraction, seed, evaluate node name) of every result the experiment reports."""
        out = []
        for u, fraction, seed, rows in self.units():
            for row in rows:
                if row == "supervised-all":
                    out.append((row, 1.0, seed, f"{u}/teacher/evaluate"))
                elif fraction in self.fractions:
                    out.append((row, fraction, seed, f"{u}/{row}/evaluate"))
        return out

    def _assign_rows(self, nodes: list) -> None:
        by_name = {n.name: n for n in nodes}

        def mark(name: str, row: str) -> None:
            node = by_name[name]
            if row not in node.rows:
                node.rows.add(row)
                for dep in node.deps:
                    mark(dep, row)

        for row, _, _, name in self.evaluations():
            mark(name, row)

    # ---- nodes -------------------------------------------------------------------------------------------------
    def _plan_node(self) -> Node:
        from nnunet_medaka.pipeline.run import _cmd
        from nnunet_medaka.pipeline.state import files_fingerprint

        raw_b, pre_b, res_b = self.folders("base")
        base_id = self.ids["base"]
        args = ["-d", base_id, "-c", self.configuration, "-np", 2, "-npfp", 2, "--verify_dataset_integrity"]
        ds = self.dataset_json

        def run() -> dict:
            from nnunet_medaka.conversion.raw_dataset import staged_dataset, write_dataset_json
            from nnunet_medaka.environment import planning_environ
            from nnunet_medaka.training.plans import write_small_plans

            _remove(pre_b, res_b)
            with staged_dataset(raw_b, overwrite=True) as staging:
                (staging / "imagesTr").mkdir()
                (staging / "labelsTr").mkdir()
                for case, files in sorted(self.labeled.items()):
                    for c, image in enumerate(files["images"]):
                        _link(Path(image), staging / "imagesTr" / f"{case}_{c:04d}{self.ending}")
                    _link(Path(files["label"]), staging / "labelsTr" / f"{case}{self.ending}")
                write_dataset_json(staging, channel_names=ds["channel_names"], labels=ds["labels"],
                                   num_training=len(self.labeled), file_ending=self.ending,
                                   name=f"{self.short}Exp", description=f"every labeled case of {self.raw.name}, "
                                   f"planned once for the experiment in {self.out}")
            self._stock("nnUNetv2_plan_and_preprocess", args, "plan_and_preprocess", env=planning_environ(self.env))
            if self.settings["small_plans"]:
                write_small_plans(pre_b, configuration=self.configuration, **self.settings["small_plans"])
            return {"dataset": raw_b.name, "plans": self.plans}

        inputs = {"raw": files_fingerprint([self.raw / "imagesTr", self.raw / "labelsTr"]), "id": base_id,
                  "configuration": self.configuration, "small_plans": self.settings["small_plans"]}
        return Node("plan", inputs, [], lambda: [_cmd("nnUNetv2_plan_and_preprocess", args)], run,
                    reset=lambda: _remove(raw_b, pre_b, res_b))

    def _dataset_node(self, u: str, fraction: float, seed: int) -> Node:
        from nnunet_medaka.pipeline.run import _write_cv_splits

        raw_u, pre_u, res_u = self.folders(u)
        _, pre_b, _ = self.folders("base")
        labeled = draw_labeled(list(self.labeled), fraction, seed)
        s = self.settings
        ds = self.dataset_json

        def run() -> dict:
            from nnunet_medaka.config import update_config_file
            from nnunet_medaka.conversion.raw_dataset import staged_dataset, write_dataset_json
            from nnunet_medaka.training.presets import config_assignments

            _remove(pre_u, res_u)
            pool = {**self.pool, **{c: self.labeled[c] for c in self.labeled if c not in labeled}}
            with staged_dataset(raw_u, overwrite=True) as staging:
                groups = (("imagesTr", "labelsTr", {c: self.labeled[c] for c in labeled}),
                          ("imagesUnlabeled", "labelsUnlabeled_gt", pool), ("imagesTs", "labelsTs", self.test))
                for images, labels, cases in groups:
                    (staging / images).mkdir()
                    for case, files in sorted(cases.items()):
                        for c, image in enumerate(files["images"]):
                            _link(Path(image), staging / images / f"{case}_{c:04d}{self.ending}")
                        if files["label"] is not None:
                            (staging / labels).mkdir(exist_ok=True)
                            _link(Path(files["label"]), staging / labels / f"{case}{self.ending}")
                extra = {"unlabeled_images": "imagesUnlabeled", "numUnlabeled": len(pool), "numTest": len(self.test)}
                if (staging / "labelsUnlabeled_gt").is_dir():
                    extra["unlabeled_ground_truth"] = "labelsUnlabeled_gt"
                write_dataset_json(staging, channel_names=ds["channel_names"], labels=ds["labels"],
                                   num_training=len(labeled), file_ending=self.ending,
                                   name=raw_u.name.split("_", 1)[1], description=(
                                       f"experiment unit {u} of {self.raw.name}: {len(labeled)} of {len(self.labeled)} "
                                       f"labeled cases (fraction {fraction:g}, seed {seed})"), **extra)
                write_json_atomic(staging / "experiment_unit.json", {
                    "source": str(self.raw), "fraction": fraction, "seed": seed, "labeled": labeled,
                    "unlabeled": sorted(pool), "test": sorted(self.test), "plans_from": str(pre_b)})
            # the base's plans and preprocessed arrays of these cases (hard links): same network, same input
            pre_u.mkdir(parents=True)
            wanted = {f"{case}{suffix}" for case in labeled for suffix in (self.ending, *_ARRAY_SUFFIXES)}
            for item in pre_b.iterdir():
                if item.is_file() and item.name == "dataset_fingerprint.json":
                    shutil.copyfile(item, pre_u / item.name)
                elif item.is_file() and item.suffix == ".json" and item.name not in (
                        "dataset.json", "splits_final.json", "nnunet_medaka.json"):
                    plans = json.loads(item.read_text())
                    # nnU-Net finds the preprocessed folder from the plans' dataset_name (as move_plans renames it)
                    plans["dataset_name"] = raw_u.name
                    write_json_atomic(pre_u / item.name, plans)
                elif item.is_dir() and item.name != "logs":  # gt_segmentations/ and each data identifier's arrays
                    (pre_u / item.name).mkdir()
                    for f in item.iterdir():
                        if f.name in wanted:
                            _link(f, pre_u / item.name / f.name)
            shutil.copyfile(raw_u / "dataset.json", pre_u / "dataset.json")
            _write_cv_splits(pre_u, labeled, s["cv_folds"], seed)
            update_config_file(pre_u / "nnunet_medaka.json", [*config_assignments(s), ("seed", seed)])
            return {"dataset": raw_u.name, "labeled": labeled}

        inputs = {"fraction": fraction, "seed": seed, "id": self.ids[u], "cv_folds": s["cv_folds"],
                  "schedule": {k: s[k] for k in ("num_epochs", "iterations_per_epoch", "val_iterations_per_epoch",
                                                 "initial_lr", "mirroring", "cpu_threads", "final_validation")}}
        commands = lambda: [f"# {raw_u.name}: {len(labeled)} labeled cases (hard links), the base's plans and "
                            f"preprocessed arrays, splits_final.json ({s['cv_folds']} folds, seed {seed})"]
        return Node(f"{u}/dataset", inputs, ["plan"], commands, run, reset=lambda: _remove(raw_u, pre_u, res_u))

    def _train_node(self, u: str, row: str, fold: int) -> Node:
        from nnunet_medaka.pipeline.run import _cmd, _train_environ, _train_fold_args

        ident, model, trainer, plans = self.model(u, row)
        npz = row == "teacher"  # out-of-fold probabilities: the quality classifier's training data
        extra = ["--npz"] if npz else []
        key = u if row in ("teacher", "kd-only") else f"{u}/{'all' if row == 'pseudo-all' else 'qc'}"
        pre = self.folders(key)[1]
        kd = [("teacher", str(self.model(u, "teacher")[1])), ("teacher_folds", [fold]),
              ("kd_weight", self.settings["kd_weight"]), ("kd_temperature", self.settings["kd_temperature"])]

        def run() -> dict:
            from nnunet_medaka.config import CONFIG_ENV_VAR, update_config_file

            if _fold_finished(model, fold, npz=npz, validation=bool(self.settings["final_validation"])):
                self.say(f"      fold {fold}: finished earlier")
                return {"model": str(model), "fold": fold}
            env = _train_environ(self.env, self.device, self.threads)
            own = kd if trainer == STUDENT else []  # KD: the frozen teacher of the same fold (leak-free)
            if self.workers > 1:
                # trainings of one dataset may run at the same time: each reads its own copy of the dataset's
                # config (with its teacher fold and its share of the cores), never a file another one rewrites
                own = own + ([("cpu_threads", self.threads)] if self.threads is not None else [])
                copy = self.unit_dir(u) / "configs" / f"{row}_fold{fold}.json"
                copy.parent.mkdir(parents=True, exist_ok=True)
                source = pre / "nnunet_medaka.json"
                write_json_atomic(copy, json.loads(source.read_text()) if source.is_file() else {})
                update_config_file(copy, own)
                env[CONFIG_ENV_VAR] = str(copy)
            elif own:
                update_config_file(pre / "nnunet_medaka.json", own)
            self._stock("nnUNetv2_train", _train_fold_args(ident, self.configuration, fold, trainer, plans,
                                                           self.device, model, extra),
                        f"{u}/train_{row}_fold{fold}", env=env)
            return {"model": str(model), "fold": fold}

        def commands() -> list:
            train = _cmd("nnUNetv2_train", [ident, self.configuration, fold, "-tr", trainer, "-p", plans, "-device",
                                            self.device, *extra])
            if trainer == STUDENT:
                return [_cmd("nnunet-medaka", ["config", "-d", ident, f"--set=teacher_folds=[{fold}]"]) + " && " + train]
            return [train]

        if row == "teacher":
            deps = [f"{u}/dataset"]
        elif row == "kd-only":
            deps = [f"{u}/dataset", f"{u}/teacher/fold{fold}"]
        else:
            deps = [f"{u}/data-{'all' if row == 'pseudo-all' else 'qc'}"]
            if row == "pseudo-qc-kd":
                deps.append(f"{u}/teacher/fold{fold}")
        inputs = {"trainer": trainer, "fold": fold, "device": self.device, "npz": npz,
                  **({"kd": [self.settings["kd_weight"], self.settings["kd_temperature"]]} if trainer == STUDENT else {})}
        return Node(f"{u}/{row}/fold{fold}", inputs, deps, commands, run,
                    reset=lambda: _remove(model / f"fold_{fold}"))

    def _quality_node(self, u: str, seed: int) -> Node:
        from nnunet_medaka.pipeline.run import _cmd

        folder = self.unit_dir(u) / "quality"
        ident = self.ids[u]
        s = self.settings

        def run() -> dict:
            from nnunet_medaka.quality.commands import train_quality

            train_quality(str(ident), self.configuration, trainer=TEACHER, plans=self.plans, folds=self.folds,
                          tau=s["tau"], corruptions_per_organ=s["corruptions_per_organ"], seed=seed, output=folder,
                          overwrite=True, progress=False)
            return {"folder": str(folder)}

        commands = lambda: [_cmd("nnunet-medaka", ["qc", "train", "-d", ident, "-c", self.configuration, "-p", self.plans,
                                                   "-f", ",".join(map(str, self.folds)), "--tau", s["tau"],
                                                   "--corruptions", s["corruptions_per_organ"], "--seed", seed,
                                                   "-o", folder])]
        return Node(f"{u}/quality", {k: s[k] for k in ("tau", "corruptions_per_organ")},
                    [f"{u}/teacher/fold{k}" for k in self.folds], commands, run, reset=lambda: _remove(folder))

    def _pseudolabel_args(self, u: str, output: Path, acceptance: str) -> tuple[dict, list]:
        from nnunet_medaka.pipeline.run import _cmd

        raw_u = self.folders(u)[0]
        teacher = self.model(u, "teacher")[1]
        quality = self.unit_dir(u) / "quality" if acceptance != "none" else None
        kwargs = dict(folds=self.folds, quality_model=quality, acceptance=acceptance, mirroring=self.mirroring,
                      device=self.device, teacher_raw=raw_u, progress=False,
                      ground_truth=raw_u / "labelsUnlabeled_gt" if (raw_u / "labelsUnlabeled_gt").is_dir() else None)
        command = _cmd("nnunet-medaka", ["pseudolabel", "-m", teacher, "-f", *self.folds, "-i", raw_u, "-o", output,
                                         *(["-q", quality] if quality else []), "--acceptance", acceptance,
                                         "-device", self.device, *([] if self.mirroring else ["--disable-tta"])])
        return {"teacher": teacher, "images": raw_u, "output": output, **kwargs}, [command]

    def _pseudolabel_node(self, u: str) -> Node:
        folder = self.unit_dir(u) / "pseudolabels"
        acceptance = self.settings["acceptance"]

        def run() -> dict:
            from nnunet_medaka.pseudolabel.predict import pseudolabel

            kwargs, _ = self._pseudolabel_args(u, folder, acceptance)
            result = pseudolabel(kwargs.pop("teacher"), kwargs.pop("images"), kwargs.pop("output"), **kwargs)
            return {"folder": str(folder), "summary": result.get("summary")}

        return Node(f"{u}/pseudolabel", {"acceptance": acceptance, "mirroring": self.mirroring},
                    [f"{u}/quality", *[f"{u}/teacher/fold{k}" for k in self.folds]],
                    lambda: self._pseudolabel_args(u, folder, acceptance)[1], run, reset=lambda: _remove(folder))

    def _accept_all_node(self, u: str) -> Node:
        source, folder = self.unit_dir(u) / "pseudolabels", self.unit_dir(u) / "pseudolabels_all"
        derived = self.settings["acceptance"] == "case"

        def run() -> dict:
            if derived:
                return {"folder": str(folder), "summary": accept_all_view(source, folder)}
            from nnunet_medaka.pseudolabel.predict import pseudolabel

            kwargs, _ = self._pseudolabel_args(u, folder, "none")
            result = pseudolabel(kwargs.pop("teacher"), kwargs.pop("images"), kwargs.pop("output"), **kwargs)
            return {"folder": str(folder), "summary": result.get("summary")}

        commands = (lambda: [f"# {folder}: the pseudo-labels of {source} with every case accepted (no new prediction)"]) \
            if derived else (lambda: self._pseudolabel_args(u, folder, "none")[1])
        return Node(f"{u}/pseudolabels-all", {"derived": derived}, [f"{u}/pseudolabel"], commands, run,
                    reset=lambda: _remove(folder))

    def _student_data_node(self, u: str, which: str, seed: int) -> Node:
        from nnunet_medaka.pipeline.run import _cmd

        key = f"{u}/{which}"
        source = self.unit_dir(u) / ("pseudolabels_all" if which == "all" else "pseudolabels")
        raw_u = self.folders(u)[0]
        name = self.dataset_name(key).split("_", 1)[1]
        folders = self.folders(key)

        def run() -> dict:
            from nnunet_medaka.pseudolabel.student import build_student
            from nnunet_medaka.training.presets import config_assignments

            _remove(folders[2])
            built = build_student(source, self.ids[key], name, teacher_raw=raw_u, overwrite=True, allow_empty=True,
                                  settings=[*config_assignments(self.settings), ("seed", seed)])
            return {k: built[k] for k in ("raw", "preprocessed", "plans", "labeled", "pseudo", "ignore")}

        commands = lambda: [_cmd("nnunet-medaka", ["build-student", source, "-d", self.ids[key], "-n", name,
                                                   "--teacher-raw", raw_u, "--overwrite"])]
        dep = f"{u}/pseudolabels-all" if which == "all" else f"{u}/pseudolabel"
        return Node(f"{u}/data-{which}", {"id": self.ids[key]}, [dep], commands, run,
                    reset=lambda: _remove(*folders))

    def _evaluate_node(self, u: str, row: str) -> Node:
        from nnunet_medaka.pipeline.run import _cmd

        ident, model, trainer, plans = self.model(u, row)
        raw_u = self.folders(u)[0]
        target = self.unit_dir(u) / "predictions" / row
        predict = ["-i", raw_u / "imagesTs", "-o", target, "-d", ident, "-c", self.configuration, "-tr", trainer,
                   "-p", plans, "-f", *self.settings["student_folds"], "-device", self.device, "-npp", 0, "-nps", 0,
                   *([] if self.mirroring else ["--disable_tta"])]
        evaluate = [raw_u / "labelsTs", target, "-djfile", model / "dataset.json", "-pfile", model / "plans.json"]

        def run() -> dict:
            _remove(target)  # a half-finished prediction of a killed run
            self._stock("nnUNetv2_predict", predict, f"{u}/predict_{row}")
            self._stock("nnUNetv2_evaluate_folder", evaluate, f"{u}/evaluate_{row}")
            return {"summary": str(target / "summary.json")}

        train = [f"{u}/{row}/fold{k}" for k in self.settings["student_folds"]]
        return Node(f"{u}/{row}/evaluate", {"test": sorted(self.test), "mirroring": self.mirroring}, train,
                    lambda: [_cmd("nnUNetv2_predict", predict), _cmd("nnUNetv2_evaluate_folder", evaluate)], run,
                    reset=lambda: _remove(target))
