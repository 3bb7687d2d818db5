"""Model families: what a model version's ``family`` column means at fit and predict time.

Every family is adapted to one small ``Classifier`` protocol, so serving, evaluation and
training treat scikit-learn, user pipelines, torch and ONNX models alike. ``sklearn-lda``
and ``torch-eegnet`` are fitted here on flat features; ``sklearn-pipeline`` (any fitted
scikit-learn-compatible estimator: pyRiemann, ``mne.decoding``) and ``onnx`` arrive
fitted, and take features or raw epochs ``[n, c, t]``. A user's estimator keeps its own
labels (MOABB's ``"Target"``/``"NonTarget"``): ``PipelineClassifier`` maps them to the
service's integer classes through ``model_params["class_map"]`` and scores through
``classes_``, never by assuming a column. Torch is imported only by the ``torch-eegnet``
family (``neurostream.models.eegnet``), so scikit-learn-only workers start without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, Protocol, runtime_checkable

import numpy as np

from neurostream.errors import ArtifactError

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
# The families that read flat feature vectors ``[n, f]`` only, never raw epochs.
FLAT_ONLY: Final = frozenset({SKLEARN_LDA, TORCH_EEGNET})
# model_params of a sklearn-pipeline version: artifact label -> service class, and the
# service class whose probability is the score (labelling's target, 1, by default).
PIPELINE_PARAMS: Final = frozenset({"class_map", "positive_class"})


@runtime_checkable
class Classifier(Protocol):
    classes: list[int]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``[n, f]`` features (or ``[n, c, t]`` epochs, for the families that take them)
        -> ``[n, k]`` probabilities, columns ordered like ``classes``."""
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


def _integral(c: Any) -> bool:
    if isinstance(c, bool | np.bool_):
        return False
    if isinstance(c, int | np.integer):
        return True
    return isinstance(c, float | np.floating) and float(c).is_integer()


def map_classes(artifact_classes: Sequence[Any], class_map: Any) -> list[int]:
    """Service classes in the order of an estimator's ``classes_``: through ``class_map``
    (``{str(label): class}``) when given, else the labels themselves if they are integers."""
    labels = [c.item() if isinstance(c, np.generic) else c for c in artifact_classes]
    if class_map is None:
        if all(_integral(c) for c in labels):
            return [int(c) for c in labels]
        raise ArtifactError(
            f"the estimator's classes_ are {labels}, not integers: set model_params.class_map "
            f"to map each to the service's class (e.g. {{{str(labels[0])!r}: 0, ...}}; "
            "target 1, non-target 0)",
            field="model_params.class_map",
        )
    if not isinstance(class_map, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in class_map.values()
    ):
        raise ArtifactError(
            f"model_params.class_map must map labels to integer classes, got {class_map!r}",
            field="model_params.class_map",
        )
    names = [str(c) for c in labels]
    missing = [n for n in names if n not in class_map]
    extra = sorted(set(map(str, class_map)) - set(names))
    if missing or extra:
        raise ArtifactError(
            f"model_params.class_map names {sorted(map(str, class_map))}, the estimator's "
            f"classes_ are {names}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unknown {extra})" if extra else ""),
            field="model_params.class_map",
        )
    mapped = [int(class_map[n]) for n in names]
    if len(set(mapped)) != len(mapped):
        raise ArtifactError(
            f"model_params.class_map maps two labels to one class: {dict(class_map)}",
            field="model_params.class_map",
        )
    return mapped


class PipelineClassifier:
    """Adapts a user's fitted scikit-learn-compatible estimator (a ``sklearn-pipeline``):
    probabilities from ``predict_proba``, else from ``decision_function`` (a logistic of the
    binary decision value, which stands for ``classes_[1]``; a softmax over one-vs-rest
    values), with ``classes`` the service labels of its ``classes_``, in that order."""

    def __init__(self, estimator: Any, class_map: Mapping[str, int] | None = None) -> None:
        artifact_classes = getattr(estimator, "classes_", None)
        if artifact_classes is None or len(artifact_classes) < 2:
            raise ArtifactError(
                f"{type(estimator).__name__} has no classes_ (two or more): save the "
                "estimator after fitting it",
                field="artifact",
            )
        self.score_kind: Literal["proba", "decision"]
        if hasattr(estimator, "predict_proba"):
            self.score_kind = "proba"
        elif hasattr(estimator, "decision_function"):
            self.score_kind = "decision"
        else:
            raise ArtifactError(
                f"{type(estimator).__name__} has neither predict_proba nor decision_function",
                field="artifact",
            )
        self.estimator = estimator
        self.artifact_classes: list[Any] = list(artifact_classes)
        self.classes: list[int] = map_classes(self.artifact_classes, class_map)

    @classmethod
    def of(cls, estimator: Any, model_params: Mapping[str, Any]) -> PipelineClassifier:
        """The adapter a version's ``model_params`` describe (unknown keys refused)."""
        unknown = sorted(set(model_params) - PIPELINE_PARAMS)
        if unknown:
            raise ArtifactError(
                f"{SKLEARN_PIPELINE}: unknown model_params {unknown}; known: "
                f"{sorted(PIPELINE_PARAMS)}",
                field="model_params",
            )
        return cls(estimator, model_params.get("class_map"))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.score_kind == "proba":
            return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        from scipy.special import expit, softmax

        d = np.asarray(self.estimator.decision_function(X), dtype=np.float64)
        k = len(self.classes)
        if k == 2 and (d.ndim == 1 or d.shape[1:] == (1,)):
            p1 = expit(d.reshape(-1))
            return np.column_stack([1.0 - p1, p1])
        if d.ndim != 2 or d.shape[1] != k:
            raise ValueError(
                f"decision_function gives shape {d.shape} for {k} classes (one-vs-rest needed)"
            )
        out: np.ndarray = softmax(d, axis=1)
        return out


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
