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

Units (`nnunet_medaka.pipeline.engine.Node`), in the order they run, per (fraction, seed) ``u``; each is a step of
`nnunet_medaka.pipeline.steps`, the same steps ``run`` chains:

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

A unit's fingerprint covers its own inputs and those of the units it depends on: adding rows, fractions or seeds
adds units and redoes none; a changed setting redoes exactly the units that read it and those below them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

from nnunet_medaka.conversion.split import draw_labeled, draw_pool
from nnunet_medaka.files import files_fingerprint, link_or_copy, remove, staged_folder, write_json_atomic
from nnunet_medaka.pipeline.engine import Node, Step
from nnunet_medaka.pipeline.layout import ExperimentLayout, parse_unit_key, unit_key
from nnunet_medaka.pseudolabel.outputs import pseudolabel_view, read_settings
from nnunet_medaka.pipeline.steps import (
    Unit, build_student_step, evaluate_step, pseudolabel_inputs, pseudolabel_step, quality_step, train_step,
)
from nnunet_medaka.training.presets import student_recipe
from nnunet_medaka.training.stock import (
    STUDENT_TRAINER, TEACHER_TRAINER, cmd, plan_args, plans_name, threads_per_training, write_cv_splits,
)

__all__ = ["ROWS", "KD_ROWS", "PSEUDO_ROWS", "UnitGraph", "unit_key"]

ROWS = {
    "teacher": "SupervisedTrainer cross-validation on the labeled fraction, scored as the ensemble of its folds "
               "(a fair baseline; it makes the pseudo-labels)",
    "supervised": "SupervisedTrainer on every labeled case of the fraction, one model (fold all): the other fair "
                  "baseline",
    "pseudo-all": "SupervisedTrainer on labeled + every pseudo-label (no quality filter, no KD)",
    "pseudo-qc": "SupervisedTrainer on labeled + accepted pseudo-labels (quality filter, no KD)",
    "pseudo-qc-kd": "KDTrainer on labeled + accepted pseudo-labels (quality filter + KD: the paper's method)",
    "kd-only": "KDTrainer on the labeled fraction alone, against the teacher's fold ensemble (no pseudo-labels)",
    "supervised-all": "SupervisedTrainer on every labeled case (fraction 1; the reference)",
}
PSEUDO_ROWS = ("pseudo-all", "pseudo-qc", "pseudo-qc-kd")
KD_ROWS = ("pseudo-qc-kd", "kd-only")
# a preprocessed case's files in nnU-Net 2.8.1 (blosc2), and those of the older numpy formats
_ARRAY_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl", ".npz", ".npy", "_seg.npy")


class UnitGraph:
    """Builds the experiment's units from the steps of `nnunet_medaka.pipeline.steps`.

    Parameters
    ----------
    raw, dataset_json : Path, dict
        The given raw dataset (layout of ``split``) and its dataset.json.
    out : Path
        The experiment folder.
    settings : dict
        Resolved settings (`nnunet_medaka.training.presets.resolve_settings`).
    rows, fractions, seeds
        What to run (validated).
    ids : dict
        Dataset key (``base``, ``f0.33/s0``, ``f0.33/s0/all``, ``f0.33/s0/qc``) -> id.
    device, env : str, dict
        Device and environment of the stock commands.
    """

    def __init__(self, *, raw: Path, dataset_json: dict, out: Path, settings: dict, rows: Sequence[str],
                 fractions: Sequence[float], seeds: Sequence[int], ids: dict, device: str, env: dict):
        from nnunet_medaka.conversion.raw_dataset import cases_in_folder, list_cases
        from nnunet_medaka.environment import nnunet_folder

        self.raw, self.dataset_json, self.settings = raw, dataset_json, settings
        self.layout = ExperimentLayout(out)
        self.rows, self.fractions, self.seeds, self.ids = list(rows), list(fractions), list(seeds), ids
        self.device = device
        self.env = {**env, **{v: env.get(v) or str(nnunet_folder(v))
                              for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
        self.short = raw.name.split("_", 1)[1]
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
        # ``parallel_folds``: units run at the same time (trainings share the CPU cores out, as in ``run``)
        self.workers = settings["parallel_folds"]
        self.threads = threads_per_training(settings["cpu_threads"], device, self.workers)

    # ---- names and folders -------------------------------------------------------------------------------------
    def dataset_name(self, key: str, ids: Optional[dict] = None) -> str:
        """``DatasetXXX_Name`` of a dataset key, with ``ids`` (default the graph's)."""
        ident = (self.ids if ids is None else ids)[key]
        if key == "base":
            return f"Dataset{ident:03d}_{self.short}Exp"
        fraction, seed = parse_unit_key(key)
        suffix = {"all": "All", "qc": "QC"}.get(key.split("/")[2], "") if key.count("/") > 1 else ""
        return f"Dataset{ident:03d}_{self.short}F{round(fraction * 100):03d}S{seed}{suffix}"

    def folders(self, key: str) -> tuple[Path, Path, Path]:
        name = self.dataset_name(key)
        return tuple(Path(self.env[v]) / name for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))

    def unit(self, u: str) -> Unit:
        return Unit(raw=self.folders(u)[0], dataset_id=self.ids[u], settings=self.settings, seed=parse_unit_key(u)[1],
                    device=self.device, env=self.env, folders=self.layout.unit(u), logs=self.layout.logs,
                    log_prefix=u.replace("/", "_") + "_")

    @staticmethod
    def data_key(u: str, row: str) -> str:
        """The dataset key a row trains on."""
        return {"pseudo-all": f"{u}/all", "pseudo-qc": f"{u}/qc", "pseudo-qc-kd": f"{u}/qc"}.get(row, u)

    def model(self, u: str, row: str):
        """The `nnunet_medaka.training.stock.Model` of a row in unit ``u``."""
        trainer = STUDENT_TRAINER if row in KD_ROWS else TEACHER_TRAINER
        key = self.data_key(u, row)
        return self.unit(u).model(trainer, None if key == u else (self.ids[key], self.dataset_name(key)))

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
        folds = list(range(s["cv_folds"]))
        nodes = [self._plan_node()]
        for u, fraction, seed, rows in self.units():
            trained = ["teacher" if r == "supervised-all" else r for r in rows]
            pseudo = any(r in PSEUDO_ROWS for r in rows)
            unit = self.unit(u)
            nodes.append(self._dataset_node(u, fraction, seed))
            nodes += [self._train_node(u, "teacher", k) for k in folds]  # scored as their ensemble
            nodes.append(self._evaluate_node(u, "teacher"))
            if "supervised" in rows:
                nodes += [self._train_node(u, "supervised", "all"), self._evaluate_node(u, "supervised")]
            if "kd-only" in rows:
                nodes += [self._train_node(u, "kd-only", k) for k in self._folds("kd-only")]
                nodes.append(self._evaluate_node(u, "kd-only"))
            if pseudo:
                teacher_folds = [f"{u}/teacher/fold{k}" for k in folds]
                quality = unit.folders.quality
                nodes.append(Node(f"{u}/quality", {k: s[k] for k in ("tau", "corruptions_per_organ")}, teacher_folds,
                                  quality_step(unit)))
                by = pseudolabel_inputs(s)  # older folders resume as they were
                nodes.append(Node(f"{u}/pseudolabel", {"acceptance": s["acceptance"], "mirroring": unit.mirroring, **by},
                                  [f"{u}/quality", *teacher_folds], self._pseudolabel(unit, unit.folders.pseudolabels,
                                                                                      s["acceptance"], quality)))
            if pseudo and s["pool_size"] is not None:
                nodes.append(self._pool_node(u, seed))
            if "pseudo-all" in trained:
                nodes += [self._accept_all_node(u, seed), self._student_data_node(u, "all", seed)]
                nodes += [self._train_node(u, "pseudo-all", k) for k in self._folds("pseudo-all")]
                nodes.append(self._evaluate_node(u, "pseudo-all"))
            if "pseudo-qc" in trained or "pseudo-qc-kd" in trained:
                nodes.append(self._student_data_node(u, "qc", seed))
                for row in ("pseudo-qc", "pseudo-qc-kd"):
                    if row in trained:
                        nodes += [self._train_node(u, row, k) for k in self._folds(row)]
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
    def _link_cases(self, folder: Path, images: str, labels: str, cases: dict) -> None:
        (folder / images).mkdir()
        for case, files in sorted(cases.items()):
            for c, image in enumerate(files["images"]):
                link_or_copy(image, folder / images / f"{case}_{c:04d}{self.ending}")
            if files["label"] is not None:
                (folder / labels).mkdir(exist_ok=True)
                link_or_copy(files["label"], folder / labels / f"{case}{self.ending}")

    def _plan_node(self) -> Node:
        from nnunet_medaka.conversion.raw_dataset import write_dataset_json

        raw_b, pre_b, res_b = self.folders("base")
        args = plan_args(self.ids["base"], self.settings["configuration"])
        ds = self.dataset_json

        def run(say) -> dict:
            from nnunet_medaka.environment import planning_environ, run_stock_command
            from nnunet_medaka.training.plans import write_small_plans

            remove(pre_b, res_b)
            with staged_folder(raw_b, overwrite=True) as staging:
                self._link_cases(staging, "imagesTr", "labelsTr", self.labeled)
                write_dataset_json(staging, channel_names=ds["channel_names"], labels=ds["labels"],
                                   num_training=len(self.labeled), file_ending=self.ending,
                                   name=f"{self.short}Exp", description=f"every labeled case of {self.raw.name}, "
                                   f"planned once for the experiment in {self.layout.folder}")
            self.layout.logs.mkdir(parents=True, exist_ok=True)
            run_stock_command("nnUNetv2_plan_and_preprocess", args, env=planning_environ(self.env),
                              log_file=self.layout.logs / "plan_and_preprocess.log")
            if self.settings["small_plans"]:
                write_small_plans(pre_b, configuration=self.settings["configuration"], **self.settings["small_plans"])
            return {"dataset": raw_b.name, "plans": plans_name(self.settings)}

        inputs = {"raw": files_fingerprint([self.raw / "imagesTr", self.raw / "labelsTr"]), "id": self.ids["base"],
                  "configuration": self.settings["configuration"], "small_plans": self.settings["small_plans"]}
        return Node("plan", inputs, [], Step(lambda: [cmd("nnUNetv2_plan_and_preprocess", args)], run,
                                             reset=lambda: remove(raw_b, pre_b, res_b)))

    def _dataset_node(self, u: str, fraction: float, seed: int) -> Node:
        raw_u, pre_u, res_u = self.folders(u)
        pre_b = self.folders("base")[1]
        labeled = draw_labeled(list(self.labeled), fraction, seed)
        s, ds = self.settings, self.dataset_json

        def run(say) -> dict:
            from nnunet_medaka.config import update_config_file
            from nnunet_medaka.conversion.raw_dataset import write_dataset_json
            from nnunet_medaka.training.presets import config_assignments

            remove(pre_u, res_u)
            pool = {**self.pool, **{c: self.labeled[c] for c in self.labeled if c not in labeled}}
            with staged_folder(raw_u, overwrite=True) as staging:
                self._link_cases(staging, "imagesTr", "labelsTr", {c: self.labeled[c] for c in labeled})
                self._link_cases(staging, "imagesUnlabeled", "labelsUnlabeled_gt", pool)
                self._link_cases(staging, "imagesTs", "labelsTs", self.test)
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
                            link_or_copy(f, pre_u / item.name / f.name)
            shutil.copyfile(raw_u / "dataset.json", pre_u / "dataset.json")
            write_cv_splits(pre_u, labeled, s["cv_folds"], seed)
            update_config_file(pre_u / "nnunet_medaka.json", [*config_assignments(s), ("seed", seed)])
            return {"dataset": raw_u.name, "labeled": labeled}

        inputs = {"fraction": fraction, "seed": seed, "id": self.ids[u], "cv_folds": s["cv_folds"],
                  "schedule": {k: s[k] for k in ("num_epochs", "iterations_per_epoch", "val_iterations_per_epoch",
                                                 "initial_lr", "mirroring", "cpu_threads", "final_validation")}}
        commands = lambda: [f"# {raw_u.name}: {len(labeled)} labeled cases (hard links), the base's plans and "
                            f"preprocessed arrays, splits_final.json ({s['cv_folds']} folds, seed {seed})"]
        return Node(f"{u}/dataset", inputs, ["plan"], Step(commands, run, reset=lambda: remove(raw_u, pre_u, res_u)))

    def _folds(self, row: str) -> list:
        """The folds a row trains and is scored with: the teacher's CV (scored as its ensemble), one model on every
        case for ``supervised``, ``student_folds`` for the students."""
        return list(range(self.settings["cv_folds"])) if row == "teacher" else ["all"] if row == "supervised" \
            else list(self.settings["student_folds"])

    def _train_node(self, u: str, row: str, fold) -> Node:
        model = self.model(u, row)
        npz = row == "teacher"  # out-of-fold probabilities: the quality classifier's training data
        teachers = [f"{u}/teacher/fold{k}" for k in (self._folds("teacher") if fold == "all" else [fold])]
        if row in ("teacher", "supervised", "kd-only"):
            deps = [f"{u}/dataset"] + (teachers if row == "kd-only" else [])
        else:
            deps = [f"{u}/data-{'all' if row == 'pseudo-all' else 'qc'}"] + (teachers if row == "pseudo-qc-kd" else [])
        inputs = {"trainer": model.trainer, "fold": fold, "device": self.device, "npz": npz,
                  **({"kd": [self.settings["kd_weight"], self.settings["kd_temperature"]]} if row in KD_ROWS else {}),
                  **(student_recipe(self.settings) if row in PSEUDO_ROWS else {})}
        step = train_step(self.unit(u), model, [fold], role=row, npz=npz, threads=self.threads,
                          private_configs=self.workers > 1)
        return Node(f"{u}/{row}/fold{fold}", inputs, deps, step)

    def _pseudolabel(self, unit: Unit, output: Path, acceptance: str, quality: Optional[Path]) -> Step:
        return pseudolabel_step(unit, output, acceptance=acceptance, quality=quality,
                                ground_truth=unit.raw / "labelsUnlabeled_gt")

    def _pool(self, source: Path, seed: int) -> Optional[list]:
        """The cases of ``pool_size`` (None: every case of the pseudolabel folder ``source``)."""
        size = self.settings["pool_size"]
        return None if size is None else draw_pool(read_settings(source)["cases"], size, seed)

    def _pool_node(self, u: str, seed: int) -> Node:
        source, folder, size = self.unit(u).folders.pseudolabels, self.unit(u).folders.pseudolabels_pool, \
            self.settings["pool_size"]
        step = Step(lambda: [f"# {folder}: the pseudo-labels of {size} cases of {source}'s pool (seeded draw), "
                             "decisions kept (no new prediction)"],
                    lambda say: {"folder": str(folder), "summary": pseudolabel_view(source, folder,
                                                                                    cases=self._pool(source, seed))},
                    reset=lambda: remove(folder))
        return Node(f"{u}/pool", {"pool_size": size}, [f"{u}/pseudolabel"], step)

    def _accept_all_node(self, u: str, seed: int) -> Node:
        unit = self.unit(u)
        source, folder = unit.folders.pseudolabels, unit.folders.pseudolabels_all
        derived = self.settings["acceptance"] == "case"
        size = self.settings["pool_size"]
        if derived:
            cut = "" if size is None else f" ({size} cases of its pool, seeded draw)"
            step = Step(lambda: [f"# {folder}: the pseudo-labels of {source}{cut} with every case accepted (no new "
                                 "prediction)"],
                        lambda say: {"folder": str(folder), "summary": pseudolabel_view(
                            source, folder, cases=self._pool(source, seed), accept_all=True)},
                        reset=lambda: remove(folder))
        else:
            step = self._pseudolabel(unit, folder, "none", None)
        return Node(f"{u}/pseudolabels-all", {"derived": derived, **({"pool_size": size} if size is not None else {})},
                    [f"{u}/pseudolabel"], step)

    def _student_data_node(self, u: str, which: str, seed: int) -> Node:
        from nnunet_medaka.training.presets import config_assignments

        key, unit = f"{u}/{which}", self.unit(u)
        pooled = self.settings["pool_size"] is not None
        source = unit.folders.pseudolabels_all if which == "all" else \
            unit.folders.pseudolabels_pool if pooled else unit.folders.pseudolabels
        step = build_student_step(unit, source, (self.ids[key], self.dataset_name(key)),
                                  settings=[*config_assignments(self.settings), ("seed", seed)],
                                  keep=("raw", "preprocessed", "plans", "labeled", "pseudo", "ignore"), allow_empty=True,
                                  reset=self.folders(key))
        dep = f"{u}/pseudolabels-all" if which == "all" else f"{u}/pool" if pooled else f"{u}/pseudolabel"
        width = {"width": self.settings["student_width"]} if self.settings["student_width"] is not None else {}
        return Node(f"{u}/data-{which}", {"id": self.ids[key], **width}, [dep], step)

    def _evaluate_node(self, u: str, row: str) -> Node:
        unit = self.unit(u)
        commands, work = evaluate_step(unit, self.model(u, row), self._folds(row), row)
        step = Step(commands, lambda say: {"summary": str(work())}, reset=lambda: remove(unit.folders.predictions(row)))
        return Node(f"{u}/{row}/evaluate", {"test": sorted(self.test), "mirroring": unit.mirroring,
                                            "folds": self._folds(row)},
                    [f"{u}/{row}/fold{k}" for k in self._folds(row)], step)
