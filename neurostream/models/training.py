"""Training: epochs and labels in, a registrable model version out.

``train_model`` fits a family on one feature pipeline, scores it on a stratified hold-out
split and returns everything a ``model_versions`` row needs (artifact, sha256, metrics,
dataset hash). The artifact is the model fitted on the training split, so its metrics
describe exactly what will serve. With ``test_size=0`` it fits on every window instead
and leaves the score to cross-validation (``neurostream.models.validation``), which is
what ``neurostream train`` registers: every calibration epoch counts. ``evaluate`` scores
any model the same way.

The version's signature (``input_spec``) records what it was fitted on: channel names in
order, fs, window length, window kind, epoch geometry and units, so a worker can match
windows by channel name (``neurostream.models.signature``).

Only the ``TRAINABLE`` families are fitted from scratch; a ``sklearn-pipeline`` (a user's
estimator) is refitted from one given as ``estimator=`` (a champion's, cloned with
``sklearn.base.clone``), and an ``onnx`` network is never trained here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurostream import scoring
from neurostream.decisions import Calibration
from neurostream.errors import ArtifactError, ConfigError
from neurostream.features import get_pipeline
from neurostream.gate import Gate
from neurostream.geometry import EpochGeometry
from neurostream.models import artifacts
from neurostream.models.families import (
    FLAT_ONLY,
    SKLEARN_LDA,
    SKLEARN_PIPELINE,
    TRAINABLE,
    Classifier,
    PipelineClassifier,
    check_family,
    fit_lda,
    lda_params,
)
from neurostream.models.serving import ServingModel
from neurostream.models.signature import Signature, map_channels, select_channels


@dataclass(frozen=True)
class TrainedModel:
    family: str
    feature_pipeline: str
    feature_params: dict[str, Any]
    model_params: dict[str, Any]
    input_spec: dict[str, Any]
    classes: list[int]
    artifact: bytes = field(repr=False)
    sha256: str
    metrics: dict[str, Any]
    dataset_hash: str
    classifier: Classifier = field(repr=False, compare=False)

    def to_row(self, *, model_name: str, version: int = 1, id: int = 0) -> dict[str, Any]:
        """A ``model_versions``-shaped dict, e.g. for ``ServingModel.from_row`` in tests."""
        return {
            "id": id,
            "model_name": model_name,
            "version": version,
            "family": self.family,
            "feature_pipeline": self.feature_pipeline,
            "feature_params": self.feature_params,
            "model_params": self.model_params,
            "input_spec": self.input_spec,
            "classes": self.classes,
            "sha256": self.sha256,
            "artifact": self.artifact,
            "metrics": self.metrics,
            "dataset_hash": self.dataset_hash,
        }

    @property
    def signature(self) -> Signature:
        return Signature.from_spec(self.input_spec)


def dataset_hash(windows: np.ndarray, y: np.ndarray) -> str:
    """Identity of a training snapshot: shape, float32 samples and int64 labels."""
    w = np.ascontiguousarray(windows, dtype="<f4")
    labels = np.ascontiguousarray(y, dtype="<i8")
    h = hashlib.sha256(repr(w.shape).encode())
    h.update(w.tobytes())
    h.update(labels.tobytes())
    return h.hexdigest()


def _check(windows: np.ndarray, y: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(windows, dtype=np.float32)
    labels = np.asarray(y).astype(np.int64)
    if w.ndim != 3:
        raise ValueError(f"windows must be [n, channels, samples], got {w.shape}")
    if labels.shape != (w.shape[0],):
        raise ValueError(f"y has shape {labels.shape}, expected ({w.shape[0]},)")
    if not fs > 0:
        raise ValueError(f"fs must be positive, got {fs}")
    if not np.isfinite(w).all():
        raise ValueError("windows contain NaN or Inf")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        found = dict(zip(classes.tolist(), counts.tolist(), strict=True))
        raise ValueError(f"need >= 2 classes with >= 2 windows each, got {found}")
    return w, labels


def fit_classifier(
    family: str,
    X: np.ndarray,
    y: np.ndarray,
    classes: list[int],
    n_channels: int,
    model_params: Mapping[str, Any] | None,
    seed: int,
    estimator: Any = None,
) -> tuple[Classifier, dict[str, Any]]:
    """Fit ``family`` on features ``X`` (``n_channels`` rows of the windows); its params.
    A ``sklearn-pipeline`` is a clone of ``estimator`` fitted on the service's labels (so
    it needs no ``class_map``; ``positive_class`` is kept)."""
    if family == SKLEARN_PIPELINE:
        from sklearn.base import clone

        if estimator is None:
            raise ConfigError(
                f"{SKLEARN_PIPELINE} refits an estimator: pass estimator= (e.g. the "
                "champion's), or train one of " + ", ".join(sorted(TRAINABLE)),
                field="family",
            )
        params = {k: v for k, v in dict(model_params or {}).items() if k == "positive_class"}
        return PipelineClassifier(clone(estimator).fit(X, y)), params
    if X.ndim != 2:
        raise ConfigError(
            f"{family} reads flat feature vectors [n, f], got {X.shape}: use a feature "
            "pipeline (erp@1, erp@2, bandpower@1), or the sklearn-pipeline family for epochs",
            field="feature_pipeline",
        )
    if family == SKLEARN_LDA:
        params = lda_params(model_params)
        return fit_lda(X, y, params), params
    from neurostream.models import eegnet

    if X.shape[1] % n_channels:
        raise ValueError(f"{X.shape[1]} features do not fold into {n_channels} channels")
    shape = {
        "n_channels": n_channels,
        "n_times": X.shape[1] // n_channels,
        "n_classes": len(classes),
        "classes": classes,
    }
    params = eegnet.resolve_params({**dict(model_params or {}), **shape})
    y_index = np.searchsorted(np.asarray(classes), y)
    return eegnet.fit(X, y_index, params, seed=seed), params


def stream_params(
    pipeline: str, feature_params: Mapping[str, Any] | None, geometry: EpochGeometry | None
) -> dict[str, Any]:
    """A pipeline's params for epochs of ``geometry``: its ``stream_filter`` (``erp@2``)
    is the filter the epochs came through, unless given."""
    given = dict(feature_params or {})
    params = get_pipeline(pipeline).default_params() | given
    if "stream_filter" in params and "stream_filter" not in given and geometry is not None:
        params["stream_filter"] = geometry.filtered
    return params


def calibrate(proba: np.ndarray, y: np.ndarray, classes: Sequence[int]) -> Calibration | None:
    """Platt scaling of a binary classifier's positive (larger) class from held-out
    probabilities (``neurostream.decisions.Calibration``); None for more classes, or too
    few held-out scores of one."""
    if len(classes) != 2 or not len(y):
        return None
    positive = list(classes).index(max(classes))
    return Calibration.fit(np.asarray(proba)[:, positive], np.asarray(y) == max(classes))


def train_model(
    family: str,
    windows: np.ndarray,
    y: np.ndarray,
    fs: float,
    *,
    pipeline: str = "erp@1",
    feature_params: Mapping[str, Any] | None = None,
    model_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    test_size: float = 0.2,
    channels: Sequence[str] | None = None,
    pick_channels: Sequence[str] | None = None,
    drop_channels: Sequence[str] = (),
    kind: str = "epoch",
    tmin: float | None = None,
    tmax: float | None = None,
    gate: Gate | None = None,
    geometry: EpochGeometry | None = None,
    units: str = "uV",
    estimator: Any = None,
) -> TrainedModel:
    """Fit on a stratified split, score on the hold-out, package for the registry.

    ``family`` is one of ``TRAINABLE``, or ``sklearn-pipeline`` with ``estimator`` (a
    scikit-learn-compatible estimator, fitted or not, cloned and fitted here). ``units``:
    those the model reads (``input_spec.units``); ``windows`` stay in µV and are converted.

    ``test_size=0`` fits on all of ``windows``; the metrics are then empty (``n`` 0,
    scores None) and the caller puts its cross-validation there.

    ``channels`` names the rows of ``windows`` (``[n, channels, samples]``, µV) in order;
    the version then records them and workers match windows to it by name (reordered,
    extra channels ignored, a missing one refused). Without names it is matched by count.
    ``pick_channels`` keeps only the named channels, in that order; ``drop_channels``
    removes the named ones (a non-EEG AUX column, a bad electrode); both need ``channels``
    and refuse a name the data lacks (``ConfigError``). ``kind``, ``tmin`` and ``tmax``
    (epoch start and end in seconds around the event) are recorded in the signature.
    ``geometry`` (the epochs' own, e.g. ``LabelledEpochs.geometry``) supplies them too, with
    the baseline and the stream filter; ``erp@2`` needs it, and records the filter as its
    ``stream_filter`` (a worker then refuses windows cut from another stream).
    ``gate`` (the artifact gate the windows passed) is recorded as ``input_spec["gate"]``,
    so workers gate what this version scores with the same thresholds; without it the
    version scores every epoch. Filtering the windows through it is the caller's part.
    """
    from sklearn.model_selection import train_test_split

    check_family(family)
    if family not in TRAINABLE and not (family == SKLEARN_PIPELINE and estimator is not None):
        refit = (
            " (a sklearn-pipeline is refitted given estimator=)"
            if family == SKLEARN_PIPELINE
            else ""
        )
        raise ConfigError(
            f"{family} versions arrive fitted and are uploaded, not trained here: train_model "
            f"fits {', '.join(sorted(TRAINABLE))}{refit}",
            field="family",
        )
    w, labels = _check(windows, y, fs)
    names: tuple[str, ...] | None = None
    if channels is not None:
        w, names = select_channels(w, channels, pick=pick_channels, drop=drop_channels)
    elif pick_channels is not None or drop_channels:
        raise ConfigError(
            "pick_channels/drop_channels select channels by name: pass channels= too",
            field="channels",
        )
    if geometry is not None:
        tmin = geometry.tmin if tmin is None else tmin
        tmax = geometry.tmax if tmax is None else tmax
    spec = {
        "baseline": geometry.baseline if geometry is not None else None,
        "filtered": geometry.filtered if geometry is not None else None,
        "fs": float(fs),
        "n_channels": int(w.shape[1]),
        "n_samples": int(w.shape[2]),
        "kind": kind,
        "channels": list(names) if names is not None else None,
        "tmin": tmin,
        "tmax": tmax,
        "units": units,
    }
    try:
        signature = Signature.from_spec(spec)
    except ArtifactError as exc:  # at training time it is the caller's argument at fault
        raise ConfigError(
            exc.message, field=(exc.field or "").removeprefix("input_spec.")
        ) from None
    pipe = get_pipeline(pipeline)
    if pipe.raw and family in FLAT_ONLY:
        raise ConfigError(
            f"{family} reads flat feature vectors and {pipe.key} gives raw epochs: use a "
            "feature pipeline (erp@1, erp@2, bandpower@1), or the sklearn-pipeline family",
            field="pipeline",
        )
    fparams = stream_params(pipe.key, feature_params, geometry)
    reason = pipe.check_geometry(fparams, geometry)
    if reason:
        raise ConfigError(reason, field="geometry")
    X = pipe.transform(signature.in_units(w), fs, fparams, geometry)
    classes = [int(c) for c in np.unique(labels)]
    if test_size:
        X_train, X_test, y_train, y_test = train_test_split(
            X, labels, test_size=test_size, stratify=labels, random_state=seed
        )
    else:  # every window trains; the caller's cross-validation scores it
        X_train, X_test, y_train, y_test = X, X[:0], labels, labels[:0]
    clf, mparams = fit_classifier(
        family, X_train, y_train, classes, w.shape[1], model_params, seed, estimator
    )
    proba = clf.predict_proba(X_test) if len(y_test) else np.zeros((0, len(clf.classes)))
    metrics = scoring.score(y_test, proba, classes=clf.classes)
    calibration = calibrate(proba, y_test, clf.classes)
    if calibration is not None:
        metrics["calibration"] = calibration.describe()
    artifact = artifacts.dump(clf, family)
    return TrainedModel(
        family=family,
        feature_pipeline=pipe.key,
        feature_params=fparams,
        model_params=mparams,
        input_spec=signature.to_spec() | ({"gate": gate.to_spec()} if gate else {}),
        classes=clf.classes,
        artifact=artifact,
        sha256=artifacts.sha256_hex(artifact),
        metrics=metrics,
        dataset_hash=dataset_hash(w, labels),
        classifier=clf,
    )


def evaluate(
    model: ServingModel | TrainedModel | Classifier,
    X: np.ndarray,
    y: np.ndarray,
    *,
    fs: float | None = None,
    channels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``scoring.score`` of ``model`` on labelled data: windows ``[n, c, s]`` for a ServingModel or
    TrainedModel (features are computed), a feature matrix ``[n, f]`` for a bare Classifier.

    ``channels`` names the windows' rows; they are then matched to the model's by name, as
    a worker does (so a whole recording, AUX column included, can be scored as streamed)."""
    labels = np.asarray(y).astype(np.int64)
    if isinstance(model, ServingModel):
        rate = float(fs if fs is not None else model.signature.fs)
        proba = model.predict(X, rate, channels=channels).proba
        return scoring.score(labels, proba, classes=model.classes)
    if isinstance(model, TrainedModel):
        pipe = get_pipeline(model.feature_pipeline)
        rate = float(fs if fs is not None else model.signature.fs)
        x = np.asarray(X, dtype=np.float32)
        wanted = model.signature.channels
        if channels is not None and wanted is not None:
            cmap = map_channels(wanted, channels)
            if not cmap.ok:
                raise ValueError(
                    f"windows cannot be matched to the model's channels by name: missing "
                    f"{list(cmap.missing)}, repeated {list(cmap.repeated)}"
                )
            if cmap.index is not None:
                x = x[:, list(cmap.index)]
        xs = model.signature.in_units(x)
        feats = pipe.transform(xs, rate, model.feature_params, model.signature.geometry)
        proba = model.classifier.predict_proba(feats)
        return scoring.score(labels, proba, classes=model.classes)
    return scoring.score(labels, model.predict_proba(np.asarray(X)), classes=model.classes)
