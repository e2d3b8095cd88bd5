"""Micro-CT specimens: convert each one (found and checked by ``specimens``), streaming by z-slabs.

The source layout is described in ``specimens``.

One specimen is read three times at most: a cropping pass (only with ``crop``), the image pass and
the label pass. The output arrays are the only whole volumes held; the image is written and freed
before the labels are built, so peak memory is about one output volume plus one slab.
"""
from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import numpy as np

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.conversion.resample import (
    count_values, downsample_image, downsample_labels, otsu_threshold, output_shape, present_values,
)
from nnunet_medaka.conversion.sitk_volume import write_nifti
from nnunet_medaka.conversion.specimens import Settings, Specimen, check_specimen
from nnunet_medaka.conversion.volume_io import Volume, open_volume

log = logging.getLogger(__name__)


class _LabelSource:
    """Reads label slabs of one specimen as consecutive nnU-Net labels, checking them as it goes."""

    def __init__(self, specimen: Specimen, settings: Settings, stack: ExitStack):
        self.specimen, self.settings = specimen, settings
        organs = settings.organs
        self.lut_values = organs.output_label()  # source value -> output label
        self.names = {i + 1: o.name for i, o in enumerate(organs.by_value())}
        self.dtype = np.uint8 if len(organs.organs) < 256 else np.uint16
        if specimen.labels is not None:
            self.volume = stack.enter_context(open_volume(specimen.labels))
            self.masks = []
        else:
            self.volume = None
            order = list(settings.priority or []) + [n for n in organs.names if n not in (settings.priority or [])]
            value_of = {o.name: o.value for o in organs.organs}
            self.masks = [
                (name, self.lut_values[value_of[name]], stack.enter_context(open_volume(specimen.masks[name])))
                for name in order if name in specimen.masks
            ]
            self.mask_values = {name: set() for name, _, _ in self.masks}

    def read(self, z0: int, z1: int, box: tuple) -> np.ndarray:
        if self.volume is not None:
            return self._map_volume(self.volume.read(z0, z1)[box], z0)
        out = None
        for name, label, volume in self.masks:
            mask = self._binary(name, volume, volume.read(z0, z1)[box])
            if out is None:
                out = np.zeros(mask.shape, dtype=self.dtype)
            taken = mask & (out != 0)
            if taken.any():
                if self.settings.priority is None:
                    self._overlap_error(name, volume, out, taken, z0)
                mask &= ~taken  # an earlier organ in the priority order keeps these voxels
            out[mask] = label
        return out

    def _binary(self, name: str, volume: Volume, slab: np.ndarray) -> np.ndarray:
        if slab.dtype.kind == "f" and not np.isfinite(slab).all():
            raise MedakaError(f"{volume.path}: mask of {name!r} holds NaN/inf values; re-export it as 0/1 integers")
        seen = self.mask_values[name]
        seen.update(int(v) for v in present_values(slab) if v != 0)
        if len(seen) > 1:
            shown = sorted(seen)[:5]
            raise MedakaError(
                f"{volume.path}: mask of {name!r} holds several values {shown} besides 0; a per-organ mask needs 0 "
                "outside and one value inside the organ (or use a multi-label volume in labels/)"
            )
        return slab != 0

    def _overlap_error(self, name: str, volume: Volume, out: np.ndarray, taken: np.ndarray, z0: int) -> None:
        where = np.argwhere(taken)[0]
        other = self.names[int(out[tuple(where)])]
        other_path = next(v.path for n, _, v in self.masks if n == other)
        raise MedakaError(
            f"case {self.specimen.case_id}: masks {volume.path} ({name}) and {other_path.name} ({other}) overlap "
            f"({int(taken.sum())} voxels from plane z={int(where[0]) + z0}); fix the masks, or pass "
            f"--priority {other},{name} (earlier organs win where masks overlap)"
        )

    def _map_volume(self, slab: np.ndarray, z0: int) -> np.ndarray:
        path = self.volume.path
        if slab.dtype.kind == "f":
            bad = ~np.isfinite(slab) | (slab != np.round(slab))
            if bad.any():
                where = tuple(int(w) for w in np.argwhere(bad)[0])
                raise MedakaError(
                    f"{path}: non-integer label value {slab[where].item()!r} at plane z={where[0] + z0}; labels must be whole "
                    "numbers: export the label volume as an integer type (nearest-neighbour, no interpolation)"
                )
            slab = slab.astype(np.int64)
        values = present_values(slab)
        unknown = [int(v) for v in values if v != 0 and int(v) not in self.lut_values]
        if unknown:
            known = ", ".join(f"{o.value}={o.name}" for o in self.settings.organs.by_value())
            raise MedakaError(
                f"{path}: label values {unknown[:10]} are not in the organ list {self.settings.organs.source} "
                f"(0=background, {known}); add them to the organ list or relabel the volume"
            )
        if slab.dtype.kind in "iu" and slab.dtype.itemsize <= 2:
            # a lookup table indexed by the raw value: no sorting, no int64 temporaries
            info = np.iinfo(slab.dtype)
            table = np.zeros(int(info.max) - int(info.min) + 1, dtype=self.dtype)
            for value in values:
                table[int(value) - int(info.min)] = self.lut_values.get(int(value), 0)
            index = slab if info.min == 0 else slab.astype(np.int32) - int(info.min)
            return table[index]
        out = np.zeros(slab.shape, dtype=self.dtype)
        for value in values:
            if value != 0:
                out[slab == value] = self.lut_values[int(value)]
        return out


def _slab_planes(plane_bytes: int, settings: Settings, multiple: int) -> int:
    n = max(1, settings.slab_bytes // max(plane_bytes, 1))
    return max(multiple, n // multiple * multiple)


def _bounding_box(mask: np.ndarray) -> Optional[tuple]:
    """Inclusive (lo, hi) index arrays of the True voxels, or None."""
    lo, hi = [], []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if not hits.size:
            return None
        lo.append(hits[0])
        hi.append(hits[-1])
    return np.array(lo), np.array(hi)


def _crop_box(image: Volume, labels: Optional[_LabelSource], settings: Settings, progress) -> tuple:
    """Bounding box ((z0, z1), (y0, y1), (x0, x1)) of the specimen plus margin, and of all labels."""
    nz, ny, nx = image.shape
    # threshold found on a block-averaged copy: averaging removes the speckle that would widen the box
    block = max(2, math.ceil((nz * ny * nx / 16e6) ** (1 / 3)))
    planes = _slab_planes(ny * nx * image.dtype.itemsize, settings, block)
    small, lab_lo, lab_hi = [], np.full(3, np.iinfo(np.int64).max), np.full(3, -1)
    full = (slice(None), slice(None), slice(None))
    for z0 in progress(range(0, nz, planes), "crop"):
        z1 = min(nz, z0 + planes)
        slab = image.read(z0, z1).astype(np.float32)
        small.append(downsample_image(slab, (block,) * 3, "area"))
        if labels is not None:
            found = _bounding_box(labels.read(z0, z1, full) != 0)
            if found is not None:
                lab_lo = np.minimum(lab_lo, found[0] + [z0, 0, 0])
                lab_hi = np.maximum(lab_hi, found[1] + [z0, 0, 0])
    small = np.concatenate(small)
    threshold = settings.crop_threshold if settings.crop_threshold is not None else otsu_threshold(small.ravel())
    foreground = small > threshold
    if foreground.any():
        from scipy import ndimage

        components, n = ndimage.label(foreground)
        sizes = np.bincount(components.ravel())[1:]
        # the specimen is the largest component; anything at least a tenth its size stays too (loose fins)
        keep = np.isin(components, np.flatnonzero(sizes >= sizes.max() / 10) + 1)
        lo, hi = _bounding_box(keep)
        lo, hi = lo * block, (hi + 1) * block - 1
    else:
        log.warning("%s: nothing above the crop threshold %.6g; not cropped", image.path, threshold)
        lo, hi = np.zeros(3, int), np.array(image.shape) - 1
    lo = np.minimum(lo - settings.crop_margin, lab_lo)
    hi = np.maximum(hi + settings.crop_margin, lab_hi)
    lo, hi = np.maximum(lo, 0), np.minimum(hi + 1, image.shape)
    return tuple((int(a), int(b)) for a, b in zip(lo, hi))


def _geometry(image: Volume, spacing: tuple, box: tuple, factor: tuple) -> dict:
    """Output spacing/origin/direction (ITK order x, y, z) after cropping and downsampling."""
    f_xyz = np.array(factor[::-1], dtype=float)
    start_xyz = np.array([b[0] for b in box][::-1], dtype=float)
    direction = np.asarray(image.direction, dtype=float).reshape(3, 3)
    # the first output voxel is centred on its block of input voxels
    shift = direction @ (np.asarray(spacing) * (start_xyz + (f_xyz - 1) / 2))
    return {
        "spacing": tuple(float(s) for s in np.asarray(spacing) * f_xyz),
        "origin": tuple(float(o) for o in np.asarray(image.origin) + shift),
        "direction": tuple(image.direction),
    }


def _output_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.itemsize > 4:
        return np.dtype(np.int32 if dtype.kind == "i" else np.uint32)  # NIfTI readers balk at 64-bit ints
    return dtype


def _clip(slab: np.ndarray, clip: Optional[tuple]) -> np.ndarray:
    if clip is None:
        return slab
    lo, hi = clip
    if slab.dtype.kind in "iu":  # bounds outside the type's range would overflow
        info = np.iinfo(slab.dtype)
        lo, hi = (int(np.clip(np.ceil(lo), info.min, info.max)), int(np.clip(np.floor(hi), info.min, info.max)))
    return np.clip(slab, slab.dtype.type(lo), slab.dtype.type(hi))


def _check_finite(slab: np.ndarray, path: Path, z0: int) -> None:
    if slab.dtype.kind == "f" and not np.isfinite(slab).all():
        z = int(np.argwhere(~np.isfinite(slab))[0][0]) + z0
        raise MedakaError(
            f"{path}: image holds NaN or infinite values (first in plane z={z}); replace them (e.g. with the "
            "background intensity) before converting"
        )


def convert_specimen(specimen: Specimen, settings: Settings, *, show_progress: bool = False) -> dict:
    """Convert one specimen to NIfTI image (and label) files.

    Parameters
    ----------
    specimen : Specimen
        Inputs and output paths.
    settings : Settings
        Shared conversion settings.
    show_progress : bool
        Show a progress bar over slabs.

    Returns
    -------
    dict
        Summary: input/output shape, spacing (mm), crop box, organ voxel counts.

    Raises
    ------
    MedakaError
        On unreadable files, NaN/inf images, label values outside the organ list, non-integer
        labels, overlapping masks, non-binary masks, or an empty label.
    """
    from tqdm import tqdm

    def progress(it, what: str):
        return tqdm(it, desc=f"{specimen.case_id} {what}", leave=False, disable=not show_progress, unit="slab")

    problems = check_specimen(specimen, settings)
    if problems:
        raise MedakaError("; ".join(problems))
    factor = settings.factor
    with ExitStack() as stack:
        image = stack.enter_context(open_volume(specimen.image))
        spacing = settings.spacing if settings.spacing is not None else image.spacing
        labels = _LabelSource(specimen, settings, stack) if specimen.labeled else None
        box = _crop_box(image, labels, settings, progress) if settings.crop else tuple((0, s) for s in image.shape)
        crop_shape = tuple(b - a for a, b in box)
        region = (slice(*box[1]), slice(*box[2]))
        out_shape = output_shape(crop_shape, factor)
        planes = _slab_planes(crop_shape[1] * crop_shape[2] * image.dtype.itemsize, settings, factor[0])
        geometry = _geometry(image, spacing, box, factor)

        out = np.empty(out_shape, dtype=_output_dtype(image.dtype))
        for z in progress(range(0, crop_shape[0], planes), "image"):
            z0, z1 = box[0][0] + z, box[0][0] + min(crop_shape[0], z + planes)
            slab = image.read(z0, z1)[(slice(None), *region)]
            _check_finite(slab, image.path, z0)
            slab = _clip(slab.astype(out.dtype, copy=False), settings.clip)
            out[z // factor[0]: z // factor[0] + -(-(z1 - z0) // factor[0])] = downsample_image(
                slab, factor, settings.image_method
            )
        write_nifti(specimen.out_image, out, **geometry)
        del out

        summary = {
            "image": str(specimen.image),
            "shape_in": list(image.shape),
            "crop_box": [list(b) for b in box],
            "shape_out": list(out_shape),
            "spacing_mm": list(geometry["spacing"]),
        }
        if labels is None:
            return summary
        out = np.zeros(out_shape, dtype=labels.dtype)
        counts_in = np.zeros(len(settings.organs.organs) + 1, dtype=np.int64)
        for z in progress(range(0, crop_shape[0], planes), "labels"):
            z0, z1 = box[0][0] + z, box[0][0] + min(crop_shape[0], z + planes)
            slab = labels.read(z0, z1, (slice(None), *region))
            counts_in += count_values(slab, minlength=counts_in.size)
            out[z // factor[0]: z // factor[0] + -(-(z1 - z0) // factor[0])] = downsample_labels(
                slab, factor, settings.label_method
            )
        counts_out = count_values(out, minlength=counts_in.size)
        source = specimen.labels or next(iter(specimen.masks.values())).parent
        if counts_out[1:].sum() == 0:
            vanished = " (organs vanished when downsampling: use a smaller --downsample)" if counts_in[1:].sum() else ""
            fix = "remove it from unlabeled_gt/" if specimen.unlabeled else f"move {specimen.image.name} to unlabeled/"
            raise MedakaError(
                f"{source}: case {specimen.case_id} has an empty label: no organ voxels{vanished}; check the export, "
                f"or {fix} if the specimen is not annotated"
            )
        for label, name in labels.names.items():
            if counts_in[label] and not counts_out[label]:
                log.warning("case %s: organ %s vanished when downsampling", specimen.case_id, name)
            elif not counts_in[label]:  # an empty mask file, or a label value absent from the volume
                where = specimen.masks.get(name, "no mask file") if specimen.masks else specimen.labels
                log.warning("case %s: organ %s has no voxels (%s); nnU-Net will learn it is absent there: check the "
                            "annotation", specimen.case_id, name, where)
        write_nifti(specimen.out_label, out, **geometry)
        summary["labels"] = str(source)
        summary["organ_voxels"] = {name: int(counts_out[label]) for label, name in labels.names.items()}
        return summary
