"""The quick start's main command: its refusals. The demo itself runs end to end, killed and resumed in every stage,
in tests/pipeline/test_run.py."""
import pytest

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.pipeline.demo import run_demo


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(MedakaError, match="holds no .nnunet_medaka_demo \\(not a folder made by the demo\\); choose another --work-dir or pass --overwrite"):
        run_demo(tmp_path, device="cpu")
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_demo_needs_an_unlabeled_pool(tmp_path):
    with pytest.raises(MedakaError, match="leaves no unlabeled specimen"):
        run_demo(tmp_path / "d", n_specimens=4, n_labeled=2, n_test=2, device="cpu")
    assert not (tmp_path / "d").exists()
