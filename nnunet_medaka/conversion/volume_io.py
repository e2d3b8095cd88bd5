"""Read 3D volumes slab by slab, with voxel spacing: the front door to the readers.

``open_volume`` picks the reader by path; the readers live in ``tiff_volume`` (TIFF stacks and slice folders) and
``sitk_volume`` (NIfTI, NRRD, MetaImage; also ``read_image`` and ``write_nifti``), on the ``Volume`` interface of
``volume_base``, whose names this module re-exports.

Supported inputs (``open_volume`` picks by path):

- a multi-page TIFF file (``.tif``/``.tiff``): an ImageJ/OME/shaped stack or plain pages of one size;
- a folder of 2D TIFF slices, stacked in natural sort order (``slice_2.tif`` before ``slice_10.tif``);
- NIfTI, NRRD or MetaImage (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) via SimpleITK.

Arrays are indexed ``(z, y, x)`` as in SimpleITK and nnU-Net; spacing, origin and direction are in
ITK order ``(x, y, z)``, in millimetres. TIFF spacing comes from ImageJ metadata (``unit``,
resolution tags, ``spacing``), OME metadata (``PhysicalSize*``), or is None when the file has none.

Streaming: uncompressed contiguous TIFF stacks are read with plain file reads at an offset (no
memory map, so pages read earlier do not stay in the process's resident memory); other TIFFs page by
page; slice folders file by file. SimpleITK formats are read whole on first access (SimpleITK cannot
stream gzip), so they cost one volume of memory.
"""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_medaka.conversion.sitk_volume import SitkVolume, read_image, write_nifti
from nnunet_medaka.conversion.tiff_volume import SliceFolder, TiffStack
from nnunet_medaka.conversion.volume_base import (SITK_SUFFIXES, TIFF_SUFFIXES, VOLUME_SUFFIXES, Volume, is_volume_path,
                                                  natural_sort_key, strip_volume_suffix, unit_to_mm)
from nnunet_medaka.errors import MedakaError

__all__ = ["SITK_SUFFIXES", "TIFF_SUFFIXES", "VOLUME_SUFFIXES", "Volume", "is_volume_path", "natural_sort_key",
           "open_volume", "read_image", "strip_volume_suffix", "unit_to_mm", "write_nifti"]


def open_volume(path: os.PathLike | str) -> Volume:
    """Open a volume for slab reading.

    Parameters
    ----------
    path : path
        A TIFF stack, a folder of TIFF slices, or a NIfTI/NRRD/MetaImage file.

    Returns
    -------
    Volume
        Use as a context manager, or call ``close()``.

    Raises
    ------
    MedakaError
        If the path is missing, of an unsupported type, not 3D, or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        return SliceFolder(path)
    if not path.is_file():
        raise MedakaError(f"{path}: no such file or folder")
    name = path.name.lower()
    if name.endswith(TIFF_SUFFIXES):
        return TiffStack(path)
    if name.endswith(SITK_SUFFIXES):
        return SitkVolume(path)
    raise MedakaError(
        f"{path}: unsupported file type; expected one of {', '.join(VOLUME_SUFFIXES)} or a folder of TIFF slices"
    )


