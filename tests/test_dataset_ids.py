"""Dataset ids that a run or experiment recorded but has not written yet are not handed out twice: two experiments
on one ``nnUNet_raw`` once both chose the id of a student dataset the first had not built yet, and the first failed
an hour later."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import make_raw_dataset
from nnunet_medaka.conversion.raw_dataset import reserve_dataset_ids, reserved_dataset_ids, taken_dataset_ids
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.environment import plugin_environ
from nnunet_medaka.pipeline.experiment_command import run_experiment


def test_reservations_live_as_long_as_their_owner_lists_them(tmp_path):
    raw = tmp_path / "raw"
    owner = tmp_path / "exp" / "datasets.json"
    owner.parent.mkdir()
    owner.write_text(json.dumps({"base": 500, "f1/s0": 501, "f1/s0/qc": 502}))
    reserve_dataset_ids(raw, [500, 501, 502], owner)
    assert reserved_dataset_ids(raw) == {500, 501, 502}
    assert reserved_dataset_ids(raw, except_owner=owner) == set()  # its own ids are its own
    owner.write_text(json.dumps({"base": 500, "f1/s0": 501}))  # an id its owner no longer lists is free again
    assert reserved_dataset_ids(raw) == {500, 501}
    other = tmp_path / "run" / "student_dataset.json"
    other.parent.mkdir()
    other.write_text(json.dumps({"id": 600, "name": "Dataset600_X", "rounds": {"2": {"id": 601, "name": "Y"}}}))
    reserve_dataset_ids(raw, [600, 601], other)
    assert reserved_dataset_ids(raw) == {500, 501, 600, 601}
    owner.unlink()  # a deleted experiment frees its ids
    assert reserved_dataset_ids(raw) == {600, 601}


def test_taken_ids_are_folders_in_any_root_plus_other_owners_reservations(tmp_path):
    raw, results = tmp_path / "raw", tmp_path / "results"
    (raw / "Dataset004_A").mkdir(parents=True)
    (results / "Dataset007_B").mkdir(parents=True)
    (raw / "Dataset12_NotAnId").mkdir()  # not three digits: not nnU-Net's naming
    owner = tmp_path / "student_dataset.json"
    owner.write_text(json.dumps({"id": 900, "name": "Dataset900_S"}))
    reserve_dataset_ids(raw, [900], owner)
    assert taken_dataset_ids(raw) == {4, 900}
    assert taken_dataset_ids(raw, results, tmp_path / "missing") == {4, 7, 900}
    assert taken_dataset_ids(raw, results, except_owner=owner) == {4, 7}


def test_an_experiment_skips_the_ids_another_one_recorded(tmp_path, monkeypatch):
    env = plugin_environ(root=tmp_path / "nnunet")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    raw = Path(env["nnUNet_raw"])
    source = make_raw_dataset(raw, 971, "IdSource", n_cases=10, seed=1)
    split_dataset(source, dataset_id=972, dataset_name="IdTiny", n_labeled=6, n_test=2, seed=0, out_dir=raw)
    # another experiment recorded 72..74 (the first ids this one would choose: 972 + 100, wrapped) without writing them
    owner = tmp_path / "other" / "datasets.json"
    owner.parent.mkdir()
    owner.write_text(json.dumps({"base": 72, "f0.5/s0": 73, "f0.5/s0/qc": 74}))
    reserve_dataset_ids(raw, [72, 73, 74], owner)
    lines = []
    run_experiment("972", tmp_path / "exp", fractions=[0.5], seeds=[0], rows=["teacher"], preset="cpu-demo",
                   device="cpu", dry_run=True, say=lines.append)
    text = "\n".join(lines)
    assert "nnUNetv2_plan_and_preprocess -d 75 " in text and "Dataset076_IdTinyF050S0" in text
    assert not any(f"-d {i} " in text or f"Dataset{i:03d}_" in text for i in (72, 73, 74))
