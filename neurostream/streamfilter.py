"""The causal filter over a live stream: the one piece of signal processing with state.

The producer filters the continuous signal before it cuts epochs (``producer.session.
Cutter``), so every epoch is cut from signal that was filtered with seconds of history
rather than filtered on its own (0.8 s epochs filtered one by one are dominated by edge
effects at a 1 Hz high-pass). Like MNE-LSL's ``Stream.filter``: a Butterworth design in
second-order sections applied with ``scipy.signal.sosfilt``, its per-channel state ``zi``
kept across chunks, so the output does not depend on how the stream was chunked. The
state starts (and restarts after a gap) at the steady state for the first sample, as if
the signal had been constant before it: no start-up step from the channels' DC offsets.

``FilterSpec`` is the filter as a value, and its ``label`` (``"1-30@4"``) is what a window
carries in its ``filtered`` header and an ``erp@2`` model records as the stream it expects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

from neurostream.errors import ConfigError
from neurostream.signal import butter_sos

_LABEL = re.compile(r"^(?P<l>[0-9.]*)-(?P<h>[0-9.]*)@(?P<order>[0-9]+)$")


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """A causal Butterworth filter: band-pass, high-pass (no ``h_freq``) or low-pass."""

    l_freq: float | None
    h_freq: float | None
    order: int = 4

    def __post_init__(self) -> None:
        if self.l_freq is None and self.h_freq is None:
            raise ConfigError("a stream filter needs l_freq, h_freq or both", field="filter")
        if self.order < 1:
            raise ConfigError(f"filter order must be 1 or more, got {self.order}", field="filter")

    @property
    def label(self) -> str:
        """``"1-30@4"``: band edges in Hz (either may be empty) and the order."""
        low = "" if self.l_freq is None else _num(self.l_freq)
        high = "" if self.h_freq is None else _num(self.h_freq)
        return f"{low}-{high}@{self.order}"

    @classmethod
    def parse(cls, text: str) -> FilterSpec:
        """The inverse of ``label`` (also ``"1-30"``, order 4)."""
        value = text.strip()
        if "@" not in value:
            value += "@4"
        m = _LABEL.match(value)
        if m is None:
            raise ConfigError(
                f"cannot read the stream filter {text!r}",
                field="filter",
                hint="write LOW-HIGH Hz, e.g. 1-30 (band-pass), 1- (high-pass), -30 "
                "(low-pass), optionally @ORDER (1-30@4)",
            )
        try:
            low = float(m["l"]) if m["l"] else None
            high = float(m["h"]) if m["h"] else None
        except ValueError:
            raise ConfigError(f"cannot read the stream filter {text!r}", field="filter") from None
        return cls(low, high, int(m["order"]))

    def sos(self, fs: float) -> np.ndarray:
        """The design at ``fs`` (``ConfigError`` when an edge is not below Nyquist)."""
        try:
            return butter_sos(self.l_freq, self.h_freq, float(fs), int(self.order))
        except ValueError as exc:
            raise ConfigError(
                f"stream filter {self.label} at {fs:g} Hz: {exc}", field="filter"
            ) from None


class StreamFilter:
    """``process`` chunks ``[n_channels, n]`` in stream order; ``reset`` after a gap.

    Works in float64 and returns float64 (the windower stores float32). One chunk or many
    of any sizes give the same output, to rounding.
    """

    def __init__(
        self,
        fs: float,
        n_channels: int,
        l_freq: float | None = 1.0,
        h_freq: float | None = 30.0,
        order: int = 4,
    ) -> None:
        self.spec = FilterSpec(l_freq, h_freq, order)
        self.fs = float(fs)
        self.n_channels = int(n_channels)
        self._sos = np.array(self.spec.sos(self.fs))  # writable: scipy wants one
        self._zi_unit = sps.sosfilt_zi(self._sos)  # [sections, 2]: steady state for input 1
        self._zi: np.ndarray | None = None  # [sections, channels, 2] once started

    @classmethod
    def of(cls, spec: FilterSpec, fs: float, n_channels: int) -> StreamFilter:
        return cls(fs, n_channels, spec.l_freq, spec.h_freq, spec.order)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def started(self) -> bool:
        return self._zi is not None

    def reset(self) -> None:
        """Forget the history: the next sample restarts the filter (after a gap)."""
        self._zi = None

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """The filtered ``chunk`` (float64, same shape); state carried to the next call."""
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.n_channels:
            raise ValueError(f"chunk must be [{self.n_channels}, n_samples], got {tuple(x.shape)}")
        if x.shape[1] == 0:
            return np.zeros(x.shape)
        if self._zi is None:
            self._zi = self._zi_unit[:, None, :] * x[None, :, 0, None]
        y, self._zi = sps.sosfilt(self._sos, x, axis=-1, zi=self._zi)
        return np.asarray(y)
