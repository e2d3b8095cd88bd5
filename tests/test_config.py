"""The per-dataset config file: validation errors name the key, edits are atomic, the CLI round-trips."""
import json

import pytest

from nnunet_medaka.cli import main
from nnunet_medaka.config import (CONFIG_ENV_VAR, MedakaConfig, load_config, parse_assignment, update_config_file,
                                  validate_config)
from nnunet_medaka.errors import MedakaError


def test_defaults_equal_stock_nnunet():
    c = validate_config({})
    assert (c.num_epochs, c.iterations_per_epoch, c.val_iterations_per_epoch, c.mirroring) == (1000, 250, 50, True)
    assert c == MedakaConfig()


def test_values_are_resolved():
    c = validate_config({"num_epochs": 3, "kd_temperature": 4, "teacher_folds": [0, 2], "mirroring": False})
    assert validate_config({"teacher_folds": ["all"]}).teacher_folds == ("all",)
    assert c.num_epochs == 3 and c.kd_temperature == 4.0 and isinstance(c.kd_temperature, float)
    assert c.teacher_folds == (0, 2) and c.mirroring is False
    assert c.to_dict()["teacher_folds"] == [0, 2]


@pytest.mark.parametrize("values, pattern", [
    ({"num_epoch": 3}, r"unknown key 'num_epoch'"),
    ({"num_epochs": 0}, r"'num_epochs' is 0, expected an integer >= 1"),
    ({"num_epochs": 2.5}, r"'num_epochs' is 2.5, expected an integer"),
    ({"num_epochs": True}, r"'num_epochs' is true, expected an integer"),
    ({"iterations_per_epoch": "10"}, r"'iterations_per_epoch' is \"10\""),
    ({"mirroring": "no"}, r"'mirroring' is \"no\", expected true or false"),
    ({"kd_temperature": 0}, r"'kd_temperature' is 0, expected a number > 0"),
    ({"kd_weight": -0.5}, r"'kd_weight' is -0.5, expected a number >= 0"),
    ({"kd_scope": "some"}, r"'kd_scope' is \"some\", expected one of 'all', 'pseudo'"),
    ({"kd_scales": "half"}, r"'kd_scales'"),
    ({"teacher_folds": []}, r"'teacher_folds' is \[\]"),
    ({"teacher_folds": [0, 0]}, r"'teacher_folds'"),
    ({"teacher_folds": ["al"]}, r"'teacher_folds'"),
    ({"teacher": ""}, r"'teacher' is \"\""),
])
def test_bad_values_name_the_key(values, pattern):
    with pytest.raises(MedakaError, match=pattern):
        validate_config(values, source="x.json")


def test_all_problems_reported_at_once():
    with pytest.raises(MedakaError) as e:
        validate_config({"num_epochs": -1, "kd_weight": "a", "colour": 1})
    assert all(k in str(e.value) for k in ("num_epochs", "kd_weight", "colour"))


def test_load_missing_file_gives_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    assert load_config(tmp_path) == (MedakaConfig(), None)


def test_load_reports_broken_json_with_path(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    (tmp_path / "nnunet_medaka.json").write_text("{num_epochs: 3")
    with pytest.raises(MedakaError, match=r"nnunet_medaka.json: not valid JSON"):
        load_config(tmp_path)


def test_env_var_overrides_and_must_exist(tmp_path, monkeypatch):
    other = tmp_path / "other.json"
    monkeypatch.setenv(CONFIG_ENV_VAR, str(other))
    with pytest.raises(MedakaError, match=r"nnunet_medaka_config=.*no such file"):
        load_config(tmp_path)
    other.write_text(json.dumps({"num_epochs": 7}))
    config, path = load_config(tmp_path)
    assert config.num_epochs == 7 and path == other


def test_update_validates_before_writing(tmp_path):
    path = tmp_path / "nnunet_medaka.json"
    update_config_file(path, [("num_epochs", 5)])
    with pytest.raises(MedakaError, match="kd_weight"):
        update_config_file(path, [("num_epochs", 6), ("kd_weight", -1)])
    assert json.loads(path.read_text()) == {"num_epochs": 5}  # untouched by the failed edit
    update_config_file(path, [("num_epochs", None)])
    assert json.loads(path.read_text()) == {}


def test_parse_assignment():
    assert parse_assignment("teacher_folds=[0,1]") == ("teacher_folds", [0, 1])
    assert parse_assignment("mirroring=false") == ("mirroring", False)
    assert parse_assignment("teacher=/a/b") == ("teacher", "/a/b")
    with pytest.raises(MedakaError, match="KEY=VALUE"):
        parse_assignment("num_epochs")


def test_cli_edits_the_dataset_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    (tmp_path / "Dataset012_Fish").mkdir()
    assert main(["config", "-d", "12", "--set", "num_epochs=20", "--set", "mirroring=false", "--show"]) == 0
    assert json.loads((tmp_path / "Dataset012_Fish" / "nnunet_medaka.json").read_text()) == {
        "num_epochs": 20, "mirroring": False}
    assert '"num_epochs": 20' in capsys.readouterr().out
    assert main(["config", "-d", "Dataset012_Fish", "--set", "num_epochs=0"]) == 2
    assert "'num_epochs' is 0" in capsys.readouterr().err
    assert main(["config", "-d", "13"]) == 2
    assert "run `nnUNetv2_plan_and_preprocess -d 13` first" in capsys.readouterr().err
