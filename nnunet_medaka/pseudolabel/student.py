"""``nnunet-medaka build-student``: the KD student's nnU-Net dataset from the teacher's labeled cases and the accepted
pseudo-labels, preprocessed with the teacher's plans, ready for ``nnUNetv2_train ... -tr KDTrainer``.

Steps (nnU-Net's own commands where it has them):

1. a new raw dataset ``DatasetYYY_Name``: the teacher dataset's labeled cases and the accepted pseudo-labeled cases
   (hard links, copies where links are impossible or with ``copy=True``), ``"pseudo_labeled_cases"`` listing the
   latter (read by ``KDTrainer`` with ``kd_scope=pseudo``), ``"ignore"`` declared when organ-level acceptance set
   rejected organs to nnU-Net's ignore label;
2. ``nnUNetv2_extract_fingerprint --verify_dataset_integrity`` (nnU-Net's check of the new dataset; training copies
   the fingerprint), then ``nnUNetv2_move_plans_between_datasets`` copies the teacher's plans (those in its model folder) to the student
   under a new plans name, then the raw ``dataset.json`` is copied into the preprocessed folder (the move does not
   do it, and ``nnUNetv2_preprocess`` fails without it);
3. ``nnUNetv2_preprocess -plans_name ...``: the labeled cases come out bit-identical to the teacher's arrays;
4. ``splits_final.json``: fold k = the teacher's fold k (same validation cases, real labels only) with every
   pseudo-labeled case added to its training cases; pseudo-labeled cases are never validation cases;
5. the student's ``nnunet_medaka.json``: teacher folder, folds and checkpoint, the teacher dataset's schedule, and
   any ``--set KEY=VALUE``.

Everything is built in hidden staging folders under ``$nnUNet_raw`` and ``$nnUNet_preprocessed`` (with its own
nnU-Net environment pointing there) and renamed into place at the end; a failure leaves nothing behind.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional, Sequence

from nnunet_medaka.config import CONFIG_FILE_NAME, parse_assignment, update_config_file
from nnunet_medaka.files import write_json_atomic
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pseudolabel.inputs import resolve_teacher, teacher_raw_dataset
from nnunet_medaka.pseudolabel.outputs import FAILED_FILE, TABLE_FILE, read_records, read_settings

log = logging.getLogger(__name__)

__all__ = ["SCHEDULE_KEYS", "build_student", "student_splits"]

SCHEDULE_KEYS = ("num_epochs", "iterations_per_epoch", "val_iterations_per_epoch", "mirroring")


def student_splits(teacher_splits: list, pseudo_cases: Sequence[str]) -> list:
    """Fold k: the teacher's fold k with the pseudo-labeled cases added to ``train``; ``val`` unchanged."""
    pseudo = sorted(pseudo_cases)
    return [{"train": [*s["train"], *pseudo], "val": list(s["val"])} for s in teacher_splits]


def _teacher_splits(teacher_name: str, labeled: Iterable[str]) -> tuple[list, str]:
    """The teacher's ``splits_final.json``, or the split nnU-Net would have made for it (seeded 5-fold)."""
    labeled = sorted(labeled)
    root = os.environ.get("nnUNet_preprocessed")
    path = Path(root) / teacher_name / "splits_final.json" if root else None
    if path is not None and path.is_file():
        try:
            splits = json.loads(path.read_text())
            # a teacher that is itself a student (a later self-training round): its pseudo-labeled cases leave
            # the folds, which keep the labeled cases and their validation folds
            earlier_pseudo = set(_declared_pseudo_cases(path.parent))
            splits = [{k: [c for c in s[k] if c not in earlier_pseudo] for k in ("train", "val")} for s in splits]
            cases = {c for s in splits for c in [*s["train"], *s["val"]]}
        except (ValueError, KeyError, TypeError) as e:
            raise MedakaError(f"{path}: not a valid nnU-Net splits file ({e})") from None
        unknown = sorted(cases - set(labeled))
        if unknown:
            raise MedakaError(f"{path}: lists cases {unknown[:5]} that the teacher's raw dataset does not have; "
                              "the splits do not belong to this dataset")
        return splits, str(path)
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    if len(labeled) < 5:
        raise MedakaError(f"teacher dataset {teacher_name}: {len(labeled)} labeled case(s) and no splits_final.json; "
                          "nnU-Net's 5-fold split needs at least 5 cases")
    splits = generate_crossval_split(labeled, seed=12345, n_splits=5)
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]} for s in splits], \
        "nnU-Net's default split (seed 12345; no splits_final.json found)"


def _declared_pseudo_cases(preprocessed_dataset: Path) -> list:
    """The pseudo-labeled cases a student dataset's ``dataset.json`` declares (none for any other dataset)."""
    from nnunet_medaka.conversion.raw_dataset import PSEUDO_CASES_KEY

    file = preprocessed_dataset / "dataset.json"
    return list(json.loads(file.read_text()).get(PSEUDO_CASES_KEY, [])) if file.is_file() else []


def _place(source: Path, target: Path, copy: bool) -> None:
    if not copy:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def _run_logged(script: str, args: list, env: dict, logs: Path, name: str) -> None:
    from nnunet_medaka.environment import run_stock_command

    run_stock_command(script, args, env=env, log_file=logs / f"{name}.log")


def build_student(
    pseudolabels: os.PathLike | str,
    dataset_id: int,
    dataset_name: str,
    *,
    teacher_raw: Optional[os.PathLike | str] = None,
    plans_name: Optional[str] = None,
    settings: Sequence[tuple] = (),
    copy: bool = False,
    overwrite: bool = False,
    num_processes: int = 2,
    allow_empty: bool = False,
) -> dict:
    """Build, preprocess and configure the student dataset.

    Parameters
    ----------
    pseudolabels : path
        A complete ``nnunet-medaka pseudolabel`` output folder (``pseudolabels.csv`` written).
    dataset_id, dataset_name : int, str
        The new dataset (refused if the id or name is taken, unless ``overwrite``).
    teacher_raw : path, optional
        The teacher's raw dataset; default ``$nnUNet_raw/<the teacher plans' dataset_name>``.
    plans_name : str, optional
        Plans name of the student; default ``<teacher plans>From<teacher id>``.
    settings : sequence of (key, value)
        Extra ``nnunet_medaka.json`` settings (KD weight, temperature, scope, schedule), applied last.
    copy : bool
        Copy files instead of hard-linking them.
    overwrite : bool
        Replace an existing student dataset of this name.
    num_processes : int
        Processes for ``nnUNetv2_preprocess``.
    allow_empty : bool
        Build the dataset from the labeled cases alone when the filter accepted no pseudo-label (``experiment``'s
        ``pseudo-qc`` rows train on what the filter let through, even nothing); default: refuse.

    Returns
    -------
    dict
        ``raw``, ``preprocessed``, ``plans``, ``configuration``, ``labeled``, ``pseudo`` (case ids), ``ignore``
        (label or None), ``config`` (resolved settings) and ``train_command``.

    Raises
    ------
    MedakaError
        Before anything is written, for an incomplete pseudolabel folder, a missing teacher, colliding case ids, no
        accepted pseudo-label, or a target dataset that exists.
    """
    from nnunet_medaka.conversion.raw_dataset import (
        PSEUDO_CASES_KEY, dataset_folder_name, list_cases, target_folder, write_dataset_json,
    )
    from nnunet_medaka.environment import nnunet_folder, planning_environ, plugin_environ

    pseudolabels = Path(pseudolabels).expanduser().resolve()
    run = read_settings(pseudolabels)
    if not (pseudolabels / TABLE_FILE).is_file():
        raise MedakaError(f"{pseudolabels}: no {TABLE_FILE} yet; finish the pseudolabel run (all parts) and run "
                          f"`nnunet-medaka pseudolabel-merge {pseudolabels}`")
    records, failures = read_records(pseudolabels, run["cases"])
    with open(pseudolabels / TABLE_FILE, newline="") as f:
        listed = sorted({row["case"] for row in csv.DictReader(f)})
    unrecorded = [c for c in listed if c not in records]
    if unrecorded:
        raise MedakaError(f"{pseudolabels / TABLE_FILE}: lists {len(unrecorded)} case(s) without a record in "
                          f"records/ (e.g. {', '.join(unrecorded[:3])}); run `nnunet-medaka pseudolabel` again with the "
                          "same arguments to redo them, then `nnunet-medaka pseudolabel-merge`")
    if failures:
        log.warning("%d case(s) failed in %s and are left out of the student dataset (see %s): %s", len(failures),
                    pseudolabels, FAILED_FILE, ", ".join(sorted(failures)[:5]))
    t_info = run["teacher"]
    teacher = resolve_teacher(t_info["folder"], t_info["folds"], t_info["checkpoint"])
    raw_teacher = teacher_raw_dataset(teacher, teacher_raw, required=True)
    teacher_json = json.loads((raw_teacher / "dataset.json").read_text())
    if {k: v for k, v in teacher_json["labels"].items() if k != "ignore"} != teacher.labels or \
            teacher_json["file_ending"] != run["file_ending"]:
        raise MedakaError(f"{raw_teacher}: labels or file_ending differ from the teacher model's dataset.json; "
                          "give the raw dataset the teacher was trained on with --teacher-raw")
    labeled = list_cases(raw_teacher, teacher_json)
    missing = [str(p) for c in labeled.values() for p in [*c["images"], c["label"]] if not Path(p).is_file()]
    if missing:
        raise MedakaError(f"{raw_teacher}: {len(missing)} listed file(s) missing, e.g. {missing[:3]}")
    pseudo = sorted(c for c, r in records.items() if r["case_decision"] != "reject")
    clash = sorted(set(pseudo) & set(labeled))
    if clash:
        raise MedakaError(f"{pseudolabels}: pseudo-labeled cases {clash[:5]} have the ids of labeled cases of "
                          f"{raw_teacher.name}; rename the unlabeled images and pseudo-label them again")
    if not pseudo and not allow_empty:
        raise MedakaError(f"{pseudolabels}: no pseudo-label was accepted ({len(records)} case(s) scored); lower "
                          "--threshold, use --acceptance organ or none, or improve the teacher")
    for case in pseudo:
        files = [Path(f) for f in records[case]["images"]] + [pseudolabels / records[case]["label_file"]]
        gone = [str(f) for f in files if not f.is_file()]
        if gone:
            raise MedakaError(f"{pseudolabels}: files of pseudo-labeled case {case} are missing: {gone}")
    # organ acceptance or voxel gating (--voxel-confidence) set some voxels to the ignore label
    uses_ignore = any(records[c]["case_decision"] == "partial" or records[c].get("ignored_voxels", 0) > 0 for c in pseudo)
    teacher_splits, splits_source = _teacher_splits(teacher.dataset_name, labeled)

    teacher_id = int(teacher.dataset_name[len("Dataset"):len("Dataset") + 3])
    if dataset_id == teacher_id:
        raise MedakaError(f"dataset id {dataset_id}: is the teacher's dataset; choose a new id for the student")
    target_name = dataset_folder_name(dataset_id, dataset_name)
    raw_target = target_folder(dataset_id, dataset_name)  # refuses an id used under another name
    pre_root = nnunet_folder("nnUNet_preprocessed")
    pre_target = pre_root / target_name
    results_target = nnunet_folder("nnUNet_results") / target_name
    existing = [p for p in (raw_target, pre_target) if p.exists()]
    if existing and not overwrite:
        raise MedakaError(f"target dataset {target_name}: {existing[0]} already exists; pass --overwrite to replace it "
                          "or choose another id/name")
    student_plans = plans_name or f"{teacher.plans_name}From{teacher_id:03d}"
    assignments = []
    teacher_config = pre_root / teacher.dataset_name / CONFIG_FILE_NAME
    if teacher_config.is_file():
        try:
            values = json.loads(teacher_config.read_text())
        except ValueError as e:
            raise MedakaError(f"{teacher_config}: not valid JSON ({e})") from None
        assignments += [(k, values[k]) for k in SCHEDULE_KEYS if k in values]
    assignments += [("teacher", str(teacher.folder)), ("teacher_folds", list(teacher.folds)),
                    ("teacher_checkpoint", teacher.checkpoint)]
    assignments += [tuple(a) for a in settings]
    from nnunet_medaka.config import validate_config

    validate_config(dict(assignments), source="build-student settings (--set)")

    stage_name = f".build-student-{target_name}-{os.getpid()}"
    stage_raw, stage_pre = raw_target.parent / stage_name, pre_root / stage_name
    for parent in (raw_target.parent, pre_root):  # staging folders of killed earlier runs
        for stale in parent.glob(f".build-student-{target_name}-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(stale, ignore_errors=True)
    try:
        for folder in (stage_raw, stage_pre):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        (stage_pre / "logs").mkdir()
        raw = stage_raw / target_name
        (raw / "imagesTr").mkdir(parents=True)
        (raw / "labelsTr").mkdir()
        ending = run["file_ending"]
        for case, files in sorted(labeled.items()):
            for c, image in enumerate(files["images"]):
                _place(Path(image), raw / "imagesTr" / f"{case}_{c:04d}{ending}", copy)
            _place(Path(files["label"]), raw / "labelsTr" / f"{case}{ending}", copy)
        for case in pseudo:
            for c, image in enumerate(records[case]["images"]):
                _place(Path(image), raw / "imagesTr" / f"{case}_{c:04d}{ending}", copy)
            _place(pseudolabels / records[case]["label_file"], raw / "labelsTr" / f"{case}{ending}", copy)
        labels = dict(teacher.labels)
        if uses_ignore:
            labels["ignore"] = int(run["ignore_label"])
        keep = {k: v for k, v in teacher_json.items() if k not in (
            "channel_names", "labels", "numTraining", "file_ending", "dataset", "unlabeled_images", "numUnlabeled",
            "unlabeled_ground_truth", "numTest", PSEUDO_CASES_KEY, "name", "description", "student_of")}
        dataset_json = write_dataset_json(
            raw, channel_names=teacher_json["channel_names"], labels=labels, num_training=len(labeled) + len(pseudo),
            file_ending=ending, name=dataset_name,
            description=f"KD student of {teacher.folder.name} ({teacher.dataset_name}): {len(labeled)} labeled + "
            f"{len(pseudo)} pseudo-labeled cases (acceptance {run['acceptance']})",
            **keep, **{PSEUDO_CASES_KEY: pseudo},
            student_of={"teacher": str(teacher.folder), "pseudolabels": str(pseudolabels), "teacher_raw": str(raw_teacher)})

        # nnU-Net sees only the staging folders: its own commands find the new dataset there
        env = plugin_environ()
        env.update(nnUNet_raw=str(stage_raw), nnUNet_preprocessed=str(stage_pre), nnUNet_results=str(stage_pre / "results"))
        (stage_pre / "results").mkdir()
        source_pre = stage_pre / teacher.dataset_name
        source_pre.mkdir()
        shutil.copyfile(teacher.folder / "plans.json", source_pre / f"{teacher.plans_name}.json")  # plans it was trained with
        logs = stage_pre / "logs"
        # the fingerprint (nnU-Net's training copies it) and nnU-Net's integrity check of the new dataset
        _run_logged("nnUNetv2_extract_fingerprint", ["-d", dataset_id, "-np", num_processes,
                    "--verify_dataset_integrity"], planning_environ(env), logs, "extract_fingerprint")
        _run_logged("nnUNetv2_move_plans_between_datasets", ["-s", teacher.dataset_name, "-t", target_name, "-sp",
                    teacher.plans_name, "-tp", student_plans], planning_environ(env), logs, "move_plans")
        pre = stage_pre / target_name
        shutil.copyfile(raw / "dataset.json", pre / "dataset.json")  # the pitfall: the move does not copy it
        _run_logged("nnUNetv2_preprocess", ["-d", dataset_id, "-plans_name", student_plans, "-c", teacher.configuration,
                    "-np", num_processes], planning_environ(env), logs, "preprocess")
        splits = student_splits(teacher_splits, pseudo)
        write_json_atomic(pre / "splits_final.json", splits)
        config = update_config_file(pre / CONFIG_FILE_NAME, assignments)
        write_json_atomic(pre / "build_student.json", {
            "teacher": teacher.identity(), "pseudolabels": str(pseudolabels), "teacher_raw": str(raw_teacher),
            "teacher_splits": splits_source, "plans": student_plans, "acceptance": run["acceptance"],
            "labeled": sorted(labeled), "pseudo_labeled": pseudo, "failed_cases": sorted(failures),
            "rejected_cases": sorted(c for c, r in records.items() if r["case_decision"] == "reject"),
            "ignore_label": labels.get("ignore"), "files": "copies" if copy else "hard links (copies where impossible)",
        })
        shutil.rmtree(pre / "logs", ignore_errors=True)
        shutil.move(str(logs), str(pre / "logs"))
        # rename into place: preprocessed first, raw last
        old = []
        for staged, target in ((pre, pre_target), (raw, raw_target)):
            if target.exists():
                aside = target.parent / f".{target.name}.old-{os.getpid()}"
                os.replace(target, aside)
                old.append(aside)
            os.replace(staged, target)
        for aside in old:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(stage_raw, ignore_errors=True)
        shutil.rmtree(stage_pre, ignore_errors=True)
    if results_target.exists():
        log.warning("%s exists: models trained on the previous %s; retrain them", results_target, target_name)
    fold = teacher.folds[0] if len(teacher.folds) == 1 else 0
    command = (f"nnUNetv2_train {dataset_id} {teacher.configuration} {fold} -tr KDTrainer -p {student_plans}")
    return {"raw": str(raw_target), "preprocessed": str(pre_target), "plans": student_plans,
            "configuration": teacher.configuration, "labeled": sorted(labeled), "pseudo": pseudo,
            "ignore": labels.get("ignore"), "config": config.to_dict(), "train_command": command,
            "dataset_json": dataset_json, "splits_source": splits_source}


def _run(args: argparse.Namespace) -> int:
    info = build_student(args.pseudolabels, args.dataset_id, args.name, teacher_raw=args.teacher_raw,
                         plans_name=args.plans_name, settings=[parse_assignment(a) for a in args.set or ()],
                         copy=args.copy, overwrite=args.overwrite, num_processes=args.num_processes)
    print(f"student dataset {info['raw']}: {len(info['labeled'])} labeled + {len(info['pseudo'])} pseudo-labeled cases"
          + (f", ignore label {info['ignore']}" if info["ignore"] is not None else ""))
    print(f"preprocessed with plans {info['plans']} in {info['preprocessed']} (splits_final.json: validation on "
          f"labeled cases only; config {CONFIG_FILE_NAME})")
    teacher_folds = info["config"]["teacher_folds"]
    if len(teacher_folds) > 1:
        print(f"note: the teacher ensembles folds {teacher_folds}; it has seen every student validation case. "
              "For a leak-free validation Dice use teacher_folds=[k] when training student fold k.")
    print("train the student with:")
    print(f"  eval \"$(nnunet-medaka env)\" && {info['train_command']}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build-student",
        help="student dataset: labeled + accepted pseudo-labeled cases, teacher's plans, splits, KD config",
        description="Creates a new nnU-Net raw dataset from the teacher's labeled cases and the accepted pseudo-labels "
        "of a pseudolabel run, moves the teacher's plans to it, preprocesses it, writes splits_final.json (pseudo-"
        "labeled cases only in training folds; labeled folds equal the teacher's) and nnunet_medaka.json, and prints "
        "the nnUNetv2_train command.",
    )
    p.add_argument("pseudolabels", metavar="PSEUDOLABELS", help="output folder of `nnunet-medaka pseudolabel`")
    p.add_argument("-d", "--dataset-id", type=int, required=True, metavar="ID", help="number of the new dataset")
    p.add_argument("-n", "--name", required=True, help="name of the new dataset")
    p.add_argument("--teacher-raw", metavar="DIR", help="teacher's raw dataset (default $nnUNet_raw/<teacher dataset>)")
    p.add_argument("--plans-name", help="student plans name (default <teacher plans>From<teacher id>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="student nnunet_medaka.json setting, e.g. kd_weight=1, kd_scope=pseudo, num_epochs=300; repeatable")
    p.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing student dataset of this name")
    p.add_argument("-np", "--num-processes", type=int, default=2, help="processes for nnUNetv2_preprocess (default 2)")
    p.set_defaults(func=_run)
