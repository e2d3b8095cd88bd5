"""Fixtures of the pseudo-label tests: unlabeled synthetic scans (ground truth aside) and pseudolabel runs on them
with the session's tiny teacher."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import synthetic_case, write_nifti

N_UNLABELED = 3


@contextlib.contextmanager
def environ(env: dict):
    """os.environ = env for in-process runs (nnUNet_* folders, plugin trainers), restored afterwards."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def write_unlabeled(folder: Path, n: int = N_UNLABELED, seed: int = 7, prefix: str = "u") -> tuple[Path, Path]:
    """``folder/images/{prefix}_XXX_0000.nii.gz`` and ``folder/gt/{prefix}_XXX.nii.gz``."""
    images, gt = folder / "images", folder / "gt"
    images.mkdir(parents=True)
    gt.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, label = synthetic_case(rng)
        write_nifti(images / f"{prefix}_{i:03d}_0000.nii.gz", image)
        write_nifti(gt / f"{prefix}_{i:03d}.nii.gz", label)
    return images, gt


@pytest.fixture(scope="session")
def unlabeled(tmp_path_factory) -> tuple[Path, Path]:
    return write_unlabeled(tmp_path_factory.mktemp("unlabeled"))


@pytest.fixture(scope="session")
def pseudo_none(trained_teacher, unlabeled, nnunet_env, tmp_path_factory) -> Path:
    """`nnunet-medaka pseudolabel` (CLI, in-process), acceptance none, with ground truth: the reference run."""
    from nnunet_medaka.cli import main

    images, gt = unlabeled
    out = tmp_path_factory.mktemp("pl") / "none"
    with environ(nnunet_env):
        code = main(["pseudolabel", "-m", str(trained_teacher), "-f", "0", "-i", str(images), "-o", str(out),
                     "--ground-truth", str(gt), "--disable-tta", "-device", "cpu", "--quiet"])
    assert code == 0
    return out


def make_quality_model(path: Path, teacher_folder: Path, *, labels=None, good=("sphere",), trainer=None,
                       training=None) -> Path:
    """A real quality model file whose trees decide on the organ alone: organs in ``good`` get P(good) = 1 and
    predicted IoU 0.9, the others 0 and 0.2; ``training`` as `qc train` stores it (signal thresholds, auto filter)."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    from nnunet_medaka.quality.features import FEATURE_NAMES
    from nnunet_medaka.quality.score import QualityModel, save_quality_model

    labels = labels or {"sphere": 1, "box": 2}
    organs = sorted(labels, key=labels.get)
    x = np.zeros((len(organs), len(FEATURE_NAMES)))
    x[:, 0] = np.arange(len(organs))
    is_good = [int(o in good) for o in organs]
    t_trainer, plans, configuration = teacher_folder.name.split("__")
    teacher = {"dataset": teacher_folder.parent.name, "trainer": trainer or t_trainer, "plans": plans,
               "configuration": configuration, "folds": [0], "model_folder": teacher_folder.name}
    model = QualityModel(labels=dict(labels), tau=0.5, accept_threshold=0.5, teacher=teacher,
                         feature_names=tuple(FEATURE_NAMES), reference={},
                         regressor=DecisionTreeRegressor().fit(x, [0.9 if g else 0.2 for g in is_good]),
                         classifier=DecisionTreeClassifier().fit(x, is_good) if len(set(is_good)) > 1 else None,
                         constant_p_good=float(is_good[0]) if len(set(is_good)) == 1 else 1.0,
                         training=dict(training or {}))
    return save_quality_model(model, path)


# the organ-level run: box rejected in u_000 only (scores constructed directly, as a quality model would give them)
REJECT = {"u_000": {"box"}}


@pytest.fixture(scope="session")
def pseudo_organ(trained_teacher, unlabeled, nnunet_env, tmp_path_factory):
    """In-process pseudolabel with acceptance organ and a scorer that records the probabilities it was given."""
    from nnunet_medaka.pseudolabel.predict import pseudolabel

    images, gt = unlabeled
    seen = []

    def scorer(image, probabilities, spacing):
        case = f"u_{len(seen):03d}"
        seen.append(probabilities.copy())
        bad = REJECT.get(case, set())
        return {o: {"predicted_iou": 0.1 if o in bad else 0.8, "p_good": 0.2 if o in bad else 0.9}
                for o in ("sphere", "box")}

    out = tmp_path_factory.mktemp("pl") / "organ"
    with environ(nnunet_env):
        result = pseudolabel(trained_teacher, images, out, folds=[0], acceptance="organ", scorer=scorer,
                             ground_truth=gt, mirroring=False, device="cpu", progress=False, ignore_band=2,
                             band_probability=0.1)
    assert result["processed"] == N_UNLABELED
    return out, {f"u_{i:03d}": p for i, p in enumerate(seen)}


STUDENT_ID, STUDENT_NAME = 902, "TinyStudent"


@pytest.fixture(scope="session")
def student_build(pseudo_organ, tiny_dataset, nnunet_env):
    """`nnunet-medaka build-student` (CLI, in-process) from the organ-level run; returns (printed output, raw, pre)."""
    import io
    from contextlib import redirect_stdout

    from nnunet_medaka.cli import main

    out, _ = pseudo_organ
    buffer = io.StringIO()
    with environ(nnunet_env), redirect_stdout(buffer):
        code = main(["build-student", str(out), "-d", str(STUDENT_ID), "-n", STUDENT_NAME, "--set", "kd_scope=pseudo",
                     "--set", "kd_weight=1", "-np", "1"])
    assert code == 0, buffer.getvalue()
    name = f"Dataset{STUDENT_ID:03d}_{STUDENT_NAME}"
    return buffer.getvalue(), Path(nnunet_env["nnUNet_raw"]) / name, Path(nnunet_env["nnUNet_preprocessed"]) / name
