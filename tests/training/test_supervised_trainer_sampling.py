"""``labeled_share``: how a student's training samples split between labeled and pseudo-labeled cases."""
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
