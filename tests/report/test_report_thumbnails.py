"""Thumbnails: three orthogonal slices through the organs' centre, never larger than the cap."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from nnunet_medaka.report.thumbnails import label_colour, mid_slices, write_case_thumbnail


def test_mid_slices_go_through_the_organs_and_are_capped():
    image = np.zeros((20, 600, 300), np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[4:8, 100:140, 200:220] = 1
    labels[10:12, 0:10, 0:10] = 9  # the ignore label: not an organ, not in the centre
    views = mid_slices(image, labels, (2.0, 0.5, 0.5), ignore_label=9, max_pixels=256)
    assert [v["name"] for v in views] == ["axial", "coronal", "sagittal"]
    assert [v["index"] for v in views] == ["z=6", "y=120", "x=210"]
    for view in views:
        assert max(view["image"].shape) <= 256 and view["labels"].shape == view["image"].shape
        assert (view["labels"] == 1).any()
    assert views[0]["image"].shape == (200, 150) and views[0]["aspect"] == 1.5  # strides 3 (rows) and 2 (columns)
    assert views[1]["aspect"] == 2.0 / (0.5 * 2)  # z rows (stride 1) over x columns (stride 2)
    empty = mid_slices(image, None, (1, 1, 1))
    assert [v["index"] for v in empty] == ["z=10", "y=300", "x=150"] and empty[0]["labels"] is None


def test_thumbnail_png_and_consistent_colours(tmp_path):
    image = np.random.default_rng(0).normal(size=(16, 40, 50)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[5:10, 10:20, 10:30] = 2
    for array, name in ((image, "img.nii.gz"), (labels, "seg.nii.gz")):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    out = write_case_thumbnail(tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz", tmp_path / "t.png",
                               {"gut": 1, "liver": 2}, ignore_label=3, title="case <1>")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert label_colour(2) == label_colour(2) != label_colour(1)
    only_labels = write_case_thumbnail(None, tmp_path / "seg.nii.gz", tmp_path / "l.png", {"liver": 2})
    assert only_labels.is_file()
