"""Per-organ quality signals from what an unlabeled scan offers: the image, the teacher's softmax and its argmax.

Every feature is computed from ``(image, probabilities, argmax)`` alone, so it means the same on a labeled case's
out-of-fold prediction (training) and on an unlabeled scan (scoring). Deliberately **not** used: disagreement
between the folds of the cross-validation ensemble. On a labeled case four of five folds trained on it, so their
agreement is inflated there and not on unlabeled scans (a contaminated signal).

Raw features (``RAW_FEATURES``) need nothing but the arrays. Relative features (``RELATIVE_FEATURES``) compare a
raw value with the distribution over the labeled cases' ground truth (``reference_statistics``), which the quality
model stores; in grouped cross-validation the reference comes from the training cases only.

Conventions: arrays in nnU-Net order ``(C|K, Z, Y, X)``, spacing in the same axis order (mm), probabilities include
background as channel 0, organ label ``l`` is channel ``l``. An organ absent from the argmax gets ``present = 0``
and NaN for the features that need voxels (the gradient-boosted trees handle NaN natively).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["RAW_FEATURES", "RELATIVE_FEATURES", "FEATURE_NAMES", "FEATURE_DESCRIPTIONS", "organ_features",
           "mask_shape_features", "reference_statistics", "relative_features", "feature_matrix", "iou"]

UNCERTAIN_LOW, UNCERTAIN_HIGH = 0.1, 0.9  # an organ voxel probability in between counts as uncertain
GATE_P, GATE_FRACTION = 0.9, 0.8  # the public confidence gate: p > 0.9 on >= 80 % of the organ's voxels

FEATURE_DESCRIPTIONS = {
    "present": "1 if the organ occurs in the argmax, else 0",
    "log_volume": "log(1 + predicted volume in mm^3)",
    "soft_hard_ratio": "sum of the organ's probability / number of argmax voxels",
    "n_components": "connected components of the argmax mask (26-connectivity)",
    "largest_component_fraction": "voxels of the largest component / all voxels of the mask",
    "surface_to_volume": "surface voxels (mask minus its 6-connected erosion) / mask voxels",
    "mean_max_softmax": "mean over the mask of the maximum class probability",
    "mean_organ_prob": "mean over the mask of the organ's probability",
    "mean_entropy": "mean over the mask of the softmax entropy / log(K)",
    "border_entropy": "mean normalised entropy on the band dilate(mask) minus erode(mask)",
    "border_organ_prob": "mean organ probability on that band",
    "uncertain_fraction": "voxels with 0.1 < p_organ < 0.9 / voxels with p_organ > 0.1",
    "gate_fraction": "fraction of mask voxels with p_organ > 0.9 (the confidence-gate signal)",
    "missing_mass": "organ probability outside the mask / all organ probability",
    "centroid_rel_z": "mask centroid relative to the bounding box of all predicted organs (0..1), axis 0",
    "centroid_rel_y": "same, axis 1",
    "centroid_rel_x": "same, axis 2",
    "extent_rel": "mean over axes of the mask's extent / extent of all predicted organs",
    "neighbour_distance": "distance (mm) from the mask centroid to the nearest other organ's centroid, / cube root of its volume",
    "intensity_contrast": "(mean image inside - mean in a 2-voxel shell around) / image std, channel 0",
    "intensity_inside_std": "std of the image inside the mask / image std, channel 0",
    "volume_z": "(log_volume - labeled cases' mean) / their std, per organ",
    "position_deviation": "distance of (centroid_rel_z, _y, _x) from the labeled cases' mean position, per organ",
    "contrast_z": "(intensity_contrast - labeled cases' mean) / their std, per organ",
    "surface_z": "(surface_to_volume - labeled cases' mean) / their std, per organ",
}
RAW_FEATURES = ("present", "log_volume", "soft_hard_ratio", "n_components", "largest_component_fraction",
                "surface_to_volume", "mean_max_softmax", "mean_organ_prob", "mean_entropy", "border_entropy",
                "border_organ_prob", "uncertain_fraction", "gate_fraction", "missing_mass", "centroid_rel_z",
                "centroid_rel_y", "centroid_rel_x", "extent_rel", "neighbour_distance", "intensity_contrast",
                "intensity_inside_std")
RELATIVE_FEATURES = ("volume_z", "position_deviation", "contrast_z", "surface_z")
# the model's inputs: organ index (categorical) first, then raw and relative features
FEATURE_NAMES = ("organ_index", *RAW_FEATURES, *RELATIVE_FEATURES)

_CROSS = ndimage.generate_binary_structure(3, 1)
_FULL = ndimage.generate_binary_structure(3, 3)


def _spacing(spacing: Optional[Sequence[float]], ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    s = np.asarray(spacing, dtype=float)
    if s.shape != (ndim,) or np.any(s <= 0):
        raise ValueError(f"spacing {spacing!r}: expected {ndim} positive numbers in array axis order")
    return s


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, truth).sum() / union)


def mask_shape_features(mask: np.ndarray, foreground: np.ndarray, spacing: Optional[Sequence[float]] = None) -> dict:
    """Shape and position features of one boolean mask (also used on ground truth for the reference).

    Parameters
    ----------
    mask : np.ndarray of bool, (Z, Y, X)
        The organ's mask.
    foreground : np.ndarray of bool, (Z, Y, X)
        Union of all organs (its bounding box is the specimen's frame).
    spacing : sequence of float, optional
        Voxel size in array axis order (mm); default 1.

    Returns
    -------
    dict
        ``present``, ``log_volume``, ``n_components``, ``largest_component_fraction``, ``surface_to_volume``,
        ``centroid_rel_z/_y/_x``, ``extent_rel`` (NaN where undefined).
    """
    s = _spacing(spacing, mask.ndim)
    n = int(mask.sum())
    out = {k: np.nan for k in ("n_components", "largest_component_fraction", "surface_to_volume", "centroid_rel_z",
                               "centroid_rel_y", "centroid_rel_x", "extent_rel")}
    out["present"] = float(n > 0)
    out["log_volume"] = float(np.log1p(n * np.prod(s)))
    if n == 0:
        return out
    components, count = ndimage.label(mask, structure=_FULL)
    sizes = np.bincount(components.ravel())[1:]
    out["n_components"] = float(count)
    out["largest_component_fraction"] = float(sizes.max() / n)
    eroded = ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)
    out["surface_to_volume"] = float((n - eroded.sum()) / n)
    idx = np.nonzero(foreground)
    lo = np.array([i.min() for i in idx], float)
    hi = np.array([i.max() for i in idx], float)
    width = np.maximum(hi - lo, 1.0)
    midx = np.nonzero(mask)
    centroid = np.array([i.mean() for i in midx])
    rel = (centroid - lo) / width
    out["centroid_rel_z"], out["centroid_rel_y"], out["centroid_rel_x"] = (float(v) for v in rel)
    extent = np.array([i.max() - i.min() + 1 for i in midx], float)
    out["extent_rel"] = float(np.mean(extent / (width + 1.0)))
    return out


def organ_features(image: np.ndarray, probabilities: np.ndarray, labels: Mapping[str, int],
                   spacing: Optional[Sequence[float]] = None, segmentation: Optional[np.ndarray] = None,
                   organs: Optional[Sequence[str]] = None) -> dict:
    """Raw quality features of every organ of one predicted case.

    Parameters
    ----------
    image : np.ndarray, (C, Z, Y, X)
        The scan (any intensity scale; channel 0 is used for the intensity features).
    probabilities : np.ndarray, (K, Z, Y, X)
        The teacher's softmax including background (channel = label id).
    labels : mapping
        Organ name -> label id (background excluded).
    spacing : sequence of float, optional
        Voxel size in array axis order (mm); default 1.
    segmentation : np.ndarray, optional
        The argmax; computed from ``probabilities`` when omitted.
    organs : sequence of str, optional
        Only these organs (default all of ``labels``).

    Returns
    -------
    dict
        Organ name -> {feature name: float} with every name in ``RAW_FEATURES``.
    """
    probabilities = np.asarray(probabilities)
    image = np.asarray(image)
    if probabilities.ndim != 4 or image.ndim != 4 or image.shape[1:] != probabilities.shape[1:]:
        raise ValueError(f"image {image.shape} and probabilities {probabilities.shape}: expected (C, Z, Y, X) and "
                         "(K, Z, Y, X) with the same spatial shape")
    k = probabilities.shape[0]
    s = _spacing(spacing, 3)
    seg = np.argmax(probabilities, axis=0) if segmentation is None else np.asarray(segmentation)
    foreground = seg > 0
    if not foreground.any():
        foreground = np.ones(seg.shape, bool)
    p = probabilities.astype(np.float32, copy=False)
    pmax = p.max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(p > 0, p * np.log(np.clip(p, 1e-12, None)), 0.0), axis=0) / np.log(max(k, 2))
    channel = image[0].astype(np.float32, copy=False)
    image_std = float(channel.std()) or 1.0
    centroids = {}
    for name, lab in labels.items():
        m = seg == lab
        if m.any():
            centroids[name] = np.array([i.mean() for i in np.nonzero(m)]) * s
    out = {}
    for name in (organs if organs is not None else labels):
        lab = labels[name]
        m = seg == lab
        po = p[lab]
        f = mask_shape_features(m, foreground, s)
        n = int(m.sum())
        total_mass = float(po.sum())
        f["soft_hard_ratio"] = float(total_mass / n) if n else np.nan
        candidates = po > UNCERTAIN_LOW
        nc = int(candidates.sum())
        f["uncertain_fraction"] = float((candidates & (po < UNCERTAIN_HIGH)).sum() / nc) if nc else np.nan
        f["missing_mass"] = float(po[~m].sum() / total_mass) if total_mass > 0 else np.nan
        if n:
            f["mean_max_softmax"] = float(pmax[m].mean())
            f["mean_organ_prob"] = float(po[m].mean())
            f["mean_entropy"] = float(entropy[m].mean())
            band = ndimage.binary_dilation(m, _CROSS) & ~ndimage.binary_erosion(m, _CROSS, border_value=0)
            f["border_entropy"] = float(entropy[band].mean())
            f["border_organ_prob"] = float(po[band].mean())
            f["gate_fraction"] = float((po[m] > GATE_P).mean())
            others = [c for o, c in centroids.items() if o != name]
            if others:
                d = min(float(np.linalg.norm(centroids[name] - c)) for c in others)
                f["neighbour_distance"] = d / float(np.cbrt(n * np.prod(s)))
            else:
                f["neighbour_distance"] = np.nan
            shell = ndimage.binary_dilation(m, _CROSS, iterations=2) & ~m
            inside = channel[m]
            around = channel[shell] if shell.any() else channel[~m]
            f["intensity_contrast"] = float((inside.mean() - (around.mean() if around.size else 0.0)) / image_std)
            f["intensity_inside_std"] = float(inside.std() / image_std)
        else:
            for key in ("mean_max_softmax", "mean_organ_prob", "mean_entropy", "border_entropy", "border_organ_prob",
                        "gate_fraction", "neighbour_distance", "intensity_contrast", "intensity_inside_std"):
                f[key] = np.nan
        out[name] = {key: float(f[key]) for key in RAW_FEATURES}
    return out


def reference_statistics(rows: Sequence[Mapping]) -> dict:
    """Per-organ mean and std of ground-truth features, the frame for the relative features.

    Parameters
    ----------
    rows : sequence of mapping
        One per labeled case and organ, with ``organ`` and the ground truth's ``log_volume``,
        ``centroid_rel_z/_y/_x``, ``intensity_contrast`` and ``surface_to_volume`` (NaN where absent).

    Returns
    -------
    dict
        Organ -> {"log_volume": [mean, std], "centroid": [[z, y, x], std], "intensity_contrast": [mean, std],
        "surface_to_volume": [mean, std]} (plain lists, JSON-friendly).
    """
    def mean_std(values):
        v = np.asarray([x for x in values if np.isfinite(x)], float)
        if v.size == 0:
            return [float("nan"), 1.0]
        return [float(v.mean()), float(max(v.std(), 1e-3))]

    ref = {}
    for organ in sorted({r["organ"] for r in rows}):
        rs = [r for r in rows if r["organ"] == organ and r.get("present", 1.0) > 0]
        pos = np.asarray([[r["centroid_rel_z"], r["centroid_rel_y"], r["centroid_rel_x"]] for r in rs], float)
        pos = pos[np.all(np.isfinite(pos), axis=1)] if pos.size else pos
        centre = pos.mean(axis=0).tolist() if len(pos) else [np.nan] * 3
        spread = float(max(np.sqrt(((pos - pos.mean(axis=0)) ** 2).sum(axis=1).mean()), 1e-3)) if len(pos) else 1.0
        ref[organ] = {"log_volume": mean_std(r["log_volume"] for r in rs), "centroid": [centre, spread],
                      "intensity_contrast": mean_std(r["intensity_contrast"] for r in rs),
                      "surface_to_volume": mean_std(r["surface_to_volume"] for r in rs)}
    return ref


def relative_features(raw: Mapping[str, float], organ: str, reference: Mapping) -> dict:
    """``RELATIVE_FEATURES`` of one organ's raw features against ``reference_statistics`` output."""
    ref = reference.get(organ)
    if ref is None:
        return {k: np.nan for k in RELATIVE_FEATURES}

    def z(value, ms):
        return float((value - ms[0]) / ms[1]) if np.isfinite(value) and np.isfinite(ms[0]) else np.nan

    centre, spread = ref["centroid"]
    pos = np.array([raw["centroid_rel_z"], raw["centroid_rel_y"], raw["centroid_rel_x"]], float)
    dev = float(np.linalg.norm(pos - np.asarray(centre, float)) / spread) if np.all(np.isfinite(pos)) and np.all(
        np.isfinite(centre)) else np.nan
    return {"volume_z": z(raw["log_volume"], ref["log_volume"]), "position_deviation": dev,
            "contrast_z": z(raw["intensity_contrast"], ref["intensity_contrast"]),
            "surface_z": z(raw["surface_to_volume"], ref["surface_to_volume"])}


def feature_matrix(rows: Sequence[Mapping], organ_names: Sequence[str], reference: Mapping) -> np.ndarray:
    """The model's input matrix (rows x ``FEATURE_NAMES``) from rows holding ``organ`` and the raw features."""
    index = {o: i for i, o in enumerate(organ_names)}
    x = np.empty((len(rows), len(FEATURE_NAMES)), np.float64)
    for i, r in enumerate(rows):
        rel = relative_features(r, r["organ"], reference)
        x[i, 0] = index[r["organ"]]
        x[i, 1:1 + len(RAW_FEATURES)] = [r[k] for k in RAW_FEATURES]
        x[i, 1 + len(RAW_FEATURES):] = [rel[k] for k in RELATIVE_FEATURES]
    return x
