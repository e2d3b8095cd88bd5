"""Pieces every volume reader shares: the ``Volume`` interface (z-slab reads), supported suffixes and names."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

import numpy as np

from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
SITK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = TIFF_SUFFIXES + SITK_SUFFIXES
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

# length units seen in ImageJ/OME metadata, in millimetres
_UNIT_TO_MM = {
    "nm": 1e-6, "nanometer": 1e-6, "nanometre": 1e-6,
    "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "micron": 1e-3, "microns": 1e-3, "micrometer": 1e-3,
    "micrometre": 1e-3, "\\u00b5m": 1e-3,
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0,
    "cm": 10.0, "centimeter": 10.0, "centimetre": 10.0,
    "m": 1000.0, "meter": 1000.0, "metre": 1000.0,
}

__all__ = [
    "TIFF_SUFFIXES",
    "SITK_SUFFIXES",
    "VOLUME_SUFFIXES",
    "Volume",
    "is_volume_path",
    "natural_sort_key",
    "slice_files",
    "unreadable_error",
    "strip_volume_suffix",
    "unit_to_mm",
]


def natural_sort_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``s2`` < ``s10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def unit_to_mm(unit: Optional[str]) -> Optional[float]:
    """Millimetres per ``unit`` (``"um"``, ``"micron"``, ``"mm"``, ...), or None if unknown."""
    if not unit:
        return None
    return _UNIT_TO_MM.get(str(unit).strip().lower())


def strip_volume_suffix(name: str) -> str:
    """File name without a known volume suffix (``fish1.nii.gz`` -> ``fish1``)."""
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_volume_path(path: Path) -> bool:
    """True for a file with a supported suffix, or a folder holding TIFF slices (not hidden)."""
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return any(slice_files(path))
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def slice_files(folder: Path) -> list:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in TIFF_SUFFIXES),
        key=lambda p: natural_sort_key(p.name),
    )


class Volume:
    """A 3D volume on disk, read in z-slabs.

    Attributes
    ----------
    path : pathlib.Path
        File or slice folder.
    shape : tuple of int
        ``(z, y, x)``.
    dtype : numpy.dtype
        Native-byte-order dtype of the arrays ``read`` returns.
    spacing : tuple of float or None
        ``(x, y, z)`` in mm, None when the file records none.
    origin, direction : tuple of float
        ITK geometry (``(0, 0, 0)`` and identity for TIFF).
    """

    path: Path
    shape: tuple
    dtype: np.dtype
    spacing: Optional[tuple]
    origin: tuple = (0.0, 0.0, 0.0)
    direction: tuple = IDENTITY_DIRECTION

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Planes ``z0`` (inclusive) to ``z1`` (exclusive) as a ``(z1 - z0, y, x)`` array."""
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles and cached data."""

    def __enter__(self) -> "Volume":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def _unreadable(self, detail: str) -> MedakaError:
        return unreadable_error(self.path, detail)


def unreadable_error(path: Path, detail: str) -> MedakaError:
    return MedakaError(f"{path}: cannot be read ({detail}); the file may be truncated or damaged: copy or export it again")
