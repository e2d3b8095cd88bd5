"""SimpleITK formats (NIfTI, NRRD, MetaImage): whole-image reading that refuses truncated files and NaN/inf,
the ``Volume`` behind ``open_volume`` for them, and NIfTI writing without copying the array.

SimpleITK cannot stream gzip, so these formats are read whole on first access (one volume of memory).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_medaka.conversion.volume_base import IDENTITY_DIRECTION, Volume, unreadable_error
from nnunet_medaka.errors import MedakaError


class SitkVolume(Volume):
    def __init__(self, path: Path):
        import SimpleITK as sitk

        self.path = path
        self._image = None
        self._array = None
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise self._unreadable(str(e).strip().splitlines()[-1][:200]) from None
        size = reader.GetSize()
        if reader.GetNumberOfComponents() != 1:
            raise MedakaError(
                f"{path}: has {reader.GetNumberOfComponents()} components per voxel; expected a grey-value volume"
            )
        if len(size) == 4 and size[3] == 1:
            size = size[:3]
        if len(size) != 3:
            raise MedakaError(f"{path}: has {len(size)} dimensions {size}; expected a 3D volume")
        self._reader = reader
        self.shape = tuple(int(s) for s in reversed(size))
        self.spacing = tuple(float(s) for s in reader.GetSpacing()[:3])
        self.origin = tuple(float(s) for s in reader.GetOrigin()[:3])
        direction = reader.GetDirection()
        if len(direction) == 16:  # 4D with a single time point
            direction = tuple(direction[r * 4 + c] for r in range(3) for c in range(3))
        self.direction = tuple(float(d) for d in direction)
        pixel = sitk.Image(1, 1, 1, reader.GetPixelID())
        self.dtype = sitk.GetArrayViewFromImage(pixel).dtype

    def read(self, z0: int, z1: int) -> np.ndarray:
        import SimpleITK as sitk

        if self._array is None:
            image = read_image(self.path)
            if image.GetDimension() == 4:
                image = image[:, :, :, 0]
            self._image = image  # keeps the buffer behind the view alive
            self._array = sitk.GetArrayViewFromImage(image)
        return self._array[z0:z1]

    def close(self) -> None:
        self._image = self._array = None


def read_image(path: os.PathLike | str):
    """Read a whole image with SimpleITK (any dimension), refusing truncated files and NaN/inf.

    ITK zero-fills a short NIfTI file and reads NaN as 0, both without complaint, so NIfTI files are
    also streamed once through ``_scan_nifti``.

    Returns
    -------
    SimpleITK.Image

    Raises
    ------
    MedakaError
        If the file cannot be read, is truncated, or (NIfTI) holds NaN or infinite values.
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise unreadable_error(path, str(e).strip().splitlines()[-1][:200]) from None
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _scan_nifti(path, sitk.GetArrayViewFromImage(image).nbytes)
    return image


def _scan_nifti(path: Path, nbytes: int) -> None:
    """Check that a NIfTI file stores all ``nbytes`` of voxel data, and only finite values."""
    import gzip

    import nibabel as nib

    try:
        nifti = nib.load(path)
        header = nifti.header
        offset, dtype = int(nifti.dataobj.offset), header.get_data_dtype()  # vox_offset may read 0
        check = dtype.kind == "f"
        stored, done, first_bad, carry = 0, 0, None, b""
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
            while chunk := f.read(1 << 24):
                start = max(0, offset - stored)  # skip the header
                stored += len(chunk)
                if not check or first_bad is not None or start >= len(chunk):
                    continue
                data = carry + chunk[start:]
                usable = len(data) - len(data) % dtype.itemsize
                values = np.frombuffer(data[:usable], dtype=dtype)
                bad = np.flatnonzero(~np.isfinite(values))
                if bad.size:
                    first_bad = done + int(bad[0])
                done += values.size
                carry = data[usable:]
    except Exception as e:  # EOFError, zlib.error, nibabel's ImageFileError, ...
        raise unreadable_error(path, f"{type(e).__name__}: {e}") from None
    if stored < offset + nbytes:
        raise unreadable_error(path, f"truncated: {stored} bytes of header and data, the image needs {offset + nbytes}")
    if first_bad is not None:
        shape = header.get_data_shape()
        z = first_bad // (shape[0] * shape[1]) % shape[2] if len(shape) >= 3 else 0
        raise MedakaError(
            f"{path}: holds NaN or infinite values (first in plane z={z}); replace them (e.g. with the background "
            "intensity) before converting"
        )


def write_nifti(
    path: os.PathLike | str,
    array: np.ndarray,
    *,
    spacing: Sequence[float],
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] = IDENTITY_DIRECTION,
) -> None:
    """Write a ``(z, y, x)`` array as NIfTI that SimpleITK reads back with this geometry.

    nibabel writes plane by plane from a transposed view, so no second copy of the volume is made
    (``SimpleITK.GetImageFromArray`` would copy it).

    Parameters
    ----------
    path : path
        Output file, ``.nii`` or ``.nii.gz``.
    array : numpy.ndarray
        3D array indexed ``(z, y, x)``.
    spacing, origin : sequence of 3 floats
        ITK order ``(x, y, z)``, mm.
    direction : sequence of 9 floats
        ITK direction matrix, row-major.
    """
    import nibabel as nib

    matrix = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)[None, :]
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # ITK is LPS, NIfTI is RAS
    image = nib.Nifti1Image(array.T, affine)
    image.header.set_data_dtype(array.dtype)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
