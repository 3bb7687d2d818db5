"""Cut a growing sample stream into contract windows (pure, no I/O).

The producer pushes each chunk read from the board; the windower answers with every
window that became complete: sliding windows every ``step_s`` and one epoch
``[onset + tmin, onset + tmax)`` per marker. Windows are emitted in order of their last
sample, so the sequence numbers (gap-free from 0) do not depend on how the stream was
chunked. ``gap()`` says the stream broke before the next sample: windows that would span
the break are dropped and counted, never stitched across it. Epochs carry the session's
``EpochGeometry`` in their headers (sliding windows its filter label), and the trial of
their marker when the stream has trials (a speller's ``trials`` row beside the markers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurostream.contract import Window, WindowKind, make_window
from neurostream.geometry import EpochGeometry


class Windower:
    """Stateful over the stream, pure over its inputs: same samples, same windows."""

    def __init__(
        self,
        *,
        session_id: str,
        fs: float,
        channels: Sequence[str],
        window_s: float = 1.0,
        step_s: float = 0.5,
        tmin: float = -0.1,
        tmax: float = 0.7,
        sliding: bool = True,
        epochs: bool = True,
        geometry: EpochGeometry | None = None,
    ) -> None:
        self.session_id = session_id
        self.fs = float(fs)
        self.channels = tuple(channels)
        self.sliding = sliding
        self.epochs = epochs
        self._win = max(1, round(window_s * fs))
        self._step = max(1, round(step_s * fs))
        self._off0 = round(tmin * fs)
        self._off1 = round(tmax * fs)
        if self._off1 <= self._off0:
            raise ValueError("tmax must be greater than tmin")
        self._next_slide = 0
        # (start, end, marker, trial or -1) of epochs not yet complete
        self._pending: list[tuple[int, int, int, int]] = []
        self._seq = 0
        self._total = 0
        self._skipped = 0
        self.geometry = geometry
        self._gap_at = 0  # first sample after the latest gap
        self.gaps = 0
        self.epochs_dropped_gap = 0  # epochs that would have spanned a gap
        self.windows_dropped_gap = 0  # sliding windows likewise
        n_ch = len(self.channels)
        self._buf = np.zeros((n_ch, 4096), dtype=np.float32)
        self._ts = np.zeros(4096, dtype=np.float64)
        self._buf_start = 0  # absolute index of _buf[:, 0]

    @property
    def next_seq(self) -> int:
        return self._seq

    @property
    def samples_seen(self) -> int:
        return self._total

    @property
    def epochs_skipped(self) -> int:
        """Markers too close to the stream start to cut a full epoch."""
        return self._skipped

    @property
    def epoch_samples(self) -> int:
        """Samples in one epoch: ``round(tmax * fs) - round(tmin * fs)``."""
        return self._off1 - self._off0

    @property
    def epochs_pending(self) -> int:
        """Markers whose epoch is not complete yet (at the stream's end: cut short)."""
        return len(self._pending)

    def gap(self) -> None:
        """The next sample does not follow the last one: drop what would span the break."""
        at = self._total
        if at == 0 or at == self._gap_at:
            return
        self.gaps += 1
        self._gap_at = at
        # An epoch whose event or first sample came before the break (with tmin > 0, the
        # event may precede the epoch's samples).
        lead = max(self._off0, 0)
        keep = [p for p in self._pending if p[0] - lead >= at]
        self.epochs_dropped_gap += len(self._pending) - len(keep)
        self._pending = keep
        if self.sliding and self._next_slide < at:
            self.windows_dropped_gap += -(-(at - self._next_slide) // self._step)
            self._next_slide = at

    def push(
        self,
        data: np.ndarray,
        timestamps: np.ndarray,
        markers: np.ndarray | None = None,
        trials: np.ndarray | None = None,
    ) -> list[Window]:
        """Add ``data`` [n_channels, n] and return the windows it completed.

        ``trials`` (beside ``markers``) gives each marker's trial, -1 for none."""
        n = int(data.shape[1])
        if data.shape[0] != len(self.channels) or timestamps.shape[0] != n:
            raise ValueError(
                f"chunk shape {data.shape} / {timestamps.shape} does not match "
                f"{len(self.channels)} channels"
            )
        if n == 0:
            return []
        first = self._total
        self._append(data, timestamps)
        if self.epochs and markers is not None:
            for i in np.flatnonzero(markers):
                onset = first + int(i)
                start, end = onset + self._off0, onset + self._off1
                if start < 0:
                    self._skipped += 1
                    continue
                if start < self._gap_at:  # its baseline lies before the latest gap
                    self.epochs_dropped_gap += 1
                    continue
                trial = int(trials[i]) if trials is not None else -1
                self._pending.append((start, end, int(markers[i]), trial))
        return self._emit()

    def _emit(self) -> list[Window]:
        # (end, kind rank, start, marker, trial)
        due: list[tuple[int, int, int, int | None, int]] = []
        while self.sliding and self._next_slide + self._win <= self._total:
            due.append((self._next_slide + self._win, 0, self._next_slide, None, -1))
            self._next_slide += self._step
        keep: list[tuple[int, int, int, int]] = []
        for start, end, code, trial in self._pending:
            if end <= self._total:
                due.append((end, 1, start, code, trial))
            else:
                keep.append((start, end, code, trial))
        self._pending = keep
        due.sort(key=lambda d: (d[0], d[1], d[2]))
        return [
            self._window(start, end, marker, None if trial < 0 else trial)
            for end, _, start, marker, trial in due
        ]

    def _window(self, start: int, end: int, marker: int | None, trial: int | None) -> Window:
        a, b = start - self._buf_start, end - self._buf_start
        window = make_window(
            self._buf[:, a:b].copy(),
            session_id=self.session_id,
            seq=self._seq,
            t0=float(self._ts[a]),
            fs=self.fs,
            channels=self.channels,
            kind=WindowKind.SLIDING if marker is None else WindowKind.EPOCH,
            marker=marker,
            geometry=self.geometry if marker is not None else None,
            filtered=self.geometry.filtered if self.geometry is not None else None,
            trial=trial,
        )
        self._seq += 1
        return window

    def _keep_from(self) -> int:
        """Oldest sample any future window can still need."""
        keep = self._total + min(self._off0, 0) if self.epochs else self._total
        if self.sliding:
            keep = min(keep, self._next_slide)
        for start, *_ in self._pending:
            keep = min(keep, start)
        return max(keep, self._buf_start)

    def _append(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        n = data.shape[1]
        used = self._total - self._buf_start
        if used + n > self._buf.shape[1]:
            drop = self._keep_from() - self._buf_start
            used -= drop
            if used + n > self._buf.shape[1]:
                cap = 2 * (used + n)
                buf = np.empty((self._buf.shape[0], cap), dtype=np.float32)
                ts = np.empty(cap, dtype=np.float64)
            else:
                buf, ts = self._buf, self._ts  # numpy copes with the overlap
            buf[:, :used] = self._buf[:, drop : drop + used]
            ts[:used] = self._ts[drop : drop + used]
            self._buf, self._ts = buf, ts
            self._buf_start += drop
        self._buf[:, used : used + n] = data
        self._ts[used : used + n] = timestamps
        self._total += n
