"""A deliberate covariate shift for demos and drift tests (pure, seeded).

After ``after_s`` seconds of a session, the named channels are multiplied by ``gain`` and
get white noise of ``noise_uv`` standard deviation, as a loosening electrode or a new
amplifier setting would do. Like the paradigm it works on absolute sample indices, so the
result does not depend on how the stream is chunked; the other channels are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ChannelShift:
    """Gain and/or noise on some channels from sample ``after_s * fs`` on."""

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        *,
        after_s: float,
        shift_channels: Sequence[str],
        gain: float = 1.0,
        noise_uv: float = 0.0,
        seed: int = 0,
    ) -> None:
        lower = [c.lower() for c in channels]
        unknown = [c for c in shift_channels if c.lower() not in lower]
        if unknown:
            raise ValueError(f"shift_channels {unknown} not among the board's {list(channels)}")
        self.start = round(after_s * fs)
        self.index = np.array([lower.index(c.lower()) for c in shift_channels], dtype=np.intp)
        self.gain, self.noise_uv = float(gain), float(noise_uv)
        self._rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])

    def apply(self, data: np.ndarray, start: int) -> np.ndarray:
        """Shifted copy of a chunk ``[n_channels, n]`` whose first sample is ``start``."""
        n = data.shape[1]
        first = max(0, self.start - start)
        if first >= n or self.index.size == 0:
            return data
        out = np.array(data, dtype=np.float32, copy=True)
        part = out[self.index, first:] * self.gain
        if self.noise_uv > 0:
            noise = self._rng.standard_normal((n - first, self.index.size), np.float32).T
            part += self.noise_uv * noise
        out[self.index, first:] = part
        return out
