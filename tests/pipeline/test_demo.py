"""The README's main command, shrunk: phantoms -> convert -> split -> teacher -> KD student -> evaluate."""
import json
import math

import pytest

from nnunet_medaka.pipeline.demo import run_demo
from nnunet_medaka.errors import MedakaError


def test_demo_end_to_end_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_def_n_proc", "2")
    summary = run_demo(tmp_path / "demo", n_specimens=3, n_labeled=2, n_test=1, size=48, epochs=1, iterations=2,
                       device="cpu")
    on_disk = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert on_disk["data"].startswith("synthetic")
    organs = {"eye_left", "eye_right", "brain", "spinal_cord", "heart", "liver", "gut", "swim_bladder", "kidney", "mean"}
    for role in ("teacher", "student"):
        assert set(on_disk["scores"][role]) == organs
        for s in on_disk["scores"][role].values():  # NaN where an organ is absent from reference and prediction
            assert math.isnan(s["IoU"]) or 0.0 <= s["IoU"] <= s["Dice"] + 1e-9 <= 1.0 + 1e-9
    student = tmp_path / "demo" / "nnUNet_results" / "Dataset802_MedakaPhantomFewLabels" / \
        "KDTrainer__nnUNetPlansSmall__3d_fullres" / "fold_all"
    resolved = json.loads((student / "nnunet_medaka_resolved_config.json").read_text())
    assert resolved["trainer"] == "KDTrainer" and resolved["config"]["teacher_folds"] == ["all"]
    assert "student IoU" in summary["table"] and (tmp_path / "demo" / "iou_per_organ.png").stat().st_size > 0


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(MedakaError, match="was not made by the demo.*--overwrite"):
        run_demo(tmp_path, device="cpu")
    assert (tmp_path / "mine.txt").read_text() == "user data"
