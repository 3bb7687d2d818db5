"""The scorer: how well predictions match labels, the same way everywhere.

Training scores its hold-out split with it, retraining compares challenger and champion
with it, monitoring scores labelled predictions with it and the ML data API scores a
session with it, so a number means the same in the registry, a job result, a dashboard
and a session summary. Label-free estimates (``neurostream.estimation``) build an
expected confusion matrix and score it with ``from_confusion`` here.

The headline is ``roc_auc`` and ``balanced_accuracy``: EEG classes are imbalanced (a P300
oddball has ~14 % targets), so plain accuracy rewards "always non-target" (0.86). Where
accuracy is reported, ``accuracy_chance`` (the majority-class rate of the labels, what
that predictor scores) sits next to it. Every edge case is decided here once: empty
input, one class, multi-class, scores as ``[n, k]`` or a positive column, labels that are
not ``{0, 1}``. Pure: no I/O; values are plain Python numbers, ready for JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

HEADLINE = ("roc_auc", "balanced_accuracy")
"""What summaries lead with and what thresholds, alerts and comparisons use."""
COMPARED = ("roc_auc", "balanced_accuracy", "f1", "mcc")
"""Metrics on which a challenger and a champion are compared side by side."""

ArrayLike = Sequence[Any] | np.ndarray


def _classes(y: np.ndarray, predicted: np.ndarray | None, classes: ArrayLike | None) -> np.ndarray:
    if classes is not None:
        known = np.asarray(classes)
        if known.ndim != 1 or known.size == 0 or np.unique(known).size != known.size:
            raise ValueError(f"classes must be distinct labels, got {list(known)}")
        seen = np.union1d(y, predicted) if predicted is not None else np.unique(y)
        unknown = np.setdiff1d(seen, known)
        if unknown.size:
            raise ValueError(f"labels {unknown.tolist()} are not in classes {known.tolist()}")
        return known
    return np.union1d(y, predicted) if predicted is not None else np.unique(y)


def _scores(proba: ArrayLike | None, n: int) -> np.ndarray | None:
    if proba is None:
        return None
    p = np.asarray(proba, dtype=np.float64)
    if n == 0 and p.size == 0:
        return p.reshape(0)
    if p.ndim not in (1, 2) or p.shape[0] != n:
        raise ValueError(f"proba has shape {p.shape}, expected ({n},) or ({n}, n_classes)")
    return p


def positive_scores(proba: np.ndarray, classes: ArrayLike) -> np.ndarray:
    """The binary positive class's scores (``classes[-1]``) from ``[n, 2]`` or ``[n]``."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:
        return p
    if p.shape[1] != len(classes):
        raise ValueError(f"proba has {p.shape[1]} columns for {len(classes)} classes")
    return p[:, -1]


def predict(proba: ArrayLike, classes: ArrayLike) -> np.ndarray:
    """Labels from scores: argmax over ``[n, k]`` columns, or positive score >= 0.5."""
    p = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(classes)
    if p.ndim == 1:
        if labels.size != 2:
            raise ValueError(f"a positive-class column needs 2 classes, got {labels.tolist()}")
        return labels[(p >= 0.5).astype(np.intp)]
    if p.shape[1] != labels.size:
        raise ValueError(f"proba has {p.shape[1]} columns for {labels.size} classes")
    return labels[np.argmax(p, axis=1)] if len(p) else labels[:0]


def roc_auc(y_true: ArrayLike, proba: ArrayLike, classes: ArrayLike) -> float | None:
    """ROC-AUC: binary on ``classes[-1]``, else one-vs-rest macro; None unless every class
    occurs in ``y_true`` (one class has no ranking to measure)."""
    y = np.asarray(y_true)
    labels = np.asarray(classes)
    p = np.asarray(proba, dtype=np.float64)
    if labels.size < 2 or not np.isin(labels, y).all():
        return None
    if labels.size == 2:
        return float(roc_auc_score(y == labels[1], positive_scores(p, labels)))
    if p.ndim != 2 or p.shape[1] != labels.size:
        return None
    # Macro one-vs-rest, as sklearn's multi_class="ovr", without its rows-sum-to-1 check.
    return float(np.mean([roc_auc_score(y == c, p[:, k]) for k, c in enumerate(labels)]))


def confusion(y_true: ArrayLike, predicted: ArrayLike, classes: ArrayLike) -> np.ndarray:
    """Counts ``[true class, predicted class]`` in the order of ``classes``."""
    labels = np.asarray(classes)
    y, yhat = np.asarray(y_true), np.asarray(predicted)
    order = np.argsort(labels, kind="stable")
    rows = order[np.searchsorted(labels, y, sorter=order)]
    cols = order[np.searchsorted(labels, yhat, sorter=order)]
    cm = np.zeros((labels.size, labels.size), dtype=np.int64)
    np.add.at(cm, (rows, cols), 1)
    return cm


def from_confusion(cm: np.ndarray, classes: ArrayLike) -> dict[str, Any]:
    """Everything a confusion matrix says; fractional (expected) counts allowed.

    balanced_accuracy: mean recall over classes that occur; accuracy_chance: the majority
    class's share; f1: binary on ``classes[-1]``, else macro; mcc: multi-class
    (Gorodkin), 0.0 when a side has a single class (sklearn's convention)."""
    c = np.asarray(cm, dtype=np.float64)
    labels = [x.item() if isinstance(x, np.generic) else x for x in np.asarray(classes)]
    total = float(c.sum())
    out: dict[str, Any] = {
        "balanced_accuracy": None,
        "accuracy": None,
        "accuracy_chance": None,
        "f1": None,
        "mcc": None,
        "n": int(round(total)),
        "classes": labels,
        "confusion_matrix": cm.tolist(),
    }
    if total <= 0:
        return out
    support, chosen, hits = c.sum(axis=1), c.sum(axis=0), np.diag(c)
    present = support > 0
    out["balanced_accuracy"] = float(np.mean(hits[present] / support[present]))
    out["accuracy"] = float(hits.sum() / total)
    out["accuracy_chance"] = float(support.max() / total)
    denom = support + chosen
    f1 = np.divide(2 * hits, denom, out=np.zeros_like(hits), where=denom > 0)
    out["f1"] = float(f1[-1] if len(labels) == 2 else f1.mean())
    cov_yy = total**2 - float(support @ support)
    cov_pp = total**2 - float(chosen @ chosen)
    cov_yp = hits.sum() * total - float(support @ chosen)
    out["mcc"] = float(cov_yp / np.sqrt(cov_yy * cov_pp)) if cov_yy * cov_pp > 0 else 0.0
    return out


def score(
    y_true: ArrayLike,
    proba: ArrayLike | None = None,
    *,
    predicted: ArrayLike | None = None,
    classes: ArrayLike | None = None,
) -> dict[str, Any]:
    """Headline first: roc_auc, balanced_accuracy, then accuracy with accuracy_chance, f1,
    mcc, n, classes, confusion_matrix.

    ``proba`` is ``[n, k]`` in the order of ``classes`` (a model's ``classes``) or the
    positive class's column ``[n]`` (binary; positive is ``classes[-1]``). ``predicted``
    are the labels that were served; without them, labels come from ``proba`` (argmax).
    Without ``classes``: the sorted labels seen in ``y_true`` and ``predicted``, and
    ``proba`` columns that do not match them in number are not used.
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one label per row, got shape {y.shape}")
    p = _scores(proba, len(y))
    yhat = None if predicted is None else np.asarray(predicted)
    if yhat is not None and yhat.shape != y.shape:
        raise ValueError(f"predicted has shape {yhat.shape}, expected {y.shape}")
    if yhat is None and p is None:
        raise ValueError("give proba, predicted labels, or both")
    if y.size == 0:
        labels = np.asarray(classes if classes is not None else [])
        empty = from_confusion(np.zeros((labels.size, labels.size), np.int64), labels)
        return {"roc_auc": None, **empty}
    if yhat is None and classes is None:
        raise ValueError("labels from proba need the classes its columns stand for")
    labels = _classes(y, yhat, classes)
    if yhat is None:
        assert p is not None
        yhat = predict(p, labels)
    if p is not None and p.ndim == 2 and p.shape[1] != labels.size:
        if classes is not None:
            raise ValueError(f"proba has {p.shape[1]} columns for {labels.size} classes")
        p = None  # columns we cannot name: score the labels only
    measured = from_confusion(confusion(y, yhat, labels), labels)
    return {"roc_auc": roc_auc(y, p, labels) if p is not None else None, **measured}
