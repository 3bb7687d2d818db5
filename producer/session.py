"""One headset session: read the source, cut windows, publish them, record the session.

``run_session`` is the producer's loop: it registers the session in PostgreSQL, reads
chunks from the source, hands them to a ``Cutter`` and publishes every window (and, for
epochs with known ground truth, a label event on ``eeg.labels``; a speller's trial truth
once per trial, with its first epoch). On ``stop`` (SIGTERM),
at ``duration_s`` or at the end of a file it stops reading, waits for the broker to
confirm what was cut, and closes the session row.

``Cutter`` is the one path from samples to windows, shared with ``producer.offline`` (the
epochs ``neurostream train`` fits on), so a model sees offline exactly what it is served
live: the simulated oddball paradigm or P300 speller (synthetic board only,
``resolve_paradigm``), the
demo's channel shift, the event mapping (a recording's unmapped codes cut no epoch and
are counted), the causal stream filter (``neurostream.streamfilter``, state kept for the
session, restarted after a gap), then the ``Windower``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from neurostream.contract import TrialTruth, Window, WindowKind
from neurostream.db import open_pool
from neurostream.decisions import SpellerLayout
from neurostream.errors import ConfigError
from neurostream.gate import GateReport, Tally
from neurostream.labelling import EventMapping
from neurostream.settings import CoreSettings
from neurostream.streamfilter import StreamFilter
from producer.board import Chunk, FileSource, Source
from producer.lsl import LslSource, lsl_offset
from producer.outlet import DecisionOutlet, PredictionOutlet
from producer.paradigm import OddballParadigm, label_for
from producer.publisher import SeqSet, WindowPublisher
from producer.settings import ProducerSettings
from producer.shift import ChannelShift
from producer.sources import lsl_of, open_source
from producer.speller import SpellerParadigm
from producer.windowing import Windower

log = logging.getLogger(__name__)


@dataclass
class SessionResult:
    session_id: str
    service: str
    fs: float
    channels: tuple[str, ...]
    source: str = ""  # the source's name: a board, or file:<format>
    file: str | None = None
    speed: float | None = None  # of a file replay
    paradigm: str = "none"  # as resolved: oddball | speller | none
    record_only: bool = False
    windows_published: int = 0
    windows_confirmed: int = 0
    windows_resent: int = 0  # sent again after a failed or timed-out confirm (a fail-over)
    confirmed: SeqSet = field(default_factory=SeqSet)  # the seqs the broker confirmed
    labels_confirmed: int = 0
    epochs: int = 0
    trials: int = 0  # a speller's trials begun (their truth published): the last one + 1
    samples: int = 0
    truth: dict[int, int] = field(default_factory=dict)  # seq -> label
    codes: dict[int, int] = field(default_factory=dict)  # epochs per raw marker code
    classes: dict[str, int] = field(default_factory=dict)  # labelled epochs per class name
    unmapped: dict[int, int] = field(default_factory=dict)  # markers per unmapped code
    epochs_skipped: int = 0  # markers too close to the start for a whole epoch
    epochs_cut_short: int = 0  # markers too close to the end
    filtered: str | None = None  # the causal stream filter's label ("1-30@4"); None: off
    gaps: int = 0  # breaks in the stream (sample-time jumps, or the source said so)
    epochs_dropped_gap: int = 0  # epochs that would have spanned a gap
    windows_dropped_gap: int = 0  # sliding windows likewise
    first_seq: int | None = None
    last_seq: int | None = None
    flushed: bool = True
    gate: GateReport | None = None  # what the artifact gate would reject (settings' gate)
    interruptions: list[dict[str, object]] = field(default_factory=list)  # LSL stream losses
    lsl: dict[str, Any] | None = None  # the LSL source's streams, clock offsets, marker counts
    predictions_pushed: int | None = None  # on the LSL predictions outlet (None: none opened)
    decisions_pushed: int | None = None  # on the LSL decisions outlet (a speller's)

    def summary(self) -> list[str]:
        """What ``neurostream produce`` prints at the end: a few lines for a person."""
        replay = f" at speed {self.speed:g}" if self.speed is not None else ""
        where = f" {self.file}" if self.file else ""
        mode = ", record-only" if self.record_only else ""
        lines = [
            f"session {self.session_id} ({self.service}{mode}): "
            f"{self.source}{where}{replay}, paradigm {self.paradigm}, "
            + (f"stream filter {self.filtered} Hz" if self.filtered else "unfiltered"),
            f"  {self.windows_confirmed}/{self.windows_published} windows confirmed, "
            f"{self.epochs} epochs, {self.labels_confirmed} labels confirmed",
        ]
        if self.windows_resent:
            lines.append(
                f"  {self.windows_resent} windows resent after a broker fail-over "
                "(the workers store each once)"
            )
        if self.trials:
            lines.append(f"  {self.trials} speller trials (one symbol each), truth published")
        if self.codes:
            lines.append("  epochs per code: " + _counts(self.codes))
        if self.classes:
            lines.append("  epochs per class: " + _counts(self.classes))
        if self.unmapped:
            lines.append(
                "  unmapped codes (no epoch cut): "
                + _counts(self.unmapped)
                + " — add them to --events to use them"
            )
        lost = []
        if self.epochs_skipped:
            lost.append(f"{self.epochs_skipped} too close to the start")
        if self.epochs_cut_short:
            lost.append(f"{self.epochs_cut_short} too close to the end")
        if lost:
            lines.append(f"  markers without a whole epoch: {', '.join(lost)}")
        if self.gaps:
            lines.append(
                f"  {self.gaps} gap(s) in the stream: filter restarted, "
                f"{self.epochs_dropped_gap} epoch(s) and {self.windows_dropped_gap} sliding "
                "window(s) spanning a gap dropped"
            )
        if self.interruptions:
            gaps = ", ".join(
                f"{g['gap_s']:.1f} s" if g.get("gap_s") is not None else "not back"
                for g in self.interruptions
            )
            lines.append(
                f"  INTERRUPTED: the LSL stream was lost {len(self.interruptions)} time(s) "
                f"({gaps}); recorded on the session"
            )
        if self.lsl is not None:
            lines.append("  " + _lsl_line(self.lsl))
        if self.predictions_pushed is not None:
            lines.append(f"  {self.predictions_pushed} predictions pushed on the LSL outlet")
        if self.decisions_pushed is not None:
            lines.append(f"  {self.decisions_pushed} decisions pushed on the LSL outlet")
        if self.gate is not None and self.gate.epochs:
            loud = "WARNING: " if self.gate.most or self.gate.bad else ""
            lines.append(f"  {loud}{self.gate.summary()}")
        if not self.flushed:
            lines.append("  not every window was confirmed before the flush timeout")
        return lines


_WARN_AFTER = 20  # epochs the gate sees before a session is called mostly rejected
DRAIN_S = 10.0  # the longest an LSL results outlet waits for the last results


def _lsl_line(lsl: dict[str, Any]) -> str:
    """One line on the markers of an LSL session: how many landed, how many did not."""
    markers = lsl.get("markers", {})
    if not isinstance(markers, dict) or not markers.get("received"):
        return "LSL: no marker received"
    line = f"LSL markers: {markers.get('placed', 0)}/{markers['received']} placed on their sample"
    late, outside = markers.get("late", 0), markers.get("outside", 0)
    if late or outside:
        line += f"; {late} arrived too late (raise --marker-delay), {outside} fell outside the EEG"
    offsets = lsl.get("clock_offsets", {})
    if isinstance(offsets, dict) and "markers" in offsets:
        line += f"; marker clock offset {offsets['markers']:+.3f} s"
    return line


def _counts(counts: dict[Any, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


Paradigm = Literal["oddball", "speller", "none"]


def resolve_paradigm(settings: ProducerSettings, source: Source) -> Paradigm:
    """The paradigm a session runs: a simulated one only ever on the synthetic board.

    ``auto`` is the oddball on the synthetic board (when no ``events`` are given) and no
    paradigm on any real source; ``oddball`` or ``speller`` on a real source is refused.
    """
    if settings.paradigm == "none":
        return "none"
    if settings.paradigm in ("oddball", "speller"):
        if not source.simulated:
            raise ConfigError(
                f"the simulated {settings.paradigm} paradigm adds fake stimuli and P300s to "
                f"the synthetic board only; {source.name} is real EEG",
                field="paradigm",
                hint="drop --paradigm (a real source has none); to label a recording's own "
                "markers pass --events, e.g. --events target=2,nontarget=1",
            )
        if settings.events.strip():
            raise ConfigError(
                f"--events labels a recording's own markers; the simulated {settings.paradigm} "
                "paradigm labels its own stimuli: pass one of them",
                field="events",
            )
        return settings.paradigm
    return "oddball" if source.simulated and not settings.events.strip() else "none"


def make_paradigm(
    settings: ProducerSettings, fs: float, channels: tuple[str, ...]
) -> OddballParadigm | None:
    if settings.paradigm == "none":
        return None
    return OddballParadigm(
        fs,
        channels,
        soa_s=settings.soa_s,
        target_prob=settings.target_prob,
        **_simulated_p300(settings),
    )


class _SimulatedP300(TypedDict):
    amplitude_uv: float
    latency_s: float
    width_s: float
    weights: dict[str, float]
    noise_uv: float
    first_onset_s: float
    seed: int


def _simulated_p300(settings: ProducerSettings) -> _SimulatedP300:
    """The P300, noise and first onset both simulated paradigms take from the settings."""
    return _SimulatedP300(
        amplitude_uv=settings.p300_amplitude_uv,
        latency_s=settings.p300_latency_s,
        width_s=settings.p300_width_s,
        weights=settings.p300_channels,
        noise_uv=settings.extra_noise_uv,
        first_onset_s=max(0.5, -settings.epoch_tmin),
        seed=settings.seed,
    )


def make_speller(
    settings: ProducerSettings, fs: float, channels: tuple[str, ...]
) -> SpellerParadigm:
    """The simulated row/column speller, with the oddball's P300 and noise settings."""
    return SpellerParadigm(
        fs,
        channels,
        SpellerLayout.grid(settings.speller_rows, settings.speller_cols),
        repetitions=settings.speller_repetitions,
        soa_s=settings.speller_soa_s or settings.soa_s,
        trial_pause_s=settings.speller_pause_s,
        **_simulated_p300(settings),
        text=settings.speller_text or None,
    )


def make_shift(
    settings: ProducerSettings, fs: float, channels: tuple[str, ...]
) -> ChannelShift | None:
    if settings.shift_after_s is None or not settings.shift_channels:
        return None
    return ChannelShift(
        fs,
        channels,
        after_s=settings.shift_after_s,
        shift_channels=settings.shift_channels,
        gain=settings.shift_gain,
        noise_uv=settings.shift_noise_uv,
        seed=settings.seed,
    )


class Cutter:
    """Chunks in, windows out: the one path from samples to windows, live and offline.

    In order: the oddball paradigm (when ``paradigm`` is ``oddball``) or the speller
    (``speller``: flashes whose epochs carry their trial) adds stimuli and P300s, the
    demo's channel shift (when configured), the event mapping keeps only the
    markers it names (the others are counted in ``unmapped`` and cut no epoch), then the
    ``Windower`` cuts sliding windows (``settings.sliding``) and epochs
    ``[onset + tmin, onset + tmax)`` numbered gap-free from 0. Before the windower, the
    causal stream filter (``settings.stream_filter``, None: off) runs over the continuous
    signal; a gap (a sample-time jump beyond ``settings.gap_s``, or ``Chunk.gap``)
    restarts it and the windower drops what would span the gap. Every epoch carries
    ``geometry`` (tmin, baseline, filter). ``label_of`` is the ground truth of an epoch:
    the paradigm's, or the mapping's class of its raw marker code.
    """

    def __init__(
        self,
        settings: ProducerSettings,
        fs: float,
        channels: tuple[str, ...],
        *,
        paradigm: Paradigm,
        mapping: EventMapping | None = None,
    ) -> None:
        self.fs = float(fs)
        self.channels = tuple(channels)
        self.mapping = mapping
        self.paradigm = make_paradigm(settings, fs, channels) if paradigm == "oddball" else None
        self.speller = make_speller(settings, fs, channels) if paradigm == "speller" else None
        self.shift = make_shift(settings, fs, channels)
        spec = settings.stream_filter
        self.filter = StreamFilter.of(spec, fs, len(self.channels)) if spec else None
        self.geometry = settings.geometry
        self.gap_s = settings.gap_s
        self._last_t: float | None = None  # time of the latest sample
        self.windower = Windower(
            session_id=settings.session_id,
            fs=fs,
            channels=self.channels,
            window_s=settings.window_s,
            step_s=settings.step_s,
            tmin=settings.epoch_tmin,
            tmax=settings.epoch_tmax,
            sliding=settings.sliding,
            geometry=self.geometry,
        )
        self.samples = 0
        self.unmapped: Counter[int] = Counter()
        self._mapped_codes = (
            np.asarray(mapping.codes, dtype=np.float64) if mapping is not None else None
        )

    def push(self, chunk: Chunk) -> list[Window]:
        """The windows ``chunk`` (the next samples of the stream) completed."""
        data, markers = chunk.data, chunk.markers
        trials: np.ndarray | None = None
        if self.paradigm is not None:
            data, markers = self.paradigm.apply(data, self.samples)
        elif self.speller is not None:
            data, markers, trials = self.speller.apply(data, self.samples)
        if self.shift is not None:
            data = self.shift.apply(data, self.samples)
        if self._mapped_codes is not None:
            markers = self._keep_mapped(markers)
        self.samples += chunk.n
        ts = chunk.timestamps
        if chunk.n == 0:
            return []
        segments = self._segments(ts, chunk.gap)
        ends = [start for start, _ in segments[1:]] + [chunk.n]
        windows: list[Window] = []
        for (a, broken), b in zip(segments, ends, strict=True):
            if broken:
                self.windower.gap()
                if self.filter is not None:
                    self.filter.reset()
            part = data[:, a:b]
            if self.filter is not None:
                part = self.filter.process(part)
            windows += self.windower.push(
                part, ts[a:b], markers[a:b], trials[a:b] if trials is not None else None
            )
        self._last_t = float(ts[-1])
        return windows

    @property
    def gaps(self) -> int:
        """Breaks in the stream so far (each restarted the filter)."""
        return self.windower.gaps

    def _segments(self, ts: np.ndarray, declared: bool) -> list[tuple[int, bool]]:
        """``(first sample, after a gap)`` of each unbroken stretch of a chunk."""
        period = 1.0 / self.fs
        prev = ts[0] - period if self._last_t is None else self._last_t
        steps = np.diff(ts, prepend=prev)
        jumps = np.flatnonzero(np.abs(steps - period) > self.gap_s).tolist()
        first = self._last_t is not None and (declared or (bool(jumps) and jumps[0] == 0))
        return [(0, first)] + [(int(i), True) for i in jumps if i > 0]

    def _keep_mapped(self, markers: np.ndarray) -> np.ndarray:
        assert self._mapped_codes is not None
        unknown = (markers != 0) & ~np.isin(markers, self._mapped_codes)
        if not unknown.any():
            return markers
        codes, counts = np.unique(markers[unknown], return_counts=True)
        self.unmapped.update({int(c): int(n) for c, n in zip(codes, counts, strict=True)})
        return np.where(unknown, 0.0, markers)

    def label_of(self, window: Window) -> int | None:
        """Ground truth of a window: None for sliding windows and unlabelled epochs."""
        marker = window.header.marker
        if window.header.kind is not WindowKind.EPOCH or marker is None:
            return None
        if self.paradigm is not None:
            return label_for(marker)
        if self.speller is not None:
            trial = window.header.trial
            return None if trial is None else self.speller.label_of(marker, trial)
        if self.mapping is not None:
            return self.mapping.class_of(marker)
        return None


def session_publisher(core: CoreSettings, settings: ProducerSettings) -> WindowPublisher:
    """The publisher a session of ``settings`` uses (not started)."""
    return WindowPublisher(
        core.amqp_url,
        settings.service,
        buffer_max=settings.buffer_max,
        max_in_flight=settings.max_in_flight,
        confirm_timeout_s=settings.confirm_timeout_s,
        record_only=settings.record_only,
        store=settings.event_mapping is not None,
        name=f"producer:{settings.session_id}",
    )


async def run_session(
    core: CoreSettings,
    settings: ProducerSettings,
    *,
    source: Source | None = None,
    stop: asyncio.Event | None = None,
    publisher: WindowPublisher | None = None,
) -> SessionResult:
    """Stream one session until ``duration_s``, the source's end, or ``stop``.

    ``publisher`` (not started; the session starts and closes it) is made from ``core``
    and ``settings`` when not given: a caller that watches its counters live gives one.
    The source starts first (an LSL stream is resolved there, so its rate and channels are
    known before the session is registered; a board that cannot open fails before the
    broker and the store are touched).
    """
    mapping = settings.event_mapping
    src = source if source is not None else open_source(settings)
    stop = stop or asyncio.Event()
    try:
        started = await _start(src, stop)
        if not started:
            log.info("session %s: stopped before its source started", settings.session_id)
            return SessionResult(settings.session_id, settings.service, src.fs, src.channels)
        return await _session(core, settings, src, mapping, stop, publisher)
    finally:
        src.stop()


async def _start(src: Source, stop: asyncio.Event) -> bool:
    """Start the source off the event loop (an LSL stream may take seconds to resolve, a
    board to open), so SIGTERM/SIGINT are heard meanwhile; False if ``stop`` came first."""
    starting = asyncio.ensure_future(asyncio.to_thread(src.start))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if starting.done():
        starting.result()  # a source that cannot start says why here
        return not stop.is_set()
    src.stop()  # the source gives up its search; what it was doing ends soon after
    with contextlib.suppress(Exception):
        await starting
    return False


async def _session(
    core: CoreSettings,
    settings: ProducerSettings,
    src: Source,
    mapping: EventMapping | None,
    stop: asyncio.Event,
    publisher: WindowPublisher | None,
) -> SessionResult:
    paradigm = resolve_paradigm(settings, src)
    result = SessionResult(settings.session_id, settings.service, src.fs, tuple(src.channels))
    result.source, result.paradigm, result.record_only = src.name, paradigm, settings.record_only
    if isinstance(src, FileSource):
        result.file, result.speed = str(src.recording.path), src.speed
    cutter = Cutter(settings, src.fs, result.channels, paradigm=paradigm, mapping=mapping)
    pool = await open_pool(core.database_url, max_size=2)
    publisher = publisher or session_publisher(core, settings)
    lsl = lsl_of(src)
    outlet: PredictionOutlet | None = None
    decisions: DecisionOutlet | None = None
    if settings.results_lsl and not settings.record_only:
        # One offset for both outlets, the source's own when it reads LSL, so a result is
        # stamped on the clock its window was.
        offset = lsl.lsl_offset if lsl is not None else lsl_offset()
        args = (core.amqp_url, settings.service, settings.session_id)
        outlet = PredictionOutlet(*args, name=settings.results_lsl_name, lsl_offset=offset)
        if paradigm == "speller":
            decisions = DecisionOutlet(*args, lsl_offset=offset)
    try:
        await publisher.start()
        for opened in (outlet, decisions):
            if opened is not None:
                await opened.start()
        await _register(pool, settings, src, paradigm, mapping)
        watch = _Interruptions(pool, settings.session_id, lsl, result)
        try:
            await _stream(settings, src, cutter, publisher, stop, result, watch)
        finally:
            await watch.check()
        result.flushed = await publisher.flush(settings.flush_timeout_s)
        if outlet is not None:
            await outlet.drain(result.last_seq, DRAIN_S)
        if decisions is not None:
            await decisions.drain(result.trials - 1 if result.trials else None, DRAIN_S)
    finally:
        await publisher.close(flush_s=0)
        if outlet is not None:
            result.predictions_pushed = outlet.pushed
            await outlet.close()
        if decisions is not None:
            result.decisions_pushed = decisions.pushed
            await decisions.close()
        result.windows_published = publisher.windows_published
        result.windows_confirmed = publisher.windows_confirmed
        result.windows_resent = publisher.windows_resent
        result.confirmed = publisher.confirmed
        result.labels_confirmed = publisher.labels_confirmed
        if lsl is not None:
            result.lsl = lsl.describe()
        with contextlib.suppress(Exception):
            await _finish(pool, settings, src, result)
        await pool.close()
    log.info(
        "session %s: %d windows published, %d confirmed, %d epochs (per code %s)",
        result.session_id,
        result.windows_published,
        result.windows_confirmed,
        result.epochs,
        result.codes,
    )
    if result.gate is not None and (result.gate.most or result.gate.bad):
        log.warning("session %s: %s", result.session_id, result.gate.summary())
    if result.unmapped:
        log.warning(
            "session %s: markers with codes the event mapping does not name cut no epoch: %s",
            result.session_id,
            _counts(result.unmapped),
        )
    return result


async def _stream(
    settings: ProducerSettings,
    src: Source,
    cutter: Cutter,
    publisher: WindowPublisher,
    stop: asyncio.Event,
    result: SessionResult,
    watch: _Interruptions | None = None,
) -> None:
    simulated = cutter.paradigm is not None or cutter.speller is not None
    label_source = "paradigm" if simulated else "recording"
    codes: Counter[int] = Counter()
    classes: Counter[str] = Counter()
    gate = settings.gate
    tally = Tally(gate, cutter.channels) if gate is not None else None
    try:
        await _read(
            settings,
            src,
            cutter,
            publisher,
            stop,
            result,
            codes,
            classes,
            label_source,
            tally,
            watch,
        )
    finally:
        if tally is not None:
            result.gate = tally.report()
        result.codes = dict(sorted(codes.items()))
        names = cutter.mapping.classes if cutter.mapping is not None else ()
        result.classes = {n: classes[n] for n in names if classes[n]} or dict(classes)
        result.unmapped = dict(sorted(cutter.unmapped.items()))
        result.epochs_skipped = cutter.windower.epochs_skipped
        result.epochs_cut_short = cutter.windower.epochs_pending
        result.filtered = cutter.geometry.filtered
        result.gaps = cutter.gaps
        result.epochs_dropped_gap = cutter.windower.epochs_dropped_gap
        result.windows_dropped_gap = cutter.windower.windows_dropped_gap


async def _read(
    settings: ProducerSettings,
    src: Source,
    cutter: Cutter,
    publisher: WindowPublisher,
    stop: asyncio.Event,
    result: SessionResult,
    codes: Counter[int],
    classes: Counter[str],
    label_source: str,
    tally: Tally | None = None,
    watch: _Interruptions | None = None,
) -> None:
    limit = round(settings.duration_s * src.fs) if settings.duration_s else None
    warned = False
    flushed = False  # stopped or at duration_s: what the source still holds comes last
    while not flushed:
        flushed = stop.is_set() or (limit is not None and result.samples >= limit)
        chunk = src.flush() if flushed else src.read()
        if watch is not None:
            await watch.check()
        if chunk is None:
            break
        if chunk.n == 0:
            if not flushed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.poll_s)
            continue
        if limit is not None:
            chunk = chunk.head(limit - result.samples)
        result.samples += chunk.n
        for window in cutter.push(chunk):
            seq = window.header.seq
            await publisher.publish_window(window)
            if result.first_seq is None:
                result.first_seq = seq
            result.last_seq = seq
            if window.header.kind is WindowKind.EPOCH and window.header.marker is not None:
                result.epochs += 1
                codes[window.header.marker] += 1
                if tally is not None:
                    tally.add(window.data[None])
                    if tally.most and not warned and tally.epochs >= _WARN_AFTER:
                        warned = True
                        log.warning(
                            "session %s: the artifact gate (%s) would reject %d of the first "
                            "%d epochs; see the session summary for the channel at fault",
                            result.session_id,
                            tally.gate.describe(),
                            tally.rejected,
                            tally.epochs,
                        )
                trial = window.header.trial
                if cutter.speller is not None and trial is not None and trial >= result.trials:
                    targets, symbol = cutter.speller.truth(trial)
                    await publisher.publish_trial(
                        TrialTruth(
                            session_id=settings.session_id,
                            trial=trial,
                            targets=targets,
                            symbol=symbol,
                            source=label_source,
                        )
                    )
                    result.trials = trial + 1
                label = cutter.label_of(window)
                if label is not None:
                    result.truth[seq] = label
                    if cutter.mapping is not None:
                        classes[cutter.mapping.classes[label]] += 1
                    else:
                        classes[str(label)] += 1
                    await publisher.publish_label(
                        settings.session_id, seq, label, source=label_source
                    )


def source_record(settings: ProducerSettings, src: Source) -> dict[str, Any]:
    """The session row's ``source``: what a session can be traced back to."""
    record: dict[str, Any] = {"name": src.name, "record_only": settings.record_only}
    if isinstance(src, FileSource):
        rec = src.recording
        record |= {
            "file": str(rec.path),
            "format": rec.format,
            "speed": src.speed,
            "loop": src.loop,
            "dropped": list(rec.dropped),
            "events_in_file": {str(k): v for k, v in rec.event_counts().items()},
        }
        if settings.layout:
            record["layout"] = settings.layout
    lsl = lsl_of(src)
    if lsl is not None:
        record["lsl"] = lsl.describe()
        if settings.record:
            record["recorded_to"] = settings.record
    if settings.results_lsl and not settings.record_only:
        record["results_lsl"] = settings.results_lsl_name
    return record


async def _register(
    pool: AsyncConnectionPool,
    settings: ProducerSettings,
    src: Source,
    kind: str,
    mapping: EventMapping | None,
) -> None:
    paradigm: dict[str, object] = {
        "kind": kind,
        "epoch": settings.geometry.describe(),
    }
    if mapping is not None:
        paradigm |= mapping.describe()
    if kind == "oddball":
        paradigm |= settings.model_dump(
            include={
                "soa_s",
                "target_prob",
                "p300_amplitude_uv",
                "p300_latency_s",
                "p300_width_s",
                "extra_noise_uv",
                "seed",
            }
        )
    if kind == "speller":
        speller = make_speller(settings, src.fs, tuple(src.channels))
        paradigm |= speller.describe() | settings.model_dump(
            include={
                "p300_amplitude_uv",
                "p300_latency_s",
                "p300_width_s",
                "extra_noise_uv",
                "seed",
            }
        )
    async with pool.connection() as conn:
        await conn.execute(
            """
            INSERT INTO sessions (session_id, service, board, fs, channels, paradigm, source)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (session_id) DO UPDATE SET service = EXCLUDED.service,
                board = EXCLUDED.board, fs = EXCLUDED.fs, channels = EXCLUDED.channels,
                paradigm = EXCLUDED.paradigm, source = EXCLUDED.source, ended_at = NULL,
                interrupted = false, interruptions = '[]'
            """,
            [
                settings.session_id,
                settings.service,
                src.name,
                src.fs,
                Jsonb(list(src.channels)),
                Jsonb(paradigm),
                Jsonb(source_record(settings, src)),
            ],
        )


async def _finish(
    pool: AsyncConnectionPool, settings: ProducerSettings, src: Source, result: SessionResult
) -> None:
    """Close the session row; the source record gains what only the end knows (LSL counts)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE sessions SET ended_at = now(), windows_confirmed = %s, source = %s "
            "WHERE session_id = %s",
            [
                result.windows_confirmed,
                Jsonb(source_record(settings, src)),
                result.session_id,
            ],
        )


class _Interruptions:
    """Writes an LSL stream's losses to the session row as they happen.

    A loss marks the session interrupted at once (a dashboard shows it while the stream is
    still gone); its return updates the gap. Nothing to do for sources that never lose
    their stream.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        session_id: str,
        source: LslSource | None,
        result: SessionResult,
    ) -> None:
        self.pool = pool
        self.session_id = session_id
        self.source = source
        self.result = result
        self.db_timeout_s = 2.0
        self._written: list[dict[str, object]] = []

    async def check(self) -> None:
        if self.source is None or not self.source.interruptions:
            return
        now = [i.describe() for i in self.source.interruptions]
        if now == self._written:
            return
        for new in now[len(self._written) :]:
            log.warning(
                "session %s: the LSL stream was lost after sample %s; marked interrupted, "
                "resolving it again",
                self.session_id,
                new.get("samples_before"),
            )
        self.result.interruptions = now
        try:
            async with self.pool.connection(timeout=self.db_timeout_s) as conn:
                await conn.execute(
                    "UPDATE sessions SET interrupted = true, interruptions = %s "
                    "WHERE session_id = %s",
                    [Jsonb(now), self.session_id],
                )
        except (psycopg.Error, PoolTimeout) as exc:
            # A session built to outlive its stream must not end on a store blip: the row
            # is written on the next check (and at the end with the source record).
            log.warning(
                "session %s: could not record the interruption yet: %s", self.session_id, exc
            )
            return
        self._written = now
