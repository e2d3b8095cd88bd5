"""``nnunet-medaka phantom``: synthetic Medaka-like micro-CT specimens with organ masks.

Each fish is a fusiform body along x (head at low x) with a caudal, dorsal and anal fin and nine
labelled organs: two eyes, brain, spinal cord, heart, liver, gut, swim bladder and kidney. Unlabelled
anatomy adds context a network can use: eye lenses, otoliths and vertebrae (dense, bright) and skin.
Per fish the length, height, width, body bend, organ positions, sizes and boundary wobble, pose
(yaw, pitch, roll, shift) and contrast vary. The grey values imitate contrast-stained micro-CT:
mounting medium, soft tissue, brighter stained organs, dark air in the swim bladder, bright bone;
then a Gaussian blur (scanner point-spread), signal-dependent noise, and in some fish ring
artifacts (concentric around the rotation axis, which runs along the body) and streaks from dense
objects. Shapes and texture are defined in body coordinates, so a fish keeps its anatomy when a
larger ``size`` is requested.

Written in the micro-CT layout that ``nnunet-medaka convert microct`` reads::

    OUT/organs.json                            organ list (names, label values, mask patterns)
    OUT/images/medaka_000.tif                  labelled specimens: uint16 ImageJ stacks, spacing in um
    OUT/masks/medaka_000/medaka_000_<organ>.tif   one 0/255 mask per organ
    OUT/unlabeled/medaka_005.tif               unlabelled specimens
    OUT/unlabeled_gt/medaka_005.tif            their multi-label ground truth (evaluation only)
    OUT/phantom.json                           seed, size, spacing and each fish's parameters

``slices`` chooses which sections of the fish the stack's slices (its first array axis) are; the fish is turned
(a rotation, never a mirror) before it is written:

- ``"sagittal"`` (default): the body along the last axis, slices cut it lengthwise from left to right
  (volume ``0.4 size x 0.5 size x size``);
- ``"frontal"``: the body along the last axis, the fish lying on its side, slices cut it lengthwise from back to
  belly, so each slice holds the left and the right eye (volume ``0.5 size x 0.4 size x size``);
- ``"transverse"``: the body along the first axis, as a fish mounted upright in a tube is scanned, slices are
  cross-sections (volume ``size x 0.5 size x 0.4 size``).

This matters for nnU-Net's ``2d`` configuration, which sees one slice at a time: in sagittal slices the left and
the right eye look alike (only the slice index tells them apart).

Fish ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the same seed gives the same files.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)

__all__ = ["ORGANS", "make_phantom_experiment", "make_phantoms", "render_fish"]

# organ -> label value; the order is also the mask file order in organs.json
ORGANS = {
    "eye_left": 1,
    "eye_right": 2,
    "brain": 3,
    "spinal_cord": 4,
    "heart": 5,
    "liver": 6,
    "gut": 7,
    "swim_bladder": 8,
    "kidney": 9,
}
# later organs are painted over earlier ones where their shapes meet
_PAINT_ORDER = ("gut", "liver", "heart", "swim_bladder", "kidney", "brain", "spinal_cord", "eye_left", "eye_right")
# grey values of a stained specimen (uint16 scale)
_GREY = {
    "medium": 9000, "tissue": 14000, "skin": 17000, "fin": 13000,
    "brain": 19500, "eye": 22000, "lens": 34000, "otolith": 45000, "bone": 31000, "spinal_cord": 19000,
    "heart": 21000, "liver": 25000, "gut": 20500, "gut_lumen": 10000, "swim_bladder": 2500, "kidney": 23000,
}
# ellipsoids: centre (u along body 0..1, v in half-widths, w in half-heights at u) and semi-axes
# (fraction of length, of half-width, of half-height at the centre)
_ELLIPSOIDS = {
    "brain": ((0.17, 0.0, 0.30), (0.095, 0.60, 0.45)),
    "heart": ((0.245, 0.0, -0.52), (0.06, 0.55, 0.36)),
    "liver": ((0.32, 0.15, -0.28), (0.09, 0.62, 0.38)),
    "swim_bladder": ((0.46, 0.0, 0.04), (0.13, 0.50, 0.30)),
    "kidney": ((0.42, 0.0, 0.36), (0.16, 0.40, 0.22)),
}
# slices -> (axis order applied to the rendered sagittal (z, y, x) volume, axis flipped afterwards so that the
# turn is a rotation, not a mirror)
_POSES = {"sagittal": ((0, 1, 2), None), "frontal": ((1, 0, 2), 0), "transverse": ((2, 1, 0), 2)}
SPACING_UM_AT_80 = 60.0  # a ~4 mm hatchling over 80 voxels; finer when size grows


def _profile(u: np.ndarray, fish: dict) -> tuple:
    """Body half-height b(u) and half-width a(u) in voxels; zero outside the body."""
    head = np.sqrt(np.clip(u / 0.25, 0, 1))  # rounded snout
    tail = 1 - 0.72 * np.clip((u - 0.35) / 0.55, 0, 1) ** 1.3  # taper to the caudal peduncle
    b = fish["height"] * head * tail * ((u >= 0) & (u <= 0.92))
    a = b * fish["width_ratio"] * (1 + 0.25 * (1 - np.clip(u / 0.3, 0, 1)))  # broad head
    return b, a


def _draw_fish(rng: np.random.Generator, size: int) -> dict:
    """Random parameters of one fish, in voxels of a volume ``size`` long."""
    length = 0.8 * size * rng.uniform(0.92, 1.06)
    fish = {
        "length": length,
        "height": 0.13 * length * rng.uniform(0.9, 1.1),
        "width_ratio": 0.66 * rng.uniform(0.9, 1.1),
        "bend": rng.uniform(-0.25, 0.25),
        "angles_deg": [rng.uniform(-12, 12), rng.uniform(-8, 8), rng.uniform(-25, 25)],  # yaw, pitch, roll
        "shift": (rng.uniform(-1, 1, 3) * np.array([1.5, 2.0, 0.03 * size])).tolist(),
        "eye_radius": 0.068 * length * rng.uniform(0.9, 1.1),
        "gut_phase": rng.uniform(0, 2 * np.pi),
        "contrast": rng.uniform(0.9, 1.1),
        "offset": rng.uniform(-600, 600),
        "blur": rng.uniform(0.6, 1.0),
        "noise": rng.uniform(700, 1200),
        "field_seed": int(rng.integers(2**31)),
        "rings": [(rng.uniform(0.15, 0.9), float(rng.choice([-1, 1])) * rng.uniform(1500, 4000))
                  for _ in range(rng.integers(1, 4))] if rng.random() < 0.3 else [],
        "streaks": (rng.uniform(0, np.pi, 2).tolist(), rng.uniform(2500, 5000)) if rng.random() < 0.3 else None,
        "organs": {},
    }
    for name, (centre, axes) in _ELLIPSOIDS.items():
        fish["organs"][name] = {
            "centre": (centre[0] + rng.uniform(-0.015, 0.015), centre[1] + rng.uniform(-0.05, 0.05),
                       centre[2] + rng.uniform(-0.06, 0.06)),
            "axes": tuple(s * rng.uniform(0.87, 1.15) for s in axes),
            "grey": _GREY[name] * rng.uniform(0.95, 1.05),
        }
    return fish


def _rotation(angles_deg: list) -> np.ndarray:
    """Body frame (u, v, w) -> volume frame (z, y, x) for yaw, pitch, roll in degrees."""
    yaw, pitch, roll = np.radians(angles_deg)

    def rot(axis: int, angle: float) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i] = m[j, j] = c
        m[i, j], m[j, i] = -s, s
        return m

    # base pose: body axis u along +x, left side v along +z, dorsal w along -y (up in a slice view)
    base = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # columns: u, v, w in (z, y, x)
    return base @ rot(2, yaw) @ rot(1, pitch) @ rot(0, roll)


def _smooth_field(seed: int, shape: tuple = (24, 12, 12), sigma: float = 1.5) -> np.ndarray:
    """Unit-variance smooth noise on a coarse grid over the body box (u, v, w)."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma, mode="wrap")
    return field / field.std()


def _sample(field: np.ndarray, u: np.ndarray, v: np.ndarray, w: np.ndarray, fish: dict) -> np.ndarray:
    from scipy import ndimage

    # the grid spans u in [-0.1, 1.1] and v, w in +-1.6 body half-heights
    h = 1.6 * fish["height"]
    coords = [(u + 0.1) / 1.2 * (field.shape[0] - 1), (v + h) / (2 * h) * (field.shape[1] - 1),
              (w + h) / (2 * h) * (field.shape[2] - 1)]
    return ndimage.map_coordinates(field, coords, order=1, mode="nearest")


def _curve_distance(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(curve).query(points)[0]


def render_fish(fish: dict, shape: tuple, *, artifacts: bool = True) -> tuple:
    """Grey values and label map of one fish.

    Parameters
    ----------
    fish : dict
        Parameters from the fish generator (see ``phantom.json``).
    shape : tuple of 3 int
        Volume shape ``(z, y, x)``.
    artifacts : bool
        Add the fish's ring and streak artifacts, if it has any.

    Returns
    -------
    image : numpy.ndarray
        uint16 grey values.
    labels : numpy.ndarray
        uint8 organ labels (values of ``ORGANS``).
    """
    from scipy import ndimage

    rng = np.random.default_rng(fish["field_seed"])
    L, H = fish["length"], fish["height"]
    rotation = _rotation(fish["angles_deg"])
    centre = (np.array(shape) - 1) / 2 + np.array(fish["shift"])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3) - centre
    body = grid @ rotation  # (x_b, y_b, z_b) per voxel
    u = body[:, 0] / L + 0.5
    w = body[:, 2]
    v = body[:, 1] - fish["bend"] * L * np.clip(u - 0.3, 0, None) ** 2  # the tail bends sideways
    wobble = _smooth_field(fish["field_seed"])
    texture = _smooth_field(fish["field_seed"] + 1, sigma=1.0)
    b, a = _profile(u, fish)
    n = grid.shape[0]
    labels = np.zeros(n, dtype=np.uint8)
    grey = np.full(n, float(_GREY["medium"]))

    # body, fins and eyes
    edge = 0.12 * _sample(wobble, u, v, w, fish)
    radial = np.where(b > 0, (v / np.maximum(a, 1e-6)) ** 2 + (w / np.maximum(b, 1e-6)) ** 2, np.inf)
    inside = radial <= 1 + edge
    fin_half = 0.6 + 0.03 * L / 10
    caudal = (u > 0.88) & (u <= 1.0) & (np.abs(v) < fin_half) & (np.abs(w) < H * (0.3 + 0.9 * (u - 0.88) / 0.12))
    b_here, _ = _profile(np.clip(u, 0, 0.92), fish)
    thin = np.abs(v) < fin_half
    dorsal = (u > 0.62) & (u < 0.78) & thin & (w > 0) & (w < b_here + 0.35 * H * np.sin(np.pi * (u - 0.62) / 0.16))
    anal = (u > 0.55) & (u < 0.82) & thin & (w < 0) & (-w < b_here + 0.25 * H * np.sin(np.pi * (u - 0.55) / 0.27))
    grey[caudal | dorsal | anal] = _GREY["fin"]
    grey[inside] = _GREY["tissue"] + 900 * _sample(texture, u, v, w, fish)[inside]
    grey[inside & (radial > 0.72)] += _GREY["skin"] - _GREY["tissue"]
    b_eye, a_eye = _profile(np.array([0.10]), fish)
    r_eye = fish["eye_radius"]
    organs = {}
    for name, side in (("eye_left", 1), ("eye_right", -1)):
        c = np.array([0.10 * L, side * (0.55 * a_eye[0] + 0.3 * r_eye), 0.12 * b_eye[0]])
        d = np.sqrt((u * L - c[0]) ** 2 + (v - c[1]) ** 2 + ((w - c[2]) / 1.1) ** 2)
        organs[name] = d <= r_eye * (1 + 0.05 * edge)
        lens = np.sqrt((u * L - c[0]) ** 2 + (v - c[1] - side * 0.35 * r_eye) ** 2 + (w - c[2]) ** 2) <= 0.42 * r_eye
        organs[name + "_lens"] = lens
    inside |= organs["eye_left"] | organs["eye_right"]

    # ellipsoid organs, defined relative to the body profile at their centre
    for name, p in fish["organs"].items():
        cu, cv, cw = p["centre"]
        bc, ac = (x[0] for x in _profile(np.array([cu]), fish))
        su, sv, sw = p["axes"]
        q = ((u - cu) / su) ** 2 + ((v - cv * ac) / (sv * ac)) ** 2 + ((w - cw * bc) / (sw * bc)) ** 2
        organs[name] = (q <= 1 + 0.25 * edge) & inside

    # tubes: spinal cord under the dorsal surface, vertebrae below it, the coiled gut
    near = np.flatnonzero(inside)
    points = np.stack([u[near] * L, v[near], w[near]], -1)
    t = np.linspace(0, 1, 400)
    cord_u = 0.23 + 0.65 * t
    cord_b, _ = _profile(cord_u, fish)
    r_cord = max(1.3, 0.11 * H)
    cord_w = 0.58 * cord_b
    cord = np.stack([cord_u * L, 0 * t, cord_w], -1)
    organs["spinal_cord"] = np.zeros(n, bool)
    organs["spinal_cord"][near] = _curve_distance(points, cord) <= r_cord
    r_vert = 0.9 + 0.07 * H
    vertebrae = np.stack([cord_u * L, 0 * t, cord_w - r_cord - r_vert * 0.9], -1)
    segments = np.cos(2 * np.pi * u * L / max(2.5, 0.035 * L)) > -0.4
    organs["bone"] = np.zeros(n, bool)
    organs["bone"][near] = (_curve_distance(points, vertebrae) <= r_vert) & segments[near] & (u[near] < 0.88)
    gut_u = 0.27 + 0.36 * t
    gut_b, gut_a = _profile(gut_u, fish)
    gut_w = (-0.1 - 0.65 * t + 0.12 * np.sin(3 * np.pi * t + fish["gut_phase"])) * gut_b
    gut = np.stack([gut_u * L, 0.35 * gut_a * np.sin(3 * np.pi * t + fish["gut_phase"]), gut_w], -1)
    r_gut = 0.2 * H
    gut_d = np.full(n, np.inf)
    gut_d[near] = _curve_distance(points, gut)
    organs["gut"] = gut_d <= r_gut * (1 + 0.2 * edge)
    # otoliths: the ear stones beside the brain
    bo, ao = (x[0] for x in _profile(np.array([0.21]), fish))
    organs["otolith"] = np.zeros(n, bool)
    for side in (1, -1):
        organs["otolith"] |= np.sqrt((u * L - 0.21 * L) ** 2 + (v - side * 0.6 * ao) ** 2 + w**2) <= max(1.0, 0.018 * L)

    for name in _PAINT_ORDER:
        mask = organs[name]
        labels[mask] = ORGANS[name]
        if name == "gut":
            grey[mask] = _GREY["gut"]
            grey[mask & (gut_d <= 0.5 * r_gut)] = _GREY["gut_lumen"]
        else:
            grey[mask] = fish["organs"][name]["grey"] if name in fish["organs"] else _GREY["eye" if "eye" in name else name]
    grey[organs["bone"] & (labels == 0)] = _GREY["bone"]
    grey[organs["eye_left_lens"] | organs["eye_right_lens"]] = _GREY["lens"]
    grey[organs["otolith"]] = _GREY["otolith"]
    grey[labels > 0] += 500 * _sample(texture, u, v, w, fish)[labels > 0]

    grey = grey.reshape(shape) * fish["contrast"] + fish["offset"]
    labels = labels.reshape(shape)
    if artifacts:
        grey += _artifacts(fish, shape, np.argwhere(organs["otolith"].reshape(shape) | (grey > 30000)))
    grey = ndimage.gaussian_filter(grey, fish["blur"])
    grey += rng.standard_normal(shape) * fish["noise"] * np.sqrt(np.clip(grey, 1000, None) / _GREY["tissue"])
    return np.clip(np.rint(grey), 0, 65535).astype(np.uint16), labels


def _artifacts(fish: dict, shape: tuple, dense: np.ndarray) -> np.ndarray:
    """Rings around the rotation axis (along x) and streaks through dense objects, in each yz-plane."""
    nz, ny, nx = shape
    zz, yy = np.meshgrid(np.arange(nz) - (nz - 1) / 2, np.arange(ny) - (ny - 1) / 2, indexing="ij")
    rho = np.hypot(zz, yy)
    out = np.zeros(shape)
    plane = np.zeros((nz, ny))
    for fraction, amplitude in fish["rings"]:
        plane += amplitude * np.exp(-((rho - fraction * min(nz, ny) / 2) ** 2) / (2 * 0.5**2))
    out += plane[:, :, None]
    if fish["streaks"] is not None and len(dense):
        angles, amplitude = fish["streaks"]
        centre = dense.mean(0)  # the dense objects near the head
        x0, x1 = int(dense[:, 2].min()), int(dense[:, 2].max()) + 1
        dz, dy = zz + (nz - 1) / 2 - centre[0], yy + (ny - 1) / 2 - centre[1]
        streak = np.zeros((nz, ny))
        for k, angle in enumerate(angles):
            across = np.abs(-np.sin(angle) * dz + np.cos(angle) * dy)
            along = np.hypot(dz, dy)
            streak += (-1) ** k * amplitude * np.exp(-(across**2) / (2 * 0.7**2)) * np.exp(-along / (0.4 * max(nz, ny)))
        out[:, :, x0:x1] += streak[:, :, None]
    return out


def _organ_labels(merge_eyes: bool) -> dict:
    """Organ name -> written label value: `ORGANS`, or with both eyes as one ``eyes`` organ and the rest renumbered."""
    if not merge_eyes:
        return dict(ORGANS)
    rest = [name for name in ORGANS if not name.startswith("eye_")]
    return {"eyes": 1, **{name: i + 2 for i, name in enumerate(rest)}}


def _write_tiff(path: Path, array: np.ndarray, spacing_um: float) -> None:
    import tifffile

    tifffile.imwrite(
        path, array, imagej=True, resolution=(1 / spacing_um, 1 / spacing_um),
        metadata={"spacing": spacing_um, "unit": "micron", "axes": "ZYX"},
    )


def make_phantoms(
    out_dir: os.PathLike | str,
    *,
    n_labeled: int,
    n_unlabeled: int,
    seed: int = 0,
    size: int = 80,
    artifacts: bool = True,
    slices: str = "sagittal",
    merge_eyes: bool = False,
    overwrite: bool = False,
) -> dict:
    """Write synthetic Medaka micro-CT specimens in the micro-CT layout.

    Parameters
    ----------
    out_dir : path
        Folder to create (see the module docstring for its layout).
    n_labeled, n_unlabeled : int
        Specimens with per-organ masks, and without (their ground truth goes to ``unlabeled_gt/``).
    seed : int
        Random seed; the same seed writes the same files.
    size : int
        Voxels along the body axis (volume ``0.4 size x 0.5 size x size`` as z, y, x); default 80.
    artifacts : bool
        Give some fish ring and streak artifacts.
    slices : {"sagittal", "frontal", "transverse"}
        Which sections of the fish the slices (first array axis) are; see the module docstring.
    merge_eyes : bool
        Label both eyes as one organ, ``eyes`` (label 1; the other organs follow as 2..8). A 2d network sees the
        left and the right eye alike in sagittal slices; with one ``eyes`` label it need not tell them apart.
    overwrite : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    dict
        ``root``, ``organs_file``, ``labeled`` and ``unlabeled`` case ids, ``shape`` (z, y, x),
        ``spacing_mm``, ``seed``, ``size``.

    Raises
    ------
    MedakaError
        For bad counts or size, or an existing ``out_dir`` without ``overwrite``.
    """
    from nnunet_medaka.files import write_json_atomic
    from nnunet_medaka.conversion.raw_dataset import staged_dataset

    for name, value, low in (("n_labeled", n_labeled, 1), ("n_unlabeled", n_unlabeled, 0), ("size", size, 32)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MedakaError(f"{name}={value!r}: expected a whole number >= {low}")
    if slices not in _POSES:
        raise MedakaError(f"slices={slices!r}: expected one of {', '.join(_POSES)}")
    out_dir = Path(out_dir).expanduser()
    shape = (round(0.4 * size), round(0.5 * size), size)
    axes, flip = _POSES[slices]

    def orient(a: np.ndarray) -> np.ndarray:  # rendered sagittal; turned by 90 degrees (spacing is isotropic)
        a = a.transpose(axes)
        return np.ascontiguousarray(a if flip is None else np.flip(a, flip))

    spacing_um = SPACING_UM_AT_80 * 80 / size
    cases = [f"medaka_{i:03d}" for i in range(n_labeled + n_unlabeled)]
    labeled, unlabeled = cases[:n_labeled], cases[n_labeled:]
    out_shape = [shape[a] for a in axes]
    organ_labels = _organ_labels(merge_eyes)
    lut = np.zeros(max(ORGANS.values()) + 1, np.uint8)  # rendered label value -> written label value
    for name, value in ORGANS.items():
        lut[value] = organ_labels["eyes" if merge_eyes and name.startswith("eye_") else name]
    record = {"seed": seed, "size": size, "slices": slices, "merge_eyes": merge_eyes, "shape_zyx": out_shape, "spacing_um": spacing_um,
              "fish": {}}
    with staged_dataset(out_dir, overwrite=overwrite) as staging:
        for sub in ("images", "masks", "unlabeled") + (("unlabeled_gt",) if unlabeled else ()):
            (staging / sub).mkdir()
        for i, case in enumerate(cases):
            fish = _draw_fish(np.random.default_rng([seed, i]), size)
            image, labels = (orient(a) for a in render_fish(fish, shape, artifacts=artifacts))
            labels = lut[labels]
            record["fish"][case] = fish
            if case in labeled:
                _write_tiff(staging / "images" / f"{case}.tif", image, spacing_um)
                (staging / "masks" / case).mkdir()
                for organ, value in organ_labels.items():
                    mask = np.where(labels == value, 255, 0).astype(np.uint8)
                    _write_tiff(staging / "masks" / case / f"{case}_{organ}.tif", mask, spacing_um)
            else:
                _write_tiff(staging / "unlabeled" / f"{case}.tif", image, spacing_um)
                _write_tiff(staging / "unlabeled_gt" / f"{case}.tif", labels, spacing_um)
            log.debug("%s: organ voxels %s", case, np.bincount(labels.ravel(), minlength=10)[1:].tolist())
        organs = {name: {"label": value, "patterns": [f"*_{name}.tif"]} for name, value in organ_labels.items()}
        write_json_atomic(staging / "organs.json", {"organs": organs})
        write_json_atomic(staging / "phantom.json", record)
    log.info("wrote %d labeled and %d unlabeled phantom specimens to %s", n_labeled, n_unlabeled, out_dir)
    return {
        "root": str(out_dir),
        "organs_file": str(out_dir / "organs.json"),
        "labeled": labeled,
        "unlabeled": unlabeled,
        "shape": out_shape,
        "slices": slices,
        "spacing_mm": [spacing_um / 1000] * 3,
        "seed": seed,
        "size": size,
    }


def make_phantom_experiment(folder: Path, raw: Path, *, n_specimens: int, n_labeled: int, n_test: int, seed: int,
                            size: int, ids: tuple = (801, 802), **phantom_options) -> Path:
    """SYNTHETIC phantoms -> ``convert microct --crop`` -> ``split``: the dataset of ``nnunet-medaka demo``, also
    used by the probes behind its settings (``benchmarks/demo_probe_data.py``).

    Parameters
    ----------
    folder : Path
        Receives the phantoms.
    raw : Path
        ``nnUNet_raw``: receives the converted dataset and its split, with the dataset ids ``ids``.
    n_specimens, n_labeled, n_test, seed, size
        Specimens made, labeled and test cases of the split (the rest unlabeled), seed of phantoms and split,
        phantom voxels along the body.
    **phantom_options
        Passed on to `nnunet_medaka.conversion.phantom.make_phantoms` (e.g. ``merge_eyes``, ``slices``).

    Returns
    -------
    Path
        The split dataset's raw folder.
    """
    from nnunet_medaka.conversion.convert import convert_microct
    from nnunet_medaka.conversion.split import split_dataset

    phantoms = make_phantoms(folder, n_labeled=n_specimens, n_unlabeled=0, seed=seed, size=size,
                             **phantom_options)
    source = convert_microct(phantoms["root"], dataset_id=ids[0], dataset_name="MedakaPhantom",
                             organs=phantoms["organs_file"], out_dir=raw, crop=True)
    return split_dataset(source, dataset_id=ids[1], dataset_name="MedakaPhantomFewLabels",
                         n_labeled=n_labeled, n_test=n_test, seed=seed, out_dir=raw)


def _run(args: argparse.Namespace) -> int:
    summary = make_phantoms(
        args.out, n_labeled=args.labeled, n_unlabeled=args.unlabeled, seed=args.seed, size=args.size,
        artifacts=not args.no_artifacts, slices=args.slices, merge_eyes=args.merge_eyes, overwrite=args.overwrite,
    )
    print(summary["root"])
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write synthetic Medaka micro-CT specimens (TIFF stacks + per-organ masks)",
        description="Write synthetic Medaka-like micro-CT specimens in the layout `nnunet-medaka convert microct` "
        "reads: images/, masks/CASE/ (one mask per organ), unlabeled/, unlabeled_gt/ and organs.json.",
    )
    p.add_argument("out", metavar="OUT", help="folder to create")
    p.add_argument("--labeled", type=int, default=5, metavar="N", help="specimens with masks (default 5)")
    p.add_argument("--unlabeled", type=int, default=10, metavar="N", help="specimens without masks (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=80, help="voxels along the body axis (default 80; volume 0.4x0.5x1 of it)")
    p.add_argument("--no-artifacts", action="store_true", help="no ring or streak artifacts")
    p.add_argument("--merge-eyes", action="store_true", help="label both eyes as one organ, eyes (for 2d networks)")
    p.add_argument("--slices", choices=tuple(_POSES), default="sagittal",
                   help="which sections the stack's slices are: sagittal (default; lengthwise, left to right), frontal "
                   "(lengthwise, back to belly: both eyes in a slice), transverse (cross-sections)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    p.set_defaults(func=_run)
