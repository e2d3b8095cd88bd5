"""Which pseudo-labels the student trains on: per-organ decisions from the quality scores, and nnU-Net's ignore label
where an organ was rejected.

Acceptance granularity (``--acceptance``):

``case``   a case is used only when every organ is accepted (its score ``>= threshold``: the quality model's
           ``p_good``, or a label-free signal with ``--filter``); otherwise it is dropped.
``organ``  every case is kept; a rejected organ's voxels, and an uncertain band around them, become nnU-Net's
           ignore label (masked in nnU-Net's loss), so the student learns only from the accepted organs there. The
           band is the organ's predicted mask dilated by ``ignore_band`` voxels (a ball), plus every voxel where the
           teacher gives the organ a probability of at least ``band_probability``. Voxels of accepted organs stay.
``none``   every pseudo-label is accepted as predicted (the "no quality filter" ablation).

Voxel gating (``--voxel-confidence P``, any mode) works below the organ: in every label map written, the voxels
where the teacher ensemble's top probability is below P become the ignore label too, so the student's
supervised loss skips the voxels the teacher was unsure of (mostly organ borders); the KD term, where used,
still sees the teacher's soft targets there.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from nnunet_medaka.errors import MedakaError

__all__ = ["ACCEPTANCE_MODES", "apply_organ_rejection", "decide", "gate_voxels", "ignore_region"]

ACCEPTANCE_MODES = ("case", "organ", "none")


def decide(scores: Optional[Mapping[str, Mapping[str, float]]], organs: Sequence[str], mode: str,
           threshold: Optional[float], key: str = "p_good") -> tuple[dict, str]:
    """Organ and case decisions for one case.

    Parameters
    ----------
    scores : mapping or None
        Organ -> ``{"p_good": float, ...}`` (from the quality model, or the label-free signals of
        `nnunet_medaka.pseudolabel.signals`); None without one (only for ``none``).
    organs : sequence of str
        The teacher's organs.
    mode : {"case", "organ", "none"}
    threshold : float or None
        Accept an organ when ``scores[organ][key] >= threshold``; a missing value (None: e.g. the organ was not
        predicted at all) rejects it.
    key : str
        The score that decides: the quality model's ``p_good``, or a signal's name.

    Returns
    -------
    organ_decisions : dict
        Organ -> ``"accept"`` or ``"reject"``.
    case_decision : str
        ``"accept"`` (used as predicted), ``"partial"`` (organ mode, some organs set to ignore) or ``"reject"``
        (dropped).
    """
    if mode not in ACCEPTANCE_MODES:
        raise MedakaError(f"acceptance {mode!r}: expected one of {', '.join(ACCEPTANCE_MODES)}")
    if mode == "none":
        return {o: "accept" for o in organs}, "accept"
    if scores is None or threshold is None:
        raise MedakaError(f"acceptance {mode!r} filters with a quality model; give --quality-model, or use --acceptance none")
    missing = [o for o in organs if o not in scores]
    if missing:
        raise MedakaError(f"quality scores lack organs {missing}; the quality model does not fit this teacher")
    decisions = {o: "accept" if scores[o].get(key) is not None and float(scores[o][key]) >= threshold else "reject"
                 for o in organs}
    rejected = any(d == "reject" for d in decisions.values())
    if not rejected:
        return decisions, "accept"
    return decisions, "reject" if mode == "case" else "partial"


def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
    return zz ** 2 + yy ** 2 + xx ** 2 <= radius ** 2


def ignore_region(segmentation: np.ndarray, probabilities: Optional[np.ndarray], label: int, *, ignore_band: int,
                  band_probability: Optional[float]) -> np.ndarray:
    """Voxels that become ignore when organ ``label`` is rejected: its mask dilated by a ball of ``ignore_band``
    voxels, plus voxels with ``probabilities[label] >= band_probability``.

    Parameters
    ----------
    segmentation : np.ndarray, (Z, Y, X)
        The teacher's argmax.
    probabilities : np.ndarray, (K, Z, Y, X), optional
        The teacher's softmax; without it only the dilation counts.
    label : int
        The rejected organ's label (its channel in ``probabilities``).
    ignore_band : int
        Dilation radius in voxels (0: the mask itself).
    band_probability : float, optional
        Probability from which a voxel counts as uncertain for this organ; None or > 1 to skip.
    """
    from scipy import ndimage

    mask = segmentation == label
    region = np.zeros(segmentation.shape, bool)
    if mask.any():
        if ignore_band > 0:
            # dilate inside the bounding box grown by the radius only (cheap on large volumes)
            idx = np.nonzero(mask)
            lo = [max(0, int(i.min()) - ignore_band) for i in idx]
            hi = [min(s, int(i.max()) + ignore_band + 1) for i, s in zip(idx, mask.shape)]
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            structure = _ball(ignore_band) if mask.ndim == 3 else _ball(ignore_band)[ignore_band]
            region[box] = ndimage.binary_dilation(mask[box], structure=structure)
        else:
            region |= mask
    if probabilities is not None and band_probability is not None and band_probability <= 1:
        region |= probabilities[label] >= band_probability
    return region


def apply_organ_rejection(segmentation: np.ndarray, probabilities: Optional[np.ndarray], rejected: Sequence[int],
                          ignore_label: int, *, ignore_band: int = 2, band_probability: Optional[float] = 0.1) -> np.ndarray:
    """The training label map of a partially accepted case: rejected organs and their bands set to ``ignore_label``.

    Only background voxels and voxels of rejected organs are replaced; accepted organs keep their voxels.

    Returns
    -------
    np.ndarray
        A new array of the segmentation's shape (dtype wide enough for ``ignore_label``).
    """
    dtype = np.uint8 if ignore_label < 256 else np.uint16
    out = segmentation.astype(dtype, copy=True)
    if not rejected:
        return out
    region = np.zeros(segmentation.shape, bool)
    for label in rejected:
        region |= ignore_region(segmentation, probabilities, int(label), ignore_band=ignore_band,
                                band_probability=band_probability)
    replaceable = (segmentation == 0) | np.isin(segmentation, np.asarray(list(rejected)))
    out[region & replaceable] = ignore_label
    return out


def gate_voxels(label_map: np.ndarray, probabilities: np.ndarray, confidence: float, ignore_label: int) -> np.ndarray:
    """Voxel-level gating: set to ``ignore_label`` every voxel whose top class probability is below ``confidence``.

    Parameters
    ----------
    label_map : np.ndarray, (Z, Y, X)
        The training label map (the argmax, possibly with rejected organs already ignored).
    probabilities : np.ndarray, (K, Z, Y, X)
        The teacher ensemble's softmax on the same grid.
    confidence : float
        In (0, 1]; 1 ignores every voxel not predicted with certainty.
    ignore_label : int

    Returns
    -------
    np.ndarray
        A new array (dtype wide enough for ``ignore_label``); ``label_map`` is left as it was.
    """
    if probabilities.shape[1:] != label_map.shape:
        raise MedakaError(f"probabilities {probabilities.shape} do not match the label map {label_map.shape}")
    out = label_map.astype(np.uint8 if ignore_label < 256 else np.uint16, copy=True)
    out[probabilities.max(axis=0) < confidence] = ignore_label
    return out
