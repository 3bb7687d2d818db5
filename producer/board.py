"""Where samples come from: a BrainFlow board, or a recording replayed at any speed.

Every source hands the session loop ``Chunk``s of EEG samples ``[n_channels, n_new]`` with
their timestamps and marker values (0 = none). ``BrainFlowSource`` reads a live board
(SYNTHETIC_BOARD by default, real headsets by name or id; PLAYBACK_FILE_BOARD only for a
file without markers, since BrainFlow 5.23 plays the marker row back as zeros);
``FileSource`` replays a ``neurostream.recordings.Recording`` (any format the readers
know) with its own events as markers, once or in a loop, in real time or faster;
``RecordingSource`` replays a capture of the synthetic board fast (tests, benchmarks and
the simulated training session). ``record`` captures such a file from a board.
``simulated`` says whether a source is the synthetic board's (the only kind the oddball
paradigm may be layered onto).

A source that cannot work fails here, before anything is opened, with a
``neurostream.errors`` error a person can act on: an unknown board name (with close
matches), a board whose connection parameter is missing (BrainFlow's board descriptions
do not list them, so ``CONNECTIONS`` keeps our own table for the common boards), a file
that does not exist. A ``BrainFlowError`` from opening the board becomes a ``SourceError``
that says the same.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowError, BrainFlowInputParams
from brainflow.data_filter import DataFilter

from neurostream.errors import ConfigError, SourceError
from neurostream.recordings import Recording

ALIASES = {"synthetic": BoardIds.SYNTHETIC_BOARD, "playback": BoardIds.PLAYBACK_FILE_BOARD}
_IDS = {b.value for b in BoardIds}

# BrainFlowInputParams field -> what it is, an example.
PARAMETERS: dict[str, tuple[str, str]] = {
    "serial_port": ("a serial port", "/dev/ttyUSB0, COM3 or /dev/cu.usbserial-..."),
    "mac_address": ("a Bluetooth MAC address", "00:55:DA:B3:12:34"),
    "ip_address": ("an IP address", "192.168.4.1"),
    "ip_port": ("a free local IP port", "6789"),
    "serial_number": ("a serial number or device name", "MuseS-1234"),
    "other_info": ("other_info", "ExternalSwitchInputMioUSB"),
}


def flag(name: str) -> str:
    """The producer's option for a BrainFlowInputParams field (``--serial-port``)."""
    return f"--{name.replace('_', '-')}"


def env_var(name: str) -> str:
    return f"NEUROSTREAM_PRODUCER_{name.upper()}"


@dataclass(frozen=True, slots=True)
class Connection:
    """The BrainFlowInputParams a board needs (``required``) and accepts (``optional``)."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    note: str = ""

    def describe(self) -> str:
        def flags(names: tuple[str, ...]) -> str:
            return ", ".join(flag(n) for n in names)

        parts = [f"needs {flags(self.required)}"] if self.required else ["needs no parameter"]
        if self.optional:
            parts.append(f"optional {flags(self.optional)}")
        return "; ".join(parts) + (f" ({self.note})" if self.note else "")


_DONGLE = "the port of a BLED112 dongle"
_WIFI = "for the WiFi Shield, whose --ip-address defaults to 192.168.4.1"
_NATIVE_BLE = Connection(optional=("mac_address", "serial_number"), note="native Bluetooth")
# From BrainFlow's "Supported Boards" page; boards not listed here are checked by BrainFlow.
CONNECTIONS: dict[int, Connection] = {
    BoardIds.SYNTHETIC_BOARD.value: Connection(),
    BoardIds.CYTON_BOARD.value: Connection(
        ("serial_port",), note="the port of the OpenBCI USB dongle"
    ),
    BoardIds.CYTON_DAISY_BOARD.value: Connection(
        ("serial_port",), note="the port of the OpenBCI USB dongle"
    ),
    BoardIds.GANGLION_BOARD.value: Connection(("serial_port",), ("mac_address",), note=_DONGLE),
    BoardIds.GANGLION_NATIVE_BOARD.value: _NATIVE_BLE,
    BoardIds.GANGLION_WIFI_BOARD.value: Connection(("ip_port",), ("ip_address",), note=_WIFI),
    BoardIds.CYTON_WIFI_BOARD.value: Connection(("ip_port",), ("ip_address",), note=_WIFI),
    BoardIds.CYTON_DAISY_WIFI_BOARD.value: Connection(("ip_port",), ("ip_address",), note=_WIFI),
    BoardIds.MUSE_2_BLED_BOARD.value: Connection(("serial_port",), ("serial_number",), _DONGLE),
    BoardIds.MUSE_S_BLED_BOARD.value: Connection(("serial_port",), ("serial_number",), _DONGLE),
    BoardIds.MUSE_2016_BLED_BOARD.value: Connection(("serial_port",), ("serial_number",), _DONGLE),
    BoardIds.MUSE_2_BOARD.value: _NATIVE_BLE,
    BoardIds.MUSE_S_BOARD.value: _NATIVE_BLE,
    BoardIds.MUSE_2016_BOARD.value: _NATIVE_BLE,
    BoardIds.CROWN_BOARD.value: Connection(optional=("serial_number",), note="the device id"),
    BoardIds.NOTION_1_BOARD.value: Connection(optional=("serial_number",), note="the device id"),
    BoardIds.NOTION_2_BOARD.value: Connection(optional=("serial_number",), note="the device id"),
    BoardIds.UNICORN_BOARD.value: Connection(optional=("serial_number",)),
    BoardIds.BRAINBIT_BOARD.value: Connection(optional=("serial_number",)),
    BoardIds.BRAINBIT_BLED_BOARD.value: Connection(("serial_port",), ("mac_address",), _DONGLE),
    BoardIds.FREEEEG32_BOARD.value: Connection(("serial_port",)),
    BoardIds.ENOPHONE_BOARD.value: Connection(("mac_address",)),
}


def board_name(board_id: int) -> str:
    return BoardIds(board_id).name if board_id in _IDS else str(board_id)


def check_connection(board_id: int, params: BrainFlowInputParams) -> None:
    """Refuse, before BrainFlow tries, a board whose required connection parameter is unset."""
    conn = CONNECTIONS.get(board_id)
    if conn is None:
        return
    for name in conn.required:
        if not getattr(params, name):
            what, example = PARAMETERS[name]
            note = f"{conn.note}, " if conn.note else ""
            raise ConfigError(
                f"{board_name(board_id)} needs {what} ({note}e.g. {example}): "
                f"pass {flag(name)} or set {env_var(name)}",
                field=name,
                hint="`neurostream boards` lists what each board needs to connect",
            )


def _cannot_open(board_id: int, exc: BrainFlowError) -> SourceError:
    conn = CONNECTIONS.get(board_id)
    hint = (
        f"{board_name(board_id)} {conn.describe()}"
        if conn is not None
        else "check the board's connection parameters (--serial-port, --mac-address, "
        "--ip-address, --ip-port, --serial-number, --other-info) in BrainFlow's Supported "
        "Boards page"
    )
    return SourceError(
        f"cannot open {board_name(board_id)}: {exc} (is it switched on, paired and in range, "
        "and are its connection parameters right?)",
        field="board",
        hint=hint,
    )


def existing_file(path: str | Path) -> Path:
    """``path`` if it is a file; else a SourceError that says what it is and what to pass."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise SourceError(
            f"recording {file} {what}",
            field="file",
            hint="pass --file with a recording: CSV (muse-lsl, OpenBCI GUI), EDF/BDF, FIF, "
            "BrainVision .vhdr, EEGLAB .set, XDF, or a BrainFlow file",
        )
    return file


@dataclass(frozen=True, slots=True)
class Chunk:
    data: np.ndarray  # float32 [n_channels, n]
    timestamps: np.ndarray  # float64 [n]
    markers: np.ndarray  # float64 [n], 0 where no marker
    gap: bool = False  # the source lost samples just before this chunk (it says so)

    @property
    def n(self) -> int:
        return int(self.data.shape[1])

    def head(self, n: int) -> Chunk:
        return Chunk(self.data[:, :n], self.timestamps[:n], self.markers[:n], self.gap)


class Source(Protocol):
    """What the session loop reads: ``read`` returns None once the source is exhausted."""

    name: str
    fs: float
    channels: tuple[str, ...]
    simulated: bool  # the synthetic board's samples: the oddball paradigm may be added

    def start(self) -> None: ...

    def read(self) -> Chunk | None: ...

    def flush(self) -> Chunk | None:
        """At the end, what the source still holds (None: nothing), before ``stop``."""
        ...

    def stop(self) -> None: ...


def resolve_board(board: str | int) -> int:
    """Board id from 'synthetic', 'playback', a BoardIds name ('CYTON_BOARD') or a number."""
    text = str(board).strip()
    if text.lstrip("-").isdigit():
        if int(text) in _IDS:
            return int(text)
        raise ConfigError(
            f"unknown BrainFlow board id {text}",
            field="board",
            hint="`neurostream boards` lists every board with its id",
        )
    if text.lower() in ALIASES:
        return int(ALIASES[text.lower()].value)
    name = text.upper()
    for candidate in (name, f"{name}_BOARD"):
        if candidate in BoardIds.__members__:
            return int(BoardIds[candidate].value)
    names = [*ALIASES, "recording", *(n for n in BoardIds.__members__ if n != "NO_BOARD")]
    close = difflib.get_close_matches(name, [n.upper() for n in names], n=3, cutoff=0.6)
    close += [n for n in names if name.removesuffix("_BOARD") in n.upper() and n not in close]
    maybe = f"; did you mean {', '.join(close[:3])}?" if close else ""
    raise ConfigError(
        f"unknown board {text!r}{maybe}",
        field="board",
        hint="`neurostream boards` lists every board name (synthetic, playback, recording, "
        "or a BrainFlow name such as CYTON_BOARD) with what it needs to connect",
    )


@dataclass(frozen=True, slots=True)
class Layout:
    """Rows of a BrainFlow data array for one board."""

    fs: float
    eeg_rows: tuple[int, ...]
    timestamp_row: int
    marker_row: int | None
    channels: tuple[str, ...]

    @classmethod
    def of(cls, board_id: int) -> Layout:
        rows = tuple(BoardShim.get_eeg_channels(board_id))
        try:
            names = tuple(BoardShim.get_eeg_names(board_id))
        except BrainFlowError:
            names = ()
        if len(names) != len(rows):
            names = tuple(f"ch{i}" for i in range(len(rows)))
        try:
            marker: int | None = BoardShim.get_marker_channel(board_id)
        except BrainFlowError:
            marker = None
        return cls(
            fs=float(BoardShim.get_sampling_rate(board_id)),
            eeg_rows=rows,
            timestamp_row=BoardShim.get_timestamp_channel(board_id),
            marker_row=marker,
            channels=names,
        )

    def chunk(self, raw: np.ndarray) -> Chunk:
        n = raw.shape[1]
        markers = raw[self.marker_row] if self.marker_row is not None else np.zeros(n)
        return Chunk(
            np.ascontiguousarray(raw[list(self.eeg_rows)], dtype=np.float32),
            np.asarray(raw[self.timestamp_row], dtype=np.float64),
            np.asarray(markers, dtype=np.float64),
        )


class BrainFlowSource:
    """A live BrainFlow board; PLAYBACK_FILE_BOARD takes its layout from ``master_board``."""

    def __init__(
        self,
        board: str | int = "synthetic",
        params: BrainFlowInputParams | None = None,
        *,
        buffer_s: float = 60.0,
    ) -> None:
        self.board_id = resolve_board(board)
        self.params = params or BrainFlowInputParams()
        layout_id = self.board_id
        if self.board_id == BoardIds.PLAYBACK_FILE_BOARD.value:
            if not self.params.file:
                raise ConfigError(
                    "the playback board needs a file: pass --file or set NEUROSTREAM_PRODUCER_FILE",
                    field="file",
                )
            self.params.file = str(existing_file(self.params.file))
            if self.params.master_board == BoardIds.NO_BOARD.value:
                self.params.master_board = BoardIds.SYNTHETIC_BOARD.value
            layout_id = self.params.master_board
            _refuse_playback_markers(Path(self.params.file), Layout.of(layout_id))
        check_connection(self.board_id, self.params)
        self.layout = Layout.of(layout_id)
        self.fs, self.channels = self.layout.fs, self.layout.channels
        self.name = board_name(self.board_id)
        self.simulated = self.board_id == BoardIds.SYNTHETIC_BOARD.value
        self._shim = BoardShim(self.board_id, self.params)
        self._buffer = int(buffer_s * self.fs)

    def start(self) -> None:
        try:
            self._shim.prepare_session()
        except BrainFlowError as exc:
            raise _cannot_open(self.board_id, exc) from exc
        self._shim.start_stream(self._buffer)

    def read(self) -> Chunk | None:
        return self.layout.chunk(self._shim.get_board_data())

    def flush(self) -> Chunk | None:
        """What the board buffered since the last read."""
        chunk = self.read() if self._shim.is_prepared() else None
        return chunk if chunk is not None and chunk.n else None

    def insert_marker(self, value: float) -> None:
        """For a stimulus program driving a real board: the marker lands in the stream."""
        self._shim.insert_marker(value)

    def stop(self) -> None:
        if self._shim.is_prepared():
            try:
                self._shim.stop_stream()
            except BrainFlowError:
                pass
            self._shim.release_session()


class RecordingSource:
    """Replays a BrainFlow array/file with fresh timestamps; ``speed=0`` is unthrottled."""

    def __init__(
        self,
        data: np.ndarray,
        *,
        board: str | int = "synthetic",
        speed: float = 1.0,
        loop: bool = False,
        max_chunk_s: float = 2.0,
    ) -> None:
        board_id = resolve_board(board)
        self.layout = Layout.of(board_id)
        self.fs, self.channels = self.layout.fs, self.layout.channels
        self.name = "recording"
        self.simulated = board_id == BoardIds.SYNTHETIC_BOARD.value
        self._recorded = self.layout.chunk(data)
        if self._recorded.n == 0:
            raise SourceError("the recording holds no samples", field="file")
        self.speed, self.loop = speed, loop
        self._max_chunk = max(1, round(max_chunk_s * self.fs))
        self._cursor = 0
        self._t0 = 0.0
        self._mono0 = 0.0

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: object) -> RecordingSource:
        file = existing_file(path)
        try:
            data = DataFilter.read_file(str(file))
        except BrainFlowError as exc:
            raise SourceError(
                f"cannot read {file} as a BrainFlow file: {exc}",
                field="file",
                hint="a BrainFlow file is the tab-separated CSV that `neurostream record` "
                "or DataFilter.write_file writes",
            ) from exc
        return cls(data, **kwargs)  # type: ignore[arg-type]

    def start(self) -> None:
        self._t0, self._mono0 = time.time(), time.monotonic()
        self._cursor = 0

    def read(self) -> Chunk | None:
        total = self._recorded.n
        if not self.loop and self._cursor >= total:
            return None
        if self.speed > 0:
            due = int((time.monotonic() - self._mono0) * self.fs * self.speed)
            n = min(due - self._cursor, self._max_chunk)
        else:
            n = self._max_chunk
        if not self.loop:
            n = min(n, total - self._cursor)
        n = max(n, 0)
        idx = (self._cursor + np.arange(n)) % total
        chunk = Chunk(
            self._recorded.data[:, idx],
            self._t0 + (self._cursor + np.arange(n)) / self.fs,
            self._recorded.markers[idx],
        )
        self._cursor += n
        return chunk

    def flush(self) -> Chunk | None:
        return None  # a replay holds nothing back

    def stop(self) -> None:
        return None


class ChannelPick:
    """A source's channels by name (``channels`` in that order, less ``drop``).

    The pick is checked against the source's channels as soon as they are known: at once
    for a board, at ``start`` for a live stream (an LSL stream says its channels only once
    it is resolved).
    """

    def __init__(
        self, source: Source, channels: Sequence[str] | None = None, drop: Sequence[str] = ()
    ) -> None:
        self.source = source
        self.wanted = list(channels) if channels else None
        self.drop = list(drop)
        self.name, self.fs, self.simulated = source.name, source.fs, source.simulated
        self.index: list[int] = []
        self.channels: tuple[str, ...] = ()
        if source.channels:
            self._pick()

    def _pick(self) -> None:
        source = self.source
        names = list(source.channels)
        lower = [n.lower() for n in names]
        wanted = self.wanted or names
        unknown = [c for c in [*wanted, *self.drop] if c.lower() not in lower]
        if unknown:
            raise ConfigError(
                f"{source.name} has no channel {', '.join(unknown)} (it has {', '.join(names)})",
                field="channels",
            )
        gone = {d.lower() for d in self.drop}
        self.index = [lower.index(c.lower()) for c in wanted if c.lower() not in gone]
        if not self.index:
            raise ConfigError(f"no channel of {source.name} is left to stream", field="channels")
        self.name, self.fs = source.name, source.fs
        self.channels = tuple(names[i] for i in self.index)

    def start(self) -> None:
        self.source.start()
        self._pick()

    def read(self) -> Chunk | None:
        chunk = self.source.read()
        if chunk is None:
            return None
        return Chunk(chunk.data[self.index], chunk.timestamps, chunk.markers, chunk.gap)

    def flush(self) -> Chunk | None:
        """What the source still holds back (a live LSL stream's last samples), picked."""
        chunk = self.source.flush()
        if chunk is None:
            return None
        return Chunk(chunk.data[self.index], chunk.timestamps, chunk.markers, chunk.gap)

    def stop(self) -> None:
        self.source.stop()


def _refuse_playback_markers(file: Path, layout: Layout) -> None:
    """PLAYBACK_FILE_BOARD (BrainFlow 5.23) streams the marker row as zeros: say so first."""
    if layout.marker_row is None:
        return
    try:
        raw = np.atleast_2d(DataFilter.read_file(str(file)))
    except BrainFlowError:
        return  # BrainFlow says what is wrong with the file when it opens it
    if raw.shape[0] > layout.marker_row and np.any(raw[layout.marker_row] != 0):
        n = int(np.count_nonzero(raw[layout.marker_row]))
        raise ConfigError(
            f"{file} has {n} marker{'s' if n != 1 else ''}, which BrainFlow's playback board "
            "plays back as zeros "
            "(no epoch would be cut): replay it with the file source instead",
            field="board",
            hint=f"drop --board playback: `neurostream produce --file {file} --layout BOARD` "
            "replays the file with its markers (--speed, --loop, --events)",
        )


class FileSource:
    """Replays a ``Recording`` with its events as markers, in real time or faster.

    ``speed`` 1 is real time, 2 twice as fast, 0 as fast as the consumer reads (chunks of
    ``max_chunk_s``). Once by default; ``loop`` replays it again and again. Each event
    lands at its own sample index (the reader placed it there), never searched for by time.

    Times are wall-clock and never in the future: sample ``i`` of a pass is stamped
    ``anchor + i / fs``. At ``speed <= 1`` the anchor is the moment the pass starts, so a
    sample is stamped when (or before) it is due. Faster (or at 0) the pass's span is
    moved back so it ends no later than its samples are read: the anchor is the pass's
    start minus ``duration * (1 - 1/speed)`` (minus the whole duration at speed 0). A
    looped pass at speed > 1 is anchored afresh, so its times may overlap the previous
    pass's; sample spacing within a pass is always exactly ``1 / fs``.
    """

    def __init__(
        self,
        recording: Recording,
        *,
        speed: float = 1.0,
        loop: bool = False,
        max_chunk_s: float = 2.0,
    ) -> None:
        if not speed >= 0:
            raise ConfigError(f"speed must be 0 or more, not {speed!r}", field="speed")
        if recording.n_samples == 0:
            raise SourceError(f"the recording {recording.path} holds no samples", field="file")
        self.recording = recording
        self.fs = float(recording.fs)
        self.channels = tuple(recording.channels)
        self.name = f"file:{recording.format}"
        self.simulated = False
        self.speed, self.loop = float(speed), loop
        self._data = np.ascontiguousarray(recording.data, dtype=np.float32)
        self._markers = np.zeros(recording.n_samples, dtype=np.float64)
        events = np.asarray(recording.events, dtype=np.int64).reshape(-1, 2)
        inside = (events[:, 0] >= 0) & (events[:, 0] < recording.n_samples)
        self._markers[events[inside, 0]] = events[inside, 1]
        # Two events on one sample: the marker row holds one code, the later one.
        self.events_merged = int(inside.sum()) - int(np.count_nonzero(self._markers))
        self._max_chunk = max(1, round(max_chunk_s * self.fs))
        self._cursor = 0  # samples handed out, all passes
        self._anchor = 0.0
        self._mono0 = 0.0
        self.passes = 0

    @property
    def duration_s(self) -> float:
        return self.recording.duration_s

    def _lead_s(self) -> float:
        """How far back a pass's times are moved so none lies in the future."""
        if self.speed == 0:
            return self.duration_s
        return self.duration_s * max(0.0, 1.0 - 1.0 / self.speed)

    def start(self) -> None:
        self._cursor, self.passes = 0, 0
        self._mono0 = time.monotonic()

    def read(self) -> Chunk | None:
        total = self.recording.n_samples
        offset = self._cursor % total  # within the pass
        if not self.loop and self._cursor >= total:
            return None
        if self.speed > 0:
            due = int((time.monotonic() - self._mono0) * self.fs * self.speed)
            n = min(due - self._cursor, self._max_chunk)
        else:
            n = self._max_chunk
        n = max(0, min(n, total - offset))  # a chunk never spans two passes
        if n == 0:
            return Chunk(np.zeros((len(self.channels), 0), np.float32), np.zeros(0), np.zeros(0))
        if offset == 0:
            self._anchor = self._pass_start() - self._lead_s()
            self.passes += 1
        chunk = Chunk(
            self._data[:, offset : offset + n],
            self._anchor + (offset + np.arange(n)) / self.fs,
            self._markers[offset : offset + n],
        )
        self._cursor += n
        return chunk

    def _pass_start(self) -> float:
        """Wall time at which this pass is due (now, for an unthrottled replay)."""
        if self.speed == 0:
            return time.time()
        due = self._mono0 + self._cursor / (self.fs * self.speed)
        return time.time() - (time.monotonic() - due)

    def flush(self) -> Chunk | None:
        return None  # a replay holds nothing back

    def stop(self) -> None:
        return None


def record(
    board: str | int, seconds: float, path: str | Path, params: BrainFlowInputParams | None = None
) -> np.ndarray:
    """Capture ``seconds`` of a board into a BrainFlow file (blocks in real time)."""
    board_id = resolve_board(board)
    params = params or BrainFlowInputParams()
    check_connection(board_id, params)
    shim = BoardShim(board_id, params)
    try:
        shim.prepare_session()
    except BrainFlowError as exc:
        raise _cannot_open(board_id, exc) from exc
    try:
        shim.start_stream()
        time.sleep(seconds)
        data: np.ndarray = shim.get_board_data()
        shim.stop_stream()
    finally:
        shim.release_session()
    DataFilter.write_file(data, str(path), "w")
    return data
