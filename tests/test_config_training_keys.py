"""Config keys seed, initial_lr, cpu_threads, kd_warmup; teacher_folds given as a single fold."""
import json

import pytest

from nnunet_medaka.cli import main
from nnunet_medaka.config import CONFIG_ENV_VAR, MedakaConfig, validate_config
from nnunet_medaka.errors import MedakaError


def test_new_keys_default_to_stock_behaviour():
    c = MedakaConfig()
    assert c.seed is None and c.initial_lr == 0.01 and c.cpu_threads is None and c.kd_warmup == 0


def test_new_keys_resolved():
    c = validate_config({"seed": 0, "initial_lr": 0.03, "cpu_threads": 1, "kd_warmup": 5})
    assert (c.seed, c.initial_lr, c.cpu_threads, c.kd_warmup) == (0, 0.03, 1, 5)
    assert isinstance(validate_config({"initial_lr": 1}).initial_lr, float)
    assert c.to_dict()["seed"] == 0


@pytest.mark.parametrize("values, key", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": True}, "seed"), ({"seed": 2**31}, "seed"),
    ({"initial_lr": 0}, "initial_lr"), ({"initial_lr": -0.01}, "initial_lr"), ({"initial_lr": 2}, "initial_lr"),
    ({"initial_lr": "0.01"}, "initial_lr"), ({"initial_lr": float("nan")}, "initial_lr"),
    ({"cpu_threads": 0}, "cpu_threads"), ({"cpu_threads": 1.0}, "cpu_threads"),
    ({"kd_warmup": -1}, "kd_warmup"), ({"kd_warmup": 2.5}, "kd_warmup"),
])
def test_new_keys_out_of_range_name_the_key(values, key):
    with pytest.raises(MedakaError, match=f"'{key}' is"):
        validate_config(values)


@pytest.mark.parametrize("value, folds", [(0, (0,)), (3, (3,)), ("all", ("all",)), ([1, 2], (1, 2)), (["all"], ("all",))])
def test_teacher_folds_scalar_means_one_element_list(value, folds):
    c = validate_config({"teacher_folds": value})
    assert c.teacher_folds == folds and c.to_dict()["teacher_folds"] == list(folds)


@pytest.mark.parametrize("value", [-1, True, "al", 1.0, [0, 0], []])
def test_teacher_folds_still_refuses_bad_folds(value):
    with pytest.raises(MedakaError, match="'teacher_folds'"):
        validate_config({"teacher_folds": value})


@pytest.mark.parametrize("arg, folds", [("teacher_folds=0", [0]), ("teacher_folds=all", ["all"]),
                                        ('teacher_folds="all"', ["all"]), ("teacher_folds=[0,1]", [0, 1])])
def test_cli_accepts_a_single_teacher_fold(tmp_path, monkeypatch, capsys, arg, folds):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    (tmp_path / "Dataset012_Fish").mkdir()
    assert main(["config", "-d", "12", "--set", arg, "--set", "seed=4", "--set", "initial_lr=0.02", "--show"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out[out.index("{"):])
    assert shown["teacher_folds"] == folds and shown["seed"] == 4 and shown["initial_lr"] == 0.02
    assert main(["config", "-d", "12"]) == 0  # the file as written validates again
    assert "is valid" in capsys.readouterr().out
    assert main(["config", "-d", "12", "--set", "seed=null", "--show"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["seed"] is None


def test_final_validation_key():
    assert MedakaConfig().final_validation is True
    assert validate_config({"final_validation": False}).final_validation is False
    with pytest.raises(MedakaError, match="'final_validation' is"):
        validate_config({"final_validation": "no"})
