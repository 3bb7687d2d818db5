"""Model families: what a model version's ``family`` column means at fit and predict time.

Every family is adapted to one small ``Classifier`` protocol over feature matrices, so
serving, evaluation and training treat scikit-learn and torch models alike. Torch is
imported only by the ``torch-eegnet`` family (``neurostream.models.eegnet``), so
scikit-learn-only workers start without paying for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np

SKLEARN_LDA: Final = "sklearn-lda"
TORCH_EEGNET: Final = "torch-eegnet"
# Brought by users: any scikit-learn-compatible estimator saved with skops (pyRiemann,
# mne.decoding, scikit-learn), and ONNX networks served by onnxruntime.
SKLEARN_PIPELINE: Final = "sklearn-pipeline"
ONNX: Final = "onnx"
FAMILIES: Final = frozenset({SKLEARN_LDA, TORCH_EEGNET, SKLEARN_PIPELINE, ONNX})
# The families ``train_model`` fits itself; the others arrive fitted.
TRAINABLE: Final = frozenset({SKLEARN_LDA, TORCH_EEGNET})

LDA_DEFAULTS: Final[Mapping[str, Any]] = {"standardize": True, "shrinkage": "auto"}


@runtime_checkable
class Classifier(Protocol):
    classes: list[int]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``[n, f]`` features -> ``[n, k]`` probabilities, columns ordered like ``classes``."""
        ...


class SklearnClassifier:
    """Adapts a fitted scikit-learn estimator (``classes_``, ``predict_proba``)."""

    def __init__(self, estimator: Any) -> None:
        if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
            raise TypeError(f"{type(estimator).__name__} is not a fitted probabilistic classifier")
        self.estimator = estimator
        self.classes: list[int] = [int(c) for c in estimator.classes_]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    return family


def lda_params(model_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with overrides; unknown keys refused so typos do not go unnoticed."""
    given = dict(model_params or {})
    unknown = sorted(set(given) - set(LDA_DEFAULTS))
    if unknown:
        raise ValueError(
            f"{SKLEARN_LDA}: unknown model_params {unknown}; known: {sorted(LDA_DEFAULTS)}"
        )
    return {**LDA_DEFAULTS, **given}


def fit_lda(X: np.ndarray, y: np.ndarray, model_params: Mapping[str, Any]) -> SklearnClassifier:
    """Shrinkage LDA: the standard, robust ERP classifier for few, high-dimensional epochs."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    p = lda_params(model_params)
    steps: list[tuple[str, Any]] = [("scale", StandardScaler())] if p["standardize"] else []
    steps.append(("lda", LinearDiscriminantAnalysis(solver="lsqr", shrinkage=p["shrinkage"])))
    return SklearnClassifier(Pipeline(steps).fit(X, y))
