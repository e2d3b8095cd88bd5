"""``labeled_share`` and ``finetune_epochs``: how a student's training samples split between labeled and
pseudo-labeled cases."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from nnunet_medaka.config import validate_config
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.training.supervised_trainer import SupervisedTrainer


def _weight(keys, pseudo, share):
    lines = []
    trainer = SimpleNamespace(dataset_json={"pseudo_labeled_cases": pseudo},
                              print_to_log_file=lambda *a, **k: lines.append(" ".join(map(str, a))))
    loader = SimpleNamespace(indices=keys, sampling_probabilities=None)
    SupervisedTrainer.weight_labeled_cases(trainer, loader, share)
    return loader.sampling_probabilities, lines


def test_labeled_cases_get_their_share_of_the_draw():
    keys = ["l0", "l1", "p0", "p1", "p2", "p3", "p4", "p5"]
    p, lines = _weight(keys, ["p0", "p1", "p2", "p3", "p4", "p5"], 0.5)
    assert p.sum() == pytest.approx(1.0)
    assert p[:2] == pytest.approx([0.25, 0.25]) and p[2:] == pytest.approx([0.5 / 6] * 6)
    assert "2 labeled cases drawn with probability 0.500 in all (uniform: 0.250)" in lines[0]
    draws = np.random.default_rng(0).choice(len(keys), 20000, p=p)
    assert np.mean(draws < 2) == pytest.approx(0.5, abs=0.02)


def test_a_dataset_without_both_kinds_keeps_the_uniform_draw():
    p, lines = _weight(["a", "b"], [], 0.5)
    assert p is None and "ignored, the training cases are all labeled" in lines[0]
    p, lines = _weight(["a", "b"], ["a", "b"], 0.5)
    assert p is None and "all pseudo-labeled" in lines[0]


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "half", True])
def test_labeled_share_is_checked(value):
    with pytest.raises(MedakaError, match="labeled_share"):
        validate_config({"labeled_share": value})
    assert validate_config({"labeled_share": 0.5}).labeled_share == 0.5 and validate_config({}).labeled_share is None


def test_augmentation_da5_is_nnunets_heavier_pipeline():
    """Config key ``augmentation``: "da5" gives nnUNetTrainerDA5's training transforms (with its extra noise
    transforms) for the same arguments, the default nnU-Net's own; anything else is refused."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def names(pipeline) -> set:
        found, todo = set(), [pipeline]
        while todo:  # the composed transforms and the ones wrapped in RandomTransform / OneOfTransform
            t = todo.pop()
            found.add(type(t).__name__)
            todo += list(getattr(t, "transforms", None) or []) + [x for x in [getattr(t, "transform", None)] if x]
        return found

    args = (np.array([32, 32]), (-0.5, 0.5), None, (0, 1), False)
    kwargs = dict(use_mask_for_norm=[False], foreground_labels=[1, 2], ignore_label=None)
    trainer = lambda aug: SimpleNamespace(medaka_config=validate_config({"augmentation": aug}))
    default = names(SupervisedTrainer.get_training_transforms(trainer("nnunet"), *args, **kwargs))
    da5 = names(SupervisedTrainer.get_training_transforms(trainer("da5"), *args, **kwargs))
    assert default == names(nnUNetTrainer.get_training_transforms(*args, **kwargs))
    assert {"BlankRectangleTransform", "SharpeningTransform"} <= da5 - default
    assert validate_config({}).augmentation == "nnunet"
    with pytest.raises(MedakaError, match="augmentation"):
        validate_config({"augmentation": "heavy"})


def _finetune(keys, pseudo, epoch, n=2, epochs=10, started=False):
    lines = []
    loader = SimpleNamespace(indices=keys, sampling_probabilities=None)
    trainer = SimpleNamespace(dataset_json={"pseudo_labeled_cases": pseudo}, train_loader=loader, finetuning=started,
                              medaka_config=validate_config({"finetune_epochs": n}), num_epochs=epochs,
                              current_epoch=epoch, dataloader_train=None,
                              print_to_log_file=lambda *a, **k: lines.append(" ".join(map(str, a))))
    SupervisedTrainer.maybe_start_finetune(trainer)
    return loader.sampling_probabilities, lines, trainer.finetuning


def test_the_last_finetune_epochs_draw_only_labeled_cases():
    keys, pseudo = ["l0", "p0", "l1", "p1"], ["p0", "p1"]
    assert _finetune(keys, pseudo, epoch=7) == (None, [], False)  # before the last two epochs: unchanged
    p, lines, on = _finetune(keys, pseudo, epoch=8)
    assert on and list(p) == [0.5, 0.0, 0.5, 0.0] and "epoch 8: fine-tune on the 2 labeled cases only" in lines[0]
    p, lines, on = _finetune(keys, pseudo, epoch=9)  # resumed (--c) inside the fine-tune: switched at once
    assert on and list(p) == [0.5, 0.0, 0.5, 0.0]
    assert _finetune(keys, pseudo, epoch=9, started=True)[:2] == (None, [])  # switched once only
    p, lines, _ = _finetune(["a", "b"], [], epoch=9)  # a dataset of labeled cases only: nothing to leave out
    assert p is None and "ignored, the training cases are all labeled" in lines[0]
    with pytest.raises(MedakaError, match="finetune_epochs"):
        validate_config({"finetune_epochs": -1})
