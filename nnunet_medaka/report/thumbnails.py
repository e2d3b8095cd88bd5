"""Small PNGs of a volume: three orthogonal slices through the organs' centre, organs in colour.

Each volume is read with SimpleITK one at a time, only three slices are kept, and each slice is subsampled to at
most ``max_pixels`` along either side before it is drawn, so a page of 50 micro-CT scans stays a few megabytes.
Colours are fixed per label value (matplotlib's ``tab10``/``tab20``), the same in every thumbnail and legend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

__all__ = ["IGNORE_COLOUR", "label_colour", "mid_slices", "write_case_thumbnail"]

IGNORE_COLOUR = (0.85, 0.85, 0.85)


def label_colour(label: int) -> tuple:
    """RGB in [0, 1] of an organ's label value: the same colour everywhere in the report."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if label <= 10 else "tab20"]
    return tuple(float(c) for c in cmap((label - 1) % cmap.N)[:3])


def _centre(label_map: Optional[np.ndarray], shape: tuple, ignore_label: Optional[int]) -> tuple:
    """(z, y, x) index of the organs' centre of mass; the volume's centre when there is no organ."""
    if label_map is not None:
        organs = label_map > 0
        if ignore_label is not None:
            organs &= label_map != ignore_label
        if not organs.any():
            organs = label_map > 0
        if organs.any():
            return tuple(int(round(float(np.mean(axis)))) for axis in np.nonzero(organs))
    return tuple(s // 2 for s in shape)


def mid_slices(image: np.ndarray, label_map: Optional[np.ndarray], spacing_zyx: tuple, *,
               ignore_label: Optional[int] = None, max_pixels: int = 256) -> list:
    """Axial, coronal and sagittal slices through the organs' centre, subsampled to ``max_pixels``.

    Parameters
    ----------
    image
        The volume, indexed ``[z, y, x]`` (SimpleITK's array order).
    label_map
        Integer labels of the same shape, or None.
    spacing_zyx
        Voxel size along z, y, x (for the aspect ratio).
    ignore_label
        Label value that is no organ (rejected organs in a pseudo-label map); left out of the centre.
    max_pixels
        Largest side of each returned slice.

    Returns
    -------
    list
        Three dicts with ``name``, ``index`` (slice position), ``image`` and ``labels`` (2-D arrays; ``labels`` None
        without a label map) and ``aspect`` (height / width of one displayed pixel).
    """
    z, y, x = _centre(label_map, image.shape, ignore_label)
    sz, sy, sx = spacing_zyx
    views = [("axial", f"z={z}", (z, slice(None), slice(None)), (sy, sx)),
             ("coronal", f"y={y}", (slice(None), y, slice(None)), (sz, sx)),
             ("sagittal", f"x={x}", (slice(None), slice(None), x), (sz, sy))]
    out = []
    for name, index, where, (row_spacing, col_spacing) in views:
        picture = image[where]
        labels = None if label_map is None else label_map[where]
        step_r = max(1, int(np.ceil(picture.shape[0] / max_pixels)))
        step_c = max(1, int(np.ceil(picture.shape[1] / max_pixels)))
        picture = picture[::step_r, ::step_c]
        if labels is not None:
            labels = labels[::step_r, ::step_c]
        if name != "axial":  # z upwards
            picture = picture[::-1]
            labels = None if labels is None else labels[::-1]
        out.append({"name": name, "index": index, "image": picture, "labels": labels,
                    "aspect": (row_spacing * step_r) / (col_spacing * step_c)})
    return out


def _rgb(picture: np.ndarray, labels: Optional[np.ndarray], lo: float, hi: float, organs: Mapping[str, int],
         ignore_label: Optional[int]) -> np.ndarray:
    grey = np.clip((picture.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if labels is not None:
        for value in [*organs.values(), *([ignore_label] if ignore_label is not None else [])]:
            mask = labels == value
            if mask.any():
                colour = np.array(IGNORE_COLOUR if value == ignore_label else label_colour(value))
                rgb[mask] = 0.4 * rgb[mask] + 0.6 * colour
    return rgb


def _read(path: Path) -> tuple:
    import SimpleITK as sitk

    volume = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(volume)
    if volume.GetNumberOfComponentsPerPixel() > 1:
        array = array[..., 0]
    while array.ndim > 3:  # 4-D: the first channel
        array = array[0]
    if array.ndim == 2:
        array = array[None]
    spacing = tuple(reversed(volume.GetSpacing()[:3])) if volume.GetDimension() >= 3 else (1.0, *reversed(volume.GetSpacing()))
    return array, spacing


def write_case_thumbnail(image_file: Optional[Path], label_file: Optional[Path], out_file: Path,
                         organs: Mapping[str, int], *, ignore_label: Optional[int] = None, title: str = "",
                         max_pixels: int = 256) -> Path:
    """A PNG of three orthogonal mid-slices of one case, organs in colour, with a legend of organ names.

    Parameters
    ----------
    image_file
        The case's image (first channel used); None draws the label map alone on black.
    label_file
        Its label map, or None (image only).
    out_file
        The PNG written.
    organs
        Organ name -> label value (legend and colours).
    ignore_label
        Value drawn light grey as "ignored (rejected)".
    title
        Figure title.
    max_pixels
        Largest side of each slice before drawing.

    Returns
    -------
    Path
        ``out_file``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if image_file is None and label_file is None:
        raise ValueError("write_case_thumbnail needs an image or a label map")
    labels, spacing = _read(label_file) if label_file is not None else (None, None)
    if image_file is not None:
        image, spacing = _read(image_file)
    else:
        image = np.zeros(labels.shape, dtype=np.float32)
    if labels is not None and labels.shape != image.shape:
        labels = None  # a label map that does not match its image is not drawn on it
    views = mid_slices(image, labels, spacing, ignore_label=ignore_label, max_pixels=max_pixels)
    del image, labels
    values = np.concatenate([v["image"].ravel() for v in views]).astype(np.float32)
    lo, hi = np.percentile(values, (1, 99)) if values.size else (0.0, 1.0)
    widths = [v["image"].shape[1] for v in views]
    heights = [v["image"].shape[0] * v["aspect"] for v in views]
    scale = min(2.6 / max(heights), 8.4 / sum(widths))  # inches per displayed pixel: panels at most 2.6 in tall
    fig, axes = plt.subplots(1, 3, figsize=(max(4.5, scale * sum(widths) + 0.8), scale * max(heights) + 1.1),
                             gridspec_kw={"width_ratios": widths})
    for ax, view in zip(axes, views):
        ax.imshow(_rgb(view["image"], view["labels"], lo, hi, organs, ignore_label), interpolation="nearest",
                  aspect=view["aspect"])
        ax.set_title(f"{view['name']} ({view['index']})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=label_colour(v), label=name) for name, v in organs.items()]
    if ignore_label is not None and any(v["labels"] is not None and (v["labels"] == ignore_label).any() for v in views):
        handles.append(Patch(color=IGNORE_COLOUR, label="ignored (rejected)"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1 - (0.25 if title else 0.05) / height))
    out_file = Path(out_file)
    fig.savefig(out_file, dpi=96)
    plt.close(fig)
    return out_file
