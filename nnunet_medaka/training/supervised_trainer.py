"""``SupervisedTrainer``: stock nnU-Net training with the schedule from the plugin config.

Teachers and every baseline are trained with it, so that all comparisons share one schedule
mechanism (``num_epochs``, ``iterations_per_epoch``, ``val_iterations_per_epoch``, ``mirroring``).
"""
from __future__ import annotations

import json
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_medaka.config import RESOLVED_FILE_NAME, MedakaConfig, load_config, write_json_atomic


class SupervisedTrainer(nnUNetTrainer):
    """nnUNetTrainer whose schedule and validation mirroring come from ``nnunet_medaka.json``."""

    # nnU-Net fills my_init_kwargs from this exact signature: no extra parameters allowed.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.medaka_config: MedakaConfig = MedakaConfig()
        self.medaka_config_path = None

    def initialize(self):
        # Before super(): the poly LR schedule built there reads num_epochs.
        if not self.was_initialized:
            self.medaka_config, self.medaka_config_path = load_config(self.preprocessed_dataset_folder_base)
            self.apply_schedule(self.medaka_config)
        super().initialize()
        self.record_run_settings(self.run_settings())

    def apply_schedule(self, config: MedakaConfig) -> None:
        self.num_epochs = config.num_epochs
        self.num_iterations_per_epoch = config.iterations_per_epoch
        self.num_val_iterations_per_epoch = config.val_iterations_per_epoch

    def run_settings(self) -> dict:
        """What this run was configured with; subclasses add their own entries."""
        return {
            "trainer": self.__class__.__name__,
            "config_file": str(self.medaka_config_path) if self.medaka_config_path else None,
            "config": self.medaka_config.to_dict(),
        }

    def record_run_settings(self, settings: dict) -> None:
        """Write the resolved settings next to the checkpoints and into the training log."""
        if self.local_rank != 0:
            return
        os.makedirs(self.output_folder, exist_ok=True)
        write_json_atomic(os.path.join(self.output_folder, RESOLVED_FILE_NAME), settings)
        self.print_to_log_file("nnunet_medaka settings:", json.dumps(settings, sort_keys=True), also_print_to_console=True)

    def perform_actual_validation(self, save_probabilities: bool = False):
        # The flag governs validation only: checkpoint_final is already saved with the real mirror axes,
        # so nnUNetv2_predict still mirrors by default.
        if self.medaka_config.mirroring:
            return super().perform_actual_validation(save_probabilities)
        axes = self.inference_allowed_mirroring_axes
        self.inference_allowed_mirroring_axes = None
        try:
            return super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes
