"""Serving performance of a session: predictions joined with ground-truth labels.

Pure: the router fetches ``(model_version_id, predicted, proba, label)`` rows and this
module scores them per model version and overall, the way monitoring would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

Scored = tuple[int, int, Sequence[float], int]  # model_version_id, predicted, proba, label


def score(rows: Sequence[Scored]) -> dict[str, Any]:
    """Accuracy and binary ROC-AUC (None when undefined) of labelled predictions."""
    if not rows:
        return {"n": 0, "accuracy": None, "roc_auc": None}
    predicted = np.array([r[1] for r in rows])
    labels = np.array([r[3] for r in rows])
    accuracy = float(np.mean(predicted == labels))
    roc_auc: float | None = None
    classes = np.unique(labels)
    if len(classes) == 2 and all(len(r[2]) == 2 for r in rows):
        positive = np.array([r[2][1] for r in rows], dtype=np.float64)
        roc_auc = float(roc_auc_score(labels == classes[1], positive))
    return {"n": len(rows), "accuracy": accuracy, "roc_auc": roc_auc}


def by_model_version(rows: Sequence[Scored]) -> list[dict[str, Any]]:
    """One score per model version, then all versions together (``model_version_id`` None)."""
    groups: dict[int, list[Scored]] = defaultdict(list)
    for r in rows:
        groups[r[0]].append(r)
    out = [{"model_version_id": v, **score(g)} for v, g in sorted(groups.items())]
    return out + [{"model_version_id": None, **score(rows)}]
