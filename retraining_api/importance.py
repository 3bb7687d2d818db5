"""Permutation importance of a model version on a dataset, per channel and per feature.

``sklearn.inspection.permutation_importance`` measures the drop in ROC-AUC when inputs
are shuffled across rows. Every feature pipeline here is channel-major (``erp@1``:
channels x times, ``bandpower@1``: channels x bands), so the features group into
channels and into within-channel positions (latencies or bands). ERP features are highly
redundant (neighbouring samples of one channel), so single columns barely matter; groups
are shuffled whole instead (see ``_Grouped``): per channel says which electrodes the
model relies on, per position which latencies or bands. Rows are capped so the answer
comes within the request; it runs in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.inspection import permutation_importance

from neurostream import scoring
from neurostream.models.serving import ServingModel


class _Grouped:
    """Feature groups as columns of row indices, so sklearn permutes whole groups.

    ``permutation_importance`` shuffles one column at a time; here column ``g`` holds, per
    row, the row whose group-``g`` features are used. Shuffling it shuffles the whole group
    (a channel's time course, or one latency across channels) jointly, which is what the
    question "does the model need this channel?" means when features are redundant.
    """

    def __init__(self, classifier: Any, features: np.ndarray, groups: list[np.ndarray]) -> None:
        self.classifier, self.features, self.groups = classifier, features, groups

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Grouped:
        raise NotImplementedError("permutation importance scores an already trained model")

    def predict_proba(self, index: np.ndarray) -> np.ndarray:
        rows = np.asarray(index, dtype=np.int64)
        out = np.empty_like(self.features)
        for g, cols in enumerate(self.groups):
            out[:, cols] = self.features[rows[:, g][:, None], cols]
        return np.asarray(self.classifier.predict_proba(out))


class _Scorer:
    """The ``(estimator, X, y)`` scorer sklearn calls: ROC-AUC of the model's probabilities."""

    def __init__(self, classes: Sequence[int]) -> None:
        self.classes = np.asarray(classes)

    def __call__(self, estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
        auc = scoring.roc_auc(y, estimator.predict_proba(X), self.classes)
        if auc is None:
            raise ValueError(f"ROC-AUC needs every class {self.classes.tolist()} in the rows")
        return auc


def _feature_labels(model: ServingModel, per_channel: int, n_samples: int, fs: float) -> list[str]:
    """Names of the within-channel features: latency in ms (erp) or band names."""
    params: Mapping[str, Any] = model.feature_params
    if model.pipeline.name == "erp":
        step = n_samples / fs / per_channel
        return [f"{round((float(params['tmin']) + k * step) * 1000)}ms" for k in range(per_channel)]
    if model.pipeline.name == "bandpower" and len(params.get("bands", {})) == per_channel:
        return [str(b) for b in params["bands"]]
    return [f"f{k}" for k in range(per_channel)]


def sample_rows(y: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """Row indices: all, or a stratified random subset of ``max_rows``."""
    if len(y) <= max_rows:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=max_rows, stratify=y, random_state=seed)
    return np.sort(idx)


def permutation_by_channel(
    model: ServingModel,
    x: np.ndarray,
    y: np.ndarray,
    fs: float,
    channels: Sequence[str],
    *,
    repeats: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Baseline ROC-AUC plus per-channel and per-feature importance (mean AUC drop)."""
    features = model.features(np.asarray(x, dtype=np.float32), fs)
    n_channels = x.shape[1]
    if features.shape[1] % n_channels:
        raise ValueError(
            f"{model.feature_pipeline} gives {features.shape[1]} features, not a multiple of "
            f"{n_channels} channels"
        )
    per_channel = features.shape[1] // n_channels
    scorer = _Scorer(model.classes)
    baseline = scorer(model.classifier, features, y)
    columns = np.arange(features.shape[1]).reshape(n_channels, per_channel)

    def grouped(groups: list[np.ndarray]) -> np.ndarray:
        index = np.repeat(np.arange(len(y))[:, None], len(groups), axis=1)
        res = permutation_importance(
            _Grouped(model.classifier, features, groups),
            index,
            y,
            scoring=scorer,
            n_repeats=repeats,
            random_state=seed,
            n_jobs=1,
        )
        return np.asarray(res.importances)  # [groups, repeats]

    by_channel = grouped(list(columns))
    by_feature = grouped(list(columns.T)).mean(axis=1)
    labels = _feature_labels(model, per_channel, x.shape[2], fs)
    per_channel_out = [
        {
            "channel": str(channels[c]),
            "importance": float(by_channel[c].mean()),
            "std": float(by_channel[c].std()),
        }
        for c in range(n_channels)
    ]
    return {
        "baseline_roc_auc": float(baseline),
        "per_channel": per_channel_out,
        "per_feature": [
            {"feature": labels[k], "importance": float(by_feature[k])} for k in range(per_channel)
        ],
        "ranking": [str(channels[c]) for c in np.argsort(-by_channel.mean(axis=1), kind="stable")],
    }
