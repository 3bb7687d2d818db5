"""Model performance from predictions: measured where labels exist, estimated where not.

Ground truth arrives late (or never), so monitoring reports two things per time bucket and
model version: classification metrics over the labelled predictions, and a label-free
estimate over the unlabelled ones in the spirit of NannyML's CBPE. With calibrated
probabilities, the chance that a prediction is right is its confidence, so the expected
accuracy is the mean confidence. Scores are first calibrated (isotonic regression) on the
labelled predictions of the same model version when enough exist. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

MIN_CALIBRATION = 20


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
    positive_proba: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, F1 (binary on class 1, else macro), MCC and ROC-AUC (None when undefined)."""
    y, yhat = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    out: dict[str, Any] = {"n": int(y.size), "accuracy": None, "f1": None, "mcc": None}
    out["roc_auc"] = None
    if y.size == 0:
        return out
    classes = np.union1d(y, yhat)
    binary = set(classes.tolist()) <= {0, 1}
    out["accuracy"] = float(accuracy_score(y, yhat))
    out["f1"] = float(f1_score(y, yhat, average="binary" if binary else "macro", zero_division=0))
    out["mcc"] = float(matthews_corrcoef(y, yhat)) if classes.size > 1 else None
    if positive_proba is not None and np.unique(y).size == 2 and binary:
        out["roc_auc"] = float(roc_auc_score(y, np.asarray(positive_proba, dtype=np.float64)))
    return out


def fit_calibrator(positive_proba: np.ndarray, labels: np.ndarray) -> IsotonicRegression | None:
    """Isotonic map score -> P(label = 1), or None without enough labelled binary data."""
    if positive_proba.size < MIN_CALIBRATION or np.unique(labels).size != 2:
        return None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(positive_proba, labels)
    return iso


def expected_accuracy(
    positive_proba: np.ndarray, calibrator: IsotonicRegression | None = None
) -> float | None:
    """CBPE-style expected accuracy of binary predictions (predicted = p >= 0.5)."""
    p = np.asarray(positive_proba, dtype=np.float64)
    if p.size == 0:
        return None
    predicted = p >= 0.5
    calibrated = calibrator.predict(p) if calibrator is not None else p
    return float(np.mean(np.where(predicted, calibrated, 1.0 - calibrated)))


def expected_accuracy_multiclass(proba: np.ndarray) -> float | None:
    """Mean top-class probability: expected accuracy when ``proba`` rows are calibrated."""
    return float(np.max(proba, axis=1).mean()) if len(proba) else None


def estimate(
    unlabelled_proba: np.ndarray,
    labelled_proba: np.ndarray | None = None,
    labelled_y: np.ndarray | None = None,
) -> dict[str, Any]:
    """The label-free estimate for one bucket; always ``estimated: True``."""
    p = np.asarray(unlabelled_proba, dtype=np.float64)
    out: dict[str, Any] = {"n": int(len(p)), "estimated": True, "calibrated": False}
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if p.ndim == 2:
        out["expected_accuracy"] = expected_accuracy_multiclass(p)
        return out
    calibrator = None
    if labelled_proba is not None and labelled_y is not None:
        lp = np.asarray(labelled_proba, dtype=np.float64)
        if lp.ndim == 2:
            lp = lp[:, 1] if lp.shape[1] == 2 else lp.max(axis=1)
        calibrator = fit_calibrator(lp, np.asarray(labelled_y))
    out["calibrated"] = calibrator is not None
    out["expected_accuracy"] = expected_accuracy(p, calibrator)
    return out
