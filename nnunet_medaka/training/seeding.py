"""Seeding a training run: Python ``random``, numpy and torch, and nnU-Net's data-augmentation workers.

nnU-Net's data loader draws cases and crops from numpy's global generator, and the batchgeneratorsv2 transforms
draw from numpy and torch. With ``nnUNet_n_proc_DA=0`` all of that runs in the training process, so seeding the
process makes the batches, and on CPU the losses, repeat exactly. With workers, nnU-Net's
``NonDetMultiThreadedAugmenter`` seeds each worker with the value it is given (``None`` in stock nnU-Net: OS
entropy); `worker_seeds` gives each worker its own deterministic seed. Each worker's stream then repeats, but
the order in which the workers' batches arrive does not (that is what "NonDet" means), so runs with workers are
seeded but not bit-identical.
"""
from __future__ import annotations

import random
from typing import List

import numpy as np
import torch

__all__ = ["derived_seed", "seed_everything", "worker_seeds"]

# Offsets keep the streams of the network initialisation, the data loaders and each worker apart.
NETWORK_STREAM = 0
TRAIN_LOADER_STREAM = 1
VAL_LOADER_STREAM = 2
FINETUNE_LOADER_STREAM = 3  # the training loader's workers restarted for the labeled-only fine-tune


def derived_seed(seed: int, stream: int, index: int = 0) -> int:
    """A seed for one stream of a run (network init, loaders, worker ``index``), stable across machines."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def worker_seeds(seed: int, stream: int, num_workers: int) -> List[int]:
    """One deterministic seed per data-augmentation worker."""
    return [derived_seed(seed, stream, i) for i in range(num_workers)]
