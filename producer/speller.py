"""A simulated row/column P300 speller layered onto board samples (pure, seeded).

Farwell & Donchin's speller on the synthetic board: a grid of symbols (``SpellerLayout``,
6x6 by default) whose rows and columns flash one at a time every ``soa_s``. A trial spells
one symbol: ``repetitions`` rounds in each of which every row and every column flashes
once, in a seeded random order, then ``trial_pause_s`` of rest before the next trial. The
user "attends" the trial's target symbol (the next character of ``text``, cycled, or a
seeded random one), so the flashes of its row and its column are targets and get the
oddball paradigm's P300 (``producer.paradigm.P300``, the same peak and noise, so a model
trained on the oddball simulation serves the speller).

Each flash's marker is its stimulus code (rows 1..R, columns R+1..R+C: the layout's); the
``trials`` row ``apply`` returns beside the markers gives the trial of each flash, which
the ``Cutter`` puts in the epoch's ``WindowHeader.trial``. As the oddball's, the schedule
is a function of the absolute sample index: the output does not depend on chunking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from neurostream.decisions import SpellerLayout
from neurostream.errors import ConfigError
from producer.paradigm import P300


@dataclass(frozen=True, slots=True)
class Flash:
    index: int  # absolute sample index of the onset
    code: int  # the row's or column's stimulus code (the marker)
    trial: int
    target: bool  # the trial's target symbol is in this row or column


class SpellerParadigm:
    """Schedules a speller's flashes and injects the P300 on the target's row and column."""

    def __init__(
        self,
        fs: float,
        channels: Sequence[str],
        layout: SpellerLayout,
        *,
        repetitions: int = 10,
        soa_s: float = 0.175,
        trial_pause_s: float = 1.5,
        amplitude_uv: float = 6.0,
        latency_s: float = 0.3,
        width_s: float = 0.06,
        weights: Mapping[str, float] | None = None,
        noise_uv: float = 0.0,
        first_onset_s: float = 0.5,
        seed: int = 0,
        text: str | None = None,
    ) -> None:
        if repetitions < 1:
            raise ConfigError(
                f"a speller trial needs at least one repetition, not {repetitions}",
                field="speller_repetitions",
            )
        if text is not None and (missing := sorted(set(text) - set(layout.symbols))):
            raise ConfigError(
                f"the speller text holds symbols the grid lacks: {''.join(missing)!r}",
                field="speller_text",
                hint=f"use the grid's symbols: {''.join(layout.symbols)}",
            )
        self.fs = float(fs)
        self.layout = layout
        self.repetitions = repetitions
        self.soa_s = soa_s
        self.trial_pause_s = trial_pause_s
        self.text = text or None
        self.flashes_per_trial = repetitions * len(layout.codes)
        self.first = round(first_onset_s * fs)
        # Onsets in seconds from the first, rounded to samples once: no drift over a session.
        self.trial_s = self.flashes_per_trial * soa_s + trial_pause_s
        seeds = np.random.SeedSequence(seed).spawn(3)
        self._order_rng = np.random.default_rng(seeds[0])
        self._symbol_rng = np.random.default_rng(seeds[1])
        self.p300 = P300(
            fs,
            channels,
            amplitude_uv=amplitude_uv,
            latency_s=latency_s,
            width_s=width_s,
            weights=weights,
            noise_uv=noise_uv,
            noise_rng=np.random.default_rng(seeds[2]),
        )
        self._targets: list[int] = []  # symbol index per trial, drawn in trial order
        self._orders: list[np.ndarray] = []  # codes in flash order per trial

    def target(self, trial: int) -> int:
        """The symbol index trial ``trial`` spells."""
        while len(self._targets) <= trial:
            t = len(self._targets)
            if self.text is not None:
                symbol = self.text[t % len(self.text)]
                self._targets.append(self.layout.symbols.index(symbol))
            else:
                self._targets.append(int(self._symbol_rng.integers(self.layout.n_symbols)))
        return self._targets[trial]

    def truth(self, trial: int) -> tuple[list[int], str]:
        """The trial's target codes (its symbol's row and column) and the symbol."""
        index = self.target(trial)
        return list(self.layout.targets(index)), self.layout.symbols[index]

    def label_of(self, code: int, trial: int) -> int:
        """An epoch's truth: 1 when its flash held the trial's symbol, else 0."""
        return int(code in self.layout.targets(self.target(trial)))

    def order(self, trial: int) -> np.ndarray:
        """The codes trial ``trial`` flashes, in order: each repetition a fresh permutation."""
        while len(self._orders) <= trial:
            codes = np.asarray(self.layout.codes)
            rounds = [self._order_rng.permutation(codes) for _ in range(self.repetitions)]
            self._orders.append(np.concatenate(rounds))
        return self._orders[trial]

    def onset(self, trial: int, flash: int) -> int:
        return self.first + round((trial * self.trial_s + flash * self.soa_s) * self.fs)

    def flashes(self, start: int, stop: int) -> list[Flash]:
        """Flashes whose onset lies in ``[start, stop)`` (absolute sample indices)."""
        if stop <= self.first:
            return []
        trial_samples = self.trial_s * self.fs
        t = max(0, int((start - self.first) // trial_samples) - 1)
        out: list[Flash] = []
        while self.onset(t, 0) < stop:
            order = self.order(t)
            targets = self.layout.targets(self.target(t))
            for j in range(self.flashes_per_trial):
                idx = self.onset(t, j)
                if idx >= stop:
                    break
                if idx >= start:
                    code = int(order[j])
                    out.append(Flash(idx, code, t, code in targets))
            t += 1
        return out

    def apply(self, data: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (samples with P300s and noise, marker row, trial row) for a chunk starting
        at ``start``: the trial row holds a flash's trial at its marker, -1 elsewhere."""
        n = data.shape[1]
        out = np.array(data, dtype=np.float32, copy=True)
        markers = np.zeros(n, dtype=np.float64)
        trials = np.full(n, -1, dtype=np.int64)
        flashes = self.flashes(start - self.p300.span + 1, start + n)
        for f in flashes:
            if f.index >= start:
                markers[f.index - start] = f.code
                trials[f.index - start] = f.trial
        self.p300.add(out, start, (f.index for f in flashes if f.target))
        self.p300.add_noise(out)
        return out, markers, trials

    def describe(self) -> dict[str, object]:
        """What ``sessions.paradigm`` records of the speller (beside ``kind``)."""
        return {
            "speller": self.layout.describe(),
            "repetitions": self.repetitions,
            "soa_s": self.soa_s,
            "trial_pause_s": self.trial_pause_s,
            "trial_s": self.trial_s,
            "text": self.text,
        }
