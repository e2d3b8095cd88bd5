"""convert msd: MSD quirks (float labels, uint8 images, 4D channels, ._ files) and its errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_medaka.conversion.convert import convert_msd
from nnunet_medaka.errors import MedakaError

HIPPOCAMPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "msd_hippocampus"


def write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def make_msd(root, cases=("case_1", "case_2"), *, label_dtype=np.uint8, image_dtype=np.float32):
    rng = np.random.default_rng(0)
    data = {}
    for case in cases:
        image = (rng.random((6, 7, 8)) * 200).astype(image_dtype)
        labels = np.zeros((6, 7, 8), label_dtype)
        labels[1:3, 1:4, 1:4] = 1
        labels[3:5, 3:6, 4:7] = 2
        write(root / "imagesTr" / f"{case}.nii.gz", image, spacing=(0.8, 0.9, 1.5), origin=(-3.0, 2.0, 1.0))
        write(root / "labelsTr" / f"{case}.nii.gz", labels, spacing=(0.8, 0.9, 1.5), origin=(-3.0, 2.0, 1.0))
        data[case] = image, labels
    return data


def convert(src, out, **kwargs):
    kwargs.setdefault("labels", "anterior=1,posterior=2")
    kwargs.setdefault("channel_names", "MRI")
    return convert_msd(src, dataset_id=4, dataset_name="Hippo", out_dir=out, **kwargs)


def read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def assert_nothing_left(out):
    assert not out.exists() or not any(out.iterdir())


def test_round_trip_with_msd_quirks(tmp_path):
    src = tmp_path / "src"
    data = make_msd(src, label_dtype=np.float32, image_dtype=np.uint8)  # float labels, uint8 images
    (src / "imagesTr" / "._case_1.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    write(src / "imagesTs" / "case_9.nii.gz", np.ones((6, 7, 8), np.float32))
    folder = convert(src, tmp_path / "raw")
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRI"}
    assert meta["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    for case, (image, labels) in data.items():
        out, itk = read(folder / "imagesTr" / f"{case}_0000.nii.gz")
        out_labels, itk_labels = read(folder / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(out, image)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out_labels, labels.astype(np.uint8))
        assert out_labels.dtype == np.uint8
        np.testing.assert_allclose(itk.GetSpacing(), (0.8, 0.9, 1.5), rtol=1e-6)
        np.testing.assert_allclose(itk.GetOrigin(), (-3.0, 2.0, 1.0), atol=1e-6)
        assert itk_labels.GetOrigin() == itk.GetOrigin()
    assert (folder / "imagesTs" / "case_9_0000.nii.gz").is_file()
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["case_1_0000.nii.gz", "case_2_0000.nii.gz"]


def test_msd_dataset_json_and_4d_channels(tmp_path):
    src = tmp_path / "src"
    make_msd(src)
    t1, t2 = np.full((6, 7, 8), 1.0, np.float32), np.full((6, 7, 8), 2.0, np.float32)
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(t1), sitk.GetImageFromArray(t2)])
    sitk.WriteImage(four_d, str(src / "imagesTr" / "case_1.nii.gz"))
    labels = sitk.ReadImage(str(src / "labelsTr" / "case_1.nii.gz"))
    labels.SetSpacing((1.0, 1.0, 1.0))
    labels.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(labels, str(src / "labelsTr" / "case_1.nii.gz"))
    (src / "dataset.json").write_text(json.dumps({
        "modality": {"0": "T1", "1": "T2"}, "labels": {"0": "background", "1": "edema", "2": "tumour"},
    }))
    (src / "imagesTr" / "case_2.nii.gz").unlink()
    (src / "labelsTr" / "case_2.nii.gz").unlink()
    folder = convert(src, tmp_path / "raw", labels=None, channel_names=None)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T2"}
    assert meta["labels"] == {"background": 0, "edema": 1, "tumour": 2}
    np.testing.assert_array_equal(read(folder / "imagesTr" / "case_1_0000.nii.gz")[0], t1)
    np.testing.assert_array_equal(read(folder / "imagesTr" / "case_1_0001.nii.gz")[0], t2)


def test_error_non_integer_labels(tmp_path):
    src = tmp_path / "src"
    make_msd(src)
    labels = np.zeros((6, 7, 8), np.float32)
    labels[1, 1, 1] = 1.5
    write(src / "labelsTr" / "case_2.nii.gz", labels, spacing=(0.8, 0.9, 1.5), origin=(-3.0, 2.0, 1.0))
    with pytest.raises(MedakaError, match=r"case_2.nii.gz: non-integer label value 1.5"):
        convert(src, tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_unknown_label_value(tmp_path):
    src = tmp_path / "src"
    make_msd(src)
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1, 1, 1] = 3
    write(src / "labelsTr" / "case_2.nii.gz", labels, spacing=(0.8, 0.9, 1.5), origin=(-3.0, 2.0, 1.0))
    with pytest.raises(MedakaError, match=r"case_2.nii.gz: label values \[3\] are not in the label list"):
        convert(src, tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_geometry_mismatch(tmp_path):
    src = tmp_path / "src"
    data = make_msd(src)
    write(src / "labelsTr" / "case_1.nii.gz", data["case_1"][1], spacing=(0.8, 0.9, 3.0), origin=(-3.0, 2.0, 1.0))
    with pytest.raises(MedakaError, match=r"labelsTr/case_1.nii.gz: spacing .* differs from the image's"):
        convert(src, tmp_path / "raw")
    write(src / "labelsTr" / "case_1.nii.gz", data["case_1"][1][:, :, :5], spacing=(0.8, 0.9, 1.5), origin=(-3.0, 2.0, 1.0))
    with pytest.raises(MedakaError, match=r"labelsTr/case_1.nii.gz: shape .* differs from the image's"):
        convert(src, tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_missing_label_and_empty_folder(tmp_path):
    src = tmp_path / "src"
    make_msd(src)
    (src / "labelsTr" / "case_2.nii.gz").unlink()
    with pytest.raises(MedakaError, match=r"imagesTr/case_2.nii.gz: no label case_2.nii.gz"):
        convert(src, tmp_path / "raw")
    (tmp_path / "empty" / "imagesTr").mkdir(parents=True)
    with pytest.raises(MedakaError, match=r"imagesTr: no training images"):
        convert(tmp_path / "empty", tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_nan_image_and_empty_label(tmp_path):
    src = tmp_path / "src"
    data = make_msd(src)
    image = data["case_2"][0].copy()
    image[0, 0, 0] = np.nan
    write(src / "imagesTr" / "case_2.nii.gz", image, spacing=(0.8, 0.9, 1.5), origin=(-3.0, 2.0, 1.0))
    with pytest.raises(MedakaError, match=r"case_2.nii.gz: holds NaN or infinite values \(first in plane z=0\)"):
        convert(src, tmp_path / "raw")
    write(src / "imagesTr" / "case_2.nii.gz", data["case_2"][0], spacing=(0.8, 0.9, 1.5), origin=(-3.0, 2.0, 1.0))
    write(src / "labelsTr" / "case_2.nii.gz", np.zeros((6, 7, 8), np.uint8), spacing=(0.8, 0.9, 1.5), origin=(-3.0, 2.0, 1.0))
    with pytest.raises(MedakaError, match=r"labelsTr/case_2.nii.gz: empty label"):
        convert(src, tmp_path / "raw")
    assert_nothing_left(tmp_path / "raw")


def test_error_no_label_names_or_channel(tmp_path):
    src = tmp_path / "src"
    make_msd(src)
    with pytest.raises(MedakaError, match=r"no organ list .* --labels"):
        convert(src, tmp_path / "raw", labels=None)
    with pytest.raises(MedakaError, match=r"pass --channel-name"):
        convert(src, tmp_path / "raw", channel_names=None)


@pytest.mark.skipif(not (HIPPOCAMPUS / "imagesTr").is_dir(), reason=f"MSD hippocampus data not found at {HIPPOCAMPUS}")
def test_hippocampus_all_cases(tmp_path):
    folder = convert(HIPPOCAMPUS, tmp_path / "raw", workers=2)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == 100
    sources = sorted((HIPPOCAMPUS / "imagesTr").glob("hippocampus_*.nii.gz"))
    assert len(list((folder / "imagesTr").iterdir())) == len(sources) == 100
    for case in ("hippocampus_243", "hippocampus_065"):  # float32 label; uint8 image
        source_image, source_itk = read(HIPPOCAMPUS / "imagesTr" / f"{case}.nii.gz")
        image, itk = read(folder / "imagesTr" / f"{case}_0000.nii.gz")
        np.testing.assert_array_equal(image, source_image)
        assert itk.GetSpacing() == source_itk.GetSpacing() and itk.GetOrigin() == source_itk.GetOrigin()
        assert itk.GetDirection() == source_itk.GetDirection()
        labels = read(folder / "labelsTr" / f"{case}.nii.gz")[0]
        np.testing.assert_array_equal(labels, read(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz")[0].astype(np.uint8))
        assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}


def test_cli(tmp_path, capsys):
    from nnunet_medaka.cli import main

    make_msd(tmp_path / "src")
    args = ["convert", "msd", str(tmp_path / "src"), "-d", "4", "-n", "Hippo", "--out-dir", str(tmp_path / "raw"),
            "--labels", "anterior=1,posterior=2", "--channel-name", "MRI", "--no-progress"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "raw" / "Dataset004_Hippo")
    assert main(args) == 2
    assert "Dataset004_Hippo: already exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--labels", "anterior=1"]) == 2  # value 2 is not in the label list
    assert "label values [2] are not in the label list" in capsys.readouterr().err
    # the failed --overwrite run left the earlier dataset as it was, and no staging folder
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset004_Hippo"]
    assert len(list((tmp_path / "raw" / "Dataset004_Hippo" / "labelsTr").iterdir())) == 2
