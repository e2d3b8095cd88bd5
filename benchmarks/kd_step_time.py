"""Step time and peak memory of KDTrainer vs stock nnUNetTrainer on identical batches, printed as JSON.

Both trainers are real nnU-Net trainers built from one synthetic plans file (nnU-Net's default PlainConvUNet for the
patch size: 32 features doubling to 320, stages until the feature map is 4 voxels, stride 2) and run
``train_step`` on the same in-memory batch (no data loading). Both are built and warmed up (which includes
torch.compile), each one's peak GPU memory is taken without the other's, then their steps are timed interleaved.
The KD teacher is a random-weight model folder of the same architecture in a temporary nnUNet_results (weights do
not change the cost).

Examples
--------
GPU, nnU-Net's default compile, the trainer's default teacher settings::

    python benchmarks/kd_step_time.py --device cuda --patch 128 128 128 --batch 2 --classes 7 --compile

CPU with a small patch (what CI can run)::

    python benchmarks/kd_step_time.py --device cpu --patch 32 32 32 --steps 5 --warmup 2

Teacher variants (precision, memory format, autocast, compile) override KDTrainer's defaults: see ``--help``.
Progress goes to stderr; stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATASET = "Dataset999_KDBench"
PLANS = "KDBenchPlans"


def default_architecture(patch, base=32, max_features=320, min_size=4):
    n_stages = 1 + min(int(math.log2(p // min_size)) for p in patch)
    features = [min(base * 2 ** i, max_features) for i in range(n_stages)]
    strides = [[1] * len(patch)] + [[2] * len(patch)] * (n_stages - 1)
    dims = len(patch)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n_stages, "features_per_stage": features,
            "conv_op": f"torch.nn.modules.conv.Conv{dims}d", "kernel_sizes": [[3] * dims] * n_stages,
            "strides": strides, "n_conv_per_stage": [2] * n_stages, "n_conv_per_stage_decoder": [2] * (n_stages - 1),
            "conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def write_fixture(root: Path, args) -> tuple[dict, dict, Path]:
    """Synthetic plans/dataset.json in nnUNet_preprocessed and a random-weight teacher model folder."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    patch = list(args.patch)
    plans = {
        "dataset_name": DATASET, "plans_name": PLANS, "original_median_spacing_after_transp": [1.0] * len(patch),
        "original_median_shape_after_transp": [2 * p for p in patch], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(range(len(patch))), "transpose_backward": list(range(len(patch))),
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0,
                                                              "percentile_00_5": -1.0, "percentile_99_5": 1.0, "std": 1.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": "bench", "preprocessor_name": "DefaultPreprocessor", "batch_size": args.batch,
            "patch_size": patch, "median_image_size_in_voxels": [2 * p for p in patch], "spacing": [1.0] * len(patch),
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": default_architecture(patch), "batch_dice": False}},
    }
    labels = {"background": 0, **{f"organ{i}": i for i in range(1, args.classes)}}
    dataset_json = {"channel_names": {"0": "CT-like"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    pre = root / "nnUNet_preprocessed" / DATASET
    (pre / "bench").mkdir(parents=True)
    (pre / "bench" / "placeholder.b2nd").touch()  # nnU-Net infers the dataset class from file endings
    (pre / f"{PLANS}.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps(dataset_json))
    teacher = root / "nnUNet_results" / DATASET / f"nnUNetTrainer__{PLANS}__3d_fullres"
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    for fold in range(args.teacher_folds):
        (teacher / f"fold_{fold}").mkdir(parents=True)
        net = nnUNetTrainer.build_network_architecture(pm, cm, 1, args.classes, enable_deep_supervision=False)
        torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                    "init_args": {"configuration": "3d_fullres"}}, teacher / f"fold_{fold}" / "checkpoint_final.pth")
    (teacher / "plans.json").write_text(json.dumps(plans))
    (teacher / "dataset.json").write_text(json.dumps(dataset_json))
    return plans, dataset_json, teacher


def make_batch(trainer, args):
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    patch = list(args.patch)
    data = torch.randn(args.batch, 1, *patch, generator=g)
    scales = trainer._get_deep_supervision_scales()
    target = [torch.randint(0, args.classes, (args.batch, 1, *[int(round(p * s)) for p, s in zip(patch, sc)]),
                            generator=g, dtype=torch.int16) for sc in scales]
    if data.device.type == "cpu" and torch.cuda.is_available() and args.device == "cuda":
        data = data.pin_memory()
        target = [t.pin_memory() for t in target]
    return {"data": data, "target": target, "keys": np.array([f"case_{i}" for i in range(args.batch)])}


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def build(trainer_class, plans, dataset_json, args, device, runtime=None):
    import copy

    trainer = trainer_class(dict(copy.deepcopy(plans), continue_training=False), "3d_fullres", 0, dataset_json, device)
    if runtime is not None:
        trainer.teacher_runtime = runtime
    trainer.initialize()
    trainer.network.train()
    return trainer, make_batch(trainer, args)


def timed_step(trainer, batch, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    trainer.train_step(batch)
    sync(device)
    return 1000 * (time.perf_counter() - t0)


def peak_step_memory(trainer, batch, device, resident_before: int, n: int = 3) -> float:
    """GiB this trainer needs at its peak: max allocated during its steps minus what other objects held before."""
    import torch

    torch.cuda.reset_peak_memory_stats()
    for _ in range(n):
        trainer.train_step(batch)
    sync(device)
    return (torch.cuda.max_memory_allocated() - resident_before) / 2 ** 30


def measure(plans, dataset_json, args, device, runtime) -> dict:
    """Build and warm up both trainers, take each one's peak memory alone, then time their steps interleaved.

    Interleaving (plain, KD, KD, plain, ...) exposes both to the same background load, which matters on a shared
    CPU; on a GPU it changes nothing.
    """
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_medaka.training.kd_trainer import KDTrainer

    on_cuda = device.type == "cuda"
    result = {"plain": {}, "kd": {}}
    plain, plain_batch = build(nnUNetTrainer, plans, dataset_json, args, device)
    for _ in range(args.warmup):
        plain.train_step(plain_batch)
    if on_cuda:
        result["plain"]["peak_mem_gib"] = peak_step_memory(plain, plain_batch, device, 0)
    resident = torch.cuda.memory_allocated() if on_cuda else 0
    kd, kd_batch = build(KDTrainer, plans, dataset_json, args, device, runtime)
    for _ in range(args.warmup):
        kd.train_step(kd_batch)
    if on_cuda:
        result["kd"]["peak_mem_gib"] = peak_step_memory(kd, kd_batch, device, resident)
    times = {"plain": [], "kd": []}
    for i in range(args.steps):
        order = (("plain", plain, plain_batch), ("kd", kd, kd_batch))
        for name, trainer, batch in (order if i % 2 == 0 else order[::-1]):
            times[name].append(timed_step(trainer, batch, device))
    for name, trainer in (("plain", plain), ("kd", kd)):
        result[name].update(median_ms=statistics.median(times[name]), min_ms=min(times[name]),
                            steps_ms=[round(t, 2) for t in times[name]], compiled=trainer._do_i_compile())
    result["kd"]["teacher_runtime"] = dataclasses.asdict(kd.teacher.ensemble.runtime)
    result["kd"]["teacher_param_mib"] = sum(p.numel() * p.element_size() for p in kd.teacher.ensemble.parameters()) / 2 ** 20
    result["kd"]["teacher_forward_ms"] = time_teacher(kd, kd_batch, args, device)
    result["kd"]["ds_targets"] = compare_ds_targets(kd, kd_batch, args, device)
    return result


def time_teacher(trainer, batch, args, device) -> float:
    import torch

    from nnunet_medaka.training.kd_loss import teacher_probabilities

    x = batch["data"].to(device)
    times = []
    for i in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            teacher_probabilities(trainer.teacher.ensemble(x), 2.0)
        sync(device)
        if i >= args.warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def compare_ds_targets(trainer, batch, args, device) -> dict:
    """Cost of the KD targets for all DS scales: pooled full-resolution teacher probabilities vs teacher DS heads."""
    import torch
    from torch._dynamo.eval_frame import OptimizedModule

    from nnunet_medaka.training.kd_loss import pool_probabilities, teacher_probabilities

    x = batch["data"].to(device)
    shapes = [t.shape[2:] for t in batch["target"]]
    nets = [n._orig_mod if isinstance(n, OptimizedModule) else n for n in trainer.teacher.ensemble.networks]
    runtime = trainer.teacher.ensemble.runtime
    x_t = x.to(runtime.dtype())

    def pooled():
        probs = teacher_probabilities([n(x_t) for n in nets], 2.0)
        out = [probs]
        for s in shapes[1:]:
            out.append(pool_probabilities(out[-1], s))
        return out

    def heads():
        for n in nets:
            n.decoder.deep_supervision = True
        try:
            per_net = [n(x_t) for n in nets]
            return [teacher_probabilities([o[i] for o in per_net], 2.0) for i in range(len(shapes))]
        finally:
            for n in nets:
                n.decoder.deep_supervision = False

    result = {}
    for name, fn in (("pooled_ms", pooled), ("heads_ms", heads)):
        times = []
        for i in range(args.warmup + args.steps):
            sync(device)
            t0 = time.perf_counter()
            with torch.inference_mode(), torch.autocast(device.type, enabled=runtime.autocast and device.type == "cuda"):
                fn()
            sync(device)
            if i >= args.warmup:
                times.append(1000 * (time.perf_counter() - t0))
        result[name] = statistics.median(times)
    result["note"] = "eager teacher networks, all DS scales, random weights: cost only"
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
    p.add_argument("--patch", type=int, nargs="+", default=None, help="patch size (default 128³ on CUDA, 32³ on CPU)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=7, help="output classes including background")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 15 on CUDA, 2 on CPU)")
    p.add_argument("--compile", action="store_true", help="nnUNet_compile=t for both trainers (CUDA only)")
    p.add_argument("--teacher-folds", type=int, default=1, help="ensemble size")
    p.add_argument("--teacher-precision", choices=["fp32", "fp16", "bf16"], help="override KDTrainer's default")
    p.add_argument("--teacher-channels-last", choices=["on", "off"], help="override KDTrainer's default")
    p.add_argument("--teacher-autocast", choices=["on", "off"], help="override KDTrainer's default")
    p.add_argument("--teacher-compile", choices=["on", "off"], help="override KDTrainer's default")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from nnunet_medaka.environment import plugin_environ

    on_cuda = torch.cuda.is_available() if args.device is None else args.device == "cuda"
    args.device = "cuda" if on_cuda else "cpu"
    args.patch = args.patch or ([128, 128, 128] if on_cuda else [32, 32, 32])
    args.steps = args.steps or (30 if on_cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (15 if on_cuda else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="kdbench_") as tmp:
        root = Path(tmp)
        os.environ.update(plugin_environ(root=root))
        os.environ["nnUNet_compile"] = "t" if args.compile else "f"
        config = root / "kd.json"
        with contextlib.redirect_stdout(sys.stderr):
            plans, dataset_json, teacher = write_fixture(root, args)
            config.write_text(json.dumps({"teacher": str(teacher), "teacher_folds": list(range(args.teacher_folds))}))
            os.environ["nnunet_medaka_config"] = str(config)
            from nnunet_medaka.training.teacher import default_runtime

            runtime = default_runtime(device, compile_student=args.compile and device.type == "cuda")
            overrides = {k: v for k, v in {
                "precision": args.teacher_precision,
                "channels_last": None if args.teacher_channels_last is None else args.teacher_channels_last == "on",
                "autocast": None if args.teacher_autocast is None else args.teacher_autocast == "on",
                "compile": None if args.teacher_compile is None else args.teacher_compile == "on"}.items() if v is not None}
            runtime = dataclasses.replace(runtime, **overrides)
            measured = measure(plans, dataset_json, args, device, runtime)
    plain, kd = measured["plain"], measured["kd"]
    cpu_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores)"
    report = {
        "benchmark": "kd_step_time", "device": torch.cuda.get_device_name(0) if on_cuda else cpu_name,
        "torch": torch.__version__, "patch": args.patch, "batch": args.batch, "classes": args.classes,
        "network": {k: plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"][k]
                    for k in ("n_stages", "features_per_stage")},
        "amp": on_cuda, "compile_requested": args.compile, "steps": args.steps, "warmup": args.warmup,
        "teacher_folds": args.teacher_folds,
        "plain": plain, "kd": kd,
        "ratio_median": kd["median_ms"] / plain["median_ms"],
    }
    if on_cuda:
        report["mem_overhead_gib"] = kd["peak_mem_gib"] - plain["peak_mem_gib"]
        report["mem_overhead_pct"] = 100 * report["mem_overhead_gib"] / plain["peak_mem_gib"]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
