"""Derived nnU-Net plans: a small network/patch variant for CPU runs (demo, tests, smoke checks), and a narrower
network of the same plans (a smaller student distilled from its teacher).

The variants keep the source configuration's ``data_identifier``, so they train on the arrays that
``nnUNetv2_preprocess`` already wrote; only the network (and, for the small variant, the patch) shrinks. The small
variant's results are not comparable to a full nnU-Net run and the demo says so.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Optional, Sequence

from nnunet_medaka.files import write_json_atomic
from nnunet_medaka.errors import MedakaError

__all__ = ["width_plans_name", "write_small_plans", "write_width_plans"]


def write_small_plans(
    preprocessed_dataset_folder: Path | str,
    *,
    source_plans: str = "nnUNetPlans",
    target_plans: str = "nnUNetPlansSmall",
    configuration: str = "3d_fullres",
    patch_size: Optional[Sequence[int]] = (32, 32, 32),
    features_per_stage: Sequence[int] = (8, 16, 32),
    batch_size: int = 2,
) -> Path:
    """Write ``<target_plans>.json``: the source plans with a smaller network and patch.

    Parameters
    ----------
    preprocessed_dataset_folder : path
        ``nnUNet_preprocessed/DatasetXXX_Name`` holding ``<source_plans>.json``.
    source_plans, target_plans : str
        Plans names (file stems). nnU-Net requires the ``plans_name`` inside to equal the stem.
    configuration : str
        The configuration to shrink; the others are copied unchanged.
    patch_size : sequence of int or None
        New patch size, rounded up per axis to a multiple of the network's total stride; None keeps the source
        configuration's patch (nnU-Net's choice for this dataset), rounded the same way.
    features_per_stage : sequence of int
        Feature maps per encoder stage; its length sets the number of stages.
    batch_size : int
        New batch size.

    Returns
    -------
    pathlib.Path
        The written plans file.

    Raises
    ------
    MedakaError
        If the source plans or configuration is missing, or sizes do not fit the network.
    """
    folder = Path(preprocessed_dataset_folder)
    source = folder / f"{source_plans}.json"
    if not source.is_file():
        raise MedakaError(f"{source}: no such plans file; run nnUNetv2_plan_and_preprocess for this dataset first")
    plans = json.loads(source.read_text())
    if configuration not in plans.get("configurations", {}):
        raise MedakaError(f"{source}: has no configuration {configuration!r} (has: {', '.join(plans['configurations'])})")
    config = plans["configurations"][configuration]
    if "architecture" not in config:
        raise MedakaError(f"{source}: configuration {configuration!r} inherits its network; name a full configuration")
    arch = copy.deepcopy(config["architecture"]["arch_kwargs"])
    n_stages = len(features_per_stage)
    if n_stages < 2 or n_stages > arch["n_stages"]:
        raise MedakaError(f"features_per_stage {list(features_per_stage)}: need 2 to {arch['n_stages']} stages for this dataset")
    if patch_size is None:
        patch_size = config["patch_size"]
    if len(patch_size) != len(config["patch_size"]):
        raise MedakaError(f"patch_size {list(patch_size)}: needs {len(config['patch_size'])} axes for {configuration!r}")
    strides = arch["strides"][:n_stages]
    total_stride = [math.prod(s[axis] for s in strides) for axis in range(len(patch_size))]
    patch = [max(t, math.ceil(p / t) * t) for p, t in zip(patch_size, total_stride)]

    arch.update(
        n_stages=n_stages,
        features_per_stage=list(features_per_stage),
        kernel_sizes=arch["kernel_sizes"][:n_stages],
        strides=strides,
        n_conv_per_stage=arch["n_conv_per_stage"][:n_stages],
        n_conv_per_stage_decoder=arch["n_conv_per_stage_decoder"][: n_stages - 1],
    )
    small = copy.deepcopy(plans)
    small["plans_name"] = target_plans
    small_config = small["configurations"][configuration]
    small_config["architecture"]["arch_kwargs"] = arch
    small_config["patch_size"] = patch
    small_config["batch_size"] = int(batch_size)
    target = folder / f"{target_plans}.json"
    write_json_atomic(target, small)
    return target


def width_plans_name(plans: str, width: float) -> str:
    """The plans name of ``plans`` narrowed to ``width``: ``nnUNetPlansW050`` for 0.5 of ``nnUNetPlans``."""
    return f"{plans}W{round(width * 100):03d}"


def write_width_plans(preprocessed_dataset_folder: Path | str, *, source_plans: str, configuration: str,
                      width: float, target_plans: Optional[str] = None) -> Path:
    """Write the source plans with every stage of ``configuration``'s network ``width`` times as wide.

    Same stages, kernels, strides, patch and batch, so the narrower network has the same deep-supervision outputs
    and distils from a teacher of the source plans scale by scale; features are rounded, at least 1 per stage.

    Parameters
    ----------
    preprocessed_dataset_folder : path
        ``nnUNet_preprocessed/DatasetXXX_Name`` holding ``<source_plans>.json``.
    source_plans : str
    configuration : str
    width : float
        In (0, 1]: the share of each stage's feature maps kept.
    target_plans : str, optional
        Default `width_plans_name`.

    Returns
    -------
    pathlib.Path
        The written plans file.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise MedakaError(f"width {width!r}: expected a share of the feature maps in (0, 1]")
    folder = Path(preprocessed_dataset_folder)
    source = folder / f"{source_plans}.json"
    if not source.is_file():
        raise MedakaError(f"{source}: no such plans file; build the student dataset (or plan this one) first")
    plans = json.loads(source.read_text())
    config = plans.get("configurations", {}).get(configuration)
    if config is None or "architecture" not in config:
        raise MedakaError(f"{source}: has no full configuration {configuration!r} to narrow")
    target_plans = target_plans or width_plans_name(source_plans, width)
    narrow = copy.deepcopy(plans)
    narrow["plans_name"] = target_plans
    arch = narrow["configurations"][configuration]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [max(1, round(f * width)) for f in arch["features_per_stage"]]
    target = folder / f"{target_plans}.json"
    write_json_atomic(target, narrow)
    return target
