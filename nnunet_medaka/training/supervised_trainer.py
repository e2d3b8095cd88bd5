"""``SupervisedTrainer``: stock nnU-Net training with the schedule from the plugin config.

Teachers and every baseline are trained with it, so that all comparisons share one schedule
mechanism (``num_epochs``, ``iterations_per_epoch``, ``val_iterations_per_epoch``, ``mirroring``), the same
``initial_lr`` and the same seeding (``seed``: Python, numpy and torch before the network is built, again before
nnU-Net's data loaders are made, and one deterministic seed per data-augmentation worker; see
`nnunet_medaka.training.seeding`).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunet_medaka.config import RESOLVED_FILE_NAME, MedakaConfig, load_config
from nnunet_medaka.conversion.raw_dataset import PSEUDO_CASES_KEY
from nnunet_medaka.files import write_json_atomic
from nnunet_medaka.training.seeding import (FINETUNE_LOADER_STREAM, NETWORK_STREAM, TRAIN_LOADER_STREAM,
                                            VAL_LOADER_STREAM, derived_seed, seed_everything, worker_seeds)


class SupervisedTrainer(nnUNetTrainer):
    """nnUNetTrainer whose schedule and validation mirroring come from ``nnunet_medaka.json``."""

    # nnU-Net fills my_init_kwargs from this exact signature: no extra parameters allowed.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.medaka_config: MedakaConfig = MedakaConfig()
        self.medaka_config_path = None
        self.train_loader = None  # nnU-Net's data loader inside the training augmenter, kept for the fine-tune
        self.finetuning = False

    def initialize(self):
        # Before super(): the poly LR schedule built there reads num_epochs.
        if not self.was_initialized:
            self.medaka_config, self.medaka_config_path = load_config(self.preprocessed_dataset_folder_base)
            self.apply_schedule(self.medaka_config)
            if self.device.type == "cpu" and self.medaka_config.cpu_threads is not None:
                # nnUNetv2_train sets every core; on a shared machine fewer threads avoid oversubscription
                torch.set_num_threads(self.medaka_config.cpu_threads)
            if self.medaka_config.seed is not None:  # before the network (and, in KDTrainer, the teacher) is built
                seed_everything(derived_seed(self.medaka_config.seed, NETWORK_STREAM))
        super().initialize()
        self.record_run_settings(self.run_settings())

    def apply_schedule(self, config: MedakaConfig) -> None:
        self.num_epochs = config.num_epochs
        self.num_iterations_per_epoch = config.iterations_per_epoch
        self.num_val_iterations_per_epoch = config.val_iterations_per_epoch
        self.initial_lr = config.initial_lr  # read by configure_optimizers (SGD + poly LR) inside initialize()

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        if self.medaka_config.augmentation == "da5":  # its rotation range and the patch size it needs for it
            from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5

            return nnUNetTrainerDA5.configure_rotation_dummyDA_mirroring_and_inital_patch_size(self)
        return super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training pipeline, or with config key ``augmentation="da5"`` nnU-Net's heavier one
        (``nnUNetTrainerDA5``'s, the same arguments); an instance method here so that the config can choose."""
        if self.medaka_config.augmentation == "da5":
            from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5

            return nnUNetTrainerDA5.get_training_transforms(*args, **kwargs)
        return nnUNetTrainer.get_training_transforms(*args, **kwargs)

    def get_dataloaders(self):
        seed, share = self.medaka_config.seed, self.medaka_config.labeled_share
        if seed is None and share is None and not self.medaka_config.finetune_epochs:
            return super().get_dataloaders()
        # nnU-Net gives its augmentation workers seeds=None (OS entropy) and draws cases uniformly. Let it build
        # single-threaded augmenters (in-process, seeded here), weight their loader's draw, then move the loaders
        # into workers that get deterministic seeds.
        if seed is not None:
            seed_everything(derived_seed(seed, TRAIN_LOADER_STREAM))
        n_proc = get_allowed_n_proc_DA()
        previous = os.environ.get("nnUNet_n_proc_DA")
        os.environ["nnUNet_n_proc_DA"] = "0"
        try:
            train, val = super().get_dataloaders()
        finally:
            if previous is None:
                del os.environ["nnUNet_n_proc_DA"]
            else:
                os.environ["nnUNet_n_proc_DA"] = previous
        assert isinstance(train, SingleThreadedAugmenter) and isinstance(val, SingleThreadedAugmenter)
        self.train_loader = train.data_loader
        if share is not None:
            self.weight_labeled_cases(train.data_loader, share)
        if n_proc == 0:
            return train, val
        train = self._in_workers(train.data_loader, TRAIN_LOADER_STREAM, n_proc, max(6, n_proc // 2))
        val = self._in_workers(val.data_loader, VAL_LOADER_STREAM, max(1, n_proc // 2), max(3, n_proc // 4))
        return train, val

    def _in_workers(self, loader, stream: int, workers: int, cached: int) -> NonDetMultiThreadedAugmenter:
        """``loader`` in ``workers`` augmentation processes (nnU-Net's worker and cache counts) with deterministic
        seeds of ``stream``."""
        seed = self.medaka_config.seed
        augmenter = NonDetMultiThreadedAugmenter(
            data_loader=loader, transform=None, num_processes=workers, num_cached=cached,
            seeds=None if seed is None else worker_seeds(seed, stream, workers),
            pin_memory=self.device.type == "cuda", wait_time=0.002)
        _ = next(augmenter)
        return augmenter

    def on_epoch_start(self):
        self.maybe_start_finetune()
        super().on_epoch_start()

    def maybe_start_finetune(self) -> None:
        """In the last ``finetune_epochs`` epochs (also when resumed inside them) draw only the labeled cases:
        dataset.json's pseudo-labeled ones get probability 0, and the augmentation workers, which hold copies of
        the loader, are restarted with it."""
        n = self.medaka_config.finetune_epochs
        if not n or self.finetuning or self.current_epoch < self.num_epochs - n:
            return
        self.finetuning = True
        pseudo = set(self.dataset_json.get(PSEUDO_CASES_KEY) or ())
        loader = self.train_loader
        is_pseudo = np.array([k in pseudo for k in loader.indices])
        if is_pseudo.all() or not is_pseudo.any():
            self.print_to_log_file(f"finetune_epochs {self.medaka_config.finetune_epochs}: ignored, the training "
                                   f"cases are all {'pseudo-labeled' if is_pseudo.all() else 'labeled'}",
                                   also_print_to_console=True)
            return
        loader.sampling_probabilities = (~is_pseudo) / (~is_pseudo).sum()
        if isinstance(self.dataloader_train, NonDetMultiThreadedAugmenter):
            self.dataloader_train._finish()
            self.dataloader_train = self._in_workers(loader, FINETUNE_LOADER_STREAM, self.dataloader_train.num_processes,
                                                     self.dataloader_train.num_cached)
        self.print_to_log_file(f"epoch {self.current_epoch}: fine-tune on the {(~is_pseudo).sum()} labeled cases only "
                               f"for the last {self.num_epochs - self.current_epoch} epoch(s)", also_print_to_console=True)

    def weight_labeled_cases(self, loader, share: float) -> None:
        """Draw ``share`` of the loader's samples from its labeled cases, the rest from its pseudo-labeled ones
        (dataset.json's ``"pseudo_labeled_cases"``), uniformly within each group."""
        pseudo = set(self.dataset_json.get(PSEUDO_CASES_KEY) or ())
        keys = list(loader.indices)
        is_pseudo = np.array([k in pseudo for k in keys])
        if is_pseudo.all() or not is_pseudo.any():
            self.print_to_log_file(f"labeled_share {share}: ignored, the training cases are all "
                                   f"{'pseudo-labeled' if is_pseudo.all() else 'labeled'}", also_print_to_console=True)
            return
        p = np.where(is_pseudo, (1 - share) / is_pseudo.sum(), share / (~is_pseudo).sum())
        loader.sampling_probabilities = p / p.sum()
        self.print_to_log_file(f"labeled_share {share}: {(~is_pseudo).sum()} labeled cases drawn with probability "
                               f"{share:.3f} in all (uniform: {(~is_pseudo).mean():.3f}), {is_pseudo.sum()} "
                               f"pseudo-labeled {1 - share:.3f}", also_print_to_console=True)

    def run_settings(self) -> dict:
        """What this run was configured with; subclasses add their own entries."""
        return {
            "trainer": self.__class__.__name__,
            "config_file": str(self.medaka_config_path) if self.medaka_config_path else None,
            "config": self.medaka_config.to_dict(),
            "seeding": self.seeding_description(),
        }

    def seeding_description(self) -> dict:
        seed = self.medaka_config.seed
        workers = get_allowed_n_proc_DA()
        if seed is None:
            note = "unseeded (config key seed is null): every run draws different batches and initial weights"
        elif workers == 0:
            note = "seeded, augmentation in-process (nnUNet_n_proc_DA=0): batches repeat exactly"
        else:
            note = (f"seeded, {workers} augmentation workers with fixed per-worker seeds: each worker's batches "
                    "repeat, their arrival order does not (set nnUNet_n_proc_DA=0 for bit-identical runs)")
        return {"seed": seed, "augmentation_workers": workers, "note": note}

    def record_run_settings(self, settings: dict) -> None:
        """Write the resolved settings next to the checkpoints and into the training log."""
        if self.local_rank != 0:
            return
        os.makedirs(self.output_folder, exist_ok=True)
        write_json_atomic(os.path.join(self.output_folder, RESOLVED_FILE_NAME), settings)
        self.print_to_log_file("nnunet_medaka settings:", json.dumps(settings, sort_keys=True), also_print_to_console=True)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not self.medaka_config.final_validation:
            # e.g. fold "all", where the validation cases are the training cases, and a held-out test set is
            # predicted separately; `nnUNetv2_train ... --val` still validates once the key is set back to true
            self.print_to_log_file("final validation skipped (config key final_validation is false)",
                                   also_print_to_console=True)
            return
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
