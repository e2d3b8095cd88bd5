"""TIFF readers behind ``open_volume``: multi-page stacks and folders of 2D slices, read slab by slab.

Uncompressed contiguous stacks are read with plain file reads at an offset (no memory map, so pages read
earlier do not stay in the process's resident memory); other TIFFs page by page; slice folders file by file.
Spacing comes from ImageJ metadata (``unit``, resolution tags, ``spacing``), OME metadata (``PhysicalSize*``),
or is None when the file has none.
"""
from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import numpy as np

from nnunet_medaka.conversion.volume_base import Volume, slice_files, unit_to_mm
from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)


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


class TiffStack(Volume):
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


class SliceFolder(Volume):
    def __init__(self, path: Path):
        import tifffile

        self.path = path
        self._files = slice_files(path)
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
