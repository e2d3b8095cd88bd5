"""Fitting the quality model and grouped cross-validation over labeled cases.

The model is two scikit-learn ``HistGradientBoosting`` estimators on ``features.FEATURE_NAMES`` (organ index as a
categorical column, NaN for undefined features), pooled over organs: a regressor for the IoU and a classifier for
P(IoU >= tau). Grouping is by **case**: a case's organs, its real out-of-fold prediction and all its corrupted
copies are always on the same side of a split, and the relative features' ground-truth reference is computed from
the training cases only. The real out-of-fold rows weigh as much, together, as all corrupted copies
(``sample_weights``).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.quality.features import FEATURE_NAMES, feature_matrix, reference_statistics
from nnunet_medaka.quality.score import QualityModel

__all__ = ["fit_quality_model", "grouped_folds", "grouped_predictions", "sample_weights", "choose_threshold",
           "choose_filter", "filter_evidence", "signal_thresholds", "youden_threshold", "versions"]


def versions() -> dict:
    import sklearn

    import nnunet_medaka

    out = {"numpy": np.__version__, "scikit-learn": sklearn.__version__, "nnunet_medaka": nnunet_medaka.__version__}
    try:
        from importlib.metadata import version

        out["nnunetv2"] = version("nnunetv2")
    except Exception:  # noqa: BLE001 - informative only
        pass
    return out


def _estimators(seed: int, n_rows: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    # fewer boosting rounds on tiny tables (tests, a handful of cases): same fit quality there, much cheaper
    common = dict(max_iter=int(min(200, max(50, n_rows // 5))), learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=max(2, min(20, n_rows // 20)),
                  l2_regularization=1.0, categorical_features=[0], random_state=seed, early_stopping=False)
    return HistGradientBoostingRegressor(**common), HistGradientBoostingClassifier(**common)


def grouped_folds(groups: Sequence[str], n_splits: int, seed: int) -> list:
    """Splits of row indices in which no group (case) is on both sides: list of (train_idx, test_idx)."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        raise MedakaError(f"grouped cross-validation needs at least 2 labeled cases, got {n_groups}")
    splitter = GroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed)
    folds = []
    for train, test in splitter.split(np.zeros(len(groups)), groups=groups):
        assert not set(groups[train].tolist()) & set(groups[test].tolist()), "a case on both sides of a split"
        folds.append((train, test))
    return folds


def youden_threshold(p_good: np.ndarray, good: np.ndarray) -> float:
    """The threshold on ``p_good`` maximising TPR(good accepted) - FPR(bad accepted); 0.5 with one class."""
    good = np.asarray(good, bool)
    if good.all() or not good.any():
        return 0.5
    best, best_t = -np.inf, 0.5
    for t in np.unique(p_good):
        accepted = p_good >= t
        j = accepted[good].mean() - accepted[~good].mean()
        if j > best:
            best, best_t = j, float(t)
    return best_t


def _signal_values(real_rows: Sequence[Mapping]) -> dict:
    """The label-free signals of the rows, recomputed from their features as the pseudo-label stage computes them from
    the ensemble's softmax: ``mean_max_softmax`` is a feature, the Soft Dice Confidence
    ``2 sum(p y) / (sum(p) + sum(y))`` is ``2 r (1 - m) / (r + 1)`` with ``r`` the soft/hard volume ratio and ``m``
    the missing mass. An organ absent from a prediction scores 0."""
    value = lambda r, f: float(r[f]) if r["present"] and np.isfinite(float(r[f])) else 0.0
    return {"mean_max_softmax": np.array([value(r, "mean_max_softmax") for r in real_rows]),
            "soft_dice_confidence": np.array([2 * value(r, "soft_hard_ratio") * (1 - value(r, "missing_mass"))
                                              / (value(r, "soft_hard_ratio") + 1) for r in real_rows])}


def signal_thresholds(rows: Sequence[Mapping], tau: float) -> dict:
    """Per label-free signal, the Youden-J threshold for "IoU >= tau" on the real out-of-fold rows (organs pooled):
    the operating point a signal filter uses when none is given (signals as in `_signal_values`). The folds'
    agreement has no such rows (every fold saw the labeled cases but one), so it gets no threshold here.
    """
    real = [r for r in rows if r["real"]]
    if not real:
        return {}
    good = np.array([r["iou"] >= tau for r in real])
    return {name: youden_threshold(s, good) for name, s in _signal_values(real).items()}


def filter_evidence(rows: Sequence[Mapping], p_good: np.ndarray, tau: float) -> dict:
    """AUROC for "IoU >= tau" on the real out-of-fold rows: the classifier's grouped out-of-fold ``p_good``
    (aligned with ``rows``) and each label-free signal of `_signal_values` (nothing fitted, so no CV needed); empty
    when those rows hold one class only. The evidence ``choose_filter`` decides on, without any unlabeled ground
    truth."""
    from sklearn.metrics import roc_auc_score

    real = np.array([bool(r["real"]) for r in rows])
    good = np.array([r["iou"] >= tau for r in rows])[real]
    if good.all() or not good.any():
        return {}
    scores = {"quality": np.nan_to_num(np.asarray(p_good, float)[real], nan=0.0),
              **_signal_values([r for r in rows if r["real"]])}
    return {name: round(float(roc_auc_score(good, s)), 4) for name, s in scores.items()}


def choose_filter(evidence: Mapping[str, float]) -> tuple[str, str]:
    """The filter ``--filter auto`` uses: the quality classifier only when its grouped out-of-fold AUROC beats every
    label-free signal's, else the best signal (simpler, nothing learned; on pseudo-labels of unlabeled pools the
    signals ranked better, docs/results/fair-baseline-hippocampus.md). Returns (filter, reason)."""
    if "quality" not in evidence:
        return "quality", ("no evidence (the real out-of-fold predictions are all good or all bad): the quality "
                           "classifier's P(good)")
    signals = {k: v for k, v in evidence.items() if k != "quality"}
    best = max(sorted(signals), key=signals.get)
    if evidence["quality"] > signals[best]:
        return "quality", (f"the quality classifier's grouped out-of-fold AUROC {evidence['quality']:.3f} beats the "
                           f"best label-free signal ({best}, {signals[best]:.3f})")
    return best, (f"{best}: AUROC {signals[best]:.3f} on the teacher's out-of-fold predictions, against "
                  f"{evidence['quality']:.3f} for the quality classifier's grouped out-of-fold P(good); a learned "
                  "model is used only when it beats the best signal")


def sample_weights(real: np.ndarray) -> np.ndarray:
    """Row weights giving the real out-of-fold rows together as much weight as all corrupted copies (the model is
    used on real predictions; the copies widen its range without drowning them); all 1 without copies."""
    real = np.asarray(real, bool)
    n_real, n_fake = int(real.sum()), int((~real).sum())
    if n_real == 0 or n_fake == 0:
        return np.ones(len(real))
    return np.where(real, n_fake / n_real, 1.0)


def choose_threshold(p_good: np.ndarray, iou: np.ndarray, real: np.ndarray, tau: float) -> tuple[float, str]:
    """Youden-optimal accept threshold on out-of-fold ``p_good``: over the real rows when both classes occur among
    them (the model is used on real predictions), else over all rows. Returns (threshold, rule)."""
    real, good = np.asarray(real, bool), np.asarray(iou) >= tau
    if real.any() and 0 < good[real].sum() < real.sum():
        return youden_threshold(np.asarray(p_good)[real], good[real]), "Youden J on grouped out-of-fold p_good, real rows"
    return youden_threshold(p_good, good), "Youden J on grouped out-of-fold p_good, real + corrupted rows"


def _fit_estimators(x: np.ndarray, iou: np.ndarray, tau: float, seed: int, weights: np.ndarray):
    from threadpoolctl import threadpool_limits

    regressor, classifier = _estimators(seed, len(x))
    good = (iou >= tau).astype(int)
    # one OpenMP thread: these tables are small, and more threads on a busy CPU are many times slower
    with threadpool_limits(limits=1):
        regressor.fit(x, iou, sample_weight=weights)
        if good.min() == good.max():
            return regressor, None, float(good[0])
        classifier.fit(x, good, sample_weight=weights)
    return regressor, classifier, 1.0


def _reference_rows(reference_rows: Sequence[Mapping], cases: set) -> list:
    return [r for r in reference_rows if r["case"] in cases]


def _fit_on(rows: Sequence[Mapping], reference_rows: Sequence[Mapping], organs: Sequence[str], tau: float,
            seed: int) -> tuple:
    cases = {r["case"] for r in rows}
    reference = reference_statistics(_reference_rows(reference_rows, cases))
    x = feature_matrix(rows, organs, reference)
    iou = np.asarray([r["iou"] for r in rows], float)
    weights = sample_weights(np.asarray([bool(r["real"]) for r in rows]))
    return (reference, *_fit_estimators(x, iou, tau, seed, weights))


def grouped_predictions(rows: Sequence[Mapping], reference_rows: Sequence[Mapping], organs: Sequence[str], *,
                        tau: float, n_splits: int = 5, seed: int = 0, progress: bool = False) -> dict:
    """Out-of-fold quality predictions with cases grouped.

    Returns
    -------
    dict
        ``predicted_iou``, ``p_good`` (arrays aligned with ``rows``), ``cv_fold`` (test fold of each row) and
        ``train_cases`` (per fold, the cases its model was fitted on; never includes a test row's case).
    """
    from tqdm import tqdm

    groups = [r["case"] for r in rows]
    predicted = np.full(len(rows), np.nan)
    p_good = np.full(len(rows), np.nan)
    fold_of = np.full(len(rows), -1)
    train_cases = []
    folds = grouped_folds(groups, n_splits, seed)
    for k, (train, test) in enumerate(tqdm(folds, desc="grouped CV", unit="fold", disable=not progress)):
        train_rows = [rows[i] for i in train]
        test_rows = [rows[i] for i in test]
        reference, regressor, classifier, constant = _fit_on(train_rows, reference_rows, organs, tau, seed)
        model = QualityModel(labels={o: i + 1 for i, o in enumerate(organs)}, tau=tau, accept_threshold=0.5,
                             teacher={}, feature_names=FEATURE_NAMES, reference=reference, regressor=regressor,
                             classifier=classifier, constant_p_good=constant)
        iou_hat, p = model.predict(feature_matrix(test_rows, organs, reference))
        predicted[test], p_good[test], fold_of[test] = iou_hat, p, k
        train_cases.append(sorted({r["case"] for r in train_rows}))
    return {"predicted_iou": predicted, "p_good": p_good, "cv_fold": fold_of, "train_cases": train_cases}


def fit_quality_model(rows: Sequence[Mapping], reference_rows: Sequence[Mapping], labels: Mapping[str, int], *,
                      tau: float, teacher: Mapping, seed: int = 0, accept_threshold: Optional[float] = None,
                      n_splits: int = 5, training_info: Optional[Mapping] = None) -> QualityModel:
    """Fit the quality model on every row; choose the accept threshold by grouped CV unless given.

    Parameters
    ----------
    rows, reference_rows : sequence of mapping
        From ``table.build_table`` (or ``read_rows``).
    labels : mapping
        Organ -> label id.
    tau : float
        IoU threshold of a good pseudo-label, in (0, 1).
    teacher : mapping
        The teacher's identity (``TeacherCV.identity``), stored in the model.
    accept_threshold : float, optional
        Fixed operating point on ``p_good``; default: the Youden-optimal threshold on grouped out-of-fold
        predictions of these rows (real and corrupted).

    Notes
    -----
    The grouped out-of-fold predictions also give ``training["filter_evidence"]`` (`filter_evidence`) and the
    filter ``--filter auto`` uses, ``training["auto_filter"]`` with its ``auto_filter_reason`` (`choose_filter`).
    """
    if not 0 < tau < 1:
        raise MedakaError(f"tau={tau!r}: expected an IoU threshold strictly between 0 and 1")
    if not rows:
        raise MedakaError("no training rows: the teacher's cross-validation gave no cases")
    organs = sorted(labels, key=labels.get)
    iou = np.asarray([r["iou"] for r in rows], float)
    info = dict(training_info or {})
    # a fixed threshold on a single case needs no CV, and gets no evidence either
    oof = (grouped_predictions(rows, reference_rows, organs, tau=tau, n_splits=n_splits, seed=seed)
           if accept_threshold is None or len({r["case"] for r in rows}) > 1 else None)
    info["filter_evidence"] = {} if oof is None else filter_evidence(rows, oof["p_good"], tau)
    info["auto_filter"], info["auto_filter_reason"] = choose_filter(info["filter_evidence"])
    if accept_threshold is None:
        accept_threshold, info["accept_threshold_rule"] = choose_threshold(
            oof["p_good"], iou, [bool(r["real"]) for r in rows], tau)
    else:
        if not 0 <= accept_threshold <= 1:
            raise MedakaError(f"accept_threshold={accept_threshold!r}: expected a probability in [0, 1]")
        info["accept_threshold_rule"] = "given"
    reference, regressor, classifier, constant = _fit_on(rows, reference_rows, organs, tau, seed)
    info.update(n_rows=len(rows), n_real=int(sum(r["real"] for r in rows)), n_cases=len({r["case"] for r in rows}),
                n_good=int((iou >= tau).sum()), n_bad=int((iou < tau).sum()))
    return QualityModel(labels=dict(labels), tau=float(tau), accept_threshold=float(accept_threshold),
                        teacher=dict(teacher), feature_names=FEATURE_NAMES, reference=reference, regressor=regressor,
                        classifier=classifier, constant_p_good=constant, seed=seed, versions=versions(), training=info)
