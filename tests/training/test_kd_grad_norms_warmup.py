"""KDTrainer: per-term gradient norms in nnU-Net's logger, and the kd_warmup ramp of the KD weight."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_medaka.training.kd_loss import kd_weight_at

SCHEDULE = {"num_epochs": 6, "iterations_per_epoch": 3, "val_iterations_per_epoch": 1, "mirroring": False, "seed": 0}


def _kd_trainer(tiny_dataset, trained_teacher, nnunet_env, monkeypatch, tmp_path, fold, **values):
    config = tmp_path / "kd.json"
    config.write_text(json.dumps(dict(SCHEDULE, teacher=str(trained_teacher), teacher_folds=0, **values)))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_compile"):
        monkeypatch.setenv(key, nnunet_env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnunet_medaka_config", str(config))
    from nnunet_medaka.training.kd_trainer import KDTrainer

    plans = json.loads((tiny_dataset.preprocessed / f"{tiny_dataset.plans}.json").read_text())
    dataset_json = json.loads((tiny_dataset.preprocessed / "dataset.json").read_text())
    return KDTrainer(dict(copy.deepcopy(plans), continue_training=False), tiny_dataset.configuration, fold,
                     dataset_json, torch.device("cpu"))


def _train_epoch(trainer):
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(trainer.num_iterations_per_epoch)]
    trainer.on_train_epoch_end(outputs)
    return outputs


def test_grad_norms_of_both_terms_are_logged_and_finite(tiny_dataset, trained_teacher, nnunet_env, monkeypatch,
                                                         tmp_path):
    trainer = _kd_trainer(tiny_dataset, trained_teacher, nnunet_env, monkeypatch, tmp_path, 1, kd_weight=1.0)
    trainer.grad_norm_every = 2  # steps 0 and 2 of each epoch measured, step 1 not
    trainer.on_train_start()
    outputs = _train_epoch(trainer)
    measured = [np.isfinite(o["grad_norm_supervised"]) for o in outputs]
    assert measured == [True, False, True]
    assert all(o["grad_norm_supervised"] > 0 and o["grad_norm_kd"] > 0 for o in outputs[::2])
    log = trainer.logger.local_logger.my_fantastic_logging
    for key in ("train_grad_norm_supervised", "train_grad_norm_kd", "train_loss_supervised", "train_loss_kd"):
        assert len(log[key]) == 1 and np.isfinite(log[key][0]) and log[key][0] > 0, key
    assert log["kd_weight"] == [1.0]
    # the measurement leaves nnU-Net's step alone: the step's own gradient is the sum of the terms' gradients
    for p in trainer.network.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    checkpoint = tmp_path / "c.pth"
    trainer.save_checkpoint(str(checkpoint))
    saved = torch.load(checkpoint, weights_only=False)["logging"]
    assert np.isfinite(saved["train_grad_norm_kd"][0])


def test_grad_norms_match_autograd_of_each_term():
    """gradient_norm on a toy model equals the norm of the per-term gradients computed by backward()."""
    from nnunet_medaka.training.kd_loss import gradient_norm

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    out = net(x)
    a, b = out.pow(2).mean(), out.sin().sum()
    params = list(net.parameters())
    na, nb = gradient_norm(a, params), gradient_norm(b, params, scale=1024.0)
    a.backward(retain_graph=True)
    ref_a = torch.cat([p.grad.flatten() for p in params]).norm()
    net.zero_grad()
    b.backward()
    ref_b = torch.cat([p.grad.flatten() for p in params]).norm()
    assert na == pytest.approx(float(ref_a), rel=1e-5) and nb == pytest.approx(float(ref_b), rel=1e-5)


def test_kd_weight_ramp_values():
    assert [kd_weight_at(e, 2.0, 4) for e in (0, 1, 2, 3, 4, 5, 100)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert [kd_weight_at(e, 0.3, 0) for e in (0, 7)] == [0.3, 0.3]


def test_kd_warmup_ramps_the_trainers_kd_weight(tiny_dataset, trained_teacher, nnunet_env, monkeypatch, tmp_path):
    trainer = _kd_trainer(tiny_dataset, trained_teacher, nnunet_env, monkeypatch, tmp_path, 2, kd_weight=2.0,
                          kd_warmup=4)
    trainer.on_train_start()
    seen = {}
    for epoch in range(6):  # nnU-Net's logger wants the epochs in order
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        seen[epoch] = trainer.kd_loss.kd_weight
        if epoch == 0:  # weight 0: the total is the supervised loss; the KD term is still computed and logged
            out = trainer.train_step(next(trainer.dataloader_train))
            assert out["loss"] == pytest.approx(out["loss_supervised"]) and np.isfinite(out["loss_kd"])
            assert np.isfinite(out["grad_norm_kd"]) and out["grad_norm_kd"] > 0
    assert seen == {0: 0.0, 1: 0.5, 2: 1.0, 3: 1.5, 4: 2.0, 5: 2.0}
    assert trainer.logger.local_logger.my_fantastic_logging["kd_weight"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    resolved = json.loads((Path(trainer.output_folder) / "nnunet_medaka_resolved_config.json").read_text())
    assert resolved["config"]["kd_warmup"] == 4 and resolved["config"]["teacher_folds"] == [0]
