"""``nnunet-medaka split``: a raw dataset for a few-labels experiment, carved from a labeled one.

From the source dataset's training cases, a seeded draw picks ``n_test`` held-out test cases, then
``k`` labeled cases (``n_labeled``, or ``fraction`` of the rest); every remaining case becomes an
"unlabeled" image whose ground truth is set aside for evaluation only. Images already in the
source's unlabeled pool join the new pool. The new dataset::

    DatasetYYY_Name/
      dataset.json             source keys; numTraining = k, unlabeled_images, unlabeled_ground_truth
      imagesTr/ labelsTr/      the k labeled cases (nnU-Net trains on these only)
      imagesUnlabeled/         images of the other cases (pseudo-label pool)
      labelsUnlabeled_gt/      their ground truth: for evaluating pseudo-labels, never for training
      imagesTs/ labelsTs/      the held-out test cases
      split.json               manifest: seed, counts, and the case ids of every group

Files are hard links to the source files when both live on one file system (no extra disk space;
nnU-Net never writes into raw files), copies otherwise or with ``link=False``. Real files, rather
than a ``"dataset"`` map pointing at the source, let ``nnUNetv2_predict -i imagesTs`` work as is.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)

__all__ = ["draw_labeled", "draw_pool", "split_dataset", "split_layout"]


def _place(source: Path, target: Path, link: bool) -> bool:
    """Hard-link (or copy) ``source`` to ``target``; returns whether it was linked."""
    if link:
        try:
            os.link(source, target)
            return True
        except OSError:
            pass  # another file system, or links not allowed
    shutil.copyfile(source, target)
    return False


def _check_files(cases: dict, where: str) -> None:
    missing = [str(p) for c in cases.values() for p in [*c["images"], c["label"]] if p is not None and not p.is_file()]
    if missing:
        raise MedakaError(f"{where}: {len(missing)} file(s) listed but missing, e.g. {missing[:3]}; fix the dataset first")


def _draw(cases: list, *, n_labeled: Optional[int], fraction: Optional[float], n_test: int, seed: int) -> tuple:
    import numpy as np

    n = len(cases)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MedakaError(f"--seed {seed}: expected a whole number >= 0")
    if (n_labeled is None) == (fraction is None):
        raise MedakaError("give exactly one of n_labeled (--labeled K) and fraction (--fraction F)")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or not 0 <= n_test < n:
        raise MedakaError(f"n_test={n_test!r}: expected a whole number from 0 to {n - 1} (the dataset has {n} labeled cases)")
    available = n - n_test
    if n_labeled is not None:
        if isinstance(n_labeled, bool) or not isinstance(n_labeled, int) or not 1 <= n_labeled <= available:
            raise MedakaError(
                f"n_labeled={n_labeled!r}: expected 1 to {available} ({n} cases, {n_test} held out for testing)"
            )
        k = n_labeled
    else:
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
            raise MedakaError(f"fraction={fraction!r}: expected a number in (0, 1]")
        k = max(1, round(fraction * available))
    order = [cases[i] for i in np.random.default_rng(seed).permutation(n)]
    # the unlabeled cases in draw order: a smaller pool (--unlabeled) is the first part of a larger one
    return sorted(order[n_test:n_test + k]), order[n_test + k:], sorted(order[:n_test])


def draw_labeled(cases: Sequence[str], fraction: float, seed: int) -> list:
    """The fraction's labeled cases: the first ``max(1, round(fraction * n))`` of a seeded permutation (sorted), as
    ``experiment`` draws each (fraction, seed)'s labeled cases from a split's.

    One permutation per seed, so the cases of a smaller fraction are among those of a larger one; fraction 1 gives
    every case whatever the seed.
    """
    import numpy as np

    cases = sorted(cases)
    k = max(1, round(fraction * len(cases)))
    order = np.random.default_rng(seed).permutation(len(cases))
    return sorted(cases[i] for i in order[:k])


def draw_pool(cases: Sequence[str], size: int, seed: int) -> list:
    """The first ``size`` cases of a seeded permutation of the unlabeled pool (sorted): a smaller pool size's cases
    are among a larger one's, and the draw is independent of `draw_labeled`'s."""
    import numpy as np

    cases = sorted(cases)
    order = np.random.default_rng([seed, 1]).permutation(len(cases))
    return sorted(cases[i] for i in order[:size])


def split_dataset(
    raw_dataset: os.PathLike | str | int,
    *,
    dataset_id: int,
    dataset_name: str,
    n_labeled: Optional[int] = None,
    fraction: Optional[float] = None,
    n_test: int,
    seed: int = 0,
    out_dir: Optional[os.PathLike | str] = None,
    overwrite: bool = False,
    link: bool = True,
    n_unlabeled: Optional[int] = None,
) -> Path:
    """Write an experiment dataset: k labeled cases, an unlabeled pool with ground truth aside, a test set.

    Parameters
    ----------
    raw_dataset : path, dataset name or id
        Source raw dataset (a folder, or ``DatasetXXX_Name``/name/id in ``$nnUNet_raw``).
    dataset_id, dataset_name : int, str
        Number and name of the new dataset.
    n_labeled : int, optional
        Number of labeled training cases k.
    fraction : float, optional
        Or k as a fraction (0, 1] of the cases left after the test set (at least 1).
    n_test : int
        Cases held out as the test set (``imagesTs``/``labelsTs``).
    seed : int
        Seed of the draw; the same seed gives the same split.
    out_dir : path, optional
        Folder that receives ``DatasetYYY_Name``; default ``$nnUNet_raw``.
    overwrite : bool
        Replace an existing dataset of the same name.
    link : bool
        Hard-link files where possible (default), else copy.
    n_unlabeled : int, optional
        Keep only this many unlabeled cases (default: all that are not labeled or test): the first of the seeded
        draw, then the source's own pool in case order, so that with the same seed a smaller pool is part of a
        larger one and the labeled and test cases stay the same (a pool-size curve). The others are left out
        (``split.json``'s ``left_out``).

    Returns
    -------
    pathlib.Path
        The new dataset folder.

    Raises
    ------
    MedakaError
        For a missing or incomplete source dataset, counts that do not fit, or an existing target.
    """
    from nnunet_medaka.files import write_json_atomic
    from nnunet_medaka.conversion.raw_dataset import (
        UNLABELED_GT, UNLABELED_IMAGES, cases_in_folder, list_cases, resolve_raw_dataset, staged_dataset, target_folder,
        write_dataset_json,
    )

    source = resolve_raw_dataset(raw_dataset)
    try:
        source_json = json.loads((source / "dataset.json").read_text())
        ending, n_channels = source_json["file_ending"], len(source_json["channel_names"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MedakaError(f"{source / 'dataset.json'}: not a valid nnU-Net dataset.json ({type(e).__name__}: {e})") from None
    labeled_cases = list_cases(source, source_json)
    if not labeled_cases:
        raise MedakaError(f"{source}: no training cases found; is this an nnU-Net raw dataset?")
    _check_files(labeled_cases, str(source))
    held_out = sorted((source / "imagesTs").glob(f"*{ending}")) if (source / "imagesTs").is_dir() else []
    if held_out:  # an already split dataset: its test cases would silently vanish from the new split
        log.warning("%s: its %d test image(s) in imagesTs/ are not part of the new split (split draws from imagesTr "
                    "and the unlabeled pool only); split the original dataset instead to keep them", source,
                    len(held_out))
    pool = {}
    if source_json.get("unlabeled_images"):
        gt = source / source_json["unlabeled_ground_truth"] if source_json.get("unlabeled_ground_truth") else None
        pool = cases_in_folder(source / source_json["unlabeled_images"], gt, ending, n_channels)
        for case in pool.values():
            if case["label"] is not None and not case["label"].is_file():
                case["label"] = None
        _check_files(pool, str(source / source_json["unlabeled_images"]))
        clash = sorted(set(pool) & set(labeled_cases))
        if clash:
            raise MedakaError(f"{source}: cases {clash[:5]} are both training and unlabeled cases; fix the source dataset")
    labeled, unlabeled, test = _draw(sorted(labeled_cases), n_labeled=n_labeled, fraction=fraction, n_test=n_test, seed=seed)
    left_out = []
    if n_unlabeled is not None:
        if isinstance(n_unlabeled, bool) or not isinstance(n_unlabeled, int) or n_unlabeled < 0:
            raise MedakaError(f"--unlabeled {n_unlabeled!r}: expected a whole number of unlabeled cases >= 0")
        kept_pool = sorted(pool)[:max(0, n_unlabeled - len(unlabeled))]
        left_out = sorted(unlabeled[n_unlabeled:] + [c for c in pool if c not in kept_pool])
        unlabeled, pool = unlabeled[:n_unlabeled], {c: pool[c] for c in kept_pool}
    unlabeled = sorted(unlabeled)
    target = target_folder(dataset_id, dataset_name, out_dir)
    if target.resolve() == source.resolve():
        raise MedakaError(f"{target}: is the source dataset; choose another id or name for the split")

    linked = []
    with staged_dataset(target, overwrite=overwrite) as staging:
        groups = (
            ("imagesTr", "labelsTr", labeled, labeled_cases),
            (UNLABELED_IMAGES, UNLABELED_GT, unlabeled, labeled_cases),
            (UNLABELED_IMAGES, UNLABELED_GT, sorted(pool), pool),
            ("imagesTs", "labelsTs", test, labeled_cases),
        )
        for images_dir, labels_dir, cases, files in groups:
            (staging / images_dir).mkdir(exist_ok=True)
            for case in cases:
                for c, image in enumerate(files[case]["images"]):
                    linked.append(_place(image, staging / images_dir / f"{case}_{c:04d}{ending}", link))
                if files[case]["label"] is not None:
                    (staging / labels_dir).mkdir(exist_ok=True)
                    linked.append(_place(files[case]["label"], staging / labels_dir / f"{case}{ending}", link))
        keep = {k: v for k, v in source_json.items() if k not in ("dataset", "channel_names", "labels", "numTraining", "file_ending")}
        keep.update({
            "name": dataset_name,
            "description": f"experiment split of {source.name}: {len(labeled)} labeled, {len(unlabeled) + len(pool)} "
            f"unlabeled, {len(test)} test cases (seed {seed})",
            "unlabeled_images": UNLABELED_IMAGES,
            "numUnlabeled": len(unlabeled) + len(pool),
            "numTest": len(test),
        })
        keep.pop("unlabeled_ground_truth", None)
        if (staging / UNLABELED_GT).is_dir():
            keep["unlabeled_ground_truth"] = UNLABELED_GT
        write_dataset_json(
            staging, channel_names=source_json["channel_names"], labels=source_json["labels"],
            num_training=len(labeled), file_ending=ending, **keep,
        )
        write_json_atomic(staging / "split.json", {
            "source": str(source.resolve()),
            "seed": seed,
            "n_labeled": len(labeled),
            "fraction": fraction,
            "n_test": len(test),
            "labeled": labeled,
            "unlabeled": unlabeled,
            "unlabeled_from_source_pool": sorted(pool),
            "unlabeled_without_ground_truth": sorted(c for c in pool if pool[c]["label"] is None),
            "test": test,
            "left_out": left_out,
            "folders": {"train": ["imagesTr", "labelsTr"], "unlabeled": [UNLABELED_IMAGES, UNLABELED_GT],
                        "test": ["imagesTs", "labelsTs"]},
            "files": "hard links" if linked and all(linked) else "copies" if not any(linked) else "hard links and copies",
        })
    log.info("wrote %s: %d labeled, %d unlabeled, %d test cases", target, len(labeled), len(unlabeled) + len(pool), len(test))
    return target


def _run(args: argparse.Namespace) -> int:
    path = split_dataset(
        args.raw_dataset, dataset_id=args.dataset_id, dataset_name=args.name, n_labeled=args.labeled,
        fraction=args.fraction, n_test=args.test, seed=args.seed, out_dir=args.out_dir, overwrite=args.overwrite,
        link=not args.copy, n_unlabeled=args.unlabeled,
    )
    print(path)
    return 0


def split_layout(dataset: str) -> tuple[Path, int, dict]:
    """The raw dataset folder of ``dataset`` (id or ``DatasetXXX_Name`` in ``$nnUNet_raw``), its id and
    dataset.json, checked for the layout this command writes (labeled, unlabeled pool, test cases), which ``run``
    and ``experiment`` read.

    Raises
    ------
    MedakaError
        Naming the missing folder or file and the command that makes it.
    """
    from nnunet_medaka.environment import nnunet_folder
    from nnunet_medaka.files import read_json

    raw_root = nnunet_folder("nnUNet_raw")
    if str(dataset).isdigit():
        matches = sorted(raw_root.glob(f"Dataset{int(dataset):03d}_*"))
    else:
        matches = [raw_root / str(dataset)] if (raw_root / str(dataset)).is_dir() else []
    if len(matches) != 1:
        raise MedakaError(f"dataset {dataset!r}: {'no' if not matches else 'several'} matching folder(s) in "
                          f"nnUNet_raw={raw_root}; convert it first (`nnunet-medaka convert` then `nnunet-medaka split`)")
    raw = matches[0]
    dataset_json = read_json(raw / "dataset.json", what="the dataset's description",
                             fix="make the dataset with `nnunet-medaka convert`")
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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split",
        help="make a few-labels experiment dataset: k labeled cases, the rest unlabeled (ground truth aside), a test set",
        description="From a labeled raw dataset, draw (seeded) a test set and k labeled training cases; the other "
        "cases' images become the unlabeled pool, their labels go to labelsUnlabeled_gt/ for evaluation only. "
        "Writes split.json listing every group.",
    )
    p.add_argument("raw_dataset", metavar="RAW", help="source dataset: a folder, DatasetXXX_Name, name, or id in $nnUNet_raw")
    p.add_argument("-d", "--dataset-id", type=int, required=True, metavar="ID", help="number of the new dataset")
    p.add_argument("-n", "--name", required=True, help="name of the new dataset")
    k = p.add_mutually_exclusive_group(required=True)
    k.add_argument("--labeled", type=int, metavar="K", help="number of labeled training cases")
    k.add_argument("--fraction", type=float, metavar="F", help="labeled fraction of the non-test cases, in (0, 1]")
    p.add_argument("--test", type=int, default=0, metavar="N", help="held-out test cases (default 0)")
    p.add_argument("--unlabeled", type=int, metavar="N", help="keep only N unlabeled cases (default: all the others); "
                   "with the same seed a smaller pool is part of a larger one and labeled and test cases stay the same")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    p.add_argument("--out-dir", metavar="DIR", help="folder that receives the dataset (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same name")
    p.set_defaults(func=_run)
