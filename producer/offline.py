"""A session without a broker: the paradigm and windower over a source, for training data.

``neurostream train`` uses this to build the first model of a fresh install from a
simulated oddball session (or a recorded file): the same paradigm, the same windowing and
the same ground truth as a live session, only as fast as the CPU allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from brainflow.board_shim import BoardIds, BoardShim
from brainflow.data_filter import DataFilter

from producer.board import RecordingSource, Source, record
from producer.paradigm import label_for
from producer.session import make_paradigm
from producer.settings import ProducerSettings
from producer.windowing import Windower


@dataclass(frozen=True)
class LabelledEpochs:
    x: np.ndarray  # float32 [n, c, s]
    y: np.ndarray  # int64 [n]
    fs: float
    channels: tuple[str, ...]


def simulate_epochs(settings: ProducerSettings, source: Source, seconds: float) -> LabelledEpochs:
    """Cut labelled epochs from ``seconds`` of ``source`` with the settings' paradigm."""
    paradigm = make_paradigm(settings, source.fs, tuple(source.channels))
    if paradigm is None:
        raise ValueError("training data needs the oddball paradigm (paradigm='oddball')")
    windower = Windower(
        session_id=settings.session_id,
        fs=source.fs,
        channels=source.channels,
        tmin=settings.epoch_tmin,
        tmax=settings.epoch_tmax,
        sliding=False,
    )
    limit = round(seconds * source.fs)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    samples = 0
    source.start()
    try:
        while samples < limit:
            chunk = source.read()
            if chunk is None:
                break
            if chunk.n == 0:
                continue
            chunk = chunk.head(limit - samples)
            data, markers = paradigm.apply(chunk.data, samples)
            samples += chunk.n
            for w in windower.push(data, chunk.timestamps, markers):
                label = label_for(w.header.marker) if w.header.marker is not None else None
                if label is not None:
                    xs.append(w.data)
                    ys.append(label)
    finally:
        source.stop()
    if not xs:
        raise ValueError(f"no epochs in {seconds} s of {source.name}")
    return LabelledEpochs(np.stack(xs), np.asarray(ys, np.int64), source.fs, tuple(source.channels))


def synthetic_recording(cache: Path, seconds: float = 20.0) -> RecordingSource:
    """SYNTHETIC_BOARD background for fast simulation: recorded once (real time), then looped.

    The board's signals are sines of whole hertz, periodic over one second, so a loop cut to
    whole seconds is seamless; any other length puts a step in every channel at each wrap,
    whose filtered transients swamp the P300 (EEGNet then learns nothing).
    """
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        record("synthetic", seconds, cache)
    data = DataFilter.read_file(str(cache))
    fs = BoardShim.get_sampling_rate(BoardIds.SYNTHETIC_BOARD.value)
    whole = (data.shape[1] // fs) * fs
    if whole == 0:
        raise ValueError(f"{cache} holds less than one second of samples")
    return RecordingSource(data[:, :whole], board="synthetic", speed=0, loop=True)
