"""phantom: layout, determinism, anatomy and its conversion."""
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunet_medaka.cli import main
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.conversion.phantom import ORGANS, _draw_fish, make_phantoms, render_fish


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "fish"
    return make_phantoms(out, n_labeled=3, n_unlabeled=2, seed=7)


def test_layout_and_summary(phantoms):
    root = phantoms["root"]
    assert phantoms["labeled"] == ["medaka_000", "medaka_001", "medaka_002"]
    assert phantoms["unlabeled"] == ["medaka_003", "medaka_004"]
    assert phantoms["shape"] == [32, 40, 80]
    organs = json.loads(open(phantoms["organs_file"]).read())["organs"]
    assert {name: spec["label"] for name, spec in organs.items()} == ORGANS
    for case in phantoms["labeled"]:
        with tifffile.TiffFile(f"{root}/images/{case}.tif") as tif:
            assert tif.series[0].shape == (32, 40, 80) and tif.series[0].dtype == np.uint16
            assert tif.imagej_metadata["unit"] == "micron" and tif.imagej_metadata["spacing"] == pytest.approx(60)
        masks = sorted(p.name for p in (Path(root) / "masks" / case).iterdir())
        assert masks == sorted(f"{case}_{organ}.tif" for organ in ORGANS)
    for case in phantoms["unlabeled"]:
        assert (Path(root) / "unlabeled" / f"{case}.tif").is_file()
        assert (Path(root) / "unlabeled_gt" / f"{case}.tif").is_file()
        assert not (Path(root) / "images" / f"{case}.tif").exists()


def test_every_fish_has_every_organ_and_masks_do_not_overlap(phantoms):
    root = Path(phantoms["root"])
    for case in phantoms["labeled"]:
        masks = {o: tifffile.imread(root / "masks" / case / f"{case}_{o}.tif") for o in ORGANS}
        assert all(set(np.unique(m)) <= {0, 255} for m in masks.values())
        total = sum((m > 0).astype(int) for m in masks.values())
        assert total.max() == 1, "organ masks overlap"
        sizes = {o: int((m > 0).sum()) for o, m in masks.items()}
        assert min(sizes.values()) >= 40, sizes  # big enough to learn at the default size
    for case in phantoms["unlabeled"]:
        gt = tifffile.imread(root / "unlabeled_gt" / f"{case}.tif")
        assert set(np.unique(gt)) == set(range(10))


def test_intensities_look_like_micro_ct(phantoms):
    root = Path(phantoms["root"])
    image = tifffile.imread(root / "images" / "medaka_000.tif").astype(float)
    masks = {o: tifffile.imread(root / "masks" / "medaka_000" / f"medaka_000_{o}.tif") > 0 for o in ORGANS}
    background = image[:3].mean()  # the planes at the volume edge hold mounting medium only
    assert masks["swim_bladder"].any() and image[masks["swim_bladder"]].mean() < background  # air is dark
    assert image[masks["liver"]].mean() > image[masks["heart"]].mean() > background
    assert image[:3].std() > 300  # noise


def test_same_seed_same_files_other_seed_other_fish(tmp_path, phantoms):
    again = make_phantoms(tmp_path / "again", n_labeled=1, n_unlabeled=0, seed=7)
    root, other_root = Path(phantoms["root"]), Path(again["root"])
    assert (root / "images" / "medaka_000.tif").read_bytes() == (other_root / "images" / "medaka_000.tif").read_bytes()
    other = make_phantoms(tmp_path / "other", n_labeled=1, n_unlabeled=0, seed=8)
    a = tifffile.imread(root / "images" / "medaka_000.tif")
    b = tifffile.imread(Path(other["root"]) / "images" / "medaka_000.tif")
    assert not np.array_equal(a, b)


def test_larger_size_keeps_the_anatomy():
    fish = _draw_fish(np.random.default_rng([0, 0]), 120)
    _, labels = render_fish(fish, (48, 60, 120), artifacts=False)
    small_fish = _draw_fish(np.random.default_rng([0, 0]), 80)
    _, small = render_fish(small_fish, (32, 40, 80), artifacts=False)
    ratio = np.bincount(labels.ravel(), minlength=10)[1:] / np.bincount(small.ravel(), minlength=10)[1:]
    # volumes grow by (120 / 80) ** 3 = 3.4; thin tubes less (the spinal cord is at least 1.3 voxels
    # thick so that it stays visible in small volumes), organs they displace a little more
    assert np.all((ratio > 1.3) & (ratio < 6)), ratio
    assert np.median(ratio) == pytest.approx(3.4, abs=0.3), ratio


def test_bad_arguments_and_existing_folder(tmp_path, phantoms):
    with pytest.raises(MedakaError, match="n_labeled=0"):
        make_phantoms(tmp_path / "x", n_labeled=0, n_unlabeled=1)
    with pytest.raises(MedakaError, match="size=8"):
        make_phantoms(tmp_path / "x", n_labeled=1, n_unlabeled=0, size=8)
    with pytest.raises(MedakaError, match="already exists"):
        make_phantoms(phantoms["root"], n_labeled=1, n_unlabeled=0)
    assert not (tmp_path / "x").exists()


def test_cli_phantom_then_convert(tmp_path):
    assert main(["phantom", str(tmp_path / "fish"), "--labeled", "2", "--unlabeled", "1", "--seed", "3"]) == 0
    assert main(["convert", "microct", str(tmp_path / "fish"), "-d", "7", "-n", "Phantom", "--out-dir",
                 str(tmp_path / "raw"), "--no-progress"]) == 0
    dataset = tmp_path / "raw" / "Dataset007_Phantom"
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["numUnlabeled"] == 1
    assert meta["labels"] == {"background": 0, **ORGANS}
    assert meta["unlabeled_ground_truth"] == "labelsUnlabeled_gt"
    assert len(list((dataset / "labelsTr").iterdir())) == 2
    assert main(["convert", "microct", str(tmp_path / "fish"), "-d", "7", "-n", "Phantom", "--out-dir",
                 str(tmp_path / "raw"), "--no-progress"]) == 2  # exists: one-line error, status 2


@pytest.mark.parametrize("slices, turn", [("frontal", (1, (0, 1))), ("transverse", (1, (2, 0)))])
def test_other_slice_poses_are_the_same_fish_turned(phantoms, tmp_path, slices, turn):
    # the same seed in another pose: the same voxels rotated by 90 degrees (np.rot90), never mirrored, so the left
    # eye stays on the fish's left
    turned = make_phantoms(tmp_path / slices, n_labeled=1, n_unlabeled=0, seed=7, slices=slices)
    k, axes = turn
    root, other = Path(phantoms["root"]), Path(turned["root"])
    original = tifffile.imread(root / "images" / "medaka_000.tif")
    assert turned["shape"] == list(np.rot90(original, k, axes).shape) and turned["slices"] == slices
    np.testing.assert_array_equal(tifffile.imread(other / "images" / "medaka_000.tif"), np.rot90(original, k, axes))
    eye = tifffile.imread(other / "masks" / "medaka_000" / "medaka_000_eye_left.tif")
    np.testing.assert_array_equal(eye, np.rot90(tifffile.imread(root / "masks" / "medaka_000" / "medaka_000_eye_left.tif"), k, axes))
    if slices == "frontal":  # a slice through the eyes holds both of them
        right = tifffile.imread(other / "masks" / "medaka_000" / "medaka_000_eye_right.tif")
        assert any(eye[i].any() and right[i].any() for i in range(eye.shape[0]))
    with pytest.raises(MedakaError, match="slices='coronal'"):
        make_phantoms(tmp_path / "bad", n_labeled=1, n_unlabeled=0, slices="coronal")
    assert not (tmp_path / "bad").exists()


def test_merged_eyes_are_one_organ_covering_both(phantoms, tmp_path):
    merged = make_phantoms(tmp_path / "merged", n_labeled=1, n_unlabeled=1, seed=7, merge_eyes=True)
    root, other = Path(phantoms["root"]), Path(merged["root"])
    organs = json.loads(open(merged["organs_file"]).read())["organs"]
    assert {n: spec["label"] for n, spec in organs.items()} == {
        "eyes": 1, "brain": 2, "spinal_cord": 3, "heart": 4, "liver": 5, "gut": 6, "swim_bladder": 7, "kidney": 8}
    def mask(base, organ):
        return tifffile.imread(base / "masks" / "medaka_000" / f"medaka_000_{organ}.tif") > 0
    np.testing.assert_array_equal(mask(other, "eyes"), mask(root, "eye_left") | mask(root, "eye_right"))
    np.testing.assert_array_equal(mask(other, "kidney"), mask(root, "kidney"))
    # the unlabeled specimen's ground truth uses the same numbering
    gt = tifffile.imread(other / "unlabeled_gt" / "medaka_001.tif")
    assert set(np.unique(gt)) == set(range(9))
