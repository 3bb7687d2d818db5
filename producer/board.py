"""Where samples come from: a BrainFlow board, or a BrainFlow file replayed at any speed.

Both sources hand the session loop ``Chunk``s of EEG samples ``[n_channels, n_new]`` with
their timestamps and marker values (0 = none). ``BrainFlowSource`` reads a live board
(SYNTHETIC_BOARD by default, PLAYBACK_FILE_BOARD for files, real headsets by name or id);
``RecordingSource`` replays a file faster than real time so tests and benchmarks need not
wait. ``record`` captures such a file from a board.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowError, BrainFlowInputParams
from brainflow.data_filter import DataFilter

ALIASES = {"synthetic": BoardIds.SYNTHETIC_BOARD, "playback": BoardIds.PLAYBACK_FILE_BOARD}
_IDS = {b.value for b in BoardIds}


@dataclass(frozen=True, slots=True)
class Chunk:
    data: np.ndarray  # float32 [n_channels, n]
    timestamps: np.ndarray  # float64 [n]
    markers: np.ndarray  # float64 [n], 0 where no marker

    @property
    def n(self) -> int:
        return int(self.data.shape[1])

    def head(self, n: int) -> Chunk:
        return Chunk(self.data[:, :n], self.timestamps[:n], self.markers[:n])


class Source(Protocol):
    """What the session loop reads: ``read`` returns None once the source is exhausted."""

    name: str
    fs: float
    channels: tuple[str, ...]

    def start(self) -> None: ...

    def read(self) -> Chunk | None: ...

    def stop(self) -> None: ...


def resolve_board(board: str | int) -> int:
    """Board id from 'synthetic', 'playback', a BoardIds name ('CYTON_BOARD') or a number."""
    if isinstance(board, int):
        return board
    text = board.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text.lower() in ALIASES:
        return ALIASES[text.lower()].value
    name = text.upper()
    for candidate in (name, f"{name}_BOARD"):
        if candidate in BoardIds.__members__:
            return BoardIds[candidate].value
    raise ValueError(f"unknown BrainFlow board {board!r}; use a BoardIds name or a numeric id")


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
                raise ValueError("the playback board needs a file (NEUROSTREAM_PRODUCER_FILE)")
            if self.params.master_board == BoardIds.NO_BOARD.value:
                self.params.master_board = BoardIds.SYNTHETIC_BOARD.value
            layout_id = self.params.master_board
        self.layout = Layout.of(layout_id)
        self.fs, self.channels = self.layout.fs, self.layout.channels
        self.name = BoardIds(self.board_id).name if self.board_id in _IDS else str(self.board_id)
        self._shim = BoardShim(self.board_id, self.params)
        self._buffer = int(buffer_s * self.fs)

    def start(self) -> None:
        self._shim.prepare_session()
        self._shim.start_stream(self._buffer)

    def read(self) -> Chunk | None:
        return self.layout.chunk(self._shim.get_board_data())

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
        self.layout = Layout.of(resolve_board(board))
        self.fs, self.channels = self.layout.fs, self.layout.channels
        self.name = "recording"
        self._recorded = self.layout.chunk(data)
        if self._recorded.n == 0:
            raise ValueError("the recording holds no samples")
        self.speed, self.loop = speed, loop
        self._max_chunk = max(1, round(max_chunk_s * self.fs))
        self._cursor = 0
        self._t0 = 0.0
        self._mono0 = 0.0

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: object) -> RecordingSource:
        return cls(DataFilter.read_file(str(path)), **kwargs)  # type: ignore[arg-type]

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

    def stop(self) -> None:
        return None


def record(
    board: str | int, seconds: float, path: str | Path, params: BrainFlowInputParams | None = None
) -> np.ndarray:
    """Capture ``seconds`` of a board into a BrainFlow file (blocks in real time)."""
    shim = BoardShim(resolve_board(board), params or BrainFlowInputParams())
    shim.prepare_session()
    try:
        shim.start_stream()
        time.sleep(seconds)
        data = shim.get_board_data()
        shim.stop_stream()
    finally:
        shim.release_session()
    DataFilter.write_file(data, str(path), "w")
    return data
