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
The marker inlet only syncs (its samples are irregular), and dejitters too when the stream
has a nominal rate (a trigger box). Chunk timestamps are wall time, ``lsl_time +
lsl_offset``, with ``lsl_offset`` (``lsl_offset()``) fixed at ``start()``.

Markers. A marker's value is read as a file's marker is (``recordings.sample_label``: the
first channel of a sample that is an event, so a multi-channel marker stream reads as the
XDF reader reads it): numbers and numeric text are codes, 0/empty/nan are none, other text
is looked up in ``text_codes`` and, when absent, given a fresh code above every code in
use (``reserved``, the event mapping's codes; the numeric codes seen on the stream; the
codes given to text), so an unmapped "fixation" never takes a class's code (``texts``
lists every text seen, so the session reports an unmapped one). Markers travel apart from
the EEG, so with a marker stream configured the EEG samples are held back until they are
``marker_delay_s`` older than the newest sample: a marker that arrives up to that late
still lands on its sample; later, its sample has been handed on and it counts in
``markers_late``. One that arrives before its sample (EEG transport is usually slower)
waits for it, but not forever: once the EEG has run ``marker_delay_s + lost_after_s``
past its arrival and it is still ahead of the newest sample, it was stamped on another
clock (``time.time()``, PsychoPy's ``core.getTime()``) and counts in ``markers_ahead``;
at most ``MAX_WAITING`` wait. Without a marker stream nothing is held back. ``flush()``
hands on what is held back when the session ends, so its last markers are not lost.

Finding streams. The marker stream may appear after the EEG stream (a stimulus program
is often started later), and either may be lost and come back: a ``ContinuousResolver``
looks for it in a thread, which also opens the inlet and takes the first clock offset
(up to a second), so ``read()`` never waits for the network. A lost EEG stream (no sample
for ``lost_after_s``, or liblsl says so) is an ``Interruption``: what was held back is
handed on, the next chunk after it comes back says ``gap=True``, and after
``give_up_after_s`` ``read()`` returns what is still held back, then None from then on. A
stream that comes back with another rate or other EEG channels is refused
(``SourceError``): the session's windows would change meaning. When several streams
match, the newest (``created_at``) is read, at start as on a reconnect.

Recording. A ``Recorder`` (``producer.xdf.XdfWriter``) given to the source receives each
stream's header when its inlet opens and every chunk pulled, raw values with the
timestamps the markers were placed by (this process's LSL clock, synced and dejittered).
A stream that comes back with another ``channel_count`` (an extra AUX channel) or
``channel_format`` gets a new header, so the file stays readable. The source owns the
recorder: ``stop()`` closes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, Protocol

import numpy as np
import pylsl
from pylsl.lib import string2fmt
from pylsl.util import LostError

from neurostream.errors import SourceError
from neurostream.recordings import eeg_channels, nearest_sample, sample_label, unit_scale
from producer.board import Chunk

__all__ = [
    "EEG_FLAGS",
    "MARKER_FLAGS",
    "MAX_WAITING",
    "Interruption",
    "LslSource",
    "Recorder",
    "StreamQuery",
    "lsl_offset",
]

log = logging.getLogger(__name__)

EEG_FLAGS: Final = pylsl.proc_clocksync | pylsl.proc_dejitter | pylsl.proc_monotonize
MARKER_FLAGS: Final = pylsl.proc_clocksync  # and proc_dejitter at a nominal rate
MAX_WAITING: Final = 1024  # markers waiting for their EEG sample, at most
OPEN_TIMEOUT_S: Final = 3.0  # a stream's full info, its connection, its first clock offset
FORGET_AFTER_S: Final = 5.0  # a resolver still lists a vanished stream this long
CLOCK_REFRESH_S: Final = 1.0  # how often clock_offsets is brought up to date
SETTLE_S: Final = 0.2  # once one stream matches, the others that do answer within this
_PULL: Final = 4096  # samples per pull_chunk call
_FORMATS: Final = {code: name for name, code in string2fmt.items()}  # cf_* -> its name
_AHEAD_HINT: Final = "stamp markers with pylsl.local_clock() (or push them without a timestamp)"

Role = Literal["eeg", "markers"]


def lsl_offset() -> float:
    """Wall time minus this process's LSL clock (``wall = lsl + lsl_offset()``): the wall
    clock read between two LSL clock reads, so the pair is as close as Python can take it."""
    before = pylsl.local_clock()
    wall = time.time()
    return float(wall - (before + pylsl.local_clock()) / 2)


def _flags(role: Role, info: Any) -> int:
    """An inlet's processing: EEG synced, dejittered, monotonic; markers synced, and
    dejittered too when they come at a nominal rate (irregular ones have no grid to fit)."""
    if role == "eeg":
        return int(EEG_FLAGS)
    return int(MARKER_FLAGS | (pylsl.proc_dejitter if info.nominal_srate() > 0 else 0))


def _newest_first(infos: list[Any]) -> list[Any]:
    """The rule whenever several streams match: the newest (a restarted outlet) first."""
    return sorted(infos, key=lambda i: i.created_at(), reverse=True)


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
        return asdict(self) | {"gap_s": self.gap_s}


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
    more; one liblsl describes but pylsl cannot read) is skipped for as long, and the
    thread keeps looking whatever the error. ``seen`` is set once a match is visible,
    ``ready`` once one is open.
    """

    def __init__(self, role: Role, query: StreamQuery) -> None:
        self.role, self.query = role, query
        self._avoid: dict[str, float] = {}  # uid -> until (monotonic)
        self._warned: set[str] = set()  # uids whose unexpected error was logged
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
            infos = _newest_first(resolver.results())
            if infos:
                self.seen.set()
            for info in infos:
                if self._avoid.get(info.uid(), 0.0) > now:
                    continue
                try:
                    opened = _open(info, _flags(self.role, info))
                except RuntimeError as exc:  # pylsl's TimeoutError, LostError: it vanished
                    log.debug("cannot open the %s stream %s yet: %s", self.role, _seen(info), exc)
                    self._avoid[info.uid()] = now + FORGET_AFTER_S
                    continue
                except Exception as exc:  # pylsl refusing a stream (a TypeError, ...)
                    if info.uid() not in self._warned:
                        self._warned.add(info.uid())
                        log.warning(
                            "cannot open the %s stream %s (%s: %s); skipping it, still looking",
                            self.role,
                            _seen(info),
                            type(exc).__name__,
                            exc,
                        )
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
            raise SourceError(
                f"{what} carries strings, not EEG samples",
                field="lsl_stream",
                hint="a stream of strings is a marker stream: pass it as the marker stream "
                "(--marker-name, --marker-type) and name the EEG stream (--lsl-name, "
                "--lsl-type) instead",
            )
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
        reserved: Collection[int] = (),
        marker_delay_s: float = 0.25,
        lost_after_s: float = 2.0,
        give_up_after_s: float | None = None,
        resolve_timeout_s: float = 10.0,
        recorder: Recorder | None = None,
    ) -> None:
        self.eeg_query, self.marker_query = eeg, markers
        self.text_codes: dict[str, int] = dict(text_codes or {})
        self.reserved: frozenset[int] = frozenset(int(c) for c in reserved)  # never for text
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
        self.markers_ahead = 0  # stamped ahead of every EEG sample for too long: another clock
        self.texts: dict[str, int] = {}
        self.clock_offsets: dict[str, float] = {}
        self.lsl_offset = 0.0
        self._numeric_seen: set[int] = set()  # numeric codes the marker stream sent
        self._layout: _Layout | None = None
        self._eeg: _Opened | None = None
        self._marker: _Opened | None = None
        self._finders: dict[Role, _Finder] = {}
        self._streams: dict[Role, dict[str, object]] = {}
        self._stream_ids: dict[Role, int] = {}
        self._recorded: dict[Role, tuple[int, int]] = {}  # (channel_count, channel_format)
        # samples pulled, not yet handed on: LSL times, µV [n, channels], marker codes
        self._pts = np.zeros(0)
        self._pvals = np.zeros((0, 0), dtype=np.float32)
        self._pmarks = np.zeros(0)
        self._queue: list[tuple[float, int, float]] = []  # (LSL time, code, arrived) waiting
        self._first_t: float | None = None  # the first sample ever (LSL time)
        self._last_t: float | None = None  # the newest sample (LSL time)
        self._segment: list[float] | None = None  # [first, last] of the samples flowing now
        self._closed: list[tuple[float, float]] = []  # earlier unbroken stretches
        self._handed = 0
        self._pulled_at = 0.0  # monotonic time of the last pull that brought samples
        self._opened_at = 0.0  # monotonic time the EEG inlet opened
        self._lost: Interruption | None = None  # the interruption not yet resumed
        self._lost_since = 0.0  # monotonic time it was declared
        self._gap = False  # the next chunk with samples follows a loss
        self._clocks_at = 0.0
        self._warned_ahead = False
        self._gave_up = False
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
            self._close_finders()
            raise
        markers = self._finders.get("markers")
        if markers is not None and markers.seen.is_set():
            markers.ready.wait(OPEN_TIMEOUT_S)
        self._adopt_found()

    def _open_eeg(self) -> None:
        # A resolver in the background, polled: liblsl's resolve_bypred() overstays a short
        # timeout by seconds when nothing matches (pylsl 1.18).
        matching = pylsl.ContinuousResolver(
            pred=self.eeg_query.predicate(), forget_after=FORGET_AFTER_S
        )
        deadline = time.monotonic() + self.resolve_timeout_s
        found = matching.results()
        while not found and not self._stopped and time.monotonic() < deadline:
            time.sleep(0.01)
            found = matching.results()
        if self._stopped:  # stop() from the session while it waited (SIGTERM)
            raise SourceError(
                f"stopped while looking for the LSL stream with {self.eeg_query.describe()}",
                field="lsl_stream",
            )
        if not found:
            visible = sorted({_seen(i) for i in pylsl.resolve_streams(1.0)})
            raise SourceError(
                f"no LSL stream with {self.eeg_query.describe()} appeared within "
                f"{self.resolve_timeout_s:g} s; visible streams: {', '.join(visible) or 'none'}",
                field="lsl_stream",
                hint="start the outlet (muse-lsl `muselsl stream`, the OpenBCI GUI's LSL "
                "widget, `neurostream lsl-replay FILE`) or name one of the visible streams",
            )
        time.sleep(SETTLE_S)  # the other matches answer the same query moments later
        found = _newest_first(matching.results() or found)
        if len(found) > 1:
            log.warning(
                "%d LSL streams match %s (%s); reading the newest: name its source_id to choose",
                len(found),
                self.eeg_query.describe(),
                ", ".join(_seen(i) for i in found),
            )
        newest = found[0]
        self._layout = _Layout.of(newest, self.eeg_query)  # refuse before opening
        try:
            opened = _open(newest, _flags("eeg", newest))
        except RuntimeError as exc:
            raise SourceError(
                f"cannot open the LSL stream {_seen(newest)}: {exc}",
                field="lsl_stream",
                hint="is the outlet's host reachable (firewall, LSL's KnownPeers)?",
            ) from exc
        self._layout = _Layout.of(opened.info, self.eeg_query)
        self.fs, self.channels = self._layout.fs, self._layout.channels
        self.name = f"lsl:{opened.info.name()}"
        self.lsl_offset = lsl_offset()
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
        """The samples ready to hand on (maybe none); once the stream is given up, what is
        still held back, then None."""
        if self._gave_up:
            return self.flush()
        now = time.monotonic()
        self._adopt_found()
        pulled = self._pull_eeg(now)
        if self._pull_markers() or pulled:  # nothing new: no marker can have moved
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
            self._gave_up = True
            self._close_finders()  # a stream that comes back now belongs to no session
            return self.flush()
        return chunk

    def flush(self) -> Chunk | None:
        """Everything held back, with the markers that can be placed on it (None: nothing
        held): the session's last chunk before ``stop()``, so the last ``marker_delay_s``
        of samples, and the markers on them, are not lost."""
        self._pull_markers()
        self._place()
        chunk = self._release(everything=True)
        return chunk if chunk.n else None

    def stop(self) -> None:
        """Close the inlets, stop looking for streams, close the recorder."""
        if self._stopped:
            return
        self._stopped = True
        self._close_finders()
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
                "ahead": self.markers_ahead,
                "waiting": len(self._queue),
            },
            "texts": dict(self.texts),
            "interruptions": [i.describe() for i in self.interruptions],
        }

    # --- streams coming and going ---------------------------------------------------------

    def _record_stream(self, role: Role, opened: _Opened) -> None:
        """A header for the stream, unless the file has one of its layout: XdfWriter writes a
        chunk by its header's channel_count and channel_format, so a stream that comes back
        with others (an extra AUX channel, ints now text) is a new stream in the file."""
        if self.recorder is None:
            return
        layout = (int(opened.info.channel_count()), int(opened.info.channel_format()))
        before = self._recorded.get(role)
        if before == layout:
            return
        self._stream_ids[role] = self.recorder.add_stream(opened.info.as_xml())
        self._recorded[role] = layout
        if before is not None:
            log.info(
                "the %s stream %s came back with %d %s channel(s), not %d %s: recorded as "
                "stream %d of the file",
                role,
                _seen(opened.info),
                layout[0],
                _FORMATS.get(layout[1], layout[1]),
                before[0],
                _FORMATS.get(before[1], before[1]),
                self._stream_ids[role],
            )

    def _adopt_eeg(self, opened: _Opened) -> None:
        self._eeg = opened
        self._opened_at = self._pulled_at = time.monotonic()
        self.clock_offsets["eeg"] = opened.offset
        self._streams["eeg"] = _stream_record(opened.info, self._layout)
        self._record_stream("eeg", opened)

    def _adopt_markers(self, opened: _Opened) -> None:
        self._marker = opened
        self.clock_offsets["markers"] = opened.offset
        record = _stream_record(opened.info)
        n = int(opened.info.channel_count())
        if n > 1:
            record["read_as"] = f"the first non-empty of its {n} channels"
        if record.get("read_as") != self._streams.get("markers", {}).get("read_as") and n > 1:
            log.info(
                "the LSL marker stream %s has %d channels: each sample is read as its first "
                "non-empty channel",
                _seen(opened.info),
                n,
            )
        self._streams["markers"] = record
        self._record_stream("markers", opened)
        log.info(
            "LSL marker stream %s connected (clock offset %.6f s%s)",
            _seen(opened.info),
            opened.offset,
            ", dejittered at its nominal rate" if opened.info.nominal_srate() > 0 else "",
        )

    def _adopt_found(self) -> None:
        for role, finder in list(self._finders.items()):
            opened = finder.take()
            if opened is None:
                continue
            finder.close()
            del self._finders[role]
            if role == "markers":
                self._adopt_markers(opened)
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
        self._finders[role] = _Finder(role, query).start()

    def _close_finders(self) -> None:
        for finder in self._finders.values():
            finder.close()
        self._finders.clear()

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

    def _pull_eeg(self, now: float) -> bool:
        """Pull the EEG inlet; whether samples came."""
        if self._eeg is None:
            return False
        try:
            values, ts = self._pull("eeg", self._eeg)
        except LostError:
            if self._lost is None and self._first_t is not None:
                self._declare_lost("its outlet is gone")
            else:
                self._drop_eeg()
            return False
        if ts.size == 0:
            return False
        assert self._layout is not None
        self._pulled_at = now
        uv = (values[:, self._layout.index] * self._layout.scale).astype(np.float32)
        if self._first_t is None:
            self._first_t = float(ts[0])
        self._last_t = float(ts[-1])
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
        return True

    def _pull_markers(self) -> bool:
        """Pull the marker inlet; whether markers came."""
        if self._marker is None:
            return False
        try:
            values, ts = self._pull("markers", self._marker)
        except LostError:
            log.warning("LSL marker stream %s lost; looking for it again", _seen(self._marker.info))
            _close(self._marker.inlet)
            self._marker = None
            self._look_for("markers")
            return False
        arrived = pylsl.local_clock()
        count = self.markers_received
        for row, t in zip(values, ts.tolist(), strict=True):
            code = self._code(sample_label(row))
            if code is not None:
                self.markers_received += 1
                self._queue.append((t, code, arrived))
        return self.markers_received > count

    def _code(self, label: int | str | None) -> int | None:
        if label is None:
            return None
        if isinstance(label, int):
            self._numeric_seen.add(label)
            return label
        code = self.texts.get(label)
        if code is None:
            code = self.text_codes.get(label)
            if code is None:
                taken = {
                    0,
                    *self.reserved,
                    *self._numeric_seen,
                    *self.text_codes.values(),
                    *self.texts.values(),
                }
                code = max(taken) + 1
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
            if self._pts.size == 0 or t < self._pts[0] - half:
                return "late"
            return nearest_sample(self._pts, t)  # within half a sample: t is in the segment
        if any(first - half <= t <= last + half for first, last in self._closed):
            return "late"
        if self._segment is None and t > self._closed[-1][1] + half:
            return "wait"  # after the loss: it may belong to the stream when it is back
        return "outside"

    def _ahead(self, t: float, arrived: float) -> float | None:
        """How far ``t`` is ahead of the newest sample, once the EEG has run past the
        marker's arrival by more than a late marker or a loss explains (else None)."""
        if (
            self._last_t is None
            or self._last_t - arrived <= self.marker_delay_s + self.lost_after_s
        ):
            return None
        ahead = t - self._last_t
        return ahead if ahead > 0.5 / self.fs else None

    def _drop_ahead(self, code: int, ahead: float | None) -> None:
        self.markers_ahead += 1
        if self._warned_ahead:
            log.debug("marker %d dropped: ahead of the EEG", code)
            return
        self._warned_ahead = True
        if ahead is None:
            log.warning(
                "more than %d markers are waiting for EEG samples that have not come: "
                "dropping the oldest (markers_ahead); %s",
                MAX_WAITING,
                _AHEAD_HINT,
            )
        else:
            log.warning(
                "marker %d is stamped %.3f s ahead of the newest EEG sample, long after it "
                "arrived: it is on another clock than the EEG's and is dropped "
                "(markers_ahead); %s",
                code,
                ahead,
                _AHEAD_HINT,
            )

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
                ahead = self._ahead(t, arrived)
                if ahead is None:
                    waiting.append((t, code, arrived))
                else:
                    self._drop_ahead(code, ahead)
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
        for _, code, _ in waiting[:-MAX_WAITING]:  # the oldest arrivals beyond the bound
            self._drop_ahead(code, None)
        self._queue = waiting[-MAX_WAITING:]

    def _release(self, *, everything: bool = False) -> Chunk:
        """The held-back samples old enough to hand on (all, without a marker stream)."""
        if self._pts.size == 0:
            k = 0
        elif everything or self.marker_query is None or self._segment is None:
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
