"""Medical Segmentation Decathlon folders: find the cases and convert each to nnU-Net's layout.

MSD stores ``imagesTr/CASE.nii.gz`` (3D, or 4D with one volume per channel) and
``labelsTr/CASE.nii.gz`` without nnU-Net's ``_0000`` channel suffix. The original release also has
quirks this module accepts: labels stored as float (accepted when every value is a whole number),
uint8 images next to float32 ones, and macOS ``._CASE.nii.gz`` resource files (skipped).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.files import read_json
from nnunet_medaka.conversion.organs import OrganList
from nnunet_medaka.conversion.raw_dataset import case_id_from_name

log = logging.getLogger(__name__)

_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class MSDCase:
    """One MSD case: its files, and where its nnU-Net files go."""

    case_id: str
    image: Path
    label: Optional[Path] = None
    out_images: Optional[Path] = None  # folder for CASE_XXXX.nii.gz
    out_label: Optional[Path] = None


def read_msd_json(source: Path) -> Optional[dict]:
    """The MSD ``dataset.json`` of ``source`` if there is one (its ``labels``/``modality`` are used)."""
    path = source / "dataset.json"
    if not path.is_file():
        return None
    return read_json(path, what="the MSD dataset.json", fix="fix or remove it")


def _index(folder: Path, problems: list, others: Optional[dict] = None) -> dict:
    """case -> NIfTI file of ``folder``; files of other endings go to ``others`` (named if a case lacks its NIfTI)."""
    found: dict = {}
    if not folder.is_dir():
        return found
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue  # ._CASE.nii.gz: macOS metadata shipped in the MSD archives
        if not p.name.lower().endswith(_SUFFIXES):
            log.debug("skipping %s: not NIfTI", p)
            if others is not None:
                others[p.name.split(".")[0]] = p
            continue
        case = case_id_from_name(p.name, str(p))
        clash = next((c for c in found if c.lower() == case.lower()), None)
        if clash is not None:
            problems.append(f"{p} and {found[clash]}: duplicate case id {case!r}; keep one file per case")
            continue
        found[case] = p
    return found


def find_msd_cases(source: Path) -> tuple:
    """Training and test cases of an MSD folder.

    Raises
    ------
    MedakaError
        Listing all problems: no training images, images without labels, labels without images,
        duplicate case ids.
    """
    if not source.is_dir():
        raise MedakaError(f"{source}: no such folder")
    problems: list = []
    other_images: dict = {}
    images = _index(source / "imagesTr", problems, other_images)
    labels = _index(source / "labelsTr", problems)
    test = _index(source / "imagesTs", problems)
    if not images:
        raise MedakaError(f"{source / 'imagesTr'}: no training images (CASE.nii.gz) found; is this an MSD task folder?")
    if not (source / "labelsTr").is_dir():
        raise MedakaError(f"{source / 'labelsTr'}: folder missing; an MSD folder holds one label file per training image "
                          "there (labelsTr/CASE.nii.gz)")
    for case in sorted(set(images) - set(labels)):
        problems.append(f"{images[case]}: no label {case}.nii.gz in {source / 'labelsTr'}")
    for case in sorted(set(labels) - set(images)):
        there = other_images.get(case)
        problems.append(f"{labels[case]}: no image {case}.nii.gz in {source / 'imagesTr'}" +
                        (f" ({there.name} is there: convert msd reads .nii/.nii.gz only; convert it to NIfTI)"
                         if there else ""))
    for case in sorted(set(test) & set(images)):
        problems.append(f"{test[case]}: case id {case!r} is also a training case")
    if problems:
        raise MedakaError(f"{source}: " + "; ".join(problems))
    training = [MSDCase(case, images[case], labels[case]) for case in images]
    return training, [MSDCase(case, path) for case, path in test.items()]


def _array(image) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayViewFromImage(image)


def _geometry(image) -> dict:
    """ITK spacing/origin/direction of the first three axes."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    return {
        "spacing": tuple(image.GetSpacing()[:3]),
        "origin": tuple(image.GetOrigin()[:3]),
        "direction": tuple(direction.ravel()),
    }


def _channels(image, path: Path, n_channels: int) -> list:
    """3D arrays, one per channel: a 3D image is one channel, a 4D image one per volume."""
    array = _array(image)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MedakaError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected grey values")
    volumes = [array] if array.ndim == 3 else list(array) if array.ndim == 4 else None
    if volumes is None:
        raise MedakaError(f"{path}: has {array.ndim} dimensions; expected a 3D image or a 4D stack of channels")
    if len(volumes) != n_channels:
        raise MedakaError(f"{path}: holds {len(volumes)} channel(s) where the other images (and the channel names) have "
                          f"{n_channels}; every image of a dataset needs the same channels: fix this image, or pass "
                          "one --channel-name per channel if all images have that many")
    return volumes


def _label_array(image, path: Path, organs: OrganList) -> np.ndarray:
    array = _array(image)
    if array.ndim != 3:
        raise MedakaError(f"{path}: label has {array.ndim} dimensions; expected a 3D label volume")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            value = array[tuple(np.argwhere(bad)[0])].item()
            raise MedakaError(
                f"{path}: non-integer label value {value!r}; labels must be whole numbers: re-export the label "
                "volume as an integer type (nearest-neighbour, no interpolation)"
            )
    values = np.unique(array)
    lut = organs.output_label()
    unknown = [v.item() for v in values if v != 0 and int(v) not in lut]
    if unknown:
        known = ", ".join(f"{o.value}={o.name}" for o in organs.by_value())
        raise MedakaError(
            f"{path}: label values {unknown[:10]} are not in the label list (0=background, {known}); add them "
            "with --labels or fix the label file"
        )
    if values.max() == 0:
        raise MedakaError(f"{path}: empty label (background only); fix the label or remove the case")
    out = np.zeros(array.shape, dtype=np.uint8 if len(lut) < 256 else np.uint16)
    for value in values:
        if value != 0:
            out[array == value] = lut[int(value)]
    return out


def convert_msd_case(case: MSDCase, organs: OrganList, *, n_channels: int) -> dict:
    """Write one case's ``CASE_XXXX.nii.gz`` images (and ``CASE.nii.gz`` label) in nnU-Net's layout.

    Raises
    ------
    MedakaError
        If a file is unreadable, an image holds NaN/inf, the label's grid differs from the image's,
        or the label has non-integer values, values outside the label list, or no foreground.
    """
    from nnunet_medaka.conversion.sitk_volume import read_image, write_nifti

    image = read_image(case.image)
    geometry = _geometry(image)
    volumes = _channels(image, case.image, n_channels)
    for c, volume in enumerate(volumes):
        if volume.dtype.kind == "f" and not np.isfinite(volume).all():
            raise MedakaError(
                f"{case.image}: channel {c} holds NaN or infinite values; replace them (e.g. with the background "
                "intensity) before converting"
            )
    summary = {"image": str(case.image), "shape": list(volumes[0].shape), "spacing_mm": list(geometry["spacing"])}
    if case.label is not None:
        label = read_image(case.label)
        label_geometry = _geometry(label)
        problems = []
        if _array(label).shape[-3:] != volumes[0].shape:
            problems.append(f"shape (z, y, x) {_array(label).shape} differs from the image's {volumes[0].shape}")
        elif not np.allclose(label_geometry["spacing"], geometry["spacing"], rtol=1e-3, atol=0):
            problems.append(f"spacing {label_geometry['spacing']} differs from the image's {geometry['spacing']}")
        elif not (
            np.allclose(label_geometry["origin"], geometry["origin"], atol=1e-3)
            and np.allclose(label_geometry["direction"], geometry["direction"], atol=1e-4)
        ):
            what = "origin" if not np.allclose(label_geometry["origin"], geometry["origin"], atol=1e-3) else "direction"
            problems.append(f"{what} {label_geometry[what]} differs from the image's {geometry[what]}")
        if problems:
            raise MedakaError(
                f"{case.label}: {problems[0]} ({case.image}); the label must be on the image's voxel grid: resample it "
                "onto the image (nearest neighbour)"
            )
        labels = _label_array(label, case.label, organs)
        write_nifti(case.out_label, labels, **geometry)
        summary["label"] = str(case.label)
    for c, volume in enumerate(volumes):
        if volume.dtype == np.float64:
            volume = volume.astype(np.float32)
        write_nifti(case.out_images / f"{case.case_id}_{c:04d}.nii.gz", volume, **geometry)
    return summary
