"""Classification metrics shared by training, evaluation and retraining comparisons.

One function so a candidate and the champion are always scored the same way; every value
is a plain Python number or list, ready for the ``metrics`` JSON column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[int]
) -> dict[str, Any]:
    """roc_auc (None when only one class is present), balanced_accuracy, f1, mcc, confusion."""
    y = np.asarray(y_true).astype(np.int64)
    labels = np.asarray(classes, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    y_pred = labels[np.argmax(proba, axis=1)] if len(y) else np.empty(0, np.int64)
    binary = len(labels) == 2
    roc_auc: float | None = None
    if len(np.unique(y)) >= 2:
        if binary:
            roc_auc = float(skm.roc_auc_score(y == labels[1], proba[:, 1]))
        elif set(np.unique(y)) == set(labels.tolist()):
            roc_auc = float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels))
    if binary:
        f1 = skm.f1_score(y, y_pred, pos_label=int(labels[1]), average="binary", zero_division=0)
    else:
        f1 = skm.f1_score(y, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "roc_auc": roc_auc,
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, y_pred)) if len(y) else None,
        "f1": float(f1),
        "mcc": float(skm.matthews_corrcoef(y, y_pred)) if len(y) else None,
        "confusion_matrix": skm.confusion_matrix(y, y_pred, labels=labels).tolist(),
        "n": int(len(y)),
    }
