"""Epoch geometry: where an epoch sits around its event, and what stream it was cut from.

Recorded once, where the epoch is cut (``producer.session.Cutter``), and carried with it:
an epoch window's optional headers ``tmin``, ``baseline`` and ``filtered``
(``neurostream.contract``), the session row's ``paradigm.epoch`` and, for training, the
``LabelledEpochs`` of ``producer.offline``. Feature pipelines that need it (``erp@2``'s
baseline) read it from there instead of from a copy in their own parameters, so a model
cannot baseline-correct over an interval other than the one the epochs were cut with.

``filtered`` is the ``FilterSpec.label`` of the causal filter run over the stream before
cutting (``"1-30@4"``), or None for an unfiltered stream (or a producer that predates it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def default_baseline(tmin: float, tmax: float | None = None) -> tuple[float, float] | None:
    """The pre-stimulus part ``(tmin, 0)``; None when the epoch starts at or after the event."""
    if tmin >= 0:
        return None
    end = 0.0 if tmax is None else min(0.0, float(tmax))
    return (float(tmin), end)


@dataclass(frozen=True, slots=True)
class EpochGeometry:
    """``tmin``/``tmax`` (s around the event), the ``baseline`` interval (s), the filter."""

    tmin: float
    tmax: float | None = None
    baseline: tuple[float, float] | None = None
    filtered: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.tmin):
            raise ValueError(f"tmin must be finite, got {self.tmin}")
        if self.tmax is not None and not self.tmax > self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be after tmin ({self.tmin})")
        if self.baseline is not None:
            b0, b1 = self.baseline
            if not (math.isfinite(b0) and math.isfinite(b1) and b0 < b1):
                raise ValueError(f"baseline {self.baseline} must be (start, end), start < end")

    @classmethod
    def cut(
        cls,
        tmin: float,
        tmax: float | None,
        baseline: tuple[float, float] | None | str = "auto",
        filtered: str | None = None,
    ) -> EpochGeometry:
        """The geometry of epochs cut at ``tmin..tmax``; ``"auto"``: the pre-stimulus part."""
        base = default_baseline(tmin, tmax) if baseline == "auto" else baseline
        assert not isinstance(base, str)
        if base is not None:
            base = (float(base[0]), float(base[1]))
        return cls(float(tmin), None if tmax is None else float(tmax), base, filtered)

    def baseline_samples(self, fs: float, n_samples: int) -> tuple[int, int] | None:
        """The baseline as sample indices ``[a, b)`` of an epoch whose first sample is at
        ``round(tmin * fs)`` (as the producer cuts it), clipped to the epoch."""
        if self.baseline is None:
            return None
        first = round(self.tmin * fs)
        a = min(max(round(self.baseline[0] * fs) - first, 0), n_samples)
        b = min(max(round(self.baseline[1] * fs) - first, 0), n_samples)
        return (a, b) if b > a else None

    def describe(self) -> dict[str, Any]:
        """JSON for a session row's ``paradigm.epoch``."""
        return {
            "tmin": self.tmin,
            "tmax": self.tmax,
            "baseline": list(self.baseline) if self.baseline is not None else None,
            "filter": self.filtered,
        }
