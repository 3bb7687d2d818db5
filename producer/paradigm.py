"""A simulated visual oddball (P300) paradigm layered onto board samples (pure, seeded).

Stimuli come every ``soa_s``; each is a target with probability ``target_prob``
(marker 1) or a non-target (marker 2). After each target onset a positive Gaussian
peak (~300 ms latency) is added, weighted per channel towards centro-parietal sites,
plus optional white noise. The schedule is a function of the absolute sample index, so
the output does not depend on how the stream is chunked, and the paradigm knows the
ground truth of every epoch it caused. ``P300`` is that peak and noise, shared with the
row/column speller (``producer.speller``), so both simulate the same brain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

TARGET = 1
NON_TARGET = 2


@dataclass(frozen=True, slots=True)
class Stimulus:
    index: int  # absolute sample index of the onset
    marker: int

    @property
    def label(self) -> int:
        return int(self.marker == TARGET)


def label_for(marker: int) -> int | None:
    """Ground truth of an epoch from its marker: 1 target, 0 non-target, None unknown."""
    return {TARGET: 1, NON_TARGET: 0}.get(int(marker))


def channel_weights(channels: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """Per-channel P300 weights; boards without standard names get 1.0 everywhere."""
    lower = {k.lower(): float(v) for k, v in weights.items()}
    w = np.array([lower.get(ch.lower(), 0.0) for ch in channels], dtype=np.float32)
    return w if w.any() else np.ones(len(channels), dtype=np.float32)


class P300:
    """The simulated response: a Gaussian peak after each target onset, plus white noise.

    Stateless over the schedule (onsets are absolute sample indices, so a peak that
    straddles two chunks is added piecewise); the noise generator is the only state, drawn
    sample-major so it does not depend on chunk boundaries either."""

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        *,
        amplitude_uv: float,
        latency_s: float,
        width_s: float,
        weights: Mapping[str, float] | None,
        noise_uv: float,
        noise_rng: np.random.Generator,
    ) -> None:
        self.noise_uv = noise_uv
        self.weights = channel_weights(channels, weights or {"Pz": 1.0})
        t = np.arange(round((latency_s + 4 * width_s) * fs)) / fs
        self.waveform = (amplitude_uv * np.exp(-0.5 * ((t - latency_s) / width_s) ** 2)).astype(
            np.float32
        )
        self._noise_rng = noise_rng

    @property
    def span(self) -> int:
        """Samples a peak lasts after its onset: onsets this far back still reach a chunk."""
        return len(self.waveform)

    def add(self, out: np.ndarray, start: int, onsets: Iterable[int]) -> None:
        """Add a peak at each target onset (absolute indices) to ``out`` (starts at ``start``)."""
        n, span = out.shape[1], self.span
        for onset in onsets:
            a, b = max(onset, start), min(onset + span, start + n)
            if a >= b:
                continue
            wave = self.waveform[a - onset : b - onset]
            out[:, a - start : b - start] += self.weights[:, None] * wave[None, :]

    def add_noise(self, out: np.ndarray) -> None:
        if self.noise_uv > 0:
            n_ch, n = out.shape
            out += self.noise_uv * self._noise_rng.standard_normal((n, n_ch), np.float32).T


class OddballParadigm:
    """Schedules stimuli and injects the P300 the board itself cannot produce."""

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        *,
        soa_s: float = 0.25,
        target_prob: float = 1 / 6,
        amplitude_uv: float = 6.0,
        latency_s: float = 0.3,
        width_s: float = 0.06,
        weights: Mapping[str, float] | None = None,
        noise_uv: float = 0.0,
        first_onset_s: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not 0 < target_prob < 1:
            raise ValueError("target_prob must be in (0, 1)")
        self.fs = float(fs)
        self.soa = soa_s * fs  # samples, possibly fractional
        self.first = round(first_onset_s * fs)
        self.target_prob = target_prob
        seeds = np.random.SeedSequence(seed).spawn(2)
        self._target_rng = np.random.default_rng(seeds[0])
        self.p300 = P300(
            fs,
            channels,
            amplitude_uv=amplitude_uv,
            latency_s=latency_s,
            width_s=width_s,
            weights=weights,
            noise_uv=noise_uv,
            noise_rng=np.random.default_rng(seeds[1]),
        )
        self._targets: list[bool] = []

    def onset(self, k: int) -> int:
        return self.first + round(k * self.soa)

    def is_target(self, k: int) -> bool:
        while len(self._targets) <= k:
            self._targets.append(bool(self._target_rng.random() < self.target_prob))
        return self._targets[k]

    def stimuli(self, start: int, stop: int) -> list[Stimulus]:
        """Stimuli whose onset lies in ``[start, stop)`` (absolute sample indices)."""
        k = max(0, int(np.ceil((start - self.first) / self.soa)) - 1)
        out = []
        while (idx := self.onset(k)) < stop:
            if idx >= start:
                out.append(Stimulus(idx, TARGET if self.is_target(k) else NON_TARGET))
            k += 1
        return out

    def apply(self, data: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (samples with P300s and noise, marker row) for a chunk starting at ``start``."""
        n = data.shape[1]
        out = np.array(data, dtype=np.float32, copy=True)
        markers = np.zeros(n, dtype=np.float64)
        stims = self.stimuli(start - self.p300.span + 1, start + n)
        for stim in stims:
            if stim.index >= start:
                markers[stim.index - start] = stim.marker
        self.p300.add(out, start, (s.index for s in stims if s.marker == TARGET))
        self.p300.add_noise(out)
        return out, markers
