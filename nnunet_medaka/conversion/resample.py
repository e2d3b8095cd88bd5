"""Integer-factor downsampling of image and label slabs, by blocks, so slabs can stream.

A factor ``f`` turns each ``f_z x f_y x f_x`` block into one voxel; a block sits wholly inside a
slab when the slab's thickness is a multiple of ``f_z``, so slab-by-slab results equal whole-volume
results. Edges that are not a multiple of the factor are padded by repeating the last plane.

Image methods: ``area`` (block mean, anti-aliased) and ``linear`` (trilinear interpolation at the
block centre: the mean of the central 1 or 2 voxels per axis). Label methods: ``nearest`` (the
voxel at the block centre) and ``majority`` (the most frequent label; ties go to the centre voxel's
label, so thin organs are not eroded by ties with background).
"""
from __future__ import annotations

import numpy as np

IMAGE_METHODS = ("area", "linear")
_CHUNK = 1 << 22  # voxels per bincount call
LABEL_METHODS = ("majority", "nearest")

__all__ = [
    "IMAGE_METHODS",
    "LABEL_METHODS",
    "downsample_image",
    "downsample_labels",
    "otsu_threshold",
    "output_shape",
    "count_values",
    "present_values",
]


def output_shape(shape: tuple, factor: tuple) -> tuple:
    """Shape after downsampling ``shape`` by ``factor`` (partial edge blocks count)."""
    return tuple(-(-s // f) for s, f in zip(shape, factor))


def _blocks(a: np.ndarray, factor: tuple) -> np.ndarray:
    pad = [(0, (-s) % f) for s, f in zip(a.shape, factor)]
    if any(p for _, p in pad):
        a = np.pad(a, pad, mode="edge")
    (z, y, x), (fz, fy, fx) = a.shape, factor
    return a.reshape(z // fz, fz, y // fy, fy, x // fx, fx)


def _centre(f: int, *, both: bool) -> slice:
    # both=True: the 1 (odd f) or 2 (even f) voxels around the centre; else the single centre voxel
    c = (f - 1) // 2
    return slice(c, c + (2 if both and f % 2 == 0 else 1))


def downsample_image(slab: np.ndarray, factor: tuple, method: str = "area") -> np.ndarray:
    """Downsample an image slab; integer inputs are rounded back to their dtype.

    Parameters
    ----------
    slab : numpy.ndarray
        ``(z, y, x)`` array.
    factor : tuple of 3 int
        Factor per axis ``(z, y, x)``.
    method : {"area", "linear"}

    Returns
    -------
    numpy.ndarray
        Same dtype as ``slab`` (float64 becomes float32).
    """
    if tuple(factor) == (1, 1, 1):
        return slab
    b = _blocks(slab, factor)
    if method == "linear":
        b = b[:, _centre(factor[0], both=True), :, _centre(factor[1], both=True), :, _centre(factor[2], both=True)]
    elif method != "area":
        raise ValueError(f"unknown image method {method!r}")
    mean = b.mean(axis=(1, 3, 5), dtype=np.float64 if slab.dtype == np.float64 else np.float32)
    if np.issubdtype(slab.dtype, np.integer):
        info = np.iinfo(slab.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(slab.dtype)
    return mean.astype(np.float32 if slab.dtype == np.float64 else slab.dtype, copy=False)


def downsample_labels(slab: np.ndarray, factor: tuple, method: str = "majority") -> np.ndarray:
    """Downsample a label slab without inventing labels.

    Parameters
    ----------
    slab : numpy.ndarray
        Integer ``(z, y, x)`` label array.
    factor : tuple of 3 int
        Factor per axis ``(z, y, x)``.
    method : {"majority", "nearest"}

    Returns
    -------
    numpy.ndarray
        Same dtype as ``slab``.
    """
    if tuple(factor) == (1, 1, 1):
        return slab
    b = _blocks(slab, factor)
    centre = b[:, _centre(factor[0], both=False), :, _centre(factor[1], both=False), :, _centre(factor[2], both=False)]
    centre = centre.reshape(b.shape[0], b.shape[2], b.shape[4])
    if method == "nearest":
        return np.ascontiguousarray(centre)
    if method != "majority":
        raise ValueError(f"unknown label method {method!r}")
    present = present_values(slab)
    if present.size == 1:
        return np.full(centre.shape, present[0], dtype=slab.dtype)
    best = np.zeros(centre.shape, dtype=slab.dtype)
    best_score = np.full(centre.shape, -1, dtype=np.int32)
    for value in present:
        # two points per vote, one extra for the centre voxel: ties go to the centre's label
        score = 2 * np.count_nonzero(b == value, axis=(1, 3, 5)).astype(np.int32) + (centre == value)
        better = score > best_score
        best[better] = value
        best_score[better] = score[better]
    return best


def count_values(slab: np.ndarray, minlength: int = 0) -> np.ndarray:
    """``np.bincount`` of a non-negative integer slab, in chunks: bincount casts its input to int64,
    which for a whole slab would cost eight bytes per voxel."""
    flat = slab.reshape(-1)
    counts = np.zeros(minlength, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        part = np.bincount(flat[start:start + _CHUNK], minlength=minlength)
        if part.size > counts.size:
            part[: counts.size] += counts
            counts = part
        else:
            counts[: part.size] += part
    return counts


def present_values(slab: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a slab (counted, for 8/16-bit integers, instead of sorted)."""
    if slab.dtype.kind in "iu" and slab.dtype.itemsize <= 2:
        low = int(np.iinfo(slab.dtype).min)
        if low == 0:
            return np.flatnonzero(count_values(slab))
        flat = slab.reshape(-1)
        counts = np.zeros(int(np.iinfo(slab.dtype).max) - low + 1, dtype=np.int64)
        for start in range(0, flat.size, _CHUNK):
            counts += np.bincount(flat[start:start + _CHUNK].astype(np.int32) - low, minlength=counts.size)
        return np.flatnonzero(counts) + low
    return np.unique(slab)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a sample of intensities (maximises between-class variance)."""
    values = values[np.isfinite(values)].astype(np.float64, copy=False)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    mass0 = np.cumsum(hist * centres)
    mean0 = mass0 / np.maximum(weight0, 1)
    mean1 = (mass0[-1] - mass0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[1:][np.argmax(between)])
