"""A session without a broker: the producer's cutting over a source, for training data.

``epochs_from_recording`` is what ``neurostream train --file`` fits on: a recording's own
events, labelled by an ``EventMapping``, cut by the live producer's own path (the file
source's float32 samples and markers, ``session.Cutter``: the same ``Windower``, epoch
geometry, unmapped-code rule and seq numbering), so an epoch trained on offline is the
window a live replay of the same file serves, bit for bit, at the same seq.
``simulate_epochs`` builds the first model of a fresh install from a simulated oddball
session on the synthetic board, through the same ``Cutter`` (paradigm, stream filter);
``simulate_speller`` cuts a simulated speller session the same way, with each epoch's
stimulus code and trial, to score a model's decisions offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from brainflow.board_shim import BoardIds, BoardShim
from brainflow.data_filter import DataFilter

from neurostream.geometry import EpochGeometry
from neurostream.labelling import EventMapping
from neurostream.recordings import Recording
from producer.board import FileSource, RecordingSource, Source, record
from producer.session import Cutter, Paradigm, make_paradigm, make_speller
from producer.settings import ProducerSettings


@dataclass(frozen=True)
class LabelledEpochs:
    x: np.ndarray  # float32 [n, c, s]
    y: np.ndarray  # int64 [n]: class ids (-1: an unlabelled epoch, no mapping given)
    fs: float
    channels: tuple[str, ...]
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # raw markers
    seqs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # live seq
    t0: np.ndarray = field(default_factory=lambda: np.zeros(0))  # first sample's time
    unmapped: dict[int, int] = field(default_factory=dict)  # markers per unmapped code
    skipped: int = 0  # markers too close to the start or the end for a whole epoch
    # tmin/tmax, baseline and stream filter of the epochs, as their windows carry them:
    # what erp@2 reads (``train_model(geometry=)``)
    geometry: EpochGeometry | None = None
    trials: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: none


def epochs_from_recording(
    recording: Recording,
    settings: ProducerSettings | None = None,
    mapping: EventMapping | None = None,
    *,
    tmin: float | None = None,
    tmax: float | None = None,
) -> LabelledEpochs:
    """The epochs a live replay of ``recording`` publishes, with their classes and seqs.

    ``settings`` carries the windowing (``epoch_tmin``/``epoch_tmax``, ``sliding``,
    ``window_s``/``step_s``, all of which shape seq numbering) exactly as the producer
    would get them; ``tmin``/``tmax`` override the epoch window. With ``mapping`` only
    mapped markers cut epochs (``unmapped`` counts the others) and ``y`` holds their class
    ids; without, every marker cuts an epoch and ``y`` is -1. Channels are the recording's
    as read (select them with ``read_recording(channels=, drop=)``, as the producer does).
    """
    base = settings if settings is not None else ProducerSettings(paradigm="none")
    update: dict[str, object] = {"paradigm": "none"}
    if tmin is not None:
        update["epoch_tmin"] = tmin
    if tmax is not None:
        update["epoch_tmax"] = tmax
    settings = ProducerSettings(**(base.model_dump() | update))
    source = FileSource(recording, speed=0, loop=False)
    cutter = Cutter(settings, source.fs, source.channels, paradigm="none", mapping=mapping)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    codes: list[int] = []
    seqs: list[int] = []
    t0s: list[float] = []
    source.start()
    while (chunk := source.read()) is not None:
        for window in cutter.push(chunk):
            if window.header.marker is None:
                continue  # a sliding window (settings.sliding): it takes a seq, not an epoch
            label = cutter.label_of(window)
            xs.append(window.data)
            ys.append(-1 if label is None else label)
            codes.append(window.header.marker)
            seqs.append(window.header.seq)
            t0s.append(window.header.t0)
    n_ch, n_s = len(source.channels), cutter.windower.epoch_samples
    return LabelledEpochs(
        np.stack(xs) if xs else np.zeros((0, n_ch, n_s), np.float32),
        np.asarray(ys, np.int64),
        source.fs,
        tuple(source.channels),
        codes=np.asarray(codes, np.int64),
        seqs=np.asarray(seqs, np.int64),
        t0=np.asarray(t0s, np.float64),
        unmapped=dict(sorted(cutter.unmapped.items())),
        skipped=cutter.windower.epochs_skipped + cutter.windower.epochs_pending,
        geometry=cutter.geometry,
    )


def simulate_epochs(settings: ProducerSettings, source: Source, seconds: float) -> LabelledEpochs:
    """Cut labelled epochs from ``seconds`` of ``source`` with the settings' paradigm."""
    if make_paradigm(settings, source.fs, tuple(source.channels)) is None:
        raise ValueError("training data needs the oddball paradigm (paradigm='oddball')")
    return _simulate(settings, source, seconds, "oddball")


def simulate_speller(settings: ProducerSettings, source: Source, trials: int) -> LabelledEpochs:
    """The epochs of ``trials`` trials of the simulated speller (the settings' ``speller_*``),
    with their target/non-target labels, stimulus codes (``codes``) and ``trials``."""
    speller = make_speller(settings, source.fs, tuple(source.channels))
    # the last flash's epoch ends before the next trial's first flash: the pause covers it
    seconds = speller.onset(trials, 0) / source.fs
    return _simulate(settings, source, seconds, "speller")


def _simulate(
    settings: ProducerSettings, source: Source, seconds: float, paradigm: Paradigm
) -> LabelledEpochs:
    # The live session's own path (paradigm, stream filter, windower) without sliding windows.
    settings = ProducerSettings(**(settings.model_dump() | {"sliding": False}))
    cutter = Cutter(settings, source.fs, tuple(source.channels), paradigm=paradigm)
    limit = round(seconds * source.fs)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    codes: list[int] = []
    seqs: list[int] = []
    trials: list[int] = []
    t0s: list[float] = []
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
            samples += chunk.n
            for w in cutter.push(chunk):
                label = cutter.label_of(w)
                if label is not None:
                    xs.append(w.data)
                    ys.append(label)
                    codes.append(w.header.marker or 0)
                    seqs.append(w.header.seq)
                    trials.append(-1 if w.header.trial is None else w.header.trial)
                    t0s.append(w.header.t0)
    finally:
        source.stop()
    if not xs:
        raise ValueError(f"no epochs in {seconds} s of {source.name}")
    return LabelledEpochs(
        np.stack(xs),
        np.asarray(ys, np.int64),
        source.fs,
        tuple(source.channels),
        codes=np.asarray(codes, np.int64),
        seqs=np.asarray(seqs, np.int64),
        t0=np.asarray(t0s, np.float64),
        geometry=cutter.geometry,
        trials=np.asarray(trials, np.int64),
    )


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
