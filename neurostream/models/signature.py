"""A model version's signature: the input it was trained on, and how a window maps onto it.

The signature is stored as the version's ``input_spec`` (JSON)::

    {"fs": 256.0, "n_channels": 4, "n_samples": 205, "kind": "epoch",
     "channels": ["TP9", "AF7", "AF8", "TP10"], "tmin": -0.1, "tmax": 0.7, "units": "uV"}

``units`` are what the model was fitted on: ``"uV"`` (the default; windows carry
microvolts), ``"V"`` (MNE's convention), ``"mV"`` or ``"nV"`` (``"µV"`` is read as
``"uV"``). A worker multiplies each batch by ``Signature.scale`` after the artifact gate
(whose thresholds stay in µV) and before the features, so a pipeline fitted on volts
scores µV windows as it scored volts.

``channels`` are the names in the order the model reads them; ``tmin``/``tmax`` the epoch
geometry in seconds around the event. Either may be null: versions registered before names
were recorded are matched to windows by channel count, as before. Versions trained on
epochs of a known geometry (``neurostream.geometry``) also record ``baseline`` (s) and
``filtered`` (the producer's stream filter, ``"1-30@4"``); both keys are absent otherwise.

A window is matched by name: the model's channels are taken from it in the model's order
(extra channels, such as a recording's AUX column, are ignored); a channel the model needs
and the window lacks, a different fs or a different window length is a rejection whose
reason says what was expected and what came. ``map_channels`` is that mapping as a pure
function; ``ServingModel.admit`` caches its result per (version, channel tuple), so a
window pays a dict lookup, not a name search.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from neurostream.contract import WindowKind
from neurostream.errors import ArtifactError, ConfigError
from neurostream.geometry import EpochGeometry

UNITS: Final = "uV"  # windows carry microvolts (the recording readers convert to it)
# A model's units -> the factor that turns the windows' µV into them.
UNIT_SCALE: Final[Mapping[str, float]] = {"V": 1e-6, "mV": 1e-3, "uV": 1.0, "nV": 1e3}
_UNIT_ALIASES: Final[Mapping[str, str]] = {"\u00b5V": "uV", "\u03bcV": "uV"}  # micro, mu
_SHOWN: Final = 16  # names listed in a reason before it is cut short


@dataclass(frozen=True, slots=True)
class ChannelMap:
    """Where a model's channels sit in a window: ``index[i]`` is the window row of model
    channel ``i``; None when the window is already in the model's order (no copy needed)."""

    index: tuple[int, ...] | None
    missing: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    repeated: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.missing and not self.repeated


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a window shape goes to a model: ``reason`` when refused, else the row
    ``index`` to take (None: use the window as it is)."""

    index: np.ndarray | None
    reason: str | None = None


def listed(names: Sequence[str]) -> str:
    """Names for a message, cut short after the first 16."""
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def map_channels(model: Sequence[str], window: Sequence[str]) -> ChannelMap:
    """Map a window's channels onto a model's by name (exact, case-sensitive names)."""
    if tuple(model) == tuple(window):
        return ChannelMap(index=None)
    position: dict[str, int] = {}
    repeated: list[str] = []
    for i, name in enumerate(window):
        if name in position:
            repeated.append(name)
        else:
            position[name] = i
    wanted = set(model)
    missing = tuple(name for name in model if name not in position)
    ignored = tuple(name for name in position if name not in wanted)
    rep = tuple(dict.fromkeys(n for n in repeated if n in wanted))
    if missing or rep:
        return ChannelMap(index=None, missing=missing, ignored=ignored, repeated=rep)
    return ChannelMap(index=tuple(position[name] for name in model), ignored=ignored)


def check_names(names: Sequence[str], *, field: str = "channels") -> tuple[str, ...]:
    """Channel names as a tuple: non-empty strings, each once (``ConfigError`` otherwise)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{field} must be a list of channel names", field=field)
    out = tuple(names)
    blank = [i for i, n in enumerate(out) if not n.strip()]
    if blank:
        raise ConfigError(f"{field} has empty names at positions {blank}", field=field)
    twice = [n for n, count in Counter(out).items() if count > 1]
    if twice:
        raise ConfigError(f"{field} names {listed(twice)} more than once", field=field)
    return out


def select_channels(
    windows: np.ndarray,
    channels: Sequence[str],
    *,
    pick: Sequence[str] | None = None,
    drop: Sequence[str] = (),
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``windows [n, c, s]`` with the named channels kept (``pick``, in that order) or
    removed (``drop``), and the names that remain. An unknown name is a ``ConfigError``."""
    names = check_names(channels)
    if windows.ndim != 3 or windows.shape[1] != len(names):
        raise ConfigError(
            f"{len(names)} channel names for windows of shape {windows.shape}", field="channels"
        )
    keep = names if pick is None else check_names(pick, field="pick_channels")
    dropped = set(check_names(drop, field="drop_channels"))
    for field, asked in (("pick_channels", keep), ("drop_channels", tuple(dropped))):
        unknown = [n for n in asked if n not in names]
        if unknown:
            raise ConfigError(
                f"{field}: no channel {listed(unknown)} in the data (it has {listed(names)})",
                field=field,
            )
    kept = tuple(n for n in keep if n not in dropped)
    if not kept:
        raise ConfigError("every channel was dropped; keep at least one", field="drop_channels")
    if kept == names:
        return windows, names
    return windows[:, [names.index(n) for n in kept]], kept


def interval(raw: Any) -> tuple[float, float] | None:
    """``[start, end]`` (finite numbers, start < end) as a pair of seconds; None for
    anything else, which the caller refuses in its own words."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        return None
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in raw
    ):
        return None
    return (float(raw[0]), float(raw[1])) if raw[0] < raw[1] else None


def _number(spec: Mapping[str, Any], key: str, *, required: bool) -> float | None:
    value = spec.get(key)
    if value is None:
        if required:
            raise ArtifactError(f"input_spec lacks {key!r}", field=f"input_spec.{key}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArtifactError(
            f"input_spec.{key} must be a finite number, got {value!r}", field=f"input_spec.{key}"
        )
    return float(value)


def _count(spec: Mapping[str, Any], key: str) -> int:
    value = _number(spec, key, required=True)
    if value is None or value < 1 or value != int(value):
        raise ArtifactError(
            f"input_spec.{key} must be a positive integer, got {spec.get(key)!r}",
            field=f"input_spec.{key}",
        )
    return int(value)


@dataclass(frozen=True, slots=True)
class Signature:
    """The parsed ``input_spec`` of a model version (see the module docstring)."""

    fs: float
    n_channels: int
    n_samples: int
    kind: str | None = WindowKind.EPOCH.value
    channels: tuple[str, ...] | None = None
    tmin: float | None = None
    tmax: float | None = None
    units: str = UNITS
    baseline: tuple[float, float] | None = None
    filtered: str | None = None

    @property
    def scale(self) -> float:
        """The factor from the windows' µV to the units the model was fitted on."""
        return UNIT_SCALE[self.units]

    def in_units(self, batch: np.ndarray) -> np.ndarray:
        """µV windows in the units the model was fitted on: the batch itself for µV, else
        a float64 copy scaled (float64, so no rounding on the way to volts)."""
        scale = self.scale
        return batch if scale == 1.0 else np.asarray(batch, dtype=np.float64) * scale

    @property
    def geometry(self) -> EpochGeometry | None:
        """The geometry of the epochs the version was trained on (None without ``tmin``)."""
        if self.tmin is None:
            return None
        return EpochGeometry(self.tmin, self.tmax, self.baseline, self.filtered)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Signature:
        """Parse and validate; ``ArtifactError`` with ``field="input_spec.<key>"`` if not."""
        if not isinstance(spec, Mapping):
            raise ArtifactError("input_spec must be a JSON object", field="input_spec")
        fs = _number(spec, "fs", required=True)
        assert fs is not None
        if fs <= 0:
            raise ArtifactError(f"input_spec.fs must be positive, got {fs}", field="input_spec.fs")
        n_channels, n_samples = _count(spec, "n_channels"), _count(spec, "n_samples")
        kind = spec.get("kind")
        if kind is not None and kind not in {k.value for k in WindowKind}:
            raise ArtifactError(
                f"input_spec.kind must be one of {[k.value for k in WindowKind]}, got {kind!r}",
                field="input_spec.kind",
            )
        channels = None
        if spec.get("channels") is not None:
            try:
                channels = check_names(spec["channels"], field="input_spec.channels")
            except ConfigError as exc:
                raise ArtifactError(exc.message, field=exc.field) from None
            if len(channels) != n_channels:
                raise ArtifactError(
                    f"input_spec.channels names {len(channels)} channels but n_channels is "
                    f"{n_channels}",
                    field="input_spec.channels",
                )
        tmin = _number(spec, "tmin", required=False)
        tmax = _number(spec, "tmax", required=False)
        if tmin is not None and tmax is not None and not tmin < tmax:
            raise ArtifactError(
                f"input_spec.tmin ({tmin}) must be before tmax ({tmax})", field="input_spec.tmin"
            )
        units = spec.get("units", UNITS)
        units = _UNIT_ALIASES.get(units, units) if isinstance(units, str) else units
        if units not in UNIT_SCALE:
            raise ArtifactError(
                f"input_spec.units must be one of {sorted(UNIT_SCALE)} (the units the model "
                f"was fitted on; windows carry µV and are converted), got {units!r}",
                field="input_spec.units",
            )
        raw = spec.get("baseline")
        baseline = interval(raw)
        if raw is not None and baseline is None:
            raise ArtifactError(
                f"input_spec.baseline must be [start, end] in seconds, got {raw!r}",
                field="input_spec.baseline",
            )
        filtered = spec.get("filtered")
        if filtered is not None and not isinstance(filtered, str):
            raise ArtifactError(
                f"input_spec.filtered must be a filter label such as '1-30@4', got {filtered!r}",
                field="input_spec.filtered",
            )
        return cls(fs, n_channels, n_samples, kind, channels, tmin, tmax, units, baseline, filtered)

    def to_spec(self) -> dict[str, Any]:
        """The JSON stored as ``input_spec``."""
        return (
            {
                "fs": self.fs,
                "n_channels": self.n_channels,
                "n_samples": self.n_samples,
                "kind": self.kind,
                "channels": list(self.channels) if self.channels is not None else None,
                "tmin": self.tmin,
                "tmax": self.tmax,
                "units": self.units,
            }
            | ({"baseline": list(self.baseline)} if self.baseline is not None else {})
            | ({"filtered": self.filtered} if self.filtered is not None else {})
        )

    def admit(
        self, channels: Sequence[str] | int, n_samples: int, fs: float, *, model: str = "model"
    ) -> Admission:
        """Whether windows of this shape fit: ``channels`` are the window's names, or just a
        count for an array already in the model's order. Reasons say expected vs got."""
        index: np.ndarray | None = None
        if isinstance(channels, int) or self.channels is None:
            got = channels if isinstance(channels, int) else len(channels)
            if got != self.n_channels:
                return Admission(
                    None, f"window has {got} channels, expected {self.n_channels} ({model})"
                )
        else:
            cmap = map_channels(self.channels, channels)
            if cmap.missing:
                s = "s" if len(cmap.missing) > 1 else ""
                return Admission(
                    None,
                    f"window lacks channel{s} {listed(cmap.missing)} that {model} needs "
                    f"(window has {listed(list(channels))})",
                )
            if cmap.repeated:
                return Admission(
                    None, f"window repeats channel {listed(cmap.repeated)} that {model} needs"
                )
            if cmap.index is not None:
                index = np.asarray(cmap.index, dtype=np.intp)
        if n_samples != self.n_samples:
            return Admission(
                None, f"window has {n_samples} samples, expected {self.n_samples} ({model})"
            )
        if not math.isclose(fs, self.fs, rel_tol=1e-6):
            return Admission(None, f"window fs {float(fs)} Hz, expected {self.fs} Hz ({model})")
        return Admission(index)
