"""Create nnU-Net raw datasets safely: names, id clashes, staging folder, ``dataset.json``.

Every writer in the plugin builds a dataset in a hidden staging folder beside the target and
renames it into place only when everything succeeded, so a failed or interrupted conversion
leaves no partial dataset behind.

Beyond nnU-Net's keys, the plugin's ``dataset.json`` may declare (nnU-Net ignores unknown keys):

- ``"unlabeled_images"``: folder of images without labels, named ``CASE_0000.nii.gz`` like
  ``imagesTr``, that the teacher pseudo-labels (``imagesUnlabeled``); ``"numUnlabeled"`` counts them.
- ``"unlabeled_ground_truth"``: labels of those images kept for evaluation only, never for
  training (``labelsUnlabeled_gt``; present for synthetic data and experiment splits).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Iterator, Optional

from nnunet_medaka.files import write_json_atomic
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import staged_folder

log = logging.getLogger(__name__)

UNLABELED_IMAGES = "imagesUnlabeled"
UNLABELED_GT = "labelsUnlabeled_gt"
# dataset.json key of a student dataset: its pseudo-labelled cases (written by build-student, read by KDTrainer)
PSEUDO_CASES_KEY = "pseudo_labeled_cases"
FILE_ENDING = ".nii.gz"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")

__all__ = [
    "FILE_ENDING",
    "PSEUDO_CASES_KEY",
    "UNLABELED_GT",
    "UNLABELED_IMAGES",
    "case_id_from_name",
    "cases_in_folder",
    "dataset_folder_name",
    "free_dataset_ids",
    "reserve_dataset_ids",
    "reserved_dataset_ids",
    "taken_dataset_ids",
    "list_cases",
    "resolve_raw_dataset",
    "staged_dataset",
    "target_folder",
    "write_dataset_json",
]


def dataset_folder_name(dataset_id: int, dataset_name: str) -> str:
    """``DatasetXXX_Name`` after checking the id (1-999) and the name (letters, digits, ``_``, ``-``)."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise MedakaError(f"dataset id {dataset_id!r}: expected an integer from 1 to 999 (nnU-Net uses three digits)")
    if not isinstance(dataset_name, str) or not _NAME.match(dataset_name):
        raise MedakaError(
            f"dataset name {dataset_name!r}: use letters, digits, '_' and '-' only, starting with a letter or digit "
            "(e.g. MedakaPhantom)"
        )
    return f"Dataset{dataset_id:03d}_{dataset_name}"


def case_id_from_name(name: str, where: str) -> str:
    """Case id for a specimen file or folder name: suffix removed, other characters than letters,
    digits, ``_``, ``-`` and ``.`` replaced by ``_`` (``"Medaka 01.tif"`` -> ``"Medaka_01"``)."""
    from nnunet_medaka.conversion.volume_io import strip_volume_suffix

    case_id = re.sub(r"[^A-Za-z0-9_.\-]+", "_", strip_volume_suffix(name)).strip("._-")
    if not case_id:
        raise MedakaError(f"{where}: cannot make a case id from the name {name!r}; rename it to letters and digits")
    return case_id


def target_folder(dataset_id: int, dataset_name: str, out_dir: Optional[os.PathLike | str] = None) -> Path:
    """Where a new raw dataset goes, refusing an id that another dataset already uses.

    Parameters
    ----------
    dataset_id, dataset_name : int, str
        nnU-Net dataset number and name.
    out_dir : path, optional
        Folder that receives ``DatasetXXX_Name``; default ``$nnUNet_raw``.

    Raises
    ------
    MedakaError
        If ``nnUNet_raw`` is unset (and no ``out_dir``), or a dataset with this id and another name
        exists in the raw, preprocessed or results folder (nnU-Net finds datasets by number).
    """
    from nnunet_medaka.environment import nnunet_folder

    folder_name = dataset_folder_name(dataset_id, dataset_name)
    root = Path(out_dir) if out_dir is not None else nnunet_folder("nnUNet_raw")
    places = [root]
    if out_dir is None:
        places += [Path(os.environ[v]) for v in ("nnUNet_preprocessed", "nnUNet_results") if os.environ.get(v)]
    for place in places:
        if not place.is_dir():
            continue
        for other in place.glob(f"Dataset{dataset_id:03d}_*"):
            if other.name != folder_name and not other.name.startswith("."):
                raise MedakaError(
                    f"{other}: dataset id {dataset_id} is already used by {other.name}; nnU-Net finds datasets by number, "
                    "so choose another id or delete that dataset"
                )
    return root / folder_name


@contextlib.contextmanager
def staged_dataset(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder that becomes ``target`` when the block succeeds
    (`nnunet_medaka.files.staged_folder`); on any exception ``target`` is untouched.

    Raises
    ------
    MedakaError
        If ``target`` exists and ``overwrite`` is False.
    """
    replaced = Path(target).exists()
    with staged_folder(target, overwrite=overwrite) as staging:
        yield staging
    if replaced:
        log.info("replaced %s; re-run nnUNetv2_plan_and_preprocess for it if it was planned before", target)


RESERVATIONS_FILE = ".nnunet_medaka_reserved_ids.json"


def _ints(value) -> set:
    if isinstance(value, bool):
        return set()
    if isinstance(value, int):
        return {value}
    if isinstance(value, dict):
        return set().union(*map(_ints, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_ints, value)) if value else set()
    return set()


@contextlib.contextmanager
def _reservations_lock(raw_root: Path) -> Iterator[None]:
    import fcntl

    raw_root.mkdir(parents=True, exist_ok=True)
    with open(raw_root / (RESERVATIONS_FILE + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_reservations(raw_root: Path) -> dict:
    """id -> owner file of every reservation whose owner file still exists and still lists the id."""
    import json

    path = raw_root / RESERVATIONS_FILE
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a torn file of a killed writer cannot happen (atomic writes); anything else is stale
        entries = {}
    live = {}
    for ident, owner in entries.items():
        try:
            listed = _ints(json.loads(Path(owner).read_text()))
        except (OSError, ValueError):
            continue
        if int(ident) in listed:
            live[int(ident)] = owner
    return live


def reserved_dataset_ids(raw_root: Path, *, except_owner: Optional[Path] = None) -> set:
    """Dataset ids that a run or experiment has recorded for datasets it has not written yet.

    Two experiments (or runs) on one ``nnUNet_raw`` would otherwise both choose an id that the first recorded
    but had not created yet, and one of them fail much later. A reservation lives as long as its owner file (the
    experiment's ``datasets.json``, the run's ``student_dataset.json``) exists and lists the id.
    """
    owner = str(Path(except_owner).resolve()) if except_owner is not None else None
    with _reservations_lock(Path(raw_root)):
        return {i for i, o in _live_reservations(Path(raw_root)).items() if o != owner}


def reserve_dataset_ids(raw_root: Path, ids, owner: Path) -> None:
    """Record ``ids`` as reserved by ``owner`` (a JSON file that lists them); stale reservations are dropped."""
    raw_root = Path(raw_root)
    with _reservations_lock(raw_root):
        live = {str(i): o for i, o in _live_reservations(raw_root).items()}
        live.update({str(int(i)): str(Path(owner).resolve()) for i in ids})
        write_json_atomic(raw_root / RESERVATIONS_FILE, live)


def taken_dataset_ids(raw_root: Path, *more_roots: Path, except_owner: Optional[Path] = None) -> set:
    """Dataset ids in use: a ``DatasetXXX_*`` folder in ``raw_root`` (or in ``more_roots``, e.g. the preprocessed
    and results folders), or an id another run or experiment reserved (`reserved_dataset_ids`)."""
    ids = {int(p.name[7:10]) for root in (raw_root, *more_roots) for p in Path(root).glob("Dataset[0-9][0-9][0-9]_*")}
    return ids | reserved_dataset_ids(raw_root, except_owner=except_owner)


def free_dataset_ids(count: int, start: int, taken: set, *, fix: str, wrap: bool = True) -> list:
    """The first ``count`` nnU-Net dataset ids from ``start`` on (wrapping from 999 to 1, unless ``wrap`` is False)
    that are not ``taken``.

    Raises
    ------
    MedakaError
        When fewer are free; the message ends with ``fix``.
    """
    if not wrap and not 1 <= start <= 999:
        raise MedakaError(f"dataset id {start}: nnU-Net dataset ids run from 1 to 999; {fix}")
    candidates = ((start + k - 1) % 999 + 1 for k in range(999)) if wrap else range(start, 1000)
    free = [c for c in candidates if c not in taken][:count]
    if len(free) < count:
        span = "1-999" if wrap else f"{start}-999"
        raise MedakaError(f"{count} dataset id(s) needed, {len(free)} free in {span}; {fix}")
    return free


def write_dataset_json(
    folder: Path,
    *,
    channel_names: dict,
    labels: dict,
    num_training: int,
    file_ending: str = FILE_ENDING,
    **extra,
) -> dict:
    """Write ``dataset.json`` with nnU-Net's required keys first, then ``extra``; returns the dict."""
    data = {
        "channel_names": {str(k): v for k, v in channel_names.items()},
        "labels": dict(labels),
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }
    write_json_atomic(Path(folder) / "dataset.json", data)
    return data


def resolve_raw_dataset(spec: os.PathLike | str | int) -> Path:
    """A raw dataset folder from a path, ``DatasetXXX_Name``, a name, or an id in ``$nnUNet_raw``."""
    from nnunet_medaka.environment import nnunet_folder

    path = Path(str(spec)).expanduser()
    if path.is_dir() and (path / "dataset.json").is_file():
        return path
    if path.is_dir():
        raise MedakaError(f"{path}: no dataset.json here; expected an nnU-Net raw dataset folder")
    text = str(spec)
    raw = nnunet_folder("nnUNet_raw")
    if text.isdigit():
        matches = sorted(raw.glob(f"Dataset{int(text):03d}_*"))
    else:
        matches = sorted(p for p in raw.glob("Dataset*_*") if p.name == text or p.name.split("_", 1)[1] == text)
    matches = [m for m in matches if m.is_dir() and not m.name.startswith(".")]
    if len(matches) != 1:
        found = ", ".join(m.name for m in matches) or "nothing"
        raise MedakaError(f"{spec!r}: expected one raw dataset in {raw} matching it, found {found}")
    return matches[0]


def list_cases(raw_dataset: Path, dataset_json: dict) -> dict:
    """Training cases ``{case: {"images": [paths], "label": path}}`` as nnU-Net lists them.

    Follows nnU-Net's rules: the ``"dataset"`` map if present (paths absolute or relative to the
    dataset folder, ``$VAR`` expanded), else ``imagesTr/CASE_XXXX<ending>`` with ``labelsTr/CASE<ending>``.
    """
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    if "dataset" in dataset_json:
        def absolute(p: str) -> Path:
            p = os.path.expandvars(p)
            return Path(p) if os.path.isabs(p) else raw_dataset / p

        return {
            case: {"images": [absolute(i) for i in entry["images"]], "label": absolute(entry["label"])}
            for case, entry in dataset_json["dataset"].items()
        }
    return cases_in_folder(raw_dataset / "imagesTr", raw_dataset / "labelsTr", ending, n_channels)


def cases_in_folder(images: Path, labels: Optional[Path], ending: str, n_channels: int) -> dict:
    """Cases of an nnU-Net style images folder: ``{case: {"images": [CASE_XXXX<ending>], "label": labels/CASE<ending>}}``."""
    if not images.is_dir():
        return {}
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    cases: dict = {}
    for f in sorted(images.iterdir()):
        m = pattern.match(f.name)
        if m:
            cases.setdefault(m.group(1), []).append(f)
    return {
        case: {
            "images": [images / f"{case}_{c:04d}{ending}" for c in range(n_channels)],
            "label": None if labels is None else labels / f"{case}{ending}",
        }
        for case in cases
    }
