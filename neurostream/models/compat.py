"""Whether a service's declared input meets a model version's signature.

A service declares the stream its producer sends (``services.input``)::

    {"channels": ["TP9", "AF7", "AF8", "TP10"], "fs": 256.0, "n_samples": 205,
     "kind": "epoch", "tmin": -0.1, "tmax": 0.7, "baseline": [-0.1, 0.0], "filtered": "1-30@4"}

Every key is optional: a key the service does not declare is unknown, and unknown never
refuses (services registered before inputs were declared keep being assigned as before).
``filtered`` is the producer's stream filter label, or ``"none"`` for a declared
unfiltered stream (null: not declared).

The registry asks ``version_mismatch`` before it lets a service serve a version (assign,
alias move, input change), so a combination whose windows a worker would reject one by
one (``Signature.admit``, ``ServingModel.check_geometry``) is refused once, up front, with
the mismatch named. ``mismatches`` is the same check on a parsed ``Signature``, pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from neurostream.contract import WindowKind
from neurostream.errors import ArtifactError, ConfigError, UnknownPipeline
from neurostream.features import get_pipeline
from neurostream.geometry import EpochGeometry
from neurostream.models.signature import Signature, check_names, interval, listed, map_channels
from neurostream.registry import json_column, version_label
from neurostream.streamfilter import FilterSpec

UNFILTERED: Final = "none"  # ``filtered`` of a service that declares an unfiltered stream
KEYS: Final = ("channels", "fs", "n_samples", "kind", "tmin", "tmax", "baseline", "filtered")

GeometryCheck = Callable[[EpochGeometry | None], str | None]


def _number(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}", field=f"input.{key}")
    return float(value)


def window_samples(fs: float, tmin: float, tmax: float) -> int:
    """Samples in an epoch cut at ``tmin..tmax`` as the producer cuts it (``Windower``)."""
    return round(tmax * fs) - round(tmin * fs)


@dataclass(frozen=True, slots=True)
class ServiceInput:
    """A service's declared input (see the module docstring); None: not declared."""

    channels: tuple[str, ...] | None = None
    fs: float | None = None
    n_samples: int | None = None
    kind: str | None = None
    tmin: float | None = None
    tmax: float | None = None
    baseline: tuple[float, float] | None = None
    filtered: str | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> ServiceInput:
        """Parse and validate; ``ConfigError`` with ``field="input.<key>"`` if not."""
        if raw is None:
            return cls()
        if isinstance(raw, str | bytes):
            raw = json.loads(raw)  # a jsonb column read as text
        if not isinstance(raw, Mapping):
            raise ConfigError("input must be a JSON object", field="input")
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise ConfigError(
                f"unknown keys {unknown}; known: {list(KEYS)}", field=f"input.{unknown[0]}"
            )
        channels = None
        if raw.get("channels") is not None:
            channels = check_names(raw["channels"], field="input.channels")
            if not channels:
                raise ConfigError("input.channels names no channel", field="input.channels")
        fs = _number(raw, "fs")
        if fs is not None and fs <= 0:
            raise ConfigError(f"fs must be positive, got {fs:g}", field="input.fs")
        samples = _number(raw, "n_samples")
        n_samples = None
        if samples is not None:
            if samples < 1 or samples != int(samples):
                raise ConfigError(
                    f"n_samples must be a positive integer, got {raw['n_samples']!r}",
                    field="input.n_samples",
                )
            n_samples = int(samples)
        kind = raw.get("kind")
        kinds = [k.value for k in WindowKind]
        if kind is not None and kind not in kinds:
            raise ConfigError(f"kind must be one of {kinds}, got {kind!r}", field="input.kind")
        tmin, tmax = _number(raw, "tmin"), _number(raw, "tmax")
        if tmin is not None and tmax is not None and not tmin < tmax:
            raise ConfigError(f"tmin ({tmin:g}) must be before tmax ({tmax:g})", field="input.tmax")
        if n_samples is not None and fs is not None and tmin is not None and tmax is not None:
            cut = window_samples(fs, tmin, tmax)
            if cut != n_samples:
                raise ConfigError(
                    f"n_samples {n_samples} disagrees with tmin..tmax ({tmin:g}..{tmax:g} s at "
                    f"{fs:g} Hz: {cut} samples); give one or make them agree",
                    field="input.n_samples",
                )
        baseline = interval(raw.get("baseline"))
        if raw.get("baseline") is not None and baseline is None:
            raise ConfigError(
                f"baseline must be [start, end] in seconds, start < end, got {raw['baseline']!r}",
                field="input.baseline",
            )
        filtered = raw.get("filtered")
        if filtered is not None:
            if not isinstance(filtered, str):
                raise ConfigError(
                    f"filtered must be a filter label such as '1-30@4' or {UNFILTERED!r}, got "
                    f"{filtered!r}",
                    field="input.filtered",
                )
            if filtered.strip().lower() == UNFILTERED:
                filtered = UNFILTERED
            else:
                try:
                    filtered = FilterSpec.parse(filtered).label  # "1-30" -> "1-30@4"
                except ConfigError as exc:
                    raise ConfigError(exc.message, field="input.filtered", hint=exc.hint) from None
        return cls(channels, fs, n_samples, kind, tmin, tmax, baseline, filtered)

    @property
    def declared(self) -> bool:
        return any(getattr(self, key) is not None for key in KEYS)

    def to_json(self) -> dict[str, Any]:
        """The declared keys only, as stored in ``services.input``."""
        out: dict[str, Any] = {}
        for key in KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def samples_at(self, fs: float | None) -> int | None:
        """Samples per window: ``n_samples``, else the epoch ``tmin..tmax`` at the declared
        fs (or ``fs`` when the service declares none); None when unknown."""
        if self.n_samples is not None:
            return self.n_samples
        rate = self.fs if self.fs is not None else fs
        if rate is None or self.tmin is None or self.tmax is None:
            return None
        return window_samples(rate, self.tmin, self.tmax)


def _geometry(signature: Signature, declared: ServiceInput) -> EpochGeometry | None:
    """The geometry of the service's windows as far as it declares it (filter included)."""
    filtered = None if declared.filtered == UNFILTERED else declared.filtered
    tmin, tmax = declared.tmin, declared.tmax
    if tmin is None:
        tmin = signature.tmin if signature.tmin is not None else 0.0
        tmax = signature.tmax if declared.tmax is None else declared.tmax
    try:
        return EpochGeometry(tmin, tmax, declared.baseline, filtered)
    except ValueError:
        return EpochGeometry(tmin, None, None, filtered)


def mismatches(
    signature: Signature,
    declared: ServiceInput,
    *,
    check_geometry: GeometryCheck | None = None,
    model: str = "model",
    service: str = "service",
) -> list[str]:
    """Why windows of ``declared`` cannot go to a model of ``signature``; [] when they can.

    ``check_geometry`` is the model's pipeline check (``FeaturePipeline.check_geometry``
    with its params bound); it is asked only when the service declares its ``filtered``.
    """
    reasons: list[str] = []
    who, what = f"service {service!r}", f"model {model}"
    if declared.channels is not None:
        if signature.channels is not None:
            cmap = map_channels(signature.channels, declared.channels)
            if cmap.missing:
                reasons.append(
                    f"{who} streams {listed(declared.channels)}; {what} needs "
                    f"{listed(cmap.missing)}"
                )
        elif len(declared.channels) != signature.n_channels:
            reasons.append(
                f"{who} streams {len(declared.channels)} channels; {what} needs "
                f"{signature.n_channels} (it records no names, so windows are matched by count)"
            )
    if declared.fs is not None and not math.isclose(declared.fs, signature.fs, rel_tol=1e-6):
        reasons.append(
            f"{who} streams at {declared.fs:g} Hz; {what} was trained at {signature.fs:g} Hz"
        )
    samples = declared.samples_at(signature.fs)
    if samples is not None and samples != signature.n_samples:
        how = "" if declared.n_samples is not None else f" ({declared.tmin:g}..{declared.tmax:g} s)"
        reasons.append(
            f"{who} sends windows of {samples} samples{how}; {what} needs {signature.n_samples}"
        )
    if (
        declared.tmin is not None
        and signature.tmin is not None
        and abs(declared.tmin - signature.tmin) * signature.fs >= 0.5
    ):
        reasons.append(
            f"{who} cuts epochs from {declared.tmin:+g} s around the event; {what} was trained "
            f"on epochs from {signature.tmin:+g} s"
        )
    if declared.kind is not None and signature.kind is not None and declared.kind != signature.kind:
        reasons.append(
            f"{who} sends {declared.kind} windows; {what} was trained on {signature.kind} windows"
        )
    if declared.filtered is not None and check_geometry is not None:
        reason = check_geometry(_geometry(signature, declared))
        if reason:
            came = "unfiltered" if declared.filtered == UNFILTERED else declared.filtered
            reasons.append(f"{who} declares its stream {came}; {what}: {reason}")
    return reasons


def version_mismatch(
    version: Mapping[str, Any], declared: ServiceInput, *, service: str
) -> str | None:
    """Why ``service`` cannot serve a ``model_versions`` row (its ``input_spec``,
    ``feature_pipeline``, ``feature_params``), or None; mismatches joined by "; ".

    A row whose signature or pipeline cannot be read is not judged here: a worker refuses
    such a version at swap time with its own reason.
    """
    if not declared.declared:
        return None
    label = version_label(version)
    try:
        signature = Signature.from_spec(dict(json_column(version.get("input_spec") or {})))
    except (ArtifactError, TypeError, ValueError):
        return None
    check: GeometryCheck | None = None
    try:
        pipeline = get_pipeline(str(version.get("feature_pipeline")))
        params = pipeline.default_params() | dict(json_column(version.get("feature_params") or {}))
    except (UnknownPipeline, TypeError, ValueError):
        pass
    else:

        def check(geometry: EpochGeometry | None) -> str | None:
            try:
                return pipeline.check_geometry(params, geometry)
            except (TypeError, ValueError):
                return None

    reasons = mismatches(signature, declared, check_geometry=check, model=label, service=service)
    return "; ".join(reasons) or None
