"""The quality model and scoring over in-memory arrays: what the pseudo-labeling stage calls.

Model file format (``quality_model.joblib``, written by ``nnunet-medaka qc train``): a ``joblib`` dump of one plain
dict with

``format``            ``"nnunet-medaka-quality-model"``
``format_version``    1
``labels``            organ name -> label id (channel of the teacher's softmax), background excluded
``tau``               IoU threshold: a pseudo-label is *good* when IoU >= tau
``accept_threshold``  operating point: accept an organ when ``p_good >= accept_threshold``
``teacher``           identity of the teacher whose outputs it learned from: ``dataset``, ``trainer``, ``plans``,
                      ``configuration``, ``folds``, ``model_folder`` (the folder name ``Trainer__Plans__config``)
``feature_names``     the model's input columns (``features.FEATURE_NAMES``)
``reference``         per-organ ground-truth statistics of the labeled cases (``features.reference_statistics``)
``regressor``         scikit-learn regressor: features -> IoU
``classifier``        scikit-learn classifier: features -> P(IoU >= tau) (``None`` when training saw one class;
                      then ``p_good`` is the constant ``constant_p_good``)
``seed``, ``versions`` (numpy, scikit-learn, nnunet_medaka, nnunetv2), ``training`` (counts, settings)

Only load model files you trust: joblib/pickle runs code when loading.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from nnunet_medaka.errors import MedakaError

__all__ = ["MODEL_FILE", "MODEL_FORMAT", "QualityModel", "load_quality_model", "save_quality_model", "score_case",
           "accept", "check_compatible"]

MODEL_FILE = "quality_model.joblib"
MODEL_FORMAT = "nnunet-medaka-quality-model"
FORMAT_VERSION = 1


@dataclass
class QualityModel:
    """A trained quality classifier (see the module docstring for the stored fields)."""

    labels: dict
    tau: float
    accept_threshold: float
    teacher: dict
    feature_names: tuple
    reference: dict
    regressor: Any
    classifier: Any
    constant_p_good: float = 1.0
    seed: int = 0
    versions: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def organs(self) -> list:
        """Organ names in label order."""
        return sorted(self.labels, key=self.labels.get)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted IoU clipped to [0, 1], P(IoU >= tau)) for a feature matrix."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):  # small inputs: one thread is fastest, above all on a busy CPU
            iou = np.clip(self.regressor.predict(x), 0.0, 1.0)
            if self.classifier is None:
                p = np.full(len(x), float(self.constant_p_good))
            else:
                classes = list(self.classifier.classes_)
                p = self.classifier.predict_proba(x)[:, classes.index(1)]
        return iou, p

    def to_dict(self) -> dict:
        return {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "labels": dict(self.labels),
                "tau": float(self.tau), "accept_threshold": float(self.accept_threshold), "teacher": dict(self.teacher),
                "feature_names": list(self.feature_names), "reference": self.reference, "regressor": self.regressor,
                "classifier": self.classifier, "constant_p_good": float(self.constant_p_good), "seed": int(self.seed),
                "versions": dict(self.versions), "training": dict(self.training)}


def _model_file(path: os.PathLike | str) -> Path:
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def save_quality_model(model: QualityModel, path: os.PathLike | str) -> Path:
    """Write ``model`` to ``path`` (a file, or a folder that receives ``quality_model.joblib``) atomically."""
    import joblib

    target = _model_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        joblib.dump(model.to_dict(), tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def load_quality_model(path: os.PathLike | str) -> QualityModel:
    """Load a quality model written by ``nnunet-medaka qc train``.

    Parameters
    ----------
    path : path
        The model file, or the folder holding ``quality_model.joblib`` (``.../Trainer__Plans__config/quality``).

    Returns
    -------
    QualityModel
        With ``.labels`` (organ -> label id), ``.tau``, ``.accept_threshold``, ``.teacher`` and the estimators.

    Raises
    ------
    MedakaError
        If the file is missing or is not a quality model of a format this version reads.
    """
    import joblib

    file = _model_file(path)
    if not file.is_file():
        raise MedakaError(f"{file}: no quality model here; train one with "
                          "`nnunet-medaka qc train -d DATASET -c CONFIG -tr TRAINER -p PLANS`")
    try:
        data = joblib.load(file)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a readable model file"
        raise MedakaError(f"{file}: cannot be read as a quality model ({type(e).__name__}: {e}); "
                          "retrain with `nnunet-medaka qc train`") from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise MedakaError(f"{file}: not an nnunet-medaka quality model (no format key {MODEL_FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise MedakaError(f"{file}: quality model format version {data.get('format_version')!r}, this version reads "
                          f"{FORMAT_VERSION}; retrain with `nnunet-medaka qc train`")
    from nnunet_medaka.quality.features import FEATURE_NAMES

    if tuple(data["feature_names"]) != tuple(FEATURE_NAMES):
        raise MedakaError(f"{file}: trained on other features ({len(data['feature_names'])} columns) than this "
                          "version computes; retrain with `nnunet-medaka qc train`")
    keys = ("labels", "tau", "accept_threshold", "teacher", "reference", "regressor", "classifier",
            "constant_p_good", "seed", "versions", "training")
    return QualityModel(feature_names=tuple(data["feature_names"]), path=file, **{k: data[k] for k in keys})


def check_compatible(model: QualityModel, *, labels: Optional[Mapping[str, int]] = None,
                     teacher: Optional[Mapping[str, Any]] = None, n_channels: Optional[int] = None) -> None:
    """Raise a MedakaError unless the model fits these organs / this teacher / this many softmax channels.

    Parameters
    ----------
    labels : mapping, optional
        Organ name -> label id of the predictions to score (background may be included; it is ignored).
    teacher : mapping, optional
        Identity of the teacher that made them: any of ``dataset``, ``trainer``, ``plans``, ``configuration``,
        ``model_folder``; each given key must match the model's.
    n_channels : int, optional
        Number of probability channels (K, background included).
    """
    where = f"quality model {model.path or ''}".strip()
    if labels is not None:
        given = {k: int(v) for k, v in labels.items() if k != "background" and int(v) != 0}
        if given != {k: int(v) for k, v in model.labels.items()}:
            raise MedakaError(f"{where}: trained for organs {model.labels}, predictions have {given}; train a quality "
                              "model for this teacher with `nnunet-medaka qc train`")
    if teacher is not None:
        for key in ("dataset", "trainer", "plans", "configuration", "model_folder"):
            if teacher.get(key) is not None and model.teacher.get(key) is not None and \
                    str(teacher[key]) != str(model.teacher[key]):
                raise MedakaError(f"{where}: trained for teacher {key}={model.teacher[key]!r}, these predictions come "
                                  f"from {key}={teacher[key]!r}; train a quality model on that teacher's "
                                  "cross-validation with `nnunet-medaka qc train`")
    if n_channels is not None and n_channels != max(model.labels.values()) + 1:
        raise MedakaError(f"{where}: expects {max(model.labels.values()) + 1} probability channels (background + "
                          f"{len(model.labels)} organs), got {n_channels}; these predictions come from another "
                          "teacher or label set")


def accept(model_or_threshold: Any, scores_for_organ: Optional[Mapping[str, float]] = None) -> bool:
    """The accept decision for one organ: ``p_good >= model.accept_threshold``.

    ``accept(scores)`` reads the ``"accept"`` key that ``score_case`` stores; ``accept(model, scores)`` (or
    ``accept(threshold, scores)``) decides from ``p_good``.
    """
    if scores_for_organ is None:
        return bool(model_or_threshold["accept"])
    threshold = model_or_threshold if isinstance(model_or_threshold, (int, float)) else \
        model_or_threshold.accept_threshold
    return bool(scores_for_organ["p_good"] >= threshold)


def score_case(model: QualityModel, image: np.ndarray, probabilities: np.ndarray,
               spacing: Optional[Sequence[float]] = None) -> dict:
    """Predicted quality of every organ of one teacher prediction, from arrays in memory.

    Parameters
    ----------
    model : QualityModel
        From ``load_quality_model``.
    image : np.ndarray, (C, Z, Y, X)
        The scan, as nnU-Net reads it (original geometry).
    probabilities : np.ndarray, (K, Z, Y, X)
        The teacher's softmax including background (``nnUNetv2_predict --save_probabilities``), same geometry.
    spacing : sequence of float, optional
        Voxel size in array axis order (mm), as in nnU-Net's image properties ``"spacing"``; default 1 (then the
        volume features are in voxels; give the spacing when the model was trained with real spacings).

    Returns
    -------
    dict
        Organ name -> ``{"predicted_iou": float, "p_good": float, "accept": bool}``, with
        ``accept = p_good >= model.accept_threshold``.

    Raises
    ------
    MedakaError
        If the arrays' shapes disagree or the number of channels does not fit the model's organs.
    """
    from nnunet_medaka.quality.features import feature_matrix, organ_features

    image = np.asarray(image)
    probabilities = np.asarray(probabilities)
    if image.ndim == 3:
        image = image[None]
    if probabilities.ndim != 4 or image.ndim != 4 or image.shape[1:] != probabilities.shape[1:]:
        raise MedakaError(f"score_case: image {image.shape} and probabilities {probabilities.shape} must be "
                          "(C, Z, Y, X) and (K, Z, Y, X) with the same spatial shape (original geometry)")
    check_compatible(model, n_channels=probabilities.shape[0])
    raw = organ_features(image, probabilities, model.labels, spacing)
    organs = model.organs
    rows = [{"organ": o, **raw[o]} for o in organs]
    x = feature_matrix(rows, organs, model.reference)
    predicted, p_good = model.predict(x)
    return {o: {"predicted_iou": float(predicted[i]), "p_good": float(p_good[i]),
                "accept": bool(p_good[i] >= model.accept_threshold)} for i, o in enumerate(organs)}
