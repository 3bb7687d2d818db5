"""Recordings: any supported EEG file read into one ``Recording``.

The producer's file source and ``neurostream train --file`` start here, so a file means
the same thing to both: EEG channel names in data order, the nominal sampling rate, the
samples in µV ``[n_channels, n_samples]``, the times as recorded, and the file's own
events as ``(sample index, code)`` rows. Nothing is simulated and nothing is guessed
silently: a file that cannot be read is a ``SourceError`` naming the file, the format
tried and what is missing.

::

    rec = read_recording("run1.csv")                  # format from the extension
    rec.channels, rec.fs, rec.data, rec.events        # ('TP9', ...), 256.0, µV, [[i, code]]
    rec = read_recording("run1.csv", channels=["TP9", "Right AUX"])   # by name, any order
    read_recording("rec.csv", format="brainflow", board="MUSE_2016_BOARD")
    parse_event_mapping("target=2,nontarget=1")       # {'target': 2, 'nontarget': 1}

Formats (``format=`` overrides the extension):

- ``csv`` (``.csv``, ``.txt``, ``.tsv``): a header line naming the columns: a time column
  (``timestamps``, ``time``, ``Timestamp``), channel columns in µV and a marker column
  (``Marker``, ``Marker0``, ``Marker Channel``; 0 = no event, otherwise the code at that
  row; text markers get codes listed in ``event_names``). The muse-lsl layout
  (``TP9, AF7, AF8, TP10, Right AUX``) and OpenBCI GUI's raw files (``%`` header lines,
  ``Sample Index, EXG Channel 0..N, Accel Channel …, Other …, Analog Channel …,
  Timestamp, Marker Channel, Timestamp (Formatted)``: the EXG channels are the EEG).
  A headerless file of numbers is a BrainFlow file and is read as one.
- ``brainflow``: ``DataFilter.write_file``'s rows in the layout of ``board`` (a BrainFlow
  board name or id; the synthetic board by default).
- ``edf``, ``bdf``, ``fif`` (``.fif``, ``.fif.gz``), ``brainvision`` (``.vhdr``),
  ``eeglab`` (``.set``) through MNE; events from annotations (BrainVision's
  ``Stimulus/S  2`` is code 2, a numeric description its number, other text a named
  code) and from a stim channel.
- ``xdf`` (``.xdf``, ``.xdfz``) through pyxdf (clock sync and dejitter on load): the EEG
  stream (``stream=`` names it; else type EEG, else the most channels) and every marker
  stream (type ``Markers`` or strings, at any rate and with any number of channels, or an
  irregular single channel: what the LSL source records), each marker (the first
  non-empty channel of a sample) placed at the EEG sample nearest its timestamp; markers
  more than one sample outside the EEG stream's time span are not events of this
  recording.

Events are placed by sample index (the row), never by searching the time column: muse-lsl
files have timestamps that step backwards dozens of times per run, and that moves no
event. ``times`` is informational. ``fs`` comes from the file where it says it, else it is
estimated from the times and snapped to a common rate within 1 %; ``fs=`` overrides it.
Non-EEG channels (AUX, accelerometer, stim, ...) are left out by default and listed in
``dropped``; ``channels=`` selects any channel by name, in the order given, and ``drop=``
removes channels by name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from neurostream.errors import ConfigError, SourceError

__all__ = [
    "FORMATS",
    "NOMINAL_RATES",
    "Recording",
    "eeg_channels",
    "estimate_fs",
    "format_of",
    "marker_label",
    "nearest_sample",
    "parse_event_mapping",
    "read_recording",
    "sample_label",
    "unit_scale",
]

FORMATS: Final = ("csv", "brainflow", "edf", "bdf", "fif", "brainvision", "eeglab", "xdf")
NOMINAL_RATES: Final = (
    64.0, 100.0, 120.0, 125.0, 128.0, 160.0, 200.0, 250.0, 256.0, 300.0, 500.0, 512.0,
    1000.0, 1024.0, 2000.0, 2048.0, 4000.0, 4096.0, 8000.0, 8192.0, 16384.0,
)  # fmt: skip
_SNAP_TOLERANCE: Final = 0.01
_EXTENSIONS: Final = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".edf": "edf",
    ".bdf": "bdf",
    ".fif": "fif",
    ".fif.gz": "fif",
    ".vhdr": "brainvision",
    ".set": "eeglab",
    ".xdf": "xdf",
    ".xdfz": "xdf",
}
_EVENTS_FORM: Final = (
    "NAME=CODE pairs separated by commas, e.g. target=2,nontarget=1 (a CODE may be a "
    "marker's text: target=Target,nontarget=NonTarget)"
)


@dataclass(frozen=True, eq=False)
class Recording:
    """One EEG recording: µV samples of named channels, their times, and the file's events."""

    path: Path
    format: str  # one of FORMATS
    channels: tuple[str, ...]  # in data order
    fs: float  # nominal sampling rate, Hz
    data: np.ndarray = field(repr=False)  # float64 µV [n_channels, n_samples]
    times: np.ndarray = field(repr=False)  # float64 s [n_samples], as recorded
    events: np.ndarray = field(repr=False)  # int64 [n_events, 2]: (sample, code), by sample
    event_names: dict[str, int] = field(default_factory=dict)  # text marker -> code
    dropped: tuple[str, ...] = ()  # in the file, not returned

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def event_counts(self) -> dict[int, int]:
        """Events per code, codes ascending."""
        codes, counts = np.unique(self.events[:, 1], return_counts=True)
        return {int(c): int(n) for c, n in zip(codes, counts, strict=True)}

    def pick(self, channels: Sequence[str]) -> Recording:
        """The same recording with only ``channels``, in that order."""
        gone = [
            c for c in ([channels] if isinstance(channels, str) else channels) if c in self.dropped
        ]
        if gone:
            raise ConfigError(
                f"channel {', '.join(gone)} of {self.path} was left out when it was read; "
                f"read it with read_recording(..., channels=[...]) naming it",
                field="channels",
            )
        order = _indices(self.path, self.channels, channels, "channels")
        kept = set(order)
        left = tuple(c for i, c in enumerate(self.channels) if i not in kept)
        return replace(
            self,
            channels=tuple(self.channels[i] for i in order),
            data=self.data[order],
            dropped=self.dropped + left,
        )


def read_recording(
    path: str | Path,
    *,
    format: str | None = None,
    board: str | int | None = None,
    channels: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    fs: float | None = None,
    stream: str | None = None,
) -> Recording:
    """Read ``path`` (any of ``FORMATS``) into a ``Recording``; see the module docstring.

    ``board`` is the BrainFlow layout of a BrainFlow file, ``stream`` the name or type of
    an XDF file's EEG stream; other formats describe themselves and ignore both.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise SourceError(f"recording {file} does not exist", field="file")
    if file.is_dir():
        raise SourceError(f"recording {file} is a directory, not a file", field="file")
    if fs is not None and not (np.isfinite(fs) and fs > 0):
        raise ConfigError(f"fs must be a positive rate in Hz, not {fs!r}", field="fs")
    fmt = format_of(file) if format is None else _known_format(format)
    if fmt == "csv" and format is None and _headerless(file):
        fmt = "brainflow"
    contents = _READERS[fmt](file, board, stream)
    names = contents.names
    if channels is None:
        chosen = list(contents.eeg)
        if not chosen:
            raise SourceError(
                f"cannot read {file} as {fmt}: it has no EEG channel (channels: "
                f"{', '.join(names)})",
                field="channels",
                hint="select channels by name with channels=[...] (--channels)",
            )
    else:
        chosen = _indices(file, names, channels, "channels")
    removed = set(_indices(file, names, drop, "drop"))
    chosen = [i for i in chosen if i not in removed]
    if not chosen:
        raise ConfigError(f"no channel of {file} is left after drop={list(drop)}", field="drop")
    rate = fs if fs is not None else contents.fs
    if rate is None and contents.untimed:
        raise SourceError(
            f"cannot tell the sampling rate of {file} ({fmt}): {contents.untimed}",
            field="fs",
            hint="pass fs= (--fs) with the sampling rate in Hz",
        )
    if rate is None:
        rate = estimate_fs(contents.times, file=file)
    times = contents.times
    if contents.untimed:  # no times in the file: the sample clock at the rate given
        times = np.arange(times.size) / rate
    kept = set(chosen)
    return Recording(
        path=file,
        format=fmt,
        channels=tuple(names[i] for i in chosen),
        fs=float(rate),
        data=np.ascontiguousarray(contents.load(chosen), dtype=np.float64),
        times=np.asarray(times, dtype=np.float64),
        events=contents.events,
        event_names=contents.event_names,
        dropped=tuple(n for i, n in enumerate(names) if i not in kept),
    )


def format_of(path: str | Path) -> str:
    """The format a file's extension names (``.fif.gz`` -> ``fif``); a SourceError if none."""
    name = Path(path).name.lower()
    for ext in sorted(_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return _EXTENSIONS[ext]
    known = ", ".join(_EXTENSIONS)
    raise SourceError(
        f"cannot read {path}: unknown recording extension {Path(path).suffix or '(none)'!r} "
        f"(known: {known})",
        field="file",
        hint=f"pass format= one of {', '.join(FORMATS)} (--format) if the file is one of them",
    )


def parse_event_mapping(text: str) -> dict[str, int | str]:
    """``"target=2,nontarget=1"`` -> ``{"target": 2, "nontarget": 1}``: names to event codes.

    A code is a non-zero integer (0 means "no event") or a marker's text, as a stimulus
    program sends it (``target=stim/target,nontarget=stim/standard``: PsychoPy's LSL
    markers are strings). A name or a code given twice is an error, so one code never
    means two classes.
    """
    if not text.strip():
        raise ConfigError(f"the event mapping is empty; give {_EVENTS_FORM}", field="events")
    mapping: dict[str, int | str] = {}
    for item in text.split(","):
        name, eq, code = (part.strip() for part in item.partition("="))
        if not item.strip():
            raise ConfigError(
                f"the event mapping {text!r} has an empty item; give {_EVENTS_FORM}",
                field="events",
            )
        if not eq or not name or not code:
            raise ConfigError(
                f"cannot read {item.strip()!r} in the event mapping {text!r}; give {_EVENTS_FORM}",
                field="events",
            )
        value = marker_label(code)
        if value is None or (isinstance(value, int) and value == 0):
            raise ConfigError(
                f"the event code of {name!r} is {code!r}, which means 'no event'; use a non-zero "
                "code or the marker's text",
                field="events",
            )
        if name in mapping:
            raise ConfigError(f"the event name {name!r} is given twice in {text!r}", field="events")
        twin = next((n for n, c in mapping.items() if c == value), None)
        if twin is not None:
            raise ConfigError(
                f"the event code {value} is given to both {twin!r} and {name!r} in {text!r}",
                field="events",
            )
        mapping[name] = value
    return mapping


def estimate_fs(times: np.ndarray, *, file: str | Path = "the recording") -> float:
    """Nominal rate from sample times: the median step over ~1 s lags, snapped within 1 %.

    Lags of about a second make it robust to timestamps rounded to the millisecond
    (muse-lsl's 256 Hz steps read 3 or 4 ms, whose plain median says 250 Hz) and to
    jitter or a few steps backwards.
    """
    t = np.asarray(times, dtype=np.float64)
    t = t[np.isfinite(t)]
    span = float(t[-1] - t[0]) if t.size >= 2 else 0.0
    if t.size < 3 or span <= 0:
        raise SourceError(
            f"cannot estimate the sampling rate of {file}: its times do not advance "
            f"({t.size} finite values)",
            field="fs",
            hint="pass fs= (--fs) with the sampling rate in Hz",
        )
    rough = (t.size - 1) / span
    lag = int(min(t.size - 1, max(1, round(rough))))
    steps = (t[lag:] - t[:-lag]) / lag
    steps = steps[steps > 0]
    rate = 1.0 / float(np.median(steps)) if steps.size else rough
    nearest = min(NOMINAL_RATES, key=lambda r: abs(r - rate))
    if abs(nearest - rate) <= _SNAP_TOLERANCE * nearest:
        return nearest
    return round(rate, 3)


# --- shared machinery -------------------------------------------------------------------


@dataclass(frozen=True)
class _Contents:
    """What a format reader found: every channel, which are EEG, times, events, rate."""

    names: tuple[str, ...]
    eeg: tuple[int, ...]  # default selection, indices into names
    load: Callable[[list[int]], np.ndarray]  # µV rows for the given indices
    times: np.ndarray
    events: np.ndarray
    event_names: dict[str, int]
    fs: float | None  # None: estimate from times
    untimed: str | None = None  # why the times cannot give fs, where they cannot


def _known_format(name: str) -> str:
    fmt = name.strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown recording format {name!r}; known: {', '.join(FORMATS)}", field="format"
        )
    return fmt


def _indices(file: Path, names: Sequence[str], wanted: Sequence[str], what: str) -> list[int]:
    if isinstance(wanted, str):
        wanted = [wanted]
    missing = [w for w in wanted if w not in names]
    if missing:
        close = {
            m: [n for n in names if n.lower() == m.lower()]
            or difflib.get_close_matches(m, list(names), n=1)
            for m in missing
        }
        maybe = "; ".join(f"{m!r}: did you mean {c[0]!r}?" for m, c in close.items() if c)
        raise ConfigError(
            f"{file} has no channel {', '.join(map(repr, missing))} (asked in {what}); its "
            f"channels are {', '.join(names)}" + (f" ({maybe})" if maybe else ""),
            field=what,
        )
    twice = sorted({w for w in wanted if list(wanted).count(w) > 1})
    if twice:
        raise ConfigError(f"{what} names {', '.join(twice)} more than once", field=what)
    return [list(names).index(w) for w in wanted]


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def marker_label(value: object) -> int | str | None:
    """A marker value as a code (int), a text name, or None for 'no event': how every
    reader reads a file's markers, and the LSL source a live one."""
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        if not np.isfinite(number) or number == 0:
            return None
        if number != round(number):
            return f"{number:g}"  # a fractional code is text, not a truncated number
        return int(round(number))
    text = str(value).strip()
    if not text or text.lower() in {"nan", "none", "null"}:
        return None
    if _NUMBER.match(text):
        return marker_label(float(text))
    return text


def sample_label(values: Any) -> int | str | None:
    """A marker sample's label: its first channel that is an event (``marker_label``), or
    None. A multi-channel marker stream (a trigger box's lines, a program's columns) is
    read so, by the XDF reader and the LSL source alike."""
    if not isinstance(values, (list, tuple, np.ndarray)):
        return marker_label(values)
    return next((lab for v in values if (lab := marker_label(v)) is not None), None)


def nearest_sample(times: np.ndarray, t: float) -> int:
    """The index of the sample of ``times`` (ascending, not empty) nearest ``t``, the earlier
    one on a tie: where a marker stamped ``t`` lands. Whether ``t`` is near enough to count
    is the caller's to judge."""
    if times.size < 2:
        return 0
    i = int(np.clip(np.searchsorted(times, t), 1, times.size - 1))
    return i - 1 if abs(times[i - 1] - t) <= abs(times[i] - t) else i


def _events(
    labels: Sequence[tuple[int, int | str]], n_samples: int
) -> tuple[np.ndarray, dict[str, int]]:
    """(sample, label) pairs -> sorted unique int64 events and the codes given to text.

    Text markers get the smallest positive codes no numeric marker of the file uses, in
    alphabetical order, so a mixed file keeps its numeric codes.
    """
    used = {lab for _, lab in labels if isinstance(lab, int)}
    names: dict[str, int] = {}
    code = 1
    for text in sorted({lab for _, lab in labels if isinstance(lab, str)}):
        while code in used:
            code += 1
        names[text] = code
        used.add(code)
    rows = [
        (s, lab if isinstance(lab, int) else names[lab]) for s, lab in labels if 0 <= s < n_samples
    ]
    if not rows:
        return np.zeros((0, 2), dtype=np.int64), names
    events = np.unique(np.asarray(rows, dtype=np.int64), axis=0)  # sorted by sample, then code
    return events, names


def _headerless(file: Path) -> bool:
    """Whether the first line of a text file is all numbers (a BrainFlow file)."""
    try:
        with file.open(encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return False
    cells = [c for c in re.split(r"[,\t;]", first) if c.strip()]
    return bool(cells) and all(_NUMBER.match(c.strip()) for c in cells)


def _unreadable(file: Path, fmt: str, why: object, hint: str | None = None) -> SourceError:
    return SourceError(f"cannot read {file} as {fmt}: {why}", field="file", hint=hint)


# --- CSV ------------------------------------------------------------------------------------

_TIME_COLUMN = re.compile(
    r"^(timestamps?|times?|time_?s|lsl_?time(stamps?)?)(\s*\((s|sec|seconds)\))?$"
)
_MARKER_COLUMN = re.compile(r"^(markers?\d*|marker[ _]?channel\d*|events?|triggers?|stim)$")
_INDEX_COLUMN = re.compile(r"^(sample[ _]?index|sample|index|package[ _]?num)$")
_NOT_EEG = re.compile(
    r"aux|acc|gyro|ppg|battery|other|not used|analog|digital|temp|eda|counter|package|"
    r"formatted|resistance"
)


def eeg_channels(labels: Sequence[str], types: Sequence[str]) -> tuple[int, ...]:
    """The EEG channels of a described stream (XDF, LSL): typed EEG or untyped, and not
    named as another kind, as the CSV reader judges a column. muse-lsl types its
    ``Right AUX`` EEG; its CSV, its XDF and its live stream give the same four channels."""
    return tuple(
        i
        for i, (label, kind) in enumerate(zip(labels, types, strict=True))
        if kind.strip().lower() in ("", "eeg") and not _NOT_EEG.search(label.lower())
    )


_EXG_COLUMN = re.compile(r"^exg channel \d+$")
_HEADER_RATE = re.compile(r"sample rate\s*=\s*([0-9.]+)", re.IGNORECASE)


def _read_csv(file: Path, board: str | int | None, stream: str | None) -> _Contents:
    import pandas as pd

    skip, rate, header = 0, None, ""
    with file.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            text = line.strip()
            if text.startswith("%") or not text:
                found = _HEADER_RATE.search(text)
                rate = float(found.group(1)) if found else rate
                skip += 1
                continue
            header = text
            break
    if not header:
        raise _unreadable(file, "csv", "it has no header line naming the columns")
    delimiter = max(",\t;", key=header.count)
    if all(_NUMBER.match(c.strip()) for c in header.split(delimiter) if c.strip()):
        raise _unreadable(
            file,
            "csv",
            "its first line is numbers, not column names",
            "a file of numbers alone is a BrainFlow file: pass format='brainflow' and its "
            "board (--board NAME)",
        )
    try:
        frame = pd.read_csv(
            file,
            sep=delimiter,
            skiprows=skip,
            skipinitialspace=True,
            low_memory=False,
            float_precision="round_trip",  # Unix-second times keep their microseconds
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise _unreadable(file, "csv", exc) from exc
    columns = [str(c).strip() for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame.iloc[:, i]) for i in range(len(columns))]
    lower = [c.lower() for c in columns]
    time_col = next((i for i, c in enumerate(lower) if _TIME_COLUMN.match(c) and numeric[i]), None)
    markers = [i for i, c in enumerate(lower) if _MARKER_COLUMN.match(c)]
    skipped = {*markers, *([time_col] if time_col is not None else [])}
    skipped |= {i for i, c in enumerate(lower) if _INDEX_COLUMN.match(c)}
    channel_cols = [i for i in range(len(columns)) if i not in skipped]
    names = tuple(columns[i] for i in channel_cols)
    if any(_EXG_COLUMN.match(lower[i]) for i in channel_cols):  # OpenBCI GUI
        eeg = tuple(k for k, i in enumerate(channel_cols) if _EXG_COLUMN.match(lower[i]))
    else:
        eeg = tuple(
            k for k, i in enumerate(channel_cols) if numeric[i] and not _NOT_EEG.search(lower[i])
        )
    n = len(frame)
    labels: list[tuple[int, int | str]] = []
    for i in markers:
        values = frame.iloc[:, i].to_numpy()
        if numeric[i]:
            rows = np.flatnonzero(np.isfinite(values.astype(np.float64)) & (values != 0))
        else:
            rows = np.arange(n)
        for r in rows:
            lab = marker_label(values[r])
            if lab is not None:
                labels.append((int(r), lab))
    events, event_names = _events(labels, n)
    if time_col is not None:
        times = frame.iloc[:, time_col].to_numpy(dtype=np.float64)
    elif rate is not None:
        times = np.arange(n) / rate
    else:
        times = np.full(n, np.nan)

    def load(idx: list[int]) -> np.ndarray:
        cols = [channel_cols[k] for k in idx]
        bad = [columns[c] for c in cols if not numeric[c]]
        if bad:
            raise _unreadable(file, "csv", f"column {', '.join(bad)} is not numeric")
        return np.asarray(frame.iloc[:, cols].to_numpy(dtype=np.float64).T)

    untimed = None
    if time_col is None and rate is None:
        untimed = "it has no time column (timestamps, time, Timestamp) and no '%Sample Rate' line"
    return _Contents(names, eeg, load, times, events, event_names, rate, untimed)


# --- BrainFlow ------------------------------------------------------------------------------

_BRAINFLOW_KINDS: Final = (
    "accel", "gyro", "ppg", "eda", "temperature", "resistance", "analog", "other",
    "magnetometer", "battery", "package_num",
)  # fmt: skip


def _board_id(board: str | int) -> int:
    from brainflow.board_shim import BoardIds

    text = str(board).strip()
    ids = {b.value for b in BoardIds}
    if text.lstrip("-").isdigit() and int(text) in ids:
        return int(text)
    if text.lower() == "synthetic":
        return int(BoardIds.SYNTHETIC_BOARD.value)
    for candidate in (text.upper(), f"{text.upper()}_BOARD"):
        if candidate in BoardIds.__members__:
            return int(BoardIds[candidate].value)
    close = difflib.get_close_matches(text.upper(), list(BoardIds.__members__), n=3, cutoff=0.6)
    maybe = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown BrainFlow board {text!r}{maybe}",
        field="board",
        hint="`neurostream boards` lists every board name and id",
    )


def _describe_board(board_id: int) -> dict[str, Any]:
    from brainflow.board_shim import BoardShim, BrainFlowError

    try:
        return dict(BoardShim.get_board_descr(board_id))
    except BrainFlowError:
        return {}


def _boards_with_rows(rows: int) -> list[str]:
    from brainflow.board_shim import BoardIds

    return [b.name for b in BoardIds if _describe_board(b.value).get("num_rows") == rows]


def _read_brainflow(file: Path, board: str | int | None, stream: str | None) -> _Contents:
    from brainflow.board_shim import BoardIds, BrainFlowError
    from brainflow.data_filter import DataFilter

    board_id = _board_id("synthetic" if board is None else board)
    name = BoardIds(board_id).name
    layout = _describe_board(board_id)
    if "num_rows" not in layout or "eeg_channels" not in layout:
        raise ConfigError(f"BrainFlow has no row layout for board {name}", field="board")
    try:
        raw = np.atleast_2d(DataFilter.read_file(str(file)))
    except BrainFlowError as exc:
        raise _unreadable(
            file,
            "a BrainFlow file",
            exc,
            "a BrainFlow file is the tab-separated numbers DataFilter.write_file writes",
        ) from exc
    rows = int(layout["num_rows"])
    if raw.shape[0] != rows:
        fits = _boards_with_rows(raw.shape[0])
        raise SourceError(
            f"cannot read {file} as a BrainFlow file of board {name}: the file has "
            f"{raw.shape[0]} rows per sample, board {name} lays out {rows}",
            field="board",
            hint="pass the board that wrote it (--board NAME)"
            + (f"; boards with {raw.shape[0]} rows: {', '.join(fits[:8])}" if fits else ""),
        )
    eeg_rows = [int(r) for r in layout["eeg_channels"]]
    eeg_names = str(layout.get("eeg_names", "")).split(",")
    if len(eeg_names) != len(eeg_rows) or not all(eeg_names):
        eeg_names = [f"ch{i}" for i in range(len(eeg_rows))]
    row_names = dict(zip(eeg_rows, eeg_names, strict=True))
    special = {layout.get("timestamp_channel"), layout.get("marker_channel")}
    for kind in _BRAINFLOW_KINDS:
        got = layout.get(f"{kind}_channels", layout.get(f"{kind}_channel"))
        members = [got] if isinstance(got, int) else list(got or [])
        for k, r in enumerate(members):
            if r not in row_names and r not in special:
                row_names[r] = kind if isinstance(got, int) else f"{kind}{k}"
    for r in range(rows):
        if r not in row_names and r not in special:
            row_names[r] = f"row{r}"
    order = sorted(row_names)
    names = tuple(row_names[r] for r in order)
    eeg = tuple(order.index(r) for r in eeg_rows)
    n = raw.shape[1]
    labels: list[tuple[int, int | str]] = []
    marker_row = layout.get("marker_channel")
    if marker_row is not None:
        for s in np.flatnonzero(raw[marker_row] != 0):
            lab = marker_label(raw[marker_row, s])
            if lab is not None:
                labels.append((int(s), lab))
    events, event_names = _events(labels, n)
    times = raw[int(layout["timestamp_channel"])]

    def load(idx: list[int]) -> np.ndarray:
        return raw[[order[k] for k in idx]]

    return _Contents(names, eeg, load, times, events, event_names, float(layout["sampling_rate"]))


# --- MNE: EDF/BDF, FIF, BrainVision, EEGLAB ---------------------------------------------------

_BRAINVISION_STIMULUS = re.compile(r"^Stimulus/S\s*(\d+)$")
_SKIP_ANNOTATION = re.compile(r"^(bad|edge|new segment)", re.IGNORECASE)


def _annotation_label(description: str) -> int | str | None:
    if _SKIP_ANNOTATION.match(description):
        return None
    stimulus = _BRAINVISION_STIMULUS.match(description.strip())
    if stimulus:
        return int(stimulus.group(1)) or None
    return marker_label(description)


def _read_mne(fmt: str) -> Callable[[Path, str | int | None, str | None], _Contents]:
    def read(file: Path, board: str | int | None, stream: str | None) -> _Contents:
        import mne
        from mne.io.constants import FIFF

        readers: Mapping[str, Callable[..., Any]] = {
            "edf": mne.io.read_raw_edf,
            "bdf": mne.io.read_raw_bdf,
            "fif": mne.io.read_raw_fif,
            "brainvision": mne.io.read_raw_brainvision,
            "eeglab": mne.io.read_raw_eeglab,
        }
        try:
            raw = readers[fmt](file, preload=True, verbose="error")
        except Exception as exc:  # MNE raises many types (ValueError, OSError, KeyError, ...)
            raise _unreadable(file, fmt, f"MNE's reader says: {exc}") from exc
        names = tuple(raw.ch_names)
        eeg = tuple(int(i) for i in mne.pick_types(raw.info, eeg=True, exclude=[]))
        n = raw.n_times
        labels: list[tuple[int, int | str]] = []
        described = {str(d): _annotation_label(str(d)) for d in set(raw.annotations.description)}
        wanted = sorted(d for d, lab in described.items() if lab is not None)
        if wanted:
            # MNE places annotations on samples (orig_time, first_samp); ids are ours to map.
            ids = {d: k + 1 for k, d in enumerate(wanted)}
            found, _ = mne.events_from_annotations(raw, event_id=ids, verbose="error")
            lab_of = {k: described[d] for d, k in ids.items()}
            labels += [(int(s) - raw.first_samp, lab_of[int(c)]) for s, _, c in found]  # type: ignore[misc]
        stim = [int(i) for i in mne.pick_types(raw.info, stim=True, exclude=[])]
        if stim:
            found = mne.find_events(
                raw,
                stim_channel=[names[i] for i in stim],
                shortest_event=1,
                consecutive=True,
                initial_event=True,
                mask=0xFFFF if fmt == "bdf" else None,  # BioSemi: triggers are the low 16 bits
                mask_type="and",
                verbose="error",
            )
            labels += [(int(s) - raw.first_samp, int(c)) for s, _, c in found if c != 0]
        events, event_names = _events(labels, n)
        volts = [ch["unit"] == FIFF.FIFF_UNIT_V for ch in raw.info["chs"]]

        def load(idx: list[int]) -> np.ndarray:
            data = raw.get_data(picks=idx)
            scale = np.array([1e6 if volts[i] else 1.0 for i in idx])
            return np.asarray(data * scale[:, None], dtype=np.float64)

        return _Contents(
            names, eeg, load, raw.times.copy(), events, event_names, float(raw.info["sfreq"])
        )

    return read


# --- XDF ------------------------------------------------------------------------------------

_UNIT_SCALE: Final = {
    "volts": 1e6, "v": 1e6, "millivolts": 1e3, "mv": 1e3, "nanovolts": 1e-3, "nv": 1e-3,
}  # fmt: skip


def unit_scale(unit: str) -> float:
    """The factor from a channel's unit (XDF, LSL) to µV; 1 for microvolts or no unit."""
    return _UNIT_SCALE.get(unit.strip().lower(), 1.0)


def _xdf_info(s: dict[str, Any], key: str) -> str:
    value = s["info"].get(key, [""])
    return str(value[0] if isinstance(value, list) and value else value or "")


def _xdf_channels(s: dict[str, Any]) -> list[dict[str, str]]:
    try:
        channels = s["info"]["desc"][0]["channels"][0]["channel"]
    except (KeyError, IndexError, TypeError):
        return []
    return [
        {k: str(v[0]) if isinstance(v, list) and v else "" for k, v in ch.items()}
        for ch in channels
    ]


def _xdf_markers(s: dict[str, Any]) -> bool:
    """A marker stream as the LSL source takes one: typed Markers or strings (a trigger box's
    regular stream, a multi-channel one too), or an irregular single channel."""
    return (
        _xdf_info(s, "type").lower() == "markers"
        or _xdf_info(s, "channel_format") == "string"
        or (
            float(_xdf_info(s, "nominal_srate") or 0) == 0
            and int(_xdf_info(s, "channel_count") or 0) == 1
        )
    )


def _read_xdf(file: Path, board: str | int | None, stream: str | None) -> _Contents:
    import pyxdf

    try:
        streams, _ = pyxdf.load_xdf(str(file), verbose=False)
    except Exception as exc:  # pyxdf raises bare Exception, OSError, struct.error, ...
        raise _unreadable(file, "xdf", f"pyxdf's reader says: {exc}") from exc
    described = [f"{_xdf_info(s, 'name')!r} ({_xdf_info(s, 'type')})" for s in streams]

    def regular(s: dict[str, Any]) -> bool:
        return (
            float(_xdf_info(s, "nominal_srate") or 0) > 0
            and _xdf_info(s, "channel_format") != "string"
        )

    if stream is not None:
        candidates = [s for s in streams if stream in (_xdf_info(s, "name"), _xdf_info(s, "type"))]
    else:
        candidates = [s for s in streams if _xdf_info(s, "type").lower() == "eeg"]
        candidates = candidates or [s for s in streams if regular(s)]
    if not candidates:
        wanted = f"stream named {stream!r}" if stream else "EEG stream"
        raise _unreadable(
            file,
            "xdf",
            f"it has no {wanted} (streams: {', '.join(described) or 'none'})",
            "name the EEG stream with stream= (--stream)",
        )
    eeg_stream = max(candidates, key=lambda s: int(_xdf_info(s, "channel_count") or 0))
    samples = np.asarray(eeg_stream["time_series"], dtype=np.float64)
    ts = np.asarray(eeg_stream["time_stamps"], dtype=np.float64)
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise _unreadable(
            file, "xdf", f"its EEG stream {described[streams.index(eeg_stream)]} has no samples"
        )
    meta = _xdf_channels(eeg_stream)
    if len(meta) != samples.shape[1]:
        meta = [{} for _ in range(samples.shape[1])]
    names = tuple(m.get("label") or f"ch{i}" for i, m in enumerate(meta))
    eeg = eeg_channels(names, [m.get("type", "") for m in meta])
    scale = np.array([unit_scale(m.get("unit", "")) for m in meta])
    nominal = float(_xdf_info(eeg_stream, "nominal_srate") or 0)
    period = 1.0 / nominal if nominal > 0 else float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
    labels: list[tuple[int, int | str]] = []
    for s in streams:
        if s is eeg_stream or not _xdf_markers(s) or len(s["time_stamps"]) == 0:
            continue
        for value, stamp in zip(s["time_series"], s["time_stamps"], strict=True):
            if not ts[0] - period <= stamp <= ts[-1] + period:  # one sample out at most
                continue
            lab = sample_label(value)
            if lab is not None:
                labels.append((nearest_sample(ts, float(stamp)), lab))
    events, event_names = _events(labels, ts.size)

    def load(idx: list[int]) -> np.ndarray:
        return np.asarray(samples[:, idx].T * scale[idx, None])

    return _Contents(names, eeg, load, ts, events, event_names, nominal if nominal > 0 else None)


_READERS: Final[dict[str, Callable[[Path, str | int | None, str | None], _Contents]]] = {
    "csv": _read_csv,
    "brainflow": _read_brainflow,
    "edf": _read_mne("edf"),
    "bdf": _read_mne("bdf"),
    "fif": _read_mne("fif"),
    "brainvision": _read_mne("brainvision"),
    "eeglab": _read_mne("eeglab"),
    "xdf": _read_xdf,
}
