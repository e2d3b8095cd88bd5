"""How long one training of a preset takes on this machine, measured before any work.

The preset's network (nnU-Net's PlainConvUNet with the preset's features, 3x3 convolutions, instance norm) trains a
few iterations on a random batch of the preset's batch size and patch, on the CPU threads one training would get;
the time per iteration times the preset's iterations is the estimate. Data augmentation, validation and
prediction are not in it, so a real training takes somewhat longer. Where the preset leaves the patch to nnU-Net,
the patch is the median image shape of the labeled cases, rounded as nnU-Net rounds it (an estimate before
planning; the plans may choose another).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["describe", "disk_estimate", "estimate_training", "estimate_warning", "format_estimate"]

# nnU-Net's default feature ladders when a preset keeps nnU-Net's own plans
_DEFAULT_FEATURES = {"2d": (32, 64, 128, 256, 512, 512, 512), "3d": (32, 64, 128, 256, 320, 320)}
_MAX_3D_PATCH = 160  # nnU-Net's 3d plans keep patches near this size per axis


def _median_shape(images: Path, ending: str, dims: int) -> list:
    import SimpleITK as sitk

    shapes = []
    for f in sorted(images.glob(f"*_0000{ending}"))[:50]:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        reader.ReadImageInformation()
        shapes.append(tuple(reversed(reader.GetSize()))[-dims:])  # (z, y, x)
    return [int(statistics.median(s[i] for s in shapes)) for i in range(dims)] if shapes else [64] * dims


def _time_iterations(net, batch: int, channels: int, patch: list, n_classes: int, repeats: int) -> list:
    """Seconds of each training step (forward, cross-entropy, backward, SGD) on a random batch; the first warms up."""
    import torch

    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, *patch, generator=generator)
    y = torch.randint(0, n_classes, (batch, *patch), generator=generator)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
        if times[-1] > 60 or (i >= 1 and times[-1] > 5):  # a slow iteration measured once is answer enough
            break
    return times


def estimate_training(settings: dict, raw: Path, dataset_json: dict, *, threads: Optional[int],
                      repeats: int = 2) -> dict:
    """Measured seconds per training iteration of the preset's network on this CPU, and the training's total.

    Returns
    -------
    dict
        ``seconds_per_iteration``, ``iterations``, ``seconds`` (iterations x seconds per iteration), ``patch``,
        ``batch``, ``features``, ``threads``.
    """
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    dims = 2 if settings["configuration"] == "2d" else 3
    small = settings["small_plans"] or {}
    features = list(small.get("features_per_stage") or _DEFAULT_FEATURES[f"{dims}d"])
    stride = 2 ** (len(features) - 1)
    patch = small.get("patch_size") or _median_shape(raw / "imagesTr", dataset_json["file_ending"], dims)
    patch = [min(-(-int(p) // stride) * stride, _MAX_3D_PATCH if dims == 3 else 1 << 30) for p in patch]
    patch = [max(p, stride) for p in patch]
    batch = int(small.get("batch_size") or (12 if dims == 2 else 2))
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    norm = torch.nn.InstanceNorm2d if dims == 2 else torch.nn.InstanceNorm3d
    n_classes = len(dataset_json["labels"])
    saved_threads = torch.get_num_threads()
    # the network's initialisation leaves torch's global generator as it was, and the thread count is restored
    with torch.random.fork_rng(devices=[]):
        try:
            torch.set_num_threads(threads or saved_threads)
            times = _time_iterations(PlainConvUNet(
                len(dataset_json["channel_names"]), len(features), features, conv, 3, [1] + [2] * (len(features) - 1),
                2, n_classes, 2, conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}),
                batch, len(dataset_json["channel_names"]), patch, n_classes, repeats)
        finally:
            torch.set_num_threads(saved_threads)
    per_iteration = statistics.median(times[1:] or times)
    iterations = int(settings["num_epochs"]) * int(settings["iterations_per_epoch"])
    return {"seconds_per_iteration": per_iteration, "iterations": iterations, "seconds": per_iteration * iterations,
            "patch": patch, "batch": batch, "features": features, "threads": threads or saved_threads}


def estimate_warning(estimate: dict, *, limit_s: float = 3600) -> Optional[str]:
    """A warning naming the settings that shorten a CPU training estimated over ``limit_s``, else None."""
    if estimate["seconds"] <= limit_s:
        return None
    return (f"warning: one training would take about {estimate['seconds'] / 3600:.1f} h on this CPU "
            f"({estimate['iterations']} iterations x {estimate['seconds_per_iteration']:.1f} s, patch "
            f"{'x'.join(map(str, estimate['patch']))}, batch {estimate['batch']}, features {estimate['features']}); "
            "shorten it with --set num_epochs=N / iterations_per_epoch=N, or a smaller network or patch: "
            "--set small_plans='{\"target_plans\": \"nnUNetPlansSmall\", \"features_per_stage\": [16, 32, 64, 128], "
            "\"patch_size\": [...], \"batch_size\": 4}'")


def format_estimate(estimate: dict) -> str:
    return (f"time estimate: ~{estimate['seconds'] / 60:.0f} min of training per model on this machine "
            f"({estimate['iterations']} iterations x {estimate['seconds_per_iteration']:.2f} s, measured on the "
            f"preset's network with a random batch of {estimate['batch']} x {'x'.join(map(str, estimate['patch']))} "
            f"and {estimate['threads']} thread(s); augmentation, validation and prediction not included)")


def describe(settings: dict, raw: Path, dataset_json: dict, *, threads: Optional[int], dry_run: bool) -> Sequence[str]:
    """What ``run`` and ``experiment`` say before work on a CPU: with ``dry_run`` the estimate, and in any case the
    warning when one training would take over an hour."""
    estimate = estimate_training(settings, raw, dataset_json, threads=threads)
    warning = estimate_warning(estimate)
    return [*([format_estimate(estimate)] if dry_run else []), *([warning] if warning else [])]


def disk_estimate(raw: Path, unlabeled: Path, settings: dict, n_classes: int) -> int:
    """Bytes a ``run`` of ``settings`` on ``raw`` writes, roughly: compressed NIfTI expands ~3x to float32 arrays,
    for the teacher's dataset and again for the student's; ``--npz`` keeps one float32 map per class of every
    labeled case; a checkpoint per teacher fold, the supervised baseline and the student."""
    size = lambda folder: sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    labeled = size(raw / "imagesTr")
    return int((labeled + size(unlabeled)) * 3 * 2 + labeled * 3 * n_classes + 50e6 * (settings["cv_folds"] + 3))
