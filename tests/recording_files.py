"""Factories for recording files: small EEG files in every format ``neurostream.recordings`` reads.

Each writer takes µV samples ``[n_channels, n_samples]`` and events ``(sample, code)`` so a
test can compare what it wrote with what the reader returns. XDF has no writer on PyPI
that works without LSL, so ``write_xdf`` writes the container itself (the XDF 1.0
specification: the magic ``XDF:``, then chunks of a variable-length length, a 2-byte tag
and content; tag 1 FileHeader, 2 StreamHeader, 3 Samples, 4 ClockOffset, 6 StreamFooter).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

MUSE_CHANNELS = ("TP9", "AF7", "AF8", "TP10")
# Real recordings beside the checkout (../shared/data); never copied into the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EEG_NOTEBOOKS = SHARED_DATA / "eeg-notebooks"


def eeg_signal(n_channels: int, n_samples: int, fs: float, seed: int = 0) -> np.ndarray:
    """Deterministic µV samples: a 10 Hz sine per channel (distinct amplitudes) plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / fs
    amplitude = 10.0 * (1 + np.arange(n_channels))[:, None]
    return amplitude * np.sin(2 * np.pi * 10 * t) + rng.normal(0, 1, (n_channels, n_samples))


def loose_electrode(
    seconds: float = 60.0,
    *,
    fs: float = 256.0,
    bad: int | None = 1,
    bad_std_uv: float = 390.0,
    blinks: Sequence[int] = (),
    seed: int = 0,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Muse-like µV samples ``[4, n]`` with one event a second (every fourth code 2, the
    others 1, from 0.5 s on) where channel ``bad`` (AF7 by default) is a loose electrode:
    white noise of ``bad_std_uv`` against 8 µV on the others, whose peak-to-peak over an
    epoch stays far under 100 µV. ``blinks``: epochs (by event index) that get a 300 µV
    bump on channel 2 (AF8), as a real blink would."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fs)
    data = rng.normal(0.0, 8.0, (4, n))
    if bad is not None:
        data[bad] = rng.normal(0.0, bad_std_uv, n)
    onsets = np.arange(round(0.5 * fs), n - round(fs), round(fs))
    events = [(int(s), 2 if i % 4 == 0 else 1) for i, s in enumerate(onsets)]
    t = np.arange(round(0.2 * fs)) / fs
    for i in blinks:
        start = events[i][0] + round(0.1 * fs)
        data[2, start : start + t.size] += 300.0 * np.sin(np.pi * t / t[-1])
    return data, events


def write_muse_csv(
    path: Path,
    data: np.ndarray,
    events: Sequence[tuple[int, int | str]],
    *,
    fs: float = 256.0,
    t0: float = 151462.006,
    marker: str = "Marker0",
) -> Path:
    """muse-lsl's layout: timestamps, TP9, AF7, AF8, TP10, Right AUX, Marker0 (ms times);
    a marker may be a text, as a stimulus program's string markers are recorded."""
    n = data.shape[1]
    markers: list[int | str] = [0] * n
    for sample, code in events:
        markers[sample] = code
    times = np.round(t0 + np.arange(n) / fs, 3)
    aux = np.full(n, 80.078)
    lines = [",".join(["timestamps", *MUSE_CHANNELS, "Right AUX", marker])]
    for i in range(n):
        cells = [f"{times[i]:.3f}", *(f"{v:.3f}" for v in data[:4, i]), f"{aux[i]:.3f}"]
        lines.append(",".join([*cells, str(markers[i])]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_openbci_csv(
    path: Path, data: np.ndarray, events: Sequence[tuple[int, int]], *, fs: int = 250
) -> Path:
    """OpenBCI GUI's raw file (Cyton, v5/v6): '%' header lines, then ', '-separated columns."""
    n_ch, n = data.shape
    markers = np.zeros(n)
    for sample, code in events:
        markers[sample] = code
    columns = [
        "Sample Index",
        *(f"EXG Channel {i}" for i in range(n_ch)),
        *(f"Accel Channel {i}" for i in range(3)),
        "Not Used",
        *(f"Digital Channel {i} (D{d})" for i, d in enumerate((11, 12, 13, 17))),
        "Not Used",
        "Digital Channel 4 (D18)",
        *(f"Analog Channel {i}" for i in range(3)),
        "Timestamp",
        "Marker Channel",
        "Timestamp (Formatted)",
    ]
    lines = [
        "%OpenBCI Raw EXG Data",
        f"%Number of channels = {n_ch}",
        f"%Sample Rate = {fs} Hz",
        "%Board = OpenBCI_GUI$BoardCytonSerial",
        ", ".join(columns),
    ]
    t0 = 1_700_000_000.0
    for i in range(n):
        cells = [
            f"{i % 256:.1f}",
            *(f"{v:.6f}" for v in data[:, i]),
            "0.002",
            "-0.010",
            "0.998",
            *(["0.0"] * 7),
            *(["0.0"] * 3),
            f"{t0 + i / fs:.6f}",
            f"{markers[i]:.1f}",
            "2023-11-14 22:13:20.000",
        ]
        lines.append(", ".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def mne_raw(data_uv: np.ndarray, names: Sequence[str], fs: float, events=(), stim: bool = False):
    """An MNE RawArray of EEG channels (volts) with events as annotations, or as a stim channel."""
    import mne

    n = data_uv.shape[1]
    types = ["eeg"] * len(names)
    data = data_uv * 1e-6
    if stim:
        trigger = np.zeros((1, n))
        for sample, code in events:
            trigger[0, sample : sample + 3] = code
        data = np.vstack([data, trigger])
        types.append("stim")
        names = [*names, "STI 014"]
    raw = mne.io.RawArray(data, mne.create_info(list(names), fs, types), verbose="error")
    if events and not stim:
        onsets = [sample / fs for sample, _ in events]
        raw.set_annotations(
            mne.Annotations(onsets, [0.0] * len(onsets), [str(c) for _, c in events])
        )
    return raw


# --- XDF ---------------------------------------------------------------------------------


def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + struct.pack("<B", n)
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _header_xml(
    name: str, type_: str, labels: Sequence[str], srate: float, fmt: str, types: Sequence[str]
) -> bytes:
    channels = "".join(
        f"<channel><label>{escape(label)}</label><unit>microvolts</unit><type>{kind}</type>"
        "</channel>"
        for label, kind in zip(labels, types, strict=True)
    )
    return (
        '<?xml version="1.0"?><info>'
        f"<name>{escape(name)}</name><type>{type_}</type>"
        f"<channel_count>{len(labels)}</channel_count><nominal_srate>{srate}</nominal_srate>"
        f"<channel_format>{fmt}</channel_format><source_id>{escape(name)}</source_id>"
        "<version>1.1</version><created_at>0</created_at><uid>0</uid>"
        f"<desc><channels>{channels}</channels></desc></info>"
    ).encode()


def _footer_xml(stamps: np.ndarray) -> bytes:
    first, last = (float(stamps[0]), float(stamps[-1])) if len(stamps) else (0.0, 0.0)
    return (
        '<?xml version="1.0"?><info>'
        f"<first_timestamp>{first}</first_timestamp><last_timestamp>{last}</last_timestamp>"
        f"<sample_count>{len(stamps)}</sample_count><clock_offsets></clock_offsets></info>"
    ).encode()


def write_xdf(
    path: Path,
    data: np.ndarray,
    labels: Sequence[str],
    fs: float,
    markers: Sequence[tuple[float, str | int]],
    *,
    t0: float = 1000.0,
    marker_format: str = "string",
    eeg_name: str = "Muse",
    channel_types: Sequence[str] | None = None,
) -> Path:
    """One EEG stream (float32, µV, regular timestamps from ``t0``) and one marker stream.

    ``markers`` are ``(timestamp, value)`` pairs; values are written as strings
    (``marker_format="string"``) or as int32 numbers. ``channel_types`` default to EEG.
    """
    out = bytearray(b"XDF:")
    out += _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')
    stamps = t0 + np.arange(data.shape[1]) / fs
    types = list(channel_types) if channel_types is not None else ["EEG"] * len(labels)
    eeg_header = _header_xml(eeg_name, "EEG", labels, fs, "float32", types)
    out += _chunk(2, struct.pack("<I", 1) + eeg_header)
    out += _chunk(
        2,
        struct.pack("<I", 2)
        + _header_xml("Markers", "Markers", ["m"], 0, marker_format, ["Markers"]),
    )
    body = bytearray(struct.pack("<I", 1) + _varlen(data.shape[1]))
    for i in range(data.shape[1]):
        body += b"\x08" + struct.pack("<d", stamps[i])
        body += struct.pack(f"<{data.shape[0]}f", *data[:, i])
    out += _chunk(3, bytes(body))
    body = bytearray(struct.pack("<I", 2) + _varlen(len(markers)))
    for stamp, value in markers:
        body += b"\x08" + struct.pack("<d", stamp)
        if marker_format == "string":
            text = str(value).encode()
            body += _varlen(len(text)) + text
        else:
            body += struct.pack("<i", int(value))
    out += _chunk(3, bytes(body))
    for stream_id in (1, 2):  # the recorder measures each stream's clock offset (here: none)
        for when in (stamps[0], stamps[-1]):
            out += _chunk(4, struct.pack("<Idd", stream_id, when, 0.0))
    out += _chunk(6, struct.pack("<I", 1) + _footer_xml(stamps))
    out += _chunk(6, struct.pack("<I", 2) + _footer_xml(np.array([s for s, _ in markers])))
    path.write_bytes(bytes(out))
    return path
