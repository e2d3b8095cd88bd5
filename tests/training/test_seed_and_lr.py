"""`seed`, `initial_lr` and `cpu_threads` in a real SupervisedTrainer on the tiny dataset (nnU-Net's own loaders)."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

FIRST_EPOCH = {"num_epochs": 5, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "mirroring": False}


def _environ(monkeypatch, nnunet_env, config: Path, n_proc_da: str = "0") -> None:
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_compile"):
        monkeypatch.setenv(key, nnunet_env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", n_proc_da)
    monkeypatch.setenv("nnunet_medaka_config", str(config))


def _trainer(tiny_dataset, fold=1):
    # fold 0 is the session's trained teacher (conftest.trained_teacher): its folder must stay as that run left it
    from nnunet_medaka.training.supervised_trainer import SupervisedTrainer

    plans = json.loads((tiny_dataset.preprocessed / f"{tiny_dataset.plans}.json").read_text())
    dataset_json = json.loads((tiny_dataset.preprocessed / "dataset.json").read_text())
    return SupervisedTrainer(dict(copy.deepcopy(plans), continue_training=False), tiny_dataset.configuration, fold,
                             dataset_json, torch.device("cpu"))


def first_epoch(tiny_dataset, tmp_path, tag) -> tuple:
    """Run nnU-Net's first training epoch in-process; returns (train loss from the checkpoint's logging, weights)."""
    trainer = _trainer(tiny_dataset)
    trainer.on_train_start()
    initial = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    try:
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(trainer.num_iterations_per_epoch)]
        trainer.on_train_epoch_end(outputs)
        checkpoint = tmp_path / f"{tag}.pth"
        trainer.save_checkpoint(str(checkpoint))
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()
    logging = torch.load(checkpoint, weights_only=False)["logging"]
    return float(logging["train_losses"][0]), initial


def _write(path: Path, **values) -> Path:
    path.write_text(json.dumps(dict(FIRST_EPOCH, **values)))
    return path


@pytest.mark.parametrize("n_proc_da", ["0", "1"])
def test_same_seed_same_first_epoch_loss_other_seed_differs(tiny_dataset, nnunet_env, monkeypatch, tmp_path, n_proc_da):
    losses, weights = [], []
    for i, seed in enumerate((7, 7, 8)):
        _environ(monkeypatch, nnunet_env, _write(tmp_path / f"c{i}.json", seed=seed), n_proc_da)
        loss, w = first_epoch(tiny_dataset, tmp_path, f"run{i}")
        losses.append(loss)
        weights.append(w)
    assert np.isfinite(losses).all()
    assert losses[0] == losses[1], losses  # bit-identical on the same machine and settings
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert losses[2] != losses[0], losses
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_seed_recorded_in_resolved_config(tiny_dataset, nnunet_env, monkeypatch, tmp_path):
    _environ(monkeypatch, nnunet_env, _write(tmp_path / "c.json", seed=3), "0")
    trainer = _trainer(tiny_dataset, fold=4)
    trainer.initialize()
    resolved = json.loads((Path(trainer.output_folder) / "nnunet_medaka_resolved_config.json").read_text())
    assert resolved["config"]["seed"] == 3
    assert resolved["seeding"]["seed"] == 3 and resolved["seeding"]["augmentation_workers"] == 0


def test_initial_lr_and_cpu_threads_reach_nnunet_optimizer(tiny_dataset, nnunet_env, monkeypatch, tmp_path):
    _environ(monkeypatch, nnunet_env, _write(tmp_path / "c.json", initial_lr=0.05, cpu_threads=1), "0")
    threads = torch.get_num_threads()
    try:
        trainer = _trainer(tiny_dataset, fold=3)
        trainer.initialize()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert trainer.initial_lr == 0.05
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    trainer.lr_scheduler.step(2)  # nnU-Net's poly schedule starts from the configured value
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * (1 - 2 / 5) ** 0.9)


def test_final_validation_false_skips_nnunets_validation(tiny_dataset, nnunet_env, monkeypatch, tmp_path):
    _environ(monkeypatch, nnunet_env, _write(tmp_path / "c.json", final_validation=False), "0")
    trainer = _trainer(tiny_dataset, fold=2)
    trainer.initialize()
    assert trainer.perform_actual_validation() is None
    assert not (Path(trainer.output_folder) / "validation").exists()
    assert "final validation skipped" in Path(trainer.log_file).read_text()
