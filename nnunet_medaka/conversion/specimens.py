"""Micro-CT specimens: find them in a source folder and check each one before any conversion work.

Source layout (folder names fixed; each ``CASE`` entry is a TIFF stack, a folder of TIFF slices,
or a NIfTI/NRRD/MetaImage file)::

    SOURCE/
      organs.json | organs.yaml     organ list (or pass it explicitly)
      images/CASE                   labeled specimens' images
      labels/CASE                   one multi-label volume per labeled specimen, or
      masks/CASE/<organ file>       one binary mask per organ, matched by the organ list's patterns
      unlabeled/CASE                images without labels (the pool for pseudo-labels)
      unlabeled_gt/CASE             optional: labels of unlabeled specimens, for evaluation only
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from nnunet_medaka.conversion.organs import OrganList
from nnunet_medaka.conversion.raw_dataset import case_id_from_name
from nnunet_medaka.conversion.volume_io import VOLUME_SUFFIXES, open_volume
from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)

__all__ = ["SLAB_BYTES", "Settings", "Specimen", "check_specimen", "find_specimens", "label_paths"]


SLAB_BYTES = 64 * 2**20  # image bytes read per slab


@dataclass(frozen=True)
class Settings:
    """How specimens are converted (shared by all specimens of one conversion)."""

    organs: OrganList
    spacing: Optional[tuple] = None  # (x, y, z) mm; overrides file metadata
    factor: tuple = (1, 1, 1)  # downsampling (z, y, x)
    image_method: str = "area"
    label_method: str = "majority"
    clip: Optional[tuple] = None
    crop: bool = False
    crop_margin: int = 4  # voxels of the input grid
    crop_threshold: Optional[float] = None
    priority: Optional[tuple] = None  # organ names; None: overlaps are an error
    allow_missing_masks: bool = False
    slab_bytes: int = SLAB_BYTES


@dataclass
class Specimen:
    """One case: its image, its labels (a volume or masks per organ, or none), and its outputs."""

    case_id: str
    image: Path
    labels: Optional[Path] = None
    masks: dict = field(default_factory=dict)  # organ name -> mask path
    out_image: Optional[Path] = None
    out_label: Optional[Path] = None
    unlabeled: bool = False  # from unlabeled/: its labels (if any) are evaluation ground truth

    @property
    def labeled(self) -> bool:
        return self.labels is not None or bool(self.masks)


def _entries(folder: Path) -> list:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if not p.name.startswith(".") and (p.is_dir() or p.name.lower().endswith(VOLUME_SUFFIXES))
    )


def _index(folder: Path, problems: list) -> dict:
    """case id -> path for the volumes in ``folder``, reporting duplicate ids."""
    found: dict = {}
    for p in _entries(folder):
        try:
            case = case_id_from_name(p.name, str(p))
        except MedakaError as e:
            problems.append(str(e))
            continue
        clash = next((c for c in found if c.lower() == case.lower()), None)
        if clash is not None:
            problems.append(f"{p} and {found[clash]}: duplicate case id {case!r}; keep one file per specimen")
            continue
        found[case] = p
    return found


def _match_masks(case: str, folder: Path, organs: OrganList, settings: Settings, problems: list) -> dict:
    masks: dict = {}
    entries = _entries(folder)
    for entry in entries:
        hits = [o.name for o in organs.organs if o.matches(entry.name)]
        if not hits:
            problems.append(
                f"{entry}: matches no organ of {organs.source}; add the organ (or a pattern) to the organ list, "
                "or move the file out of the masks folder"
            )
        elif len(hits) > 1:
            problems.append(f"{entry}: matches several organs {hits}; make the organ list patterns more specific")
        elif hits[0] in masks:
            problems.append(f"{entry} and {masks[hits[0]]}: both match organ {hits[0]!r}; keep one mask per organ")
        else:
            masks[hits[0]] = entry
    missing = [o.name for o in organs.organs if o.name not in masks]
    if missing and not settings.allow_missing_masks and entries:
        problems.append(
            f"{folder}: no mask for organ(s) {missing}; add them, fix the patterns in {organs.source}, "
            "or pass --allow-missing-masks if the organs are absent in this specimen"
        )
    if not entries:
        problems.append(f"{folder}: no mask files in this folder (case {case})")
    return masks


def find_specimens(source: Path, settings: Settings) -> tuple:
    """Labeled and unlabeled specimens of a micro-CT source folder.

    Returns
    -------
    labeled, unlabeled : list of Specimen
        ``unlabeled`` specimens carry labels only when ``unlabeled_gt/`` has them.

    Raises
    ------
    MedakaError
        Listing all layout problems: no images, duplicate case ids, missing or stray labels,
        masks that match no organ or several.
    """
    if not source.is_dir():
        raise MedakaError(f"{source}: no such folder")
    problems: list = []
    images = _index(source / "images", problems)
    unlabeled = _index(source / "unlabeled", problems)
    labels = _index(source / "labels", problems)
    mask_dirs = {case: p for case, p in _index(source / "masks", problems).items() if p.is_dir()}
    gt = _index(source / "unlabeled_gt", problems)
    if not images:
        raise MedakaError(
            f"{source / 'images'}: no specimen images found (expected CASE.tif, CASE/ with TIFF slices, or "
            "CASE.nii.gz/.nrrd/.mha); put the labeled specimens there, their labels in labels/ or masks/"
        )
    for case in sorted(set(images) & set(unlabeled)):
        problems.append(f"{images[case]} and {unlabeled[case]}: duplicate case id {case!r} in images/ and unlabeled/")
    for case in sorted(set(labels) | set(mask_dirs)):
        if case not in images:
            where = labels.get(case) or mask_dirs[case]
            problems.append(f"{where}: no image {case} in {source / 'images'}; add it or remove the labels")
    for case in sorted(gt):
        if case not in unlabeled:
            problems.append(f"{gt[case]}: no image {case} in {source / 'unlabeled'}; add it or remove the labels")
    labeled_specimens = []
    for case, image in images.items():
        if case in labels and case in mask_dirs:
            problems.append(f"{labels[case]} and {mask_dirs[case]}: case {case} has both a label volume and masks; keep one")
        elif case not in labels and case not in mask_dirs:
            problems.append(
                f"{image}: no labels for case {case} (labels/{case}.tif or masks/{case}/); add them, or move the image "
                "to unlabeled/"
            )
        elif case in labels:
            labeled_specimens.append(Specimen(case, image, labels=labels[case]))
        else:
            masks = _match_masks(case, mask_dirs[case], settings.organs, settings, problems)
            labeled_specimens.append(Specimen(case, image, masks=masks))
    unlabeled_specimens = [Specimen(case, image, labels=gt.get(case), unlabeled=True) for case, image in unlabeled.items()]
    if problems:
        raise MedakaError(f"{source}: " + "; ".join(problems))
    return labeled_specimens, unlabeled_specimens


def label_paths(specimen: Specimen) -> list:
    return [specimen.labels] if specimen.labels is not None else list(specimen.masks.values())


def check_specimen(specimen: Specimen, settings: Settings) -> list:
    """Header-level problems of one specimen (shape, spacing, readability), without reading voxels."""
    problems = []
    try:
        with ExitStack() as stack:
            image = stack.enter_context(open_volume(specimen.image))
            if settings.spacing is None and image.spacing is None:
                problems.append(
                    f"{specimen.image}: spacing missing: the file records no voxel size (ImageJ/OME metadata or "
                    "NIfTI header); pass --spacing X,Y,Z with a unit, e.g. --spacing 2.5um"
                )
            for path in label_paths(specimen):
                label = stack.enter_context(open_volume(path))
                if label.shape != image.shape:
                    problems.append(
                        f"{path}: shape (z, y, x) {label.shape} differs from the image {specimen.image} {image.shape}; "
                        "labels must be on the image's voxel grid (re-export them from the same scan)"
                    )
                if (
                    settings.spacing is None
                    and label.spacing is not None
                    and image.spacing is not None
                    and not np.allclose(label.spacing, image.spacing, rtol=1e-3, atol=0)
                ):
                    problems.append(
                        f"{path}: spacing {_fmt(label.spacing)} mm differs from the image {specimen.image} "
                        f"{_fmt(image.spacing)} mm; fix the metadata, or pass --spacing to set both"
                    )
    except MedakaError as e:
        problems.append(str(e))
    return problems


def _fmt(spacing: tuple) -> str:
    return "x".join(f"{s:.6g}" for s in spacing)
