"""Synthetic corruptions of a teacher's prediction, to widen the range of quality the classifier learns from.

A few labeled cases give few bad out-of-fold predictions. Each corruption here damages **one organ's probability
channel** of a real out-of-fold softmax and renormalises the others, and the corrupted mask is the argmax of the
result. So the mask and the probabilities stay consistent by construction (the mask is what the corrupted
softmax predicts, with the soft border the teacher produced, moved along with the organ), and every feature is
recomputed from the corrupted pair exactly as at scoring time. The true IoU is measured against the ground truth.

Corruptions of organ channel ``p`` (label ``l``):

``erode`` / ``dilate``  grey-value erosion / dilation of ``p`` with a ball of radius r voxels
``shift``               ``p`` translated by a random vector of 2..r voxels (vacated voxels get 0)
``truncate``            ``p`` set to 0 beyond a random plane cutting 25..60 % off the organ along one axis
``drop``                ``p`` set to 0 on one connected component of the mask (the organ vanishes if it has one)
``spurious``            a copy of the organ's probability blob added (voxel-wise max) at a random other place
``swap``                channels ``l`` and ``m`` of two organs exchanged (only ``l`` is recorded: the partner's row
                        would duplicate the copy made when ``m`` itself is swapped)
``blur``                ``p`` blurred with a Gaussian (sigma 1..3 voxels): a vaguer, uncertain organ

The other channels are rescaled so that every voxel sums to 1 (the background takes the remainder where the
others were zero).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["CORRUPTIONS", "corrupt"]

CORRUPTIONS = ("erode", "dilate", "shift", "truncate", "drop", "spurious", "swap", "blur")


def _ball(radius: int) -> np.ndarray:
    r = int(radius)
    zz, yy, xx = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]
    return zz ** 2 + yy ** 2 + xx ** 2 <= r * r


def _renormalise(probabilities: np.ndarray, channel: int, new: np.ndarray) -> np.ndarray:
    p = probabilities.astype(np.float32, copy=True)
    old = p[channel]
    new = np.clip(new, 0.0, 1.0).astype(np.float32)
    rest_old = 1.0 - old
    rest_new = 1.0 - new
    scale = np.where(rest_old > 1e-6, rest_new / np.maximum(rest_old, 1e-6), 0.0).astype(np.float32)
    for c in range(p.shape[0]):
        if c != channel:
            p[c] *= scale
    empty = rest_old <= 1e-6  # the organ held all mass: the background takes the freed share
    if channel != 0:
        p[0][empty] = rest_new[empty]
    p[channel] = new
    return p


def _shift(array: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    out = np.zeros_like(array)
    src = tuple(slice(max(0, -o), array.shape[i] - max(0, o)) for i, o in enumerate(offset))
    dst = tuple(slice(max(0, o), array.shape[i] - max(0, -o)) for i, o in enumerate(offset))
    out[dst] = array[src]
    return out


def corrupt(probabilities: np.ndarray, labels: Mapping[str, int], organ: str, kind: str,
            rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """One corrupted copy of a softmax, damaging ``organ``.

    Parameters
    ----------
    probabilities : np.ndarray, (K, Z, Y, X)
        Softmax including background.
    labels : mapping
        Organ name -> label id.
    organ : str
        The organ to damage.
    kind : str
        One of ``CORRUPTIONS``.
    rng : np.random.Generator
        Source of the random strength/direction (the same seed gives the same copy).

    Returns
    -------
    (np.ndarray, list)
        The corrupted softmax and the organs whose rows it gives (``[organ]``).
    """
    lab = labels[organ]
    p = probabilities[lab].astype(np.float32)
    mask = np.argmax(probabilities, axis=0) == lab
    if kind in ("erode", "dilate"):
        footprint = _ball(int(rng.integers(1, 4)))
        op = ndimage.grey_erosion if kind == "erode" else ndimage.grey_dilation
        new = op(p, footprint=footprint)
    elif kind == "blur":
        new = ndimage.gaussian_filter(p, sigma=float(rng.uniform(1.0, 3.0)))
    elif kind == "shift":
        offset = rng.integers(2, max(3, int(0.25 * min(p.shape)) + 1), size=3) * rng.choice([-1, 1], size=3)
        offset = offset * (rng.random(3) < 0.6)
        if not offset.any():
            offset[int(rng.integers(0, 3))] = 3
        new = _shift(p, [int(o) for o in offset])
    elif kind == "truncate":
        axis = int(rng.integers(0, 3))
        idx = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        new = p.copy()
        if idx.size:
            lo, hi = idx.min(), idx.max() + 1
            cut = int(round(lo + (hi - lo) * (1 - rng.uniform(0.25, 0.6))))
            sl = [slice(None)] * 3
            if rng.random() < 0.5:
                sl[axis] = slice(cut, None)
            else:
                sl[axis] = slice(None, lo + hi - cut)
            new[tuple(sl)] = 0.0
    elif kind == "drop":
        components, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
        new = p.copy()
        if count:
            chosen = int(rng.integers(1, count + 1))
            region = ndimage.binary_dilation(components == chosen, iterations=2)
            new[region] = 0.0
    elif kind == "spurious":
        new = p.copy()
        if mask.any():
            offset = [int(rng.integers(-s // 2, s // 2 + 1)) for s in p.shape]
            new = np.maximum(p, _shift(p, offset))
    elif kind == "swap":
        others = [o for o in labels if o != organ]
        if not others:
            return corrupt(probabilities, labels, organ, "shift", rng)
        other = others[int(rng.integers(0, len(others)))]
        out = probabilities.astype(np.float32, copy=True)
        out[[lab, labels[other]]] = out[[labels[other], lab]]
        return out, [organ]
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS}")
    return _renormalise(probabilities, lab, new), [organ]
