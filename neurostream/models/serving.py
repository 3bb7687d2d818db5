"""The model a worker serves: a registry row turned into a ready ``predict`` over windows.

``ServingModel.from_row`` checks everything a worker must refuse before swapping a model
in (hash, safe loading, known feature pipeline, classes, and a warm-up on a dummy batch of
the declared input shape), so a bad model version is rejected at swap time and never
fails mid-stream.

The binary score is the probability of the version's positive class (``model_params
["positive_class"]``, by default 1, labelling's target), found through the classifier's
``classes``: a user's pipeline may order its columns otherwise. Windows carry µV; a
version fitted on other units (``input_spec.units``, e.g. MNE's volts) has each batch
converted before its features, after the artifact gate, whose thresholds stay in µV.

Windows are matched to the version's signature (``neurostream.models.signature``) by
channel name; ``admit`` caches the mapping per channel tuple, so the hot path pays one
dict lookup per window and one row gather per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurostream.errors import ConfigError
from neurostream.features import FeaturePipeline, get_pipeline
from neurostream.gate import Gate, Verdict
from neurostream.geometry import EpochGeometry
from neurostream.models import artifacts
from neurostream.models.artifacts import DEFAULT_POLICY, ArtifactError, ArtifactPolicy
from neurostream.models.families import FAMILIES, FLAT_ONLY, Classifier
from neurostream.models.signature import Admission, Signature
from neurostream.registry import json_column

_REQUIRED = (
    "id",
    "model_name",
    "version",
    "family",
    "feature_pipeline",
    "feature_params",
    "model_params",
    "input_spec",
    "classes",
    "sha256",
    "artifact",
)


@dataclass(frozen=True, slots=True)
class Prediction:
    predicted: np.ndarray  # int64 [n], a class label
    score: np.ndarray  # float64 [n]: P(positive class) if binary, else P(predicted class)
    proba: np.ndarray  # float64 [n, k], columns ordered like ServingModel.classes


# Distinct window shapes remembered per model version: a stream has one or two; the bound
# only stops a sender that varies its channel names from growing the cache.
_ADMISSIONS_MAX = 256
TARGET = 1  # labelling's target class: the default positive class of a binary version


def warm_up_batch(signature: Signature) -> np.ndarray:
    """The batch every version must predict on before it serves: two epochs of the declared
    shape. Seeded noise (10 µV), not zeros: a covariance of zeros (pyRiemann, CSP) is
    singular, and a version must not be refused for failing on a flat line."""
    rng = np.random.default_rng(0)
    shape = (2, signature.n_channels, signature.n_samples)
    return (10.0 * rng.standard_normal(shape)).astype(np.float32)


class ServingModel:
    """A loaded, verified model version plus the feature pipeline it was trained on."""

    def __init__(
        self,
        *,
        version_id: int,
        model_name: str,
        version: int,
        family: str,
        pipeline: FeaturePipeline,
        feature_params: dict[str, Any],
        model_params: dict[str, Any],
        input_spec: dict[str, Any],
        classes: list[int],
        sha256: str,
        classifier: Classifier,
        gate: Gate | None = None,
    ) -> None:
        self.version_id = version_id
        self.model_name = model_name
        self.version = version
        self.family = family
        self.pipeline = pipeline
        self.feature_pipeline = pipeline.key
        self.feature_params = feature_params
        self.model_params = model_params
        self.input_spec = input_spec
        self.signature = Signature.from_spec(input_spec)
        self.classes = classes
        self.sha256 = sha256
        self.classifier = classifier
        # The artifact gate the version records (input_spec["gate"]); None: every epoch
        # is scored, as versions registered before the gate are.
        self.gate = gate
        self._admissions: dict[tuple[tuple[str, ...] | int, int, float], Admission] = {}
        self.positive_index = self._positive_index()

    def _positive_index(self) -> int | None:
        """The proba column of the positive class (binary versions; None otherwise)."""
        if len(self.classes) != 2:
            return None
        if "positive_class" in self.model_params:
            positive = self.model_params["positive_class"]
            if isinstance(positive, bool) or not isinstance(positive, int):
                raise ArtifactError(
                    f"model_params.positive_class must be a class, got {positive!r}",
                    field="model_params.positive_class",
                )
            if positive not in self.classes:
                raise ArtifactError(
                    f"model_params.positive_class {positive} is not one of the classes "
                    f"{self.classes}",
                    field="model_params.positive_class",
                )
            return self.classes.index(positive)
        if self.family in FLAT_ONLY:  # our own families score their greater label, as ever
            return self.classes.index(max(self.classes))
        if TARGET not in self.classes:
            raise ArtifactError(
                f"binary classes {self.classes} lack the target class {TARGET}: set "
                "model_params.positive_class to the class whose probability is the score",
                field="model_params.positive_class",
            )
        return self.classes.index(TARGET)

    @property
    def label(self) -> str:
        return f"{self.model_name}:{self.version}"

    def __repr__(self) -> str:
        return f"ServingModel({self.label}, id={self.version_id}, {self.family})"

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], *, policy: ArtifactPolicy = DEFAULT_POLICY
    ) -> ServingModel:
        """Raises ``ArtifactError`` (or ``UnknownPipeline``) for a version that must not serve;
        ``policy``: what a skops artifact may hold (``ArtifactPolicy.from_settings(core)``)."""
        missing = [k for k in _REQUIRED if k not in row or row[k] is None]
        if missing:
            raise ArtifactError(f"model_versions row lacks {missing}")
        family = str(row["family"])
        if family not in FAMILIES:
            raise ArtifactError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
        pipeline = get_pipeline(str(row["feature_pipeline"]))
        if pipeline.raw and family in FLAT_ONLY:
            raise ArtifactError(
                f"{family} reads flat feature vectors, and {pipeline.key} gives raw epochs: "
                f"use a feature pipeline, or the sklearn-pipeline or onnx family",
                field="feature_pipeline",
            )
        model_params = dict(json_column(row["model_params"]))
        input_spec = dict(json_column(row["input_spec"]))
        classes = [int(c) for c in json_column(row["classes"])]
        try:
            gate = Gate.from_spec(input_spec.get("gate"))
        except ConfigError as exc:
            raise ArtifactError(exc.message, field=f"input_spec.{exc.field}") from None
        try:
            feature_params = pipeline.default_params() | dict(json_column(row["feature_params"]))
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"bad feature_params: {exc}") from exc
        classifier = artifacts.load(
            bytes(row["artifact"]),
            family,
            sha256=str(row["sha256"]),
            model_params=model_params,
            classes=classes,
            policy=policy,
        )
        if list(classifier.classes) != classes:
            raise ArtifactError(
                f"artifact classes {classifier.classes} != row classes {classes} (the row's "
                "classes list the service classes in the order of the model's outputs)",
                field="classes",
            )
        model = cls(
            version_id=int(row["id"]),
            model_name=str(row["model_name"]),
            version=int(row["version"]),
            family=family,
            pipeline=pipeline,
            feature_params=feature_params,
            model_params=model_params,
            input_spec=input_spec,
            classes=classes,
            sha256=str(row["sha256"]),
            classifier=classifier,
            gate=gate,
        )
        model._warm_up()
        return model

    def _warm_up(self) -> None:
        """Run ``warm_up_batch`` through the model: catches spec/feature/model mismatches
        before a version serves."""
        sig = self.signature
        dummy = warm_up_batch(sig)
        try:
            self.predict(dummy, sig.fs, channels=sig.channels)
        except Exception as exc:
            raise ArtifactError(
                f"{self.label} cannot predict on its input_spec {self.input_spec}: {exc}"
            ) from exc

    def admit(self, channels: Sequence[str] | int, n_samples: int, fs: float) -> Admission:
        """Whether windows of this shape fit, and which rows to take; cached per shape.

        ``channels``: the window's channel names (matched by name when the version records
        names, else by count), or a bare count for an array already in the model's order.
        """
        key = (channels if isinstance(channels, int) else tuple(channels), n_samples, fs)
        admission = self._admissions.get(key)
        if admission is None:
            admission = self.signature.admit(channels, n_samples, fs, model=f"model {self.label}")
            if len(self._admissions) >= _ADMISSIONS_MAX:
                self._admissions.clear()
            self._admissions[key] = admission
        return admission

    def check_input(self, channels: Sequence[str] | int, n_samples: int, fs: float) -> str | None:
        """Why a window cannot go to this model, or None when it fits (see ``admit``)."""
        return self.admit(channels, n_samples, fs).reason

    def check_gate(
        self, batch: np.ndarray, fs: float, *, channels: Sequence[str] | None = None
    ) -> Verdict | None:
        """The gate's verdict on the model's own channels of ``batch`` (matched by name as
        in ``predict``); None when the version records no gate."""
        if self.gate is None:
            return None
        batch = np.asarray(batch, dtype=np.float32)
        admission = self.admit(batch.shape[1] if channels is None else channels, batch.shape[2], fs)
        if admission.reason:
            raise ValueError(admission.reason)
        if admission.index is not None:
            batch = batch[:, admission.index]
        names = self.signature.channels or tuple(f"ch{i}" for i in range(batch.shape[1]))
        if self.signature.channels is None and channels is not None:
            names = tuple(channels)
        return self.gate.check(batch, names)

    def check_geometry(self, geometry: EpochGeometry | None) -> str | None:
        """Why windows of ``geometry`` (a window's ``header.geometry``) cannot go to this
        model, or None: an ``erp@2`` version takes only epochs cut from the stream filter it
        was trained behind, starting at its own ``tmin``; others take any window."""
        reason = self.pipeline.check_geometry(self.feature_params, geometry)
        if reason:
            return f"{reason} (model {self.label})"
        trained = self.signature.geometry
        if "stream_filter" in self.feature_params and geometry and trained:
            if abs(geometry.tmin - trained.tmin) * self.signature.fs >= 0.5:
                return (
                    f"window's epoch starts at {geometry.tmin:+g} s around its event, model "
                    f"{self.label} was trained on epochs from {trained.tmin:+g} s"
                )
        return None

    def features(
        self, batch: np.ndarray, fs: float, geometry: EpochGeometry | None = None
    ) -> np.ndarray:
        """The model's input features for a batch (also what monitoring records);
        ``geometry``: the windows' own, else the one the version was trained on."""
        geo = geometry if geometry is not None else self.signature.geometry
        x = self.signature.in_units(batch)
        return self.pipeline.transform(x, fs, self.feature_params, geo)

    def predict(
        self,
        batch: np.ndarray,
        fs: float,
        *,
        channels: Sequence[str] | None = None,
        geometry: EpochGeometry | None = None,
    ) -> Prediction:
        """Vectorised over the batch ``[n, c, s]``; call ``check_input`` per window first.

        With ``channels`` (the names of the batch's rows) the rows are matched to the
        version's channels by name: reordered, extras ignored. Without, the batch must
        already be in the model's channel order. ``geometry`` is the windows' epoch
        geometry (one per batch; ``check_geometry`` first), else the version's own.
        """
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 3:
            raise ValueError(f"batch must be [n, channels, samples], got {batch.shape}")
        if channels is not None and len(channels) != batch.shape[1]:
            raise ValueError(f"{len(channels)} channel names for a batch of shape {batch.shape}")
        admission = self.admit(batch.shape[1] if channels is None else channels, batch.shape[2], fs)
        if admission.reason:
            raise ValueError(admission.reason)
        if admission.index is not None:
            batch = batch[:, admission.index]
        k = len(self.classes)
        if batch.shape[0] == 0:
            return Prediction(np.empty(0, np.int64), np.empty(0), np.empty((0, k)))
        proba = self.classifier.predict_proba(self.features(batch, fs, geometry))
        idx = np.argmax(proba, axis=1)
        predicted = np.asarray(self.classes, dtype=np.int64)[idx]
        if self.positive_index is not None:
            score = proba[:, self.positive_index]
        else:
            score = proba[np.arange(len(idx)), idx]
        return Prediction(predicted=predicted, score=np.ascontiguousarray(score), proba=proba)
