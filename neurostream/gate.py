"""The artifact gate: which epochs are not scored, and which channel is to blame.

An epoch whose peak-to-peak amplitude exceeds ``peak_to_peak_uv`` on any channel (a blink,
a movement, a loose electrode), or whose standard deviation on a channel is below
``flat_uv`` (an electrode off, a dead amplifier input), is rejected with a reason naming
the channel(s) at fault. The worker checks every epoch of a model version that records a
gate (``input_spec["gate"]``) before scoring it and stores the rejected ones with their
reason (``gated``); ``neurostream train --file`` leaves them out of the training data; the
producer tallies what the gate would reject over a session (``Tally``) and names a channel
that is bad for the whole run, so the user can drop it (``--drop-channels``).

Separate from ``neurostream.quality``, which describes a session's windows for monitoring
(shares of flat / saturated / out-of-range windows per channel): the gate is a per-epoch
decision that changes what gets scored and trained on, and the same decision must be made
live and offline, bit for bit. It shares the flat threshold with ``quality.Thresholds``.

Both checks are offset-free (peak-to-peak and standard deviation ignore an epoch's mean),
so a DC offset never rejects an epoch; they see the epoch as the stream delivers it, which
is the causally filtered signal where the producer filters. Pure and vectorised over a
batch ``[n_epochs, n_channels, n_samples]``; reasons are built only for rejected epochs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from neurostream.errors import ConfigError
from neurostream.quality import Thresholds

# The field's practice (eeg-notebooks, MNE's tutorials: ``reject=dict(eeg=100e-6)``).
DEFAULT_PEAK_TO_PEAK_UV: Final = 100.0
DEFAULT_FLAT_UV: Final = Thresholds.flat_uv  # std below this over an epoch: flat
# A channel bad for a whole run: it offends in at least BAD_SHARE of the run's epochs and
# in BAD_SHARE_RATIO times as many as the other channels do (median), or its median
# standard deviation is BAD_STD_RATIO times the others' (median). Measured on the
# eeg-notebooks Muse runs: at most 0.38 of a run's epochs on one channel (an SSVEP run,
# 3 s epochs) and a std ratio of at most 4.6 (TP10 against AF7/AF8); a loose electrode
# (std ~390 µV against 10-40 µV) offends in nearly every epoch, with a ratio of 10-40.
BAD_SHARE: Final = 0.5
BAD_SHARE_RATIO: Final = 3.0
BAD_STD_RATIO: Final = 8.0
MIN_EPOCHS: Final = 5  # fewer epochs say nothing about a whole run
MOST: Final = 0.5  # a session whose gate rejects more than this share says so loudly


def _threshold(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"gate.{name} must be a finite number or null, got {value!r}", field=name)
    if value <= 0:
        raise ConfigError(f"gate.{name} must be positive, got {value!r}", field=name)
    return float(value)


def _uv(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


@dataclass(frozen=True, slots=True)
class Gate:
    """Thresholds in µV; either may be None (that check is off)."""

    peak_to_peak_uv: float | None = DEFAULT_PEAK_TO_PEAK_UV
    flat_uv: float | None = DEFAULT_FLAT_UV

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "peak_to_peak_uv", _threshold(self.peak_to_peak_uv, "peak_to_peak_uv")
        )
        object.__setattr__(self, "flat_uv", _threshold(self.flat_uv, "flat_uv"))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> Gate | None:
        """The gate a model version records (``input_spec["gate"]``); None: no gate."""
        if spec is None:
            return None
        if not isinstance(spec, Mapping):
            raise ConfigError(f"gate must be a JSON object, got {spec!r}", field="gate")
        unknown = sorted(set(spec) - {"peak_to_peak_uv", "flat_uv"})
        if unknown:
            raise ConfigError(
                f"gate has unknown keys {unknown}; known: flat_uv, peak_to_peak_uv", field="gate"
            )
        return cls(spec.get("peak_to_peak_uv"), spec.get("flat_uv"))

    def to_spec(self) -> dict[str, float | None]:
        return {"peak_to_peak_uv": self.peak_to_peak_uv, "flat_uv": self.flat_uv}

    def describe(self) -> str:
        """``peak-to-peak > 100 µV, std < 0.5 µV``: what it rejects."""
        parts = []
        if self.peak_to_peak_uv is not None:
            parts.append(f"peak-to-peak > {_uv(self.peak_to_peak_uv)} µV")
        if self.flat_uv is not None:
            parts.append(f"std < {_uv(self.flat_uv)} µV")
        return ", ".join(parts) or "off"

    def check(self, batch: np.ndarray, channels: Sequence[str]) -> Verdict:
        """The gate's verdict on each epoch of ``batch [n, c, s]`` (rows named by ``channels``).

        ``Verdict.reasons`` is the per-epoch reason (None: clean). Computed in the batch's
        own dtype, so the same float32 epoch gets the same verdict live and offline."""
        x = np.asarray(batch)
        if x.ndim != 3 or x.shape[1] != len(channels):
            raise ValueError(f"batch {x.shape} does not match {len(channels)} channels")
        n, c = x.shape[0], x.shape[1]
        if n == 0 or x.shape[2] == 0:
            empty = np.zeros((n, c), dtype=bool)
            zeros = np.zeros((n, c))
            return Verdict.of(self, tuple(channels), zeros, zeros, empty, empty)
        ptp = np.ptp(x, axis=2)
        std = x.std(axis=2)
        off = np.zeros((n, c), dtype=bool)
        high = ptp > self.peak_to_peak_uv if self.peak_to_peak_uv is not None else off
        flat = std < self.flat_uv if self.flat_uv is not None else off
        # A NaN never passes: it is neither clean nor scorable.
        bad = ~np.isfinite(ptp)
        return Verdict.of(self, tuple(channels), ptp, std, high | bad, flat)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Per-epoch, per-channel findings of one ``Gate.check`` (arrays ``[n, c]``)."""

    gate: Gate
    channels: tuple[str, ...]
    ptp: np.ndarray
    std: np.ndarray
    high: np.ndarray  # bool: peak-to-peak over the threshold
    flat: np.ndarray  # bool: std under the flat threshold
    offending: np.ndarray  # bool [n, c]: the channel fails a check in that epoch
    rejected: np.ndarray  # bool [n]: the epoch is not scored

    @classmethod
    def of(
        cls,
        gate: Gate,
        channels: tuple[str, ...],
        ptp: np.ndarray,
        std: np.ndarray,
        high: np.ndarray,
        flat: np.ndarray,
    ) -> Verdict:
        offending = np.asarray(high | flat, dtype=bool)
        rejected = np.asarray(offending.any(axis=1), dtype=bool)
        return cls(gate, channels, ptp, std, high, flat, offending, rejected)

    def __len__(self) -> int:
        return int(self.ptp.shape[0])

    def offenders(self, i: int) -> tuple[str, ...]:
        """The channels epoch ``i`` fails on, in channel order."""
        return tuple(self.channels[j] for j in np.flatnonzero(self.offending[i]))

    def reason(self, i: int) -> str | None:
        """Why epoch ``i`` is rejected, naming the channel(s); None when it is clean."""
        parts: list[str] = []
        high = np.flatnonzero(self.high[i])
        if high.size:
            worst = high[np.argsort(-np.nan_to_num(self.ptp[i, high], nan=np.inf))]
            values = ", ".join(
                f"{_uv(float(self.ptp[i, j]))} µV on {self.channels[j]}" for j in worst
            )
            assert self.gate.peak_to_peak_uv is not None
            parts.append(f"peak-to-peak {values} > {_uv(self.gate.peak_to_peak_uv)} µV")
        for j in np.flatnonzero(self.flat[i]):
            parts.append(f"flat {self.channels[j]} (std {_uv(float(self.std[i, j]))} µV)")
        return "; ".join(parts) or None

    @property
    def reasons(self) -> list[str | None]:
        """Per-epoch reason or None (clean); strings built only for the rejected ones."""
        out: list[str | None] = [None] * len(self)
        for i in np.flatnonzero(self.rejected).tolist():
            out[i] = self.reason(i)
        return out


@dataclass(frozen=True, slots=True)
class BadChannel:
    name: str
    offending_share: float  # of the run's epochs in which it fails the gate
    rejected_share: float  # of the rejected epochs it takes part in
    std_ratio: float  # its median std over the others' median
    alone: int  # rejected epochs that pass once it is dropped

    def describe(self) -> str:
        return (
            f"{self.name} in {self.rejected_share:.0%} of them "
            f"(median std {self.std_ratio:.1f}x the other channels')"
        )


@dataclass
class Tally:
    """What a gate rejects over a run or a session, per channel; finds a bad channel.

    ``add`` each batch of epochs as it is cut; ``report`` at the end. Keeps per-epoch rows
    of small arrays (offending flags and std per channel), so a whole run costs
    ``n_epochs x n_channels`` numbers."""

    gate: Gate
    channels: tuple[str, ...]
    epochs: int = 0
    rejected: int = 0
    _offending: list[np.ndarray] = field(default_factory=list)
    _std: list[np.ndarray] = field(default_factory=list)

    @property
    def most(self) -> bool:
        """The gate rejects most of what it saw so far (at least ``MIN_EPOCHS`` epochs)."""
        return self.epochs >= MIN_EPOCHS and self.rejected > MOST * self.epochs

    def add(self, batch: np.ndarray) -> Verdict:
        verdict = self.gate.check(batch, self.channels)
        self.add_verdict(verdict)
        return verdict

    def add_verdict(self, verdict: Verdict) -> None:
        if len(verdict):
            self._offending.append(verdict.offending)
            self._std.append(verdict.std)
            self.epochs += len(verdict)
            self.rejected += int(verdict.rejected.sum())

    def report(self) -> GateReport:
        c = len(self.channels)
        offending = np.concatenate(self._offending) if self._offending else np.zeros((0, c), bool)
        std = np.concatenate(self._std) if self._std else np.zeros((0, c))
        return GateReport.of(self.gate, self.channels, offending, std)


@dataclass(frozen=True)
class GateReport:
    """A run's rejections: how many, per channel, and the channels bad for the whole run."""

    gate: Gate
    channels: tuple[str, ...]
    epochs: int
    rejected: int
    per_channel: dict[str, int]  # rejected epochs each channel fails in
    bad: tuple[BadChannel, ...] = ()

    @classmethod
    def of(
        cls, gate: Gate, channels: Sequence[str], offending: np.ndarray, std: np.ndarray
    ) -> GateReport:
        names = tuple(channels)
        n = int(offending.shape[0])
        rejected_rows = offending.any(axis=1)
        rejected = int(rejected_rows.sum())
        per_channel = {name: int(k) for name, k in zip(names, offending.sum(axis=0), strict=True)}
        bad: list[BadChannel] = []
        if n >= MIN_EPOCHS and len(names) > 1:
            share = offending.mean(axis=0)
            med_std = np.median(std, axis=0)
            for j, name in enumerate(names):
                others = np.delete(np.arange(len(names)), j)
                share_ratio = share[j] / max(float(np.median(share[others])), 1.0 / n)
                std_ratio = float(med_std[j] / max(float(np.median(med_std[others])), 1e-12))
                if (share[j] >= BAD_SHARE and share_ratio >= BAD_SHARE_RATIO) or (
                    std_ratio >= BAD_STD_RATIO
                ):
                    alone = int((rejected_rows & ~offending[:, others].any(axis=1)).sum())
                    bad.append(
                        BadChannel(
                            name,
                            float(share[j]),
                            float(offending[:, j].sum() / rejected) if rejected else 0.0,
                            std_ratio,
                            alone,
                        )
                    )
        return cls(gate, names, n, rejected, per_channel, tuple(bad))

    @property
    def share(self) -> float:
        return self.rejected / self.epochs if self.epochs else 0.0

    @property
    def most(self) -> bool:
        """The gate rejects most of the run: say so loudly."""
        return self.share > MOST

    def summary(self) -> str:
        """One line: ``gate (peak-to-peak > 100 µV, std < 0.5 µV): 412 of 420 epochs would
        be rejected (98%); AF7 in 97% of them (...) — bad for the whole run: drop it with
        --drop-channels AF7`` (``would be``: the producer's view; the worker decides)."""
        return self.line("would be rejected")

    def line(self, verb: str = "rejected") -> str:
        text = (
            f"gate ({self.gate.describe()}): {self.rejected} of {self.epochs} epochs {verb} "
            f"({self.share:.0%})"
        )
        if self.rejected and not self.bad:
            worst = sorted(self.per_channel.items(), key=lambda kv: -kv[1])
            text += "; per channel: " + ", ".join(f"{k} {v}" for k, v in worst if v)
        if self.bad:
            names = ",".join(b.name for b in self.bad)
            back = sum(b.alone for b in self.bad)
            text += (
                "; "
                + "; ".join(b.describe() for b in self.bad)
                + f" — bad for the whole run: drop it with --drop-channels {names}"
                + (f" ({back} epochs come back)" if back else "")
            )
        return text

    def describe(self) -> dict[str, Any]:
        """For lineage (``metrics``) and JSON: counts, per channel, the bad channels."""
        return {
            "epochs": self.epochs,
            "rejected": self.rejected,
            "per_channel": self.per_channel,
            "bad_channels": [b.name for b in self.bad],
        }
