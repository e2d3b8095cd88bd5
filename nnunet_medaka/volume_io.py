"""Read 3D volumes slab by slab, with voxel spacing, and write NIfTI without copying the array.

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

import logging
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Sequence

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
    "open_volume",
    "read_image",
    "strip_volume_suffix",
    "unit_to_mm",
    "write_nifti",
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
        return any(_slice_files(path))
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def _slice_files(folder: Path) -> list:
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
        return _unreadable(self.path, detail)


def _tidy(values) -> tuple:
    # 1 / (1 / 60 um) in mm is 0.060000000000000005: drop the float noise of the unit round trip
    return tuple(float(f"{v:.10g}") for v in values)


def _tiff_spacing(tif, page) -> Optional[tuple]:
    """(x, y, z) spacing in mm from OME or ImageJ metadata; None if the file does not record it."""
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
        except ET.ParseError:
            root = None
        pixels = None if root is None else next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
        if pixels is not None:
            values = []
            for axis in "XYZ":
                size = pixels.get(f"PhysicalSize{axis}")
                scale = unit_to_mm(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
                if size is None or scale is None:
                    break
                values.append(float(size) * scale)
            if len(values) == 3 and all(v > 0 for v in values):
                return _tidy(values)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        scale = unit_to_mm(meta.get("unit"))
        try:
            xres, yres = page.resolution
        except (TypeError, ValueError):
            return None
        if scale is None or not xres or not yres:
            return None
        # ImageJ omits "spacing" when the z step is 1 unit
        z = float(meta.get("spacing", 1.0))
        values = (scale / float(xres), scale / float(yres), scale * z)
        return _tidy(values) if all(v > 0 for v in values) else None
    return None


class _TiffStack(Volume):
    def __init__(self, path: Path):
        import tifffile

        self.path = path
        self._cache = None
        try:
            self._tif = tifffile.TiffFile(path)
        except Exception as e:  # tifffile raises many kinds for damaged files
            raise self._unreadable(f"{type(e).__name__}: {e}") from None
        try:
            self._setup()
        except Exception:
            self._tif.close()
            raise

    def _setup(self) -> None:
        tif = self._tif
        try:
            series = tif.series[0]
            first = tif.pages.first
            n_pages = len(tif.pages)
        except Exception as e:
            raise self._unreadable(f"{type(e).__name__}: {e}") from None
        if first.samplesperpixel > 1:
            raise MedakaError(
                f"{self.path}: has {first.samplesperpixel} samples per pixel (RGB or similar); "
                "expected a grey-value stack: convert it to single-channel 8/16-bit or float"
            )
        shape = tuple(s for s in series.shape if s != 1)
        self.dtype = np.dtype(series.dtype).newbyteorder("=")
        self._file_dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
        self.spacing = _tiff_spacing(tif, first)
        self._offset = None
        self._pages = None
        if len(shape) == 3 and series.dataoffset is not None:
            self._offset = int(series.dataoffset)
            needed = self._offset + int(np.prod(shape)) * self.dtype.itemsize
            size = os.path.getsize(self.path)
            if size < needed:
                raise self._unreadable(f"truncated: {size} bytes, the stack needs {needed}")
        elif len(shape) == 3 and n_pages == shape[0]:
            self._pages = self._check_pages(shape[1:])
        elif len(shape) == 2 and n_pages > 1:
            # pages written one by one, without stack metadata: every page is a z-plane
            self._pages = self._check_pages(shape)
            shape = (n_pages, *shape)
        elif len(shape) == 3:
            log.warning("%s: layout cannot be streamed; reading it whole (one volume of memory)", self.path)
        elif len(shape) == 2 and (self._declared_planes() or 1) > 1:
            raise self._unreadable(f"truncated: the metadata announces {self._declared_planes()} planes, the file holds 1")
        else:
            raise MedakaError(
                f"{self.path}: holds an image of shape {tuple(series.shape)}; expected a 3D stack (z, y, x). "
                "A single 2D image belongs in a folder of slices"
            )
        declared = self._declared_planes()
        if declared is not None and declared > shape[0]:
            raise self._unreadable(f"truncated: the metadata announces {declared} planes, the file holds {shape[0]}")
        self.shape = shape

    def _declared_planes(self) -> Optional[int]:
        """Plane count written in ImageJ or tifffile metadata (tifffile falls back to fewer pages
        when a file is cut short, so a mismatch means truncation)."""
        tif = self._tif
        try:
            if tif.is_imagej and tif.imagej_metadata:
                return int(tif.imagej_metadata.get("images", 1))
            if tif.is_shaped and tif.shaped_metadata:
                shape = tif.shaped_metadata[0].get("shape", [])
                return int(np.prod(shape[:-2])) if len(shape) > 2 else None
        except (TypeError, ValueError):
            return None
        return None

    def _check_pages(self, plane: tuple) -> list:
        size = os.path.getsize(self.path)
        pages = []
        for i, page in enumerate(self._tif.pages):
            if tuple(s for s in page.shape if s != 1) != tuple(plane) or page.samplesperpixel != 1:
                raise MedakaError(
                    f"{self.path}: page {i} has shape {page.shape}, page 0 has {plane}; a stack needs "
                    "planes of one size"
                )
            end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
            if end > size:
                raise self._unreadable(f"truncated: page {i} ends at byte {end}, the file has {size}")
            pages.append(page)
        return pages

    def read(self, z0: int, z1: int) -> np.ndarray:
        ny, nx = self.shape[1:]
        try:
            if self._offset is not None:
                count = (z1 - z0) * ny * nx
                with open(self.path, "rb") as f:
                    f.seek(self._offset + z0 * ny * nx * self.dtype.itemsize)
                    data = np.fromfile(f, dtype=self._file_dtype, count=count)
                if data.size != count:
                    raise self._unreadable(f"truncated: planes {z0}-{z1 - 1} are incomplete")
                return data.reshape(z1 - z0, ny, nx).astype(self.dtype, copy=False)
            if self._pages is not None:
                return np.stack([self._pages[z].asarray().reshape(ny, nx) for z in range(z0, z1)]).astype(
                    self.dtype, copy=False
                )
            if self._cache is None:
                self._cache = self._tif.series[0].asarray().reshape(self.shape).astype(self.dtype, copy=False)
            return self._cache[z0:z1]
        except MedakaError:
            raise
        except Exception as e:
            raise self._unreadable(f"{type(e).__name__}: {e}") from None

    def close(self) -> None:
        self._tif.close()
        self._cache = None


class _SliceFolder(Volume):
    def __init__(self, path: Path):
        import tifffile

        self.path = path
        self._files = _slice_files(path)
        if not self._files:
            raise MedakaError(f"{path}: no .tif/.tiff slices in this folder")
        plane = dtype = None
        for f in self._files:
            try:
                with tifffile.TiffFile(f) as tif:
                    page = tif.pages.first
                    shape = tuple(s for s in tif.series[0].shape if s != 1)
                    if plane is None:
                        self.spacing = _tiff_spacing(tif, page)
                    size = os.path.getsize(f)
                    end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
                    this_dtype = np.dtype(tif.series[0].dtype).newbyteorder("=")
            except Exception as e:
                raise MedakaError(
                    f"{f}: cannot be read as a TIFF slice ({type(e).__name__}: {e}); copy or export it again"
                ) from None
            if end > size:
                raise MedakaError(f"{f}: truncated ({size} bytes, data end at {end}); copy or export it again")
            if len(shape) != 2 or page.samplesperpixel != 1:
                raise MedakaError(f"{f}: slice has shape {tif.series[0].shape}; expected one grey-value 2D image")
            if plane is None:
                plane, dtype = shape, this_dtype
            elif shape != plane or this_dtype != dtype:
                raise MedakaError(
                    f"{f}: slice is {shape} {this_dtype}, but {self._files[0].name} is {plane} {dtype}; "
                    "all slices of a stack need one size and type"
                )
        self.shape = (len(self._files), *plane)
        self.dtype = dtype

    def read(self, z0: int, z1: int) -> np.ndarray:
        import tifffile

        planes = []
        for f in self._files[z0:z1]:
            try:
                planes.append(tifffile.imread(f).reshape(self.shape[1:]))
            except Exception as e:
                raise MedakaError(f"{f}: cannot be read ({type(e).__name__}: {e}); copy or export it again") from None
        return np.stack(planes).astype(self.dtype, copy=False)


class _SitkVolume(Volume):
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


def _unreadable(path: Path, detail: str) -> MedakaError:
    return MedakaError(f"{path}: cannot be read ({detail}); the file may be truncated or damaged: copy or export it again")


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
        raise _unreadable(path, str(e).strip().splitlines()[-1][:200]) from None
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
        raise _unreadable(path, f"{type(e).__name__}: {e}") from None
    if stored < offset + nbytes:
        raise _unreadable(path, f"truncated: {stored} bytes of header and data, the image needs {offset + nbytes}")
    if first_bad is not None:
        shape = header.get_data_shape()
        z = first_bad // (shape[0] * shape[1]) % shape[2] if len(shape) >= 3 else 0
        raise MedakaError(
            f"{path}: holds NaN or infinite values (first in plane z={z}); replace them (e.g. with the background "
            "intensity) before converting"
        )


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
        return _SliceFolder(path)
    if not path.is_file():
        raise MedakaError(f"{path}: no such file or folder")
    name = path.name.lower()
    if name.endswith(TIFF_SUFFIXES):
        return _TiffStack(path)
    if name.endswith(SITK_SUFFIXES):
        return _SitkVolume(path)
    raise MedakaError(
        f"{path}: unsupported file type; expected one of {', '.join(VOLUME_SUFFIXES)} or a folder of TIFF slices"
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
