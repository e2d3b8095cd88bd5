"""Training presets as plain data: the schedules and network variants that ``run`` and ``experiment`` read.

Each preset is a dict of
    configuration         nnU-Net configuration to plan, preprocess and train ("2d", "3d_fullres")
    small_plans           None (nnU-Net's own plans for that configuration) or keyword arguments of
                          `nnunet_medaka.training.plans.write_small_plans` (network width, patch, batch)
    num_epochs, iterations_per_epoch, val_iterations_per_epoch, initial_lr, mirroring, cpu_threads,
    final_validation      config keys (`nnunet_medaka.config.MedakaConfig`) written to the dataset's config file
    fold                  the nnU-Net fold to train ("all": every labeled case; the test set is held out anyway)
    measured              where the numbers behind the preset come from (benchmarks/README.md), or None

``quick`` is the CPU protocol chosen by measurement on MSD hippocampus (benchmarks/protocol_hippocampus.py);
``cpu-demo`` is the schedule of ``nnunet-medaka demo`` on synthetic phantoms (minutes on a CPU); ``full`` is nnU-Net's own schedule.
"""
from __future__ import annotations

import copy

from nnunet_medaka.errors import MedakaError

__all__ = ["PRESETS", "config_assignments", "get_preset"]

PRESETS: dict = {
    "cpu-demo": {
        # nnU-Net's 2d configuration with a narrow network: on 2 CPU cores 3d_fullres learned nothing but the eyes
        # in 350 iterations, while 2d reached mean Dice ~0.6 on 9 synthetic organs (README, "The demo")
        "configuration": "2d",
        "small_plans": {"target_plans": "nnUNetPlansDemo", "features_per_stage": [16, 32, 64, 128],
                        "batch_size": 8, "patch_size": None},
        "num_epochs": 28, "iterations_per_epoch": 50, "val_iterations_per_epoch": 5,
        "initial_lr": 0.1, "mirroring": False, "cpu_threads": None, "final_validation": True, "fold": "all",
        "measured": "synthetic phantoms, 6 labeled / 4 test specimens, 2 folds: README, 'The demo'",
    },
    "quick": {
        # The CPU protocol chosen by measurement on MSD hippocampus (20 labeled, 30 test cases, seeds 0-2;
        # benchmarks/README.md): it meets the protocol's goal, see "measured".
        "configuration": "2d",
        "small_plans": {"target_plans": "nnUNetPlansQuick", "features_per_stage": [16, 32, 64, 128],
                        "batch_size": 8, "patch_size": [56, 40]},
        "num_epochs": 30, "iterations_per_epoch": 100, "val_iterations_per_epoch": 5,
        # final_validation stays on: `run` needs the cross-validation predictions (the protocol benchmark turns it
        # off for fold "all", whose validation cases are its training cases)
        "initial_lr": 0.05, "mirroring": False, "cpu_threads": None, "final_validation": True, "fold": "all",
        "measured": ("MSD hippocampus, 20 labeled / 30 test cases, seeds 0-2, fold all, 1 torch thread each, 3 trainings "
                     "side by side on a 2-core CPU: mean Dice 0.807 +- 0.007 (anterior 0.814 +- 0.005, posterior "
                     "0.800 +- 0.009), no label at 0, 1021-1075 s training per model; meets the goal (>= 0.80, spread "
                     "<= 0.03, <= 20 min). benchmarks/README.md"),
    },
    "full": {
        "configuration": "3d_fullres",
        "small_plans": None,
        "num_epochs": 1000, "iterations_per_epoch": 250, "val_iterations_per_epoch": 50,
        "initial_lr": 0.01, "mirroring": True, "cpu_threads": None, "final_validation": True, "fold": 0,
        "measured": "nnU-Net's own schedule (not run here: no GPU)",
    },
}

_CONFIG_KEYS = ("num_epochs", "iterations_per_epoch", "val_iterations_per_epoch", "initial_lr", "mirroring",
                "cpu_threads", "final_validation")


def get_preset(name: str) -> dict:
    """A copy of the named preset.

    Raises
    ------
    MedakaError
        If there is no such preset.
    """
    if name not in PRESETS:
        raise MedakaError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def config_assignments(preset: dict) -> list:
    """The preset's config-file keys as ``(key, value)`` pairs for `nnunet_medaka.config.update_config_file`."""
    return [(k, preset[k]) for k in _CONFIG_KEYS]
