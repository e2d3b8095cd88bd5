"""convert microct: layout, round trips, streaming, downsampling, cropping, and every bad-input error."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from nnunet_medaka.conversion.convert import convert_microct, parse_spacing
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.conversion.microct import convert_specimen
from nnunet_medaka.conversion.specimens import Settings, Specimen
from nnunet_medaka.conversion.organs import organ_list_from_mapping

SHAPE = (8, 10, 12)  # z, y, x
ORGANS = {"organs": {"brain": {"label": 1, "patterns": ["*brain*"]}, "heart": {"label": 2, "patterns": ["*heart*"]}}}


def write_stack(path, array, spacing_um=(10.0, 10.0, 20.0)):
    """ImageJ stack with spacing metadata (x, y, z in micrometres); None writes no metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if spacing_um is None:
        tifffile.imwrite(path, array, photometric="minisblack")
    else:
        sx, sy, sz = spacing_um
        tifffile.imwrite(path, array, imagej=True, resolution=(1 / sx, 1 / sy),
                         metadata={"spacing": sz, "unit": "um", "axes": "ZYX"})


def specimen_arrays(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(100, 1000, SHAPE).astype(np.uint16)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 2:5, 2:6] = 1
    labels[5:7, 5:9, 6:11] = 2
    return image, labels


def make_source(root, *, cases=("fish1", "fish2"), layout="masks", unlabeled=(), organs=ORGANS):
    """A micro-CT source folder with ImageJ stacks; returns {case: (image, labels)}."""
    data = {}
    for i, case in enumerate(list(cases) + list(unlabeled)):
        image, labels = specimen_arrays(i)
        data[case] = image, labels
        if case in unlabeled:
            write_stack(root / "unlabeled" / f"{case}.tif", image)
            continue
        write_stack(root / "images" / f"{case}.tif", image)
        if layout == "labels":
            write_stack(root / "labels" / f"{case}.tif", labels)
        else:
            for name, value in (("brain", 1), ("heart", 2)):
                write_stack(root / "masks" / case / f"{case}_{name}.tif", (labels == value).astype(np.uint8) * 255)
    if organs is not None:
        (root / "organs.json").write_text(json.dumps(organs))
    return data


def read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def convert(src, out, **kwargs):
    return convert_microct(src, dataset_id=kwargs.pop("dataset_id", 5), dataset_name="Fish", out_dir=out, **kwargs)


def assert_nothing_left(out):
    assert not out.exists() or not any(out.iterdir()), f"partial output left: {list(out.iterdir())}"


# ---- round trips ---------------------------------------------------------------------------------


def test_masks_layout_round_trip(tmp_path):
    data = make_source(tmp_path / "src", unlabeled=("fish9",))
    folder = convert(tmp_path / "src", tmp_path / "raw")
    assert folder == tmp_path / "raw" / "Dataset005_Fish"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "brain": 1, "heart": 2}
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["unlabeled_images"] == "imagesUnlabeled" and meta["numUnlabeled"] == 1
    assert "unlabeled_ground_truth" not in meta
    for case in ("fish1", "fish2"):
        image, itk = read(folder / "imagesTr" / f"{case}_0000.nii.gz")
        labels, itk_labels = read(folder / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(image, data[case][0])
        np.testing.assert_array_equal(labels, data[case][1])
        assert image.dtype == np.uint16 and labels.dtype == np.uint8
        np.testing.assert_allclose(itk.GetSpacing(), (0.01, 0.01, 0.02), rtol=1e-6)
        assert itk_labels.GetSpacing() == itk.GetSpacing()
    np.testing.assert_array_equal(read(folder / "imagesUnlabeled" / "fish9_0000.nii.gz")[0], data["fish9"][0])
    record = json.loads((folder / "conversion.json").read_text())
    assert record["cases"]["fish1"]["organ_voxels"] == {"brain": 36, "heart": 40}
    assert not [p for p in (tmp_path / "raw").iterdir() if p.name.startswith(".")]


def test_label_volume_with_sparse_values_and_yaml_organ_list(tmp_path):
    src = tmp_path / "src"
    data = make_source(src, layout="labels", organs=None)
    for case, (_, labels) in data.items():  # atlas-style values 10 and 20
        write_stack(src / "labels" / f"{case}.tif", (labels * 10).astype(np.uint16))
    (src / "organs.yaml").write_text("organs:\n  brain: 10\n  heart: {label: 20}\n")
    folder = convert(src, tmp_path / "raw")
    np.testing.assert_array_equal(read(folder / "labelsTr" / "fish1.nii.gz")[0], data["fish1"][1])
    record = json.loads((folder / "conversion.json").read_text())
    assert record["organ_source_values"] == {"brain": 10, "heart": 20}


def test_slice_folder_natural_order_and_spacing_flag(tmp_path):
    src = tmp_path / "src"
    image, labels = specimen_arrays()
    folder = src / "images" / "fish1"
    folder.mkdir(parents=True)
    for z in range(SHAPE[0]):  # slice_4 must come before slice_12 (natural order, not text order)
        tifffile.imwrite(folder / f"slice_{z * 4}.tif", image[z])
    write_stack(src / "labels" / "fish1.tif", labels, spacing_um=None)
    (src / "organs.json").write_text(json.dumps(ORGANS))
    with pytest.raises(MedakaError, match="spacing missing.*--spacing"):
        convert(src, tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")
    folder = convert(src, tmp_path / "raw", spacing="5,5,7.5um")
    out, itk = read(folder / "imagesTr" / "fish1_0000.nii.gz")
    np.testing.assert_array_equal(out, image)
    np.testing.assert_allclose(itk.GetSpacing(), (0.005, 0.005, 0.0075), rtol=1e-6)


def test_nifti_input_keeps_geometry(tmp_path):
    src = tmp_path / "src"
    image, labels = specimen_arrays()
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for array, path in ((image, src / "images" / "fish1.nii.gz"), (labels, src / "labels" / "fish1.nrrd")):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((0.5, 0.6, 0.7))
        itk.SetOrigin((1.0, 2.0, 3.0))
        sitk.WriteImage(itk, str(path))
    (src / "organs.json").write_text(json.dumps(ORGANS))
    folder = convert(src, tmp_path / "raw", downsample=2)
    out, itk = read(folder / "imagesTr" / "fish1_0000.nii.gz")
    assert out.shape == (4, 5, 6)
    np.testing.assert_allclose(itk.GetSpacing(), (1.0, 1.2, 1.4), rtol=1e-6)
    # the first output voxel sits at the centre of its 2x2x2 input block
    np.testing.assert_allclose(itk.GetOrigin(), (1.25, 2.3, 3.35), atol=1e-5)


def test_unlabeled_ground_truth_is_converted_and_declared(tmp_path):
    src = tmp_path / "src"
    data = make_source(src, unlabeled=("fish9",))
    write_stack(src / "unlabeled_gt" / "fish9.tif", data["fish9"][1])
    folder = convert(src, tmp_path / "raw")
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["unlabeled_ground_truth"] == "labelsUnlabeled_gt"
    np.testing.assert_array_equal(read(folder / "labelsUnlabeled_gt" / "fish9.nii.gz")[0], data["fish9"][1])


def test_case_ids_are_cleaned_and_overwrite_replaces(tmp_path):
    src = tmp_path / "src"
    make_source(src, cases=("Medaka 01",))
    folder = convert(src, tmp_path / "raw")
    assert (folder / "imagesTr" / "Medaka_01_0000.nii.gz").is_file()
    with pytest.raises(MedakaError, match="already exists.*--overwrite"):
        convert(src, tmp_path / "raw")
    convert(src, tmp_path / "raw", overwrite=True, channel_name="microCT")
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "microCT"}
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset005_Fish"]


def test_parallel_equals_sequential(tmp_path):
    src = tmp_path / "src"
    make_source(src, cases=("a", "b", "c"))
    one = convert(src, tmp_path / "one")
    two = convert(src, tmp_path / "two", workers=2)
    for sub, name in (("imagesTr", "b_0000.nii.gz"), ("labelsTr", "c.nii.gz")):
        np.testing.assert_array_equal(read(one / sub / name)[0], read(two / sub / name)[0])


# ---- streaming, downsampling, clipping, cropping -----------------------------------------------


@pytest.mark.parametrize("factor", [(1, 1, 1), (2, 2, 2), (3, 2, 1)])
def test_slabs_give_the_same_result_as_one_read(tmp_path, factor):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4000, (13, 9, 11)).astype(np.uint16)
    labels = rng.integers(0, 3, image.shape).astype(np.uint8)
    write_stack(tmp_path / "i.tif", image)
    write_stack(tmp_path / "l.tif", labels)
    organs = organ_list_from_mapping({"brain": 1, "heart": 2})
    outputs = []
    for slab_bytes in (1, 10**9):  # one plane group per slab vs everything at once
        out = tmp_path / str(slab_bytes)
        out.mkdir()
        specimen = Specimen("c", tmp_path / "i.tif", labels=tmp_path / "l.tif", out_image=out / "i.nii.gz",
                            out_label=out / "l.nii.gz")
        convert_specimen(specimen, Settings(organs=organs, factor=factor, slab_bytes=slab_bytes))
        outputs.append((read(out / "i.nii.gz")[0], read(out / "l.nii.gz")[0]))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])
    assert outputs[0][0].shape == tuple(-(-s // f) for s, f in zip(image.shape, factor))


def test_downsampling_area_majority_and_clip(tmp_path):
    src = tmp_path / "src"
    make_source(src, layout="labels")
    image = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)
    write_stack(src / "images" / "fish1.tif", image)
    folder = convert(src, tmp_path / "raw", downsample=2, clip=(0, 900))
    out, itk = read(folder / "imagesTr" / "fish1_0000.nii.gz")
    expected = np.clip(image, 0, 900).reshape(4, 2, 5, 2, 6, 2).mean(axis=(1, 3, 5))
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.uint16))
    np.testing.assert_allclose(itk.GetSpacing(), (0.02, 0.02, 0.04), rtol=1e-6)
    labels = read(folder / "labelsTr" / "fish1.nii.gz")[0]
    assert labels.shape == (4, 5, 6) and set(np.unique(labels)) == {0, 1, 2}


def test_resample_methods():
    from nnunet_medaka.conversion.resample import downsample_image, downsample_labels

    labels = np.zeros((2, 2, 2), np.uint8)
    labels[0, 0, :] = 1
    labels[1, 1, :] = 2  # 4 background, 2 ones, 2 twos: background wins
    assert downsample_labels(labels, (2, 2, 2), "majority").item() == 0
    labels[1, 0, 0] = 1  # 3 background, 3 ones: tie goes to the centre voxel (0, 0, 0), label 1
    assert downsample_labels(labels, (2, 2, 2), "majority").item() == 1
    assert downsample_labels(labels, (2, 2, 2), "nearest").item() == 1
    image = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    assert downsample_image(image, (3, 3, 3), "linear").item() == 13  # the centre voxel
    assert downsample_image(image, (3, 3, 3), "area").item() == pytest.approx(13)


def test_crop_to_specimen_keeps_labels(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 50, (40, 40, 40)).clip(0).astype(np.uint16)
    image[10:20, 12:30, 14:24] = 5000  # the specimen, on even planes (the box is found on 2x2x2 blocks)
    labels = np.zeros(image.shape, np.uint8)
    labels[12:18, 14:28, 16:24] = 1
    labels[30, 30, 30] = 2  # a label outside the specimen must not be cut off
    write_stack(src / "images" / "f.tif", image)
    write_stack(src / "labels" / "f.tif", labels)
    (src / "organs.json").write_text(json.dumps(ORGANS))
    folder = convert(src, tmp_path / "raw", crop=True, crop_margin=2)
    box = json.loads((folder / "conversion.json").read_text())["cases"]["f"]["crop_box"]
    assert box == [[8, 31], [10, 32], [12, 31]]
    out = read(folder / "labelsTr" / "f.nii.gz")[0]
    assert (out == 1).sum() == (labels == 1).sum() and (out == 2).sum() == 1


# ---- bad input: one error each, nothing left behind ----------------------------------------------


def test_error_shape_mismatch(tmp_path):
    make_source(tmp_path / "src", layout="labels")
    write_stack(tmp_path / "src" / "labels" / "fish2.tif", np.zeros((8, 10, 11), np.uint8))
    with pytest.raises(MedakaError, match=r"fish2.tif: shape .* differs from the image"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_spacing_mismatch(tmp_path):
    data = make_source(tmp_path / "src", layout="labels")
    write_stack(tmp_path / "src" / "labels" / "fish1.tif", data["fish1"][1], spacing_um=(10, 10, 30))
    with pytest.raises(MedakaError, match=r"fish1.tif: spacing .* differs from the image.*--spacing"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_spacing_missing(tmp_path):
    data = make_source(tmp_path / "src")
    write_stack(tmp_path / "src" / "images" / "fish2.tif", data["fish2"][0], spacing_um=None)
    with pytest.raises(MedakaError, match=r"fish2.tif: spacing missing.*--spacing"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_label_values_outside_organ_list(tmp_path):
    data = make_source(tmp_path / "src", layout="labels")
    bad = data["fish2"][1].copy()
    bad[0, 0, 0] = 7
    write_stack(tmp_path / "src" / "labels" / "fish2.tif", bad)
    with pytest.raises(MedakaError, match=r"fish2.tif: label values \[7\] are not in the organ list"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_overlapping_masks_and_priority(tmp_path):
    src = tmp_path / "src"
    data = make_source(src)
    heart = (data["fish1"][1] == 2).astype(np.uint8) * 255
    heart[3, 3, 3] = 255  # inside the brain
    write_stack(src / "masks" / "fish1" / "fish1_heart.tif", heart)
    with pytest.raises(MedakaError, match=r"fish1_heart.tif \(heart\) and fish1_brain.tif \(brain\) overlap.*--priority"):
        convert(src, tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")
    folder = convert(src, tmp_path / "raw", priority=["heart"])
    assert read(folder / "labelsTr" / "fish1.nii.gz")[0][3, 3, 3] == 2  # heart listed first: heart wins


def test_error_empty_label(tmp_path):
    make_source(tmp_path / "src", layout="labels")
    write_stack(tmp_path / "src" / "labels" / "fish2.tif", np.zeros(SHAPE, np.uint8))
    with pytest.raises(MedakaError, match=r"fish2.tif: case fish2 has an empty label.*unlabeled/"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_nan_in_image(tmp_path):
    make_source(tmp_path / "src")
    image = np.ones(SHAPE, np.float32)
    image[4, 1, 1] = np.inf
    write_stack(tmp_path / "src" / "images" / "fish2.tif", image)
    with pytest.raises(MedakaError, match=r"fish2.tif: image holds NaN or infinite values \(first in plane z=4\)"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_unreadable_file(tmp_path):
    make_source(tmp_path / "src")
    (tmp_path / "src" / "images" / "fish2.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(MedakaError, match=r"fish2.tif: cannot be read .*copy or export it again"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


@pytest.mark.parametrize("name", ["fish2.tif", "fish2.nii.gz"])
def test_error_truncated_file(tmp_path, name):
    src = tmp_path / "src"
    data = make_source(src)
    path = src / "images" / name
    if name.endswith(".nii.gz"):
        (src / "images" / "fish2.tif").unlink()
        sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((30, 30, 30), np.float32)), str(path))
        for organ in ("brain", "heart"):  # masks of the new size
            write_stack(src / "masks" / "fish2" / f"fish2_{organ}.tif", np.full((30, 30, 30), 255, np.uint8) * (organ == "brain"))
    else:
        write_stack(path, np.resize(data["fish2"][0], (8, 100, 120)))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) * 2 // 3])
    with pytest.raises(MedakaError, match=rf"{name}: cannot be read \(.*\); the file may be truncated"):
        convert(src, tmp_path / "raw", spacing=1)
    assert_nothing_left(tmp_path / "raw")


def test_error_duplicate_case_ids(tmp_path):
    src = tmp_path / "src"
    data = make_source(src)
    sitk.WriteImage(sitk.GetImageFromArray(data["fish1"][0]), str(src / "images" / "fish1.nii.gz"))
    with pytest.raises(MedakaError, match=r"duplicate case id 'fish1'"):
        convert(src, tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_non_integer_labels(tmp_path):
    data = make_source(tmp_path / "src", layout="labels")
    labels = data["fish1"][1].astype(np.float32)
    labels[2, 2, 2] = 0.5
    write_stack(tmp_path / "src" / "labels" / "fish1.tif", labels)
    with pytest.raises(MedakaError, match=r"fish1.tif: non-integer label value 0.5 at plane z=2"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_float_labels_with_integer_values_are_accepted(tmp_path):
    data = make_source(tmp_path / "src", layout="labels")
    write_stack(tmp_path / "src" / "labels" / "fish1.tif", data["fish1"][1].astype(np.float32))
    folder = convert(tmp_path / "src", tmp_path / "raw")
    np.testing.assert_array_equal(read(folder / "labelsTr" / "fish1.nii.gz")[0], data["fish1"][1])


def test_error_output_exists(tmp_path):
    make_source(tmp_path / "src")
    (tmp_path / "raw" / "Dataset005_Fish").mkdir(parents=True)
    with pytest.raises(MedakaError, match=r"Dataset005_Fish: already exists; pass --overwrite"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert list((tmp_path / "raw" / "Dataset005_Fish").iterdir()) == []


def test_error_dataset_id_taken_by_another_name(tmp_path):
    make_source(tmp_path / "src")
    (tmp_path / "raw" / "Dataset005_Other").mkdir(parents=True)
    with pytest.raises(MedakaError, match=r"dataset id 5 is already used by Dataset005_Other"):
        convert(tmp_path / "src", tmp_path / "raw")


def test_error_empty_input_folder(tmp_path):
    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / "organs.json").write_text(json.dumps(ORGANS))
    with pytest.raises(MedakaError, match=r"images: no specimen images found"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_layout_problems_are_listed_together(tmp_path):
    src = tmp_path / "src"
    make_source(src, cases=("fish1", "fish2", "fish3"))
    (src / "masks" / "fish2" / "fish2_heart.tif").rename(src / "masks" / "fish2" / "fish2_kidney.tif")
    (src / "masks" / "fish3" / "fish3_heart.tif").unlink()
    write_stack(src / "images" / "fish4.tif", np.zeros(SHAPE, np.uint16))
    with pytest.raises(MedakaError) as info:
        convert(src, tmp_path / "raw")
    message = str(info.value)
    assert "fish2_kidney.tif: matches no organ" in message
    assert "no mask for organ(s) ['heart']" in message and "--allow-missing-masks" in message
    assert "fish4.tif: no labels for case fish4" in message
    assert_nothing_left(tmp_path / "raw")


def test_error_mask_not_binary(tmp_path):
    src = tmp_path / "src"
    data = make_source(src)
    mask = (data["fish1"][1] == 1).astype(np.uint8)
    mask[0, 0, 0] = 2
    write_stack(src / "masks" / "fish1" / "fish1_brain.tif", mask)
    with pytest.raises(MedakaError, match=r"fish1_brain.tif: mask of 'brain' holds several values \[1, 2\]"):
        convert(src, tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_bad_organ_list(tmp_path):
    make_source(tmp_path / "src", organs={"organs": {"brain": 1, "heart": 1, "gut": -2}})
    with pytest.raises(MedakaError, match=r"organs.json: .*share label 1.*'gut': label is -2"):
        convert(tmp_path / "src", tmp_path / "raw")


def test_parse_spacing():
    assert parse_spacing("2.5um") == pytest.approx((0.0025,) * 3)
    assert parse_spacing("2,2,5 um") == pytest.approx((0.002, 0.002, 0.005))
    assert parse_spacing((1, 2, 3)) == (1.0, 2.0, 3.0)
    with pytest.raises(MedakaError, match="--spacing 'a,b'"):
        parse_spacing("a,b")
    with pytest.raises(MedakaError, match="three positive numbers"):
        parse_spacing((1, 0, 1))


def test_tiff_variants_read_the_same(tmp_path):
    from nnunet_medaka.conversion.volume_io import open_volume

    image = np.random.default_rng(0).integers(0, 60000, (7, 5, 6)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big_endian.tif", image, byteorder=">", photometric="minisblack")
    tifffile.imwrite(tmp_path / "zlib.tif", image, compression="zlib", photometric="minisblack")
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for plane in image:
            tif.write(plane, contiguous=False)
    tifffile.imwrite(tmp_path / "ome.tif", image, ome=True, photometric="minisblack",
                     metadata={"axes": "ZYX", "PhysicalSizeX": 2, "PhysicalSizeY": 2, "PhysicalSizeZ": 4})
    for name in ("big_endian.tif", "zlib.tif", "pages.tif", "ome.tif"):
        with open_volume(tmp_path / name) as volume:
            assert volume.shape == image.shape
            np.testing.assert_array_equal(volume.read(2, 6), image[2:6])
    with open_volume(tmp_path / "ome.tif") as volume:
        assert volume.spacing == pytest.approx((0.002, 0.002, 0.004))


def test_signed_labels_map_and_negative_values_are_rejected(tmp_path):
    src = tmp_path / "src"
    data = make_source(src, layout="labels")
    labels = data["fish1"][1].astype(np.int16)
    (src / "labels" / "fish1.tif").unlink()
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(src / "labels" / "fish1.nii.gz"))
    folder = convert(src, tmp_path / "raw", spacing="10,10,20um")  # the flag sets TIFF and NIfTI alike
    np.testing.assert_array_equal(read(folder / "labelsTr" / "fish1.nii.gz")[0], data["fish1"][1])
    labels[0, 0, 0] = -1
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(src / "labels" / "fish1.nii.gz"))
    with pytest.raises(MedakaError, match=r"fish1.nii.gz: label values \[-1\] are not in the organ list"):
        convert(src, tmp_path / "raw2", spacing="10,10,20um")
    assert_nothing_left(tmp_path / "raw2")


def test_error_nan_in_nifti_image(tmp_path):
    src = tmp_path / "src"
    data = make_source(src)
    image = data["fish2"][0].astype(np.float32)
    image[6, 0, 0] = np.nan  # SimpleITK would read this as 0
    (src / "images" / "fish2.tif").unlink()
    sitk.WriteImage(sitk.GetImageFromArray(image), str(src / "images" / "fish2.nii.gz"))
    with pytest.raises(MedakaError, match=r"fish2.nii.gz: holds NaN or infinite values \(first in plane z=6\)"):
        convert(src, tmp_path / "raw", spacing=1)
    assert_nothing_left(tmp_path / "raw")
