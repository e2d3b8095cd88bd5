"""The time estimate of ``run``/``experiment``: a few measured iterations of the preset's network, and a warning
naming the settings that shorten a training of over an hour."""
import torch

from helpers import LABELS, make_raw_dataset
from nnunet_medaka.training.estimate import describe, estimate_training, estimate_warning
from nnunet_medaka.training.presets import resolve_settings

DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": LABELS, "file_ending": ".nii.gz"}


def test_the_estimate_measures_the_presets_network(tmp_path):
    raw = make_raw_dataset(tmp_path, 991, "Est", n_cases=3)  # 36 x 40 x 40 images
    settings = resolve_settings("cpu-demo")  # 2d, nnU-Net's patch: here the median in-plane shape
    threads = torch.get_num_threads()
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    estimate = estimate_training(settings, raw, DATASET_JSON, threads=1)
    # the caller's torch generator and threads are as they were (run pseudo-labels in this process afterwards)
    assert torch.equal(torch.rand(1), expected) and torch.get_num_threads() == threads
    assert estimate["patch"] == [40, 40] and estimate["batch"] == 8 and estimate["threads"] == 1
    assert estimate["iterations"] == 28 * 50 and estimate["seconds_per_iteration"] > 0
    assert estimate["seconds"] == estimate["seconds_per_iteration"] * estimate["iterations"]
    quick = estimate_training(resolve_settings("quick"), raw, DATASET_JSON, threads=1)
    assert quick["patch"] == [56, 40]  # the preset's own patch, a multiple of the network's stride 8
    lines = describe(settings, raw, DATASET_JSON, threads=1, dry_run=True)
    assert lines[0].startswith("time estimate: ~") and "1400 iterations" in lines[0]
    assert describe(settings, raw, DATASET_JSON, threads=1, dry_run=False) == lines[1:]  # the real run: warnings only


def test_a_training_of_over_an_hour_is_warned_about_with_the_fix():
    estimate = {"seconds": 7200.0, "seconds_per_iteration": 2.4, "iterations": 3000, "patch": [256, 256],
                "batch": 8, "features": [16, 32, 64, 128]}
    warning = estimate_warning(estimate)
    assert "about 2.0 h on this CPU" in warning and "patch 256x256" in warning
    assert "num_epochs" in warning and "small_plans" in warning and "patch_size" in warning
    assert estimate_warning({**estimate, "seconds": 3000.0}) is None
