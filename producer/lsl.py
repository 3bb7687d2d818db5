"""A live LSL EEG stream, with markers from a stimulus program's own stream, as a ``Source``.

``LslSource`` reads an EEG stream (muse-lsl, the OpenBCI GUI, BrainFlow's streamer, any
outlet with a nominal rate) and, optionally, a separate marker stream, usually from a
stimulus program in another process with another clock, and hands the session loop
``Chunk``s like any other source: µV samples of the EEG channels, wall-clock timestamps,
and each marker on the EEG sample nearest its time::

    src = LslSource(StreamQuery(type="EEG"), StreamQuery(name="PsychoPy"),
                    text_codes={"target": 2, "nontarget": 1})
    src.start()               # resolves the EEG stream (blocks up to resolve_timeout_s)
    chunk = src.read()        # never waits: samples so far, or an empty chunk

Clocks. Both inlets synchronise to this process's LSL clock (``proc_clocksync``: liblsl
keeps measuring each outlet's offset, ``time_correction()``, in the background; the
latest is in ``clock_offsets``). The EEG inlet also removes transport jitter
(``proc_dejitter``, which fits the sample times to the nominal rate, so a chunked
transport's timestamps become a regular grid) and never steps back (``proc_monotonize``).
The marker inlet only syncs: its samples are irregular. Chunk timestamps are wall time,
``lsl_time + lsl_offset``, with ``lsl_offset`` fixed at ``start()``.

Markers. A marker's value is read as a file's marker is (``recordings.marker_label``):
numbers and numeric text are codes, 0/empty/nan are none, other text is looked up in
``text_codes`` and, when absent, given a fresh code above all others (``texts`` lists
every text seen, so the session reports an unmapped one). Markers travel apart from the
EEG, so with a marker stream configured the EEG samples are held back until they are
``marker_delay_s`` older than the newest sample: a marker that arrives up to that late
still lands on its sample; later, its sample has been handed on and it counts in
``markers_late``. One that arrives before its sample (EEG transport is usually slower)
waits for it. Without a marker stream nothing is held back.

Finding streams. The marker stream may appear after the EEG stream (a stimulus program
is often started later), and either may be lost and come back: a ``ContinuousResolver``
looks for it in a thread, which also opens the inlet and takes the first clock offset
(up to a second), so ``read()`` never waits for the network. A lost EEG stream (no sample
for ``lost_after_s``, or liblsl says so) is an ``Interruption``: what was held back is
handed on, the next chunk after it comes back says ``gap=True``, and after
``give_up_after_s`` ``read()`` returns None. A stream that comes back with another rate or
other channels is refused (``SourceError``): the session's windows would change meaning.

Recording. A ``Recorder`` (``producer.xdf.XdfWriter``) given to the source receives each
stream's header when its inlet opens and every chunk pulled, raw values with the
timestamps the markers were placed by (this process's LSL clock, synced and dejittered).
The source owns it: ``stop()`` closes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import numpy as np
import pylsl
from pylsl.util import LostError

from neurostream.errors import SourceError
from neurostream.recordings import eeg_channels, marker_label, unit_scale
from producer.board import Chunk

__all__ = ["Interruption", "LslSource", "Recorder", "StreamQuery"]

log = logging.getLogger(__name__)

EEG_FLAGS: Final = pylsl.proc_clocksync | pylsl.proc_dejitter | pylsl.proc_monotonize
MARKER_FLAGS: Final = pylsl.proc_clocksync
OPEN_TIMEOUT_S: Final = 3.0  # a stream's full info, its connection, its first clock offset
FORGET_AFTER_S: Final = 5.0  # a resolver still lists a vanished stream this long
CLOCK_REFRESH_S: Final = 1.0  # how often clock_offsets is brought up to date
_PULL: Final = 4096  # samples per pull_chunk call
_FORMATS: Final = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int32: "int32",
    pylsl.cf_int16: "int16",
    pylsl.cf_int8: "int8",
    pylsl.cf_int64: "int64",
}

Role = Literal["eeg", "markers"]


def _literal(text: str) -> str:
    """``text`` as an XPath 1.0 string literal, which has no escapes: concat() the quotes."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"


@dataclass(frozen=True, slots=True)
class StreamQuery:
    """How a stream is found: any of its name, type and source_id ('' = any)."""

    name: str = ""
    type: str = ""
    source_id: str = ""

    def _fields(self) -> list[tuple[str, str]]:
        fields = (("name", self.name), ("type", self.type), ("source_id", self.source_id))
        return [(key, value) for key, value in fields if value]

    def predicate(self) -> str:
        """The LSL (XPath) predicate, e.g. ``name='Muse' and type='EEG'``; any stream if empty."""
        return " and ".join(f"{k}={_literal(v)}" for k, v in self._fields()) or "true()"

    def describe(self) -> str:
        """For messages: ``name 'Muse', type 'EEG'``."""
        return ", ".join(f"{k} {v!r}" for k, v in self._fields()) or "any stream"


@dataclass(slots=True)
class Interruption:
    """One loss of the EEG stream; times are wall time (``time.time()``'s clock)."""

    last_sample_at: float  # the last sample before the loss
    detected_at: float  # when it was declared lost
    samples_before: int  # samples handed out before the loss
    resumed_at: float | None = None  # the first sample after it came back

    @property
    def gap_s(self) -> float | None:
        return None if self.resumed_at is None else self.resumed_at - self.last_sample_at

    def describe(self) -> dict[str, object]:
        return {
            "last_sample_at": self.last_sample_at,
            "detected_at": self.detected_at,
            "samples_before": self.samples_before,
            "resumed_at": self.resumed_at,
            "gap_s": self.gap_s,
        }


class Recorder(Protocol):
    """Where the pulled streams are recorded (``producer.xdf.XdfWriter``)."""

    def add_stream(self, info_xml: str) -> int: ...

    def write(
        self, stream_id: int, values: np.ndarray | list[list[str]], timestamps: np.ndarray
    ) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class _Opened:
    """An open inlet with its full description and first clock offset."""

    inlet: Any  # pylsl.StreamInlet
    info: Any  # pylsl.StreamInfo, with desc
    offset: float  # time_correction() when it opened


def _open(info: Any, flags: int) -> _Opened:
    """Open ``info``'s stream: no silent recovery (a loss is ours to see), clock sync first.

    The first ``time_correction()`` takes most of a second; taking it here, where waiting
    is allowed, keeps the first pull with ``proc_clocksync`` from taking it in ``read()``.
    """
    inlet = pylsl.StreamInlet(info, recover=False, processing_flags=flags)
    try:
        full = inlet.info(OPEN_TIMEOUT_S)
        inlet.open_stream(OPEN_TIMEOUT_S)
        offset = float(inlet.time_correction(OPEN_TIMEOUT_S))
    except Exception:
        inlet.close_stream()
        raise
    return _Opened(inlet, full, offset)


def _close(inlet: Any) -> None:
    try:
        inlet.close_stream()
    except RuntimeError:  # pylsl's errors; a lost stream may refuse to close
        pass


def _seen(info: Any) -> str:
    return f"{info.name()!r} (type {info.type()!r}, source_id {info.source_id()!r})"


class _Finder:
    """Looks for a stream in a thread and opens the newest match: ``take()`` it when ready.

    A stream that cannot be opened (a vanished one, which a resolver lists a few seconds
    more) is skipped for as long. ``seen`` is set once a match is visible, ``ready`` once
    one is open.
    """

    def __init__(self, role: Role, query: StreamQuery, flags: int) -> None:
        self.role, self.query, self.flags = role, query, flags
        self._avoid: dict[str, float] = {}  # uid -> until (monotonic)
        self._found: _Opened | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.seen = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lsl-find-{role}", daemon=True)

    def start(self) -> _Finder:
        self._thread.start()
        return self

    def take(self) -> _Opened | None:
        with self._lock:
            found, self._found = self._found, None
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join(0.2)
        found = self.take()
        if found is not None:
            _close(found.inlet)

    def _run(self) -> None:
        resolver = pylsl.ContinuousResolver(
            pred=self.query.predicate(), forget_after=FORGET_AFTER_S
        )
        while not self._stop.is_set():
            now = time.monotonic()
            infos = sorted(resolver.results(), key=lambda i: i.created_at(), reverse=True)
            if infos:
                self.seen.set()
            for info in infos:
                if self._avoid.get(info.uid(), 0.0) > now:
                    continue
                try:
                    opened = _open(info, self.flags)
                except RuntimeError as exc:  # pylsl's TimeoutError, LostError, ...
                    log.debug("cannot open the %s stream %s yet: %s", self.role, _seen(info), exc)
                    self._avoid[info.uid()] = now + FORGET_AFTER_S
                    continue
                with self._lock:
                    if self._stop.is_set():
                        _close(opened.inlet)
                    else:
                        self._found = opened
                        self.ready.set()
                return
            self._stop.wait(0.1)


@dataclass(slots=True)
class _Layout:
    """How an EEG stream's samples become ours: which channels, scaled to µV by what."""

    fs: float
    labels: tuple[str, ...]  # every channel of the stream
    units: tuple[str, ...]
    index: list[int]  # the EEG channels among them
    scale: np.ndarray  # float64 [len(index)]: to µV

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.labels[i] for i in self.index)

    @classmethod
    def of(cls, info: Any, query: StreamQuery) -> _Layout:
        what = f"the LSL stream {_seen(info)} found by {query.describe()}"
        fs = float(info.nominal_srate())
        if fs <= 0:
            raise SourceError(
                f"{what} has an irregular rate (nominal_srate 0): it is not an EEG stream",
                field="lsl_stream",
                hint="if it is a marker stream, pass it as the marker stream (--marker-name, "
                "--marker-type) and name the EEG stream (--lsl-name, --lsl-type) instead",
            )
        if info.channel_format() == pylsl.cf_string:
            raise SourceError(f"{what} carries strings, not EEG samples", field="lsl_stream")
        n = int(info.channel_count())

        def column(values: list[str | None] | None) -> list[str]:
            return [v or "" for v in values] if values and len(values) == n else [""] * n

        labels = [label or f"ch{i}" for i, label in enumerate(column(info.get_channel_labels()))]
        types, units = column(info.get_channel_types()), column(info.get_channel_units())
        index = list(eeg_channels(labels, types))
        if not index:
            described = ", ".join(
                f"{label} ({kind or 'no type'})" for label, kind in zip(labels, types, strict=True)
            )
            raise SourceError(
                f"{what} has no EEG channel (channels: {described})",
                field="lsl_stream",
                hint="an EEG channel is typed EEG (or untyped) and not named AUX, ACC, ...; "
                "check the outlet's desc/channels",
            )
        scale = np.array([unit_scale(units[i]) for i in index], dtype=np.float64)
        return cls(fs, tuple(labels), tuple(units), index, scale)


def _stream_record(info: Any, layout: _Layout | None = None) -> dict[str, object]:
    record: dict[str, object] = {
        "name": info.name(),
        "type": info.type(),
        "source_id": info.source_id(),
        "hostname": info.hostname(),
        "fs": float(info.nominal_srate()),
        "channel_count": int(info.channel_count()),
        "channel_format": _FORMATS.get(info.channel_format(), str(info.channel_format())),
    }
    if layout is not None:
        record |= {"channels": list(layout.labels), "units": list(layout.units)}
    return record


class LslSource:
    """An LSL EEG stream and an optional marker stream as a ``producer.board.Source``."""

    simulated = False

    def __init__(
        self,
        eeg: StreamQuery,
        markers: StreamQuery | None = None,
        *,
        text_codes: Mapping[str, int] | None = None,
        marker_delay_s: float = 0.25,
        lost_after_s: float = 2.0,
        give_up_after_s: float | None = None,
        resolve_timeout_s: float = 10.0,
        recorder: Recorder | None = None,
    ) -> None:
        self.eeg_query, self.marker_query = eeg, markers
        self.text_codes: dict[str, int] = dict(text_codes or {})
        self.marker_delay_s = float(marker_delay_s)
        self.lost_after_s = float(lost_after_s)
        self.give_up_after_s = give_up_after_s
        self.resolve_timeout_s = float(resolve_timeout_s)
        self.recorder = recorder
        self.name = f"lsl:{eeg.name or eeg.describe()}"
        self.fs = 0.0
        self.channels: tuple[str, ...] = ()
        self.interruptions: list[Interruption] = []
        self.markers_received = 0
        self.markers_placed = 0
        self.markers_late = 0
        self.markers_outside = 0
        self.markers_merged = 0
        self.texts: dict[str, int] = {}
        self.clock_offsets: dict[str, float] = {}
        self.lsl_offset = 0.0
        self._layout: _Layout | None = None
        self._eeg: _Opened | None = None
        self._marker: _Opened | None = None
        self._finders: dict[Role, _Finder] = {}
        self._streams: dict[Role, dict[str, object]] = {}
        self._stream_ids: dict[Role, int] = {}
        # samples pulled, not yet handed on: LSL times, µV [n, channels], marker codes
        self._pts = np.zeros(0)
        self._pvals = np.zeros((0, 0), dtype=np.float32)
        self._pmarks = np.zeros(0)
        self._queue: list[tuple[float, int, float]] = []  # (LSL time, code, arrived) waiting
        self._first_t: float | None = None  # the first sample ever (LSL time)
        self._segment: list[float] | None = None  # [first, last] of the samples flowing now
        self._closed: list[tuple[float, float]] = []  # earlier unbroken stretches
        self._handed = 0
        self._pulled_at = 0.0  # monotonic time of the last pull that brought samples
        self._opened_at = 0.0  # monotonic time the EEG inlet opened
        self._lost: Interruption | None = None  # the interruption not yet resumed
        self._lost_since = 0.0  # monotonic time it was declared
        self._gap = False  # the next chunk with samples follows a loss
        self._clocks_at = 0.0
        self._stopped = False

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the EEG stream (waiting up to ``resolve_timeout_s`` for it) and the marker
        stream if it is already there, so its first markers are not late; a marker stream
        that is not is looked for while the session runs."""
        if self.marker_query is not None:
            self._look_for("markers")
        try:
            self._open_eeg()
        except BaseException:
            for finder in self._finders.values():
                finder.close()
            self._finders.clear()
            raise
        markers = self._finders.get("markers")
        if markers is not None and markers.seen.is_set():
            markers.ready.wait(OPEN_TIMEOUT_S)
        self._adopt_found()

    def _open_eeg(self) -> None:
        # Resolvers in the background, polled: liblsl's resolve_bypred() overstays a short
        # timeout by seconds when nothing matches (pylsl 1.18).
        everything = pylsl.ContinuousResolver(forget_after=FORGET_AFTER_S)
        matching = pylsl.ContinuousResolver(
            pred=self.eeg_query.predicate(), forget_after=FORGET_AFTER_S
        )
        deadline = time.monotonic() + self.resolve_timeout_s
        found = matching.results()
        while not found and time.monotonic() < deadline:
            time.sleep(0.01)
            found = matching.results()
        if not found:
            visible = sorted({_seen(i) for i in everything.results()})
            raise SourceError(
                f"no LSL stream with {self.eeg_query.describe()} appeared within "
                f"{self.resolve_timeout_s:g} s; visible streams: {', '.join(visible) or 'none'}",
                field="lsl_stream",
                hint="start the outlet (muse-lsl `muselsl stream`, the OpenBCI GUI's LSL "
                "widget, `neurostream lsl-replay FILE`) or name one of the visible streams",
            )
        if len(found) > 1:
            log.warning(
                "%d LSL streams match %s (%s); reading the first: name its source_id to choose",
                len(found),
                self.eeg_query.describe(),
                ", ".join(_seen(i) for i in found),
            )
        self._layout = _Layout.of(found[0], self.eeg_query)  # refuse before opening
        try:
            opened = _open(found[0], EEG_FLAGS)
        except RuntimeError as exc:
            raise SourceError(
                f"cannot open the LSL stream {_seen(found[0])}: {exc}",
                field="lsl_stream",
                hint="is the outlet's host reachable (firewall, LSL's KnownPeers)?",
            ) from exc
        self._layout = _Layout.of(opened.info, self.eeg_query)
        self.fs, self.channels = self._layout.fs, self._layout.channels
        self.name = f"lsl:{opened.info.name()}"
        before = pylsl.local_clock()
        wall = time.time()
        self.lsl_offset = wall - (before + pylsl.local_clock()) / 2
        self._adopt_eeg(opened)
        self._pvals = np.zeros((0, len(self.channels)), dtype=np.float32)
        log.info(
            "LSL EEG stream %s: %g Hz, channels %s (clock offset %.6f s)",
            _seen(opened.info),
            self.fs,
            ", ".join(self.channels),
            opened.offset,
        )

    def read(self) -> Chunk | None:
        """The samples ready to hand on (maybe none); None once the stream is given up."""
        now = time.monotonic()
        self._adopt_found()
        self._pull_eeg(now)
        self._pull_markers()
        self._place()
        if self._eeg is not None and self._lost is None and self._first_t is not None:
            if now - self._pulled_at >= self.lost_after_s:
                self._declare_lost(f"no sample for {self.lost_after_s:g} s")
        elif self._eeg is not None and self._lost is not None:
            if now - max(self._opened_at, self._pulled_at) >= self.lost_after_s:
                log.info("the reopened EEG stream sends nothing: looking again")
                self._drop_eeg()
        if now - self._clocks_at >= CLOCK_REFRESH_S:
            self._refresh_clocks(now)
        chunk = self._release()
        if (
            chunk.n == 0
            and self._lost is not None
            and self.give_up_after_s is not None
            and now - self._lost_since >= self.give_up_after_s
        ):
            log.warning(
                "the LSL EEG stream has been lost for %g s: giving up", self.give_up_after_s
            )
            return None
        return chunk

    def stop(self) -> None:
        """Close the inlets, stop looking for streams, close the recorder."""
        if self._stopped:
            return
        self._stopped = True
        for finder in self._finders.values():
            finder.close()
        self._finders.clear()
        for opened in (self._eeg, self._marker):
            if opened is not None:
                _close(opened.inlet)
        self._eeg = self._marker = None
        if self._queue:
            log.info("%d marker(s) still waited for their EEG sample", len(self._queue))
        if self.recorder is not None:
            self.recorder.close()

    def describe(self) -> dict[str, object]:
        """The session's ``source`` record: streams, clocks, marker counts, interruptions."""
        return {
            "kind": "lsl",
            "queries": {
                "eeg": self.eeg_query.describe(),
                "markers": self.marker_query.describe() if self.marker_query else None,
            },
            "streams": dict(self._streams),
            "channels": list(self.channels),
            "lsl_offset": self.lsl_offset,
            "clock_offsets": dict(self.clock_offsets),
            "marker_delay_s": self.marker_delay_s if self.marker_query else None,
            "markers": {
                "received": self.markers_received,
                "placed": self.markers_placed,
                "late": self.markers_late,
                "outside": self.markers_outside,
                "merged": self.markers_merged,
                "waiting": len(self._queue),
            },
            "texts": dict(self.texts),
            "interruptions": [i.describe() for i in self.interruptions],
        }

    # --- streams coming and going ---------------------------------------------------------

    def _record_stream(self, role: Role, opened: _Opened) -> None:
        if self.recorder is not None and role not in self._stream_ids:
            self._stream_ids[role] = self.recorder.add_stream(opened.info.as_xml())

    def _adopt_eeg(self, opened: _Opened) -> None:
        self._eeg = opened
        self._opened_at = self._pulled_at = time.monotonic()
        self.clock_offsets["eeg"] = opened.offset
        self._streams["eeg"] = _stream_record(opened.info, self._layout)
        self._record_stream("eeg", opened)

    def _adopt_found(self) -> None:
        for role, finder in list(self._finders.items()):
            opened = finder.take()
            if opened is None:
                continue
            finder.close()
            del self._finders[role]
            if role == "markers":
                self._marker = opened
                self.clock_offsets["markers"] = opened.offset
                self._streams["markers"] = _stream_record(opened.info)
                self._record_stream("markers", opened)
                log.info(
                    "LSL marker stream %s connected (clock offset %.6f s)",
                    _seen(opened.info),
                    opened.offset,
                )
                continue
            layout = _Layout.of(opened.info, self.eeg_query)
            if (layout.fs, layout.channels) != (self.fs, self.channels):
                _close(opened.inlet)
                raise SourceError(
                    f"the LSL stream {_seen(opened.info)} came back at {layout.fs:g} Hz with "
                    f"channels {', '.join(layout.channels)}; the session started at "
                    f"{self.fs:g} Hz with {', '.join(self.channels)}",
                    field="lsl_stream",
                    hint="start a new session for the new stream",
                )
            self._layout = layout
            self._adopt_eeg(opened)
            log.info("LSL EEG stream %s reopened; waiting for samples", _seen(opened.info))

    def _look_for(self, role: Role) -> None:
        query = self.eeg_query if role == "eeg" else self.marker_query
        assert query is not None
        flags = EEG_FLAGS if role == "eeg" else MARKER_FLAGS
        self._finders[role] = _Finder(role, query, flags).start()

    def _drop_eeg(self) -> None:
        assert self._eeg is not None
        _close(self._eeg.inlet)
        self._eeg = None
        self._look_for("eeg")

    def _declare_lost(self, why: str) -> None:
        assert self._segment is not None
        last = self._segment[1]
        self._closed.append((self._segment[0], last))
        self._segment = None
        handed = self._handed + self._pts.size  # what is held back is handed on now
        self._lost = Interruption(last + self.lsl_offset, time.time(), handed)
        self._lost_since = time.monotonic()
        self.interruptions.append(self._lost)
        log.warning(
            "LSL EEG stream lost (%s) after %d samples; looking for it again%s",
            why,
            handed,
            f" for {self.give_up_after_s:g} s" if self.give_up_after_s is not None else "",
        )
        self._drop_eeg()

    # --- pulling --------------------------------------------------------------------------

    def _pull(self, role: Role, opened: _Opened) -> tuple[Any, np.ndarray]:
        """Everything the inlet holds: (values, LSL times); LostError passes through."""
        strings = opened.info.channel_format() == pylsl.cf_string
        parts: list[Any] = []
        stamps: list[np.ndarray] = []
        while True:
            values, ts = opened.inlet.pull_chunk(0.0, _PULL, as_numpy=not strings)
            ts = np.asarray(ts, dtype=np.float64)
            if ts.size:
                parts.append(values)
                stamps.append(ts)
            if ts.size < _PULL:
                break
        if not stamps:
            return [], np.zeros(0)
        times = np.concatenate(stamps)
        joined = [row for part in parts for row in part] if strings else np.concatenate(parts)
        if self.recorder is not None:
            self.recorder.write(self._stream_ids[role], joined, times)
        return joined, times

    def _pull_eeg(self, now: float) -> None:
        if self._eeg is None:
            return
        try:
            values, ts = self._pull("eeg", self._eeg)
        except LostError:
            if self._lost is None and self._first_t is not None:
                self._declare_lost("its outlet is gone")
            else:
                self._drop_eeg()
            return
        if ts.size == 0:
            return
        assert self._layout is not None
        self._pulled_at = now
        uv = (values[:, self._layout.index] * self._layout.scale).astype(np.float32)
        if self._first_t is None:
            self._first_t = float(ts[0])
        if self._segment is None:
            self._segment = [float(ts[0]), float(ts[-1])]
        self._segment[1] = float(ts[-1])
        if self._lost is not None:
            self._lost.resumed_at = float(ts[0]) + self.lsl_offset
            log.warning(
                "LSL EEG stream back after a %.2f s gap (%d samples before it)",
                self._lost.gap_s,
                self._lost.samples_before,
            )
            self._lost = None
            self._gap = True
        self._pts = np.concatenate([self._pts, ts])
        self._pvals = np.concatenate([self._pvals, uv])
        self._pmarks = np.concatenate([self._pmarks, np.zeros(ts.size)])

    def _pull_markers(self) -> None:
        if self._marker is None:
            return
        try:
            values, ts = self._pull("markers", self._marker)
        except LostError:
            log.warning("LSL marker stream %s lost; looking for it again", _seen(self._marker.info))
            _close(self._marker.inlet)
            self._marker = None
            self._look_for("markers")
            return
        arrived = pylsl.local_clock()
        for row, t in zip(values, ts.tolist(), strict=True):
            code = self._code(row[0])
            if code is not None:
                self.markers_received += 1
                self._queue.append((t, code, arrived))

    def _code(self, value: object) -> int | None:
        label = marker_label(value)
        if label is None or isinstance(label, int):
            return label
        code = self.texts.get(label)
        if code is None:
            code = self.text_codes.get(label)
            if code is None:
                code = max([0, *self.text_codes.values(), *self.texts.values()]) + 1
                log.warning(
                    "marker text %r is not in the event mapping: it gets code %d", label, code
                )
            self.texts[label] = code
        return code

    def _refresh_clocks(self, now: float) -> None:
        self._clocks_at = now
        for role, opened in (("eeg", self._eeg), ("markers", self._marker)):
            if opened is None:
                continue
            try:
                self.clock_offsets[role] = float(opened.inlet.time_correction(0.0))
            except RuntimeError:  # no fresh estimate, or lost: the next pull says which
                pass

    # --- markers onto samples -------------------------------------------------------------

    def _where(self, t: float) -> int | Literal["wait", "late", "outside"]:
        """The held-back sample nearest ``t``, or why there is none (yet)."""
        if self._first_t is None:
            return "wait"
        half = 0.5 / self.fs
        if t < self._first_t - half:
            return "outside"
        if self._segment is not None and t >= self._segment[0] - half:
            if t > self._segment[1] + half:
                return "wait"
            pts = self._pts
            if pts.size == 0 or t < pts[0] - half:
                return "late"
            i = int(np.clip(np.searchsorted(pts, t), 1, pts.size - 1)) if pts.size > 1 else 0
            if pts.size > 1 and abs(pts[i - 1] - t) <= abs(pts[i] - t):
                i -= 1
            return i
        if any(first - half <= t <= last + half for first, last in self._closed):
            return "late"
        if self._segment is None and t > self._closed[-1][1] + half:
            return "wait"  # after the loss: it may belong to the stream when it is back
        return "outside"

    def _place(self) -> None:
        waiting: list[tuple[float, int, float]] = []
        for t, code, arrived in self._queue:
            where = self._where(t)
            if isinstance(where, int):
                if self._pmarks[where] == 0:
                    self._pmarks[where] = code
                    self.markers_placed += 1
                    continue
                self.markers_merged += 1
                log.warning(
                    "marker %d fell on the sample of marker %d: kept the first",
                    code,
                    int(self._pmarks[where]),
                )
            elif where == "wait":
                waiting.append((t, code, arrived))
            elif where == "late":
                self.markers_late += 1
                log.warning(
                    "marker %d arrived %.3f s after its sample, which was already handed on: "
                    "raise the marker delay (now %g s)",
                    code,
                    arrived - t,
                    self.marker_delay_s,
                )
            elif where == "outside":
                self.markers_outside += 1
                log.warning(
                    "marker %d fell outside the EEG samples (before them or in a gap)", code
                )
        self._queue = waiting

    def _release(self) -> Chunk:
        """The held-back samples old enough to hand on (all, without a marker stream)."""
        if self._pts.size == 0:
            k = 0
        elif self.marker_query is None or self._segment is None:
            k = self._pts.size
        else:
            k = int(np.searchsorted(self._pts, self._pts[-1] - self.marker_delay_s, "right"))
        chunk = Chunk(
            np.ascontiguousarray(self._pvals[:k].T),
            self._pts[:k] + self.lsl_offset,
            self._pmarks[:k].copy(),
            gap=self._gap and k > 0,
        )
        if k:
            self._gap = False
            self._handed += k
            self._pts, self._pvals, self._pmarks = self._pts[k:], self._pvals[k:], self._pmarks[k:]
        return chunk
