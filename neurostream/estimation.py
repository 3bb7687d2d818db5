"""Label-free performance estimates of served predictions (CBPE-style), where labels lag.

Ground truth arrives late (or never), so monitoring reports, per time bucket and model
version, the measured scores of labelled predictions (``neurostream.scoring``) and an
estimate for the unlabelled ones in the spirit of NannyML's CBPE. With calibrated
probabilities a prediction's probability is the chance of its class, so summing them
gives an expected confusion matrix; ``scoring.from_confusion`` turns it into the same
balanced accuracy, accuracy and chance rate the measured part reports, and a threshold
sweep over the calibrated scores gives the expected ROC-AUC. Scores are first calibrated
(isotonic regression) on the labelled predictions of the same model version when enough
exist.

Why a module apart from the scorer: the scorer measures predictions against labels; this
guesses what it would measure, from scores alone, and needs a calibration model. One is a
fact, the other an estimate marked ``estimated: true``; they share the definitions. Pure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from neurostream import scoring

MIN_CALIBRATION = 20


def fit_calibrator(positive_proba: np.ndarray, labels: np.ndarray) -> IsotonicRegression | None:
    """Isotonic map score -> P(positive), or None without enough labelled binary data.

    ``labels`` are any two classes; the larger one is positive (``scoring``'s rule)."""
    y = np.asarray(labels)
    classes = np.unique(y)
    if positive_proba.size < MIN_CALIBRATION or classes.size != 2:
        return None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(positive_proba, (y == classes[1]).astype(np.float64))
    return iso


def expected_confusion(positive_proba: np.ndarray, calibrated: np.ndarray) -> np.ndarray:
    """Expected ``[true, predicted]`` counts of binary predictions (predicted: score >= 0.5)."""
    predicted = np.asarray(positive_proba) >= 0.5
    q = np.asarray(calibrated, dtype=np.float64)
    return np.array(
        [
            [np.sum((1 - q)[~predicted]), np.sum((1 - q)[predicted])],
            [np.sum(q[~predicted]), np.sum(q[predicted])],
        ]
    )


def expected_roc_auc(positive_proba: np.ndarray, calibrated: np.ndarray) -> float | None:
    """ROC-AUC expected when each window is positive with its calibrated probability.

    The ROC curve's steps at each distinct score are the expected positives and negatives
    above it; ties contribute half, as in the measured ROC-AUC."""
    s = np.asarray(positive_proba, dtype=np.float64)
    q = np.asarray(calibrated, dtype=np.float64)
    pos, neg = q.sum(), (1 - q).sum()
    if s.size == 0 or pos <= 0 or neg <= 0:
        return None
    thresholds, group = np.unique(-s, return_inverse=True)  # descending scores
    tp = np.bincount(group, weights=q, minlength=thresholds.size)
    fp = np.bincount(group, weights=1 - q, minlength=thresholds.size)
    tpr = np.concatenate([[0.0], np.cumsum(tp)]) / pos
    fpr = np.concatenate([[0.0], np.cumsum(fp)]) / neg
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def expected_accuracy(
    positive_proba: np.ndarray, calibrator: IsotonicRegression | None = None
) -> float | None:
    """CBPE-style expected accuracy of binary predictions (predicted = p >= 0.5)."""
    p = np.asarray(positive_proba, dtype=np.float64)
    if p.size == 0:
        return None
    calibrated = calibrator.predict(p) if calibrator is not None else p
    return float(np.mean(np.where(p >= 0.5, calibrated, 1.0 - calibrated)))


def _expected(cm: np.ndarray, n_classes: int) -> dict[str, Any]:
    scores = scoring.from_confusion(cm, list(range(n_classes)))
    return {
        "expected_balanced_accuracy": scores["balanced_accuracy"],
        "expected_accuracy": scores["accuracy"],
        "expected_accuracy_chance": scores["accuracy_chance"],
    }


def estimate(
    unlabelled_proba: np.ndarray,
    labelled_proba: np.ndarray | None = None,
    labelled_y: np.ndarray | None = None,
) -> dict[str, Any]:
    """The label-free estimate for one bucket, headline first; always ``estimated: True``.

    ``unlabelled_proba``: positive scores ``[n]`` or ``[n, k]`` rows (multi-class: the
    rows are taken as calibrated, predicted = argmax)."""
    p = np.asarray(unlabelled_proba, dtype=np.float64)
    out: dict[str, Any] = {
        "n": int(len(p)),
        "estimated": True,
        "calibrated": False,
        "expected_roc_auc": None,
        "expected_balanced_accuracy": None,
        "expected_accuracy": None,
        "expected_accuracy_chance": None,
    }
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if len(p) == 0:
        return out
    if p.ndim == 2:
        k = p.shape[1]
        cm = np.zeros((k, k))
        np.add.at(cm.T, np.argmax(p, axis=1), p)  # row j of cm.T: predicted class j
        return out | _expected(cm, k)
    calibrator = None
    if labelled_proba is not None and labelled_y is not None:
        lp = np.asarray(labelled_proba, dtype=np.float64)
        if lp.ndim == 2:
            lp = lp[:, 1] if lp.shape[1] == 2 else lp.max(axis=1)
        calibrator = fit_calibrator(lp, np.asarray(labelled_y))
    calibrated = calibrator.predict(p) if calibrator is not None else p
    out["calibrated"] = calibrator is not None
    out["expected_roc_auc"] = expected_roc_auc(p, calibrated)
    return out | _expected(expected_confusion(p, calibrated), 2)
