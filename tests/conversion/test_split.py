"""split: seeded few-labels experiment datasets with an unlabeled pool and a held-out test set."""
import json
import os

import numpy as np
import pytest

from nnunet_medaka.cli import main
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.conversion.sitk_volume import write_nifti

CASES = [f"fish_{i}" for i in range(8)]


@pytest.fixture
def source(tmp_path):
    """A raw dataset of 8 labeled cases and 2 unlabeled images (one with ground truth)."""
    folder = tmp_path / "raw" / "Dataset010_Fish"
    for sub in ("imagesTr", "labelsTr", "imagesUnlabeled", "labelsUnlabeled_gt"):
        (folder / sub).mkdir(parents=True)
    for i, case in enumerate(CASES):
        write_nifti(folder / "imagesTr" / f"{case}_0000.nii.gz", np.full((3, 4, 5), i, np.int16), spacing=(1, 1, 1))
        write_nifti(folder / "labelsTr" / f"{case}.nii.gz", np.ones((3, 4, 5), np.uint8), spacing=(1, 1, 1))
    for case in ("pool_a", "pool_b"):
        write_nifti(folder / "imagesUnlabeled" / f"{case}_0000.nii.gz", np.zeros((3, 4, 5), np.int16), spacing=(1, 1, 1))
    write_nifti(folder / "labelsUnlabeled_gt" / "pool_a.nii.gz", np.ones((3, 4, 5), np.uint8), spacing=(1, 1, 1))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "brain": 1}, "numTraining": 8,
        "file_ending": ".nii.gz", "unlabeled_images": "imagesUnlabeled", "numUnlabeled": 2,
        "unlabeled_ground_truth": "labelsUnlabeled_gt", "licence": "CC-BY-4.0",
    }))
    return folder


def names(folder, suffix="_0000.nii.gz"):
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir()) if folder.is_dir() else []


def test_split_groups_manifest_and_dataset_json(source, tmp_path):
    out = split_dataset(source, dataset_id=11, dataset_name="FishK2", n_labeled=2, n_test=2, seed=1,
                        out_dir=tmp_path / "raw")
    manifest = json.loads((out / "split.json").read_text())
    labeled, unlabeled, test = manifest["labeled"], manifest["unlabeled"], manifest["test"]
    assert len(labeled) == 2 and len(test) == 2 and len(unlabeled) == 4
    assert sorted(labeled + unlabeled + test) == CASES
    assert manifest["unlabeled_from_source_pool"] == ["pool_a", "pool_b"]
    assert manifest["unlabeled_without_ground_truth"] == ["pool_b"]
    assert names(out / "imagesTr") == labeled and names(out / "labelsTr", ".nii.gz") == labeled
    assert names(out / "imagesTs") == test and names(out / "labelsTs", ".nii.gz") == test
    assert names(out / "imagesUnlabeled") == sorted(unlabeled + ["pool_a", "pool_b"])
    assert names(out / "labelsUnlabeled_gt", ".nii.gz") == sorted(unlabeled + ["pool_a"])
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["numUnlabeled"] == 6 and meta["numTest"] == 2
    assert meta["unlabeled_images"] == "imagesUnlabeled" and meta["unlabeled_ground_truth"] == "labelsUnlabeled_gt"
    assert meta["labels"] == {"background": 0, "brain": 1} and meta["licence"] == "CC-BY-4.0"
    image = out / "imagesTr" / f"{labeled[0]}_0000.nii.gz"
    assert os.stat(image).st_ino == os.stat(source / "imagesTr" / image.name).st_ino  # a hard link


def test_seeded_and_fraction(source, tmp_path):
    runs = [json.loads((split_dataset(source, dataset_id=11 + i, dataset_name=f"S{i}", fraction=0.5, n_test=1,
                                      seed=seed, out_dir=tmp_path / "raw", link=False) / "split.json").read_text())
            for i, seed in enumerate((3, 3, 4))]
    assert runs[0]["labeled"] == runs[1]["labeled"] and runs[0]["test"] == runs[1]["test"]
    assert (runs[0]["labeled"], runs[0]["test"]) != (runs[2]["labeled"], runs[2]["test"])
    assert len(runs[0]["labeled"]) == 4  # half of the 7 non-test cases, rounded
    assert runs[0]["files"] == "copies"


def test_smaller_pools_are_nested_and_keep_labeled_and_test_cases(source, tmp_path):
    """--unlabeled N: the same labeled and test cases for every N, each pool part of the next larger one (the
    draw first, the source's pool after it), the rest listed as left out."""
    manifests = {n: json.loads((split_dataset(source, dataset_id=20 + n, dataset_name=f"Pool{n}", n_labeled=2,
                                              n_test=2, seed=1, out_dir=tmp_path / "raw", n_unlabeled=n)
                                / "split.json").read_text()) for n in (0, 2, 5, 9)}
    full = json.loads((split_dataset(source, dataset_id=30, dataset_name="PoolAll", n_labeled=2, n_test=2, seed=1,
                                     out_dir=tmp_path / "raw") / "split.json").read_text())
    pools = {n: m["unlabeled"] + m["unlabeled_from_source_pool"] for n, m in manifests.items()}
    assert [len(pools[n]) for n in (0, 2, 5, 9)] == [0, 2, 5, 6]  # 4 drawn + 2 of the source's pool at most
    assert all((m["labeled"], m["test"]) == (full["labeled"], full["test"]) for m in manifests.values())
    assert set(pools[0]) <= set(pools[2]) <= set(pools[5]) <= set(pools[9])
    assert manifests[5]["unlabeled_from_source_pool"] == ["pool_a"] and sorted(pools[9]) == sorted(
        full["unlabeled"] + full["unlabeled_from_source_pool"])
    for n, m in manifests.items():
        assert sorted(m["left_out"] + pools[n]) == sorted(pools[9]) and not set(m["left_out"]) & set(pools[n])
        assert names(tmp_path / "raw" / f"Dataset{20 + n:03d}_Pool{n}" / "imagesUnlabeled") == sorted(pools[n])
        meta = json.loads((tmp_path / "raw" / f"Dataset{20 + n:03d}_Pool{n}" / "dataset.json").read_text())
        assert meta["numUnlabeled"] == len(pools[n])
    with pytest.raises(MedakaError, match="--unlabeled -1"):
        split_dataset(source, dataset_id=31, dataset_name="Bad", n_labeled=2, n_test=2, out_dir=tmp_path / "raw",
                      n_unlabeled=-1)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_labeled": 2, "fraction": 0.5, "n_test": 0}, "exactly one of n_labeled"),
    ({"n_test": 0}, "exactly one of n_labeled"),
    ({"n_labeled": 8, "n_test": 1}, r"n_labeled=8: expected 1 to 7"),
    ({"n_labeled": 1, "n_test": 8}, r"n_test=8: expected a whole number from 0 to 7"),
    ({"fraction": 1.5, "n_test": 0}, r"fraction=1.5"),
])
def test_bad_counts(source, tmp_path, kwargs, message):
    with pytest.raises(MedakaError, match=message):
        split_dataset(source, dataset_id=11, dataset_name="Bad", out_dir=tmp_path / "raw", **kwargs)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset010_Fish"]


def test_existing_target_and_missing_files(source, tmp_path):
    split_dataset(source, dataset_id=11, dataset_name="K1", n_labeled=1, n_test=0, out_dir=tmp_path / "raw")
    with pytest.raises(MedakaError, match="already exists; pass --overwrite"):
        split_dataset(source, dataset_id=11, dataset_name="K1", n_labeled=1, n_test=0, out_dir=tmp_path / "raw")
    split_dataset(source, dataset_id=11, dataset_name="K1", n_labeled=3, n_test=0, out_dir=tmp_path / "raw", overwrite=True)
    assert len(list((tmp_path / "raw" / "Dataset011_K1" / "imagesTr").iterdir())) == 3
    (source / "labelsTr" / "fish_3.nii.gz").unlink()
    with pytest.raises(MedakaError, match=r"1 file\(s\) listed but missing.*fish_3.nii.gz"):
        split_dataset(source, dataset_id=12, dataset_name="K2", n_labeled=1, n_test=0, out_dir=tmp_path / "raw")


def test_cli_by_dataset_id(source, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    assert main(["split", "10", "-d", "20", "-n", "FishSplit", "--labeled", "3", "--test", "1", "--seed", "5"]) == 0
    meta = json.loads((tmp_path / "raw" / "Dataset020_FishSplit" / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["numTest"] == 1
    assert main(["split", "99", "-d", "21", "-n", "X", "--labeled", "1"]) == 2  # no such dataset
