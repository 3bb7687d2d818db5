"""XdfWriter: files from real pylsl StreamInfo XML, read back by pyxdf and read_recording."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
import pytest
import pyxdf

from neurostream.errors import ConfigError, SourceError
from neurostream.recordings import read_recording
from producer.xdf import XdfWriter
from tests.recording_files import EEG_NOTEBOOKS

FS = 256.0
T0 = 5000.0
MUSE = ("TP9", "AF7", "AF8", "TP10", "Right AUX")
UNEVEN = (1, 7, 32, 5, 100, 13, 64, 3)  # chunk sizes as inlets deliver them, cycled
BOUNDARY = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")


def stream_info(
    name: str,
    type_: str,
    channels: tuple[str, ...],
    fs: float,
    fmt: str,
    *,
    unit: str = "microvolts",
) -> str:
    """A real StreamInfo's XML with desc/channels/channel (label, unit, type), as muse-lsl."""
    info = pylsl.StreamInfo(name, type_, len(channels), fs, fmt, f"{name}-src")
    group = info.desc().append_child("channels")
    for label in channels:
        ch = group.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", type_)
    return str(info.as_xml())


def eeg(n: int, n_channels: int = 5, seed: int = 0) -> np.ndarray:
    """µV samples [n, n_channels]: distinct 10 Hz sines plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    return (20.0 * (1 + np.arange(n_channels)) * np.sin(2 * np.pi * 10 * t)[:, None]) + rng.normal(
        0, 3, (n, n_channels)
    )


def chunks(n: int, sizes: tuple[int, ...] = UNEVEN) -> list[slice]:
    out, start, k = [], 0, 0
    while start < n:
        out.append(slice(start, min(n, start + sizes[k % len(sizes)])))
        start, k = out[-1].stop, k + 1
    return out


def tags(path: Path) -> list[int]:
    """The chunk tags of a file, walking its length fields to exactly the end of the file."""
    data = path.read_bytes()
    assert data[:4] == b"XDF:"
    pos, found = 4, []
    while pos < len(data):
        width = data[pos]
        assert width in (1, 4, 8), f"bad varlen width {width} at {pos}"
        length = int.from_bytes(data[pos + 1 : pos + 1 + width], "little")
        pos += 1 + width
        found.append(struct.unpack_from("<H", data, pos)[0])
        pos += length
    assert pos == len(data)
    return found


def load(path: Path, **kwargs):
    streams, header = pyxdf.load_xdf(str(path), **kwargs)
    return {s["info"]["name"][0]: s for s in streams}, header


# --- one session: EEG float32 + int32 markers + string markers, in uneven chunks -----------

N = 4000
INT_MARKS = [(300, 1), (812, 2), (1500, 1), (2222, 2), (3999, 1)]
TEXT_MARKS = [(100, "target"), (640, "nontarget"), (2048, "target"), (3000, "nontarget")]


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray, XdfWriter]:
    """The file a live session leaves: chunks in time order, markers 1 ms after their sample."""
    path = tmp_path_factory.mktemp("xdf") / "session.xdf"
    data, stamps = eeg(N), T0 + np.arange(N) / FS
    writer = XdfWriter(path)
    writer.open()
    ids = (
        writer.add_stream(stream_info("Muse", "EEG", MUSE, FS, "float32")),
        writer.add_stream(stream_info("Codes", "Markers", ("code",), 0, "int32")),
        writer.add_stream(stream_info("Words", "Markers", ("word",), 0, "string")),
    )
    assert ids == (1, 2, 3)
    ints, texts = list(INT_MARKS), list(TEXT_MARKS)
    for part in chunks(N):
        writer.write(1, data[part], stamps[part])
        while ints and ints[0][0] < part.stop:
            s, code = ints.pop(0)
            writer.write(2, np.array([[code]], dtype=np.int32), np.array([stamps[s] + 0.001]))
        while texts and texts[0][0] < part.stop:
            s, word = texts.pop(0)
            writer.write(3, [[word]], [stamps[s] + 0.001])
    for sid in ids:
        writer.clock_offset(sid, T0, 0.0)
        writer.clock_offset(sid, T0 + N / FS, 0.0)
    writer.close()
    return path, data, stamps, writer


def test_pyxdf_reads_every_value_and_timestamp_as_written(session):
    path, data, stamps, writer = session
    streams, header = load(path, dejitter_timestamps=False)
    assert header["info"]["version"] == ["1.0"]
    muse = streams["Muse"]
    assert muse["time_series"].dtype == np.float32
    np.testing.assert_array_equal(muse["time_series"], data.astype(np.float32))
    np.testing.assert_array_equal(muse["time_stamps"], stamps)
    labels = [c["label"][0] for c in muse["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == list(MUSE)
    codes = streams["Codes"]
    np.testing.assert_array_equal(codes["time_series"][:, 0], [c for _, c in INT_MARKS])
    np.testing.assert_array_equal(codes["time_stamps"], [stamps[s] + 0.001 for s, _ in INT_MARKS])
    words = streams["Words"]
    assert words["time_series"] == [[w] for _, w in TEXT_MARKS]
    np.testing.assert_array_equal(words["time_stamps"], [stamps[s] + 0.001 for s, _ in TEXT_MARKS])
    assert writer.samples == {1: N, 2: len(INT_MARKS), 3: len(TEXT_MARKS)}
    footer = muse["footer"]["info"]
    assert footer["sample_count"] == [str(N)]
    assert float(footer["first_timestamp"][0]) == stamps[0]
    assert float(footer["last_timestamp"][0]) == stamps[-1]
    assert muse["clock_times"] == [T0, T0 + N / FS] and muse["clock_values"] == [0.0, 0.0]


def test_pyxdf_dejittered_timestamps_stay_on_the_sample_clock(session):
    path, _, stamps, _ = session
    streams, _ = load(path)  # defaults: clock sync and dejitter, as read_recording loads
    assert np.max(np.abs(streams["Muse"]["time_stamps"] - stamps)) < 1e-6
    assert streams["Muse"]["info"]["effective_srate"] == pytest.approx(FS, rel=1e-9)


def test_read_recording_gives_channels_microvolts_and_events_on_their_samples(session):
    path, data, _, _ = session
    rec = read_recording(path)
    assert rec.format == "xdf" and rec.fs == FS
    assert rec.channels + rec.dropped == MUSE  # the AUX channel is the reader's to drop
    every = read_recording(path, channels=MUSE)
    assert every.channels == MUSE
    np.testing.assert_array_equal(every.data, data.astype(np.float32).astype(np.float64).T)
    # numeric codes keep theirs; text gets the smallest codes they leave free, alphabetically
    assert rec.event_names == {"nontarget": 3, "target": 4}
    expected = sorted(INT_MARKS + [(s, rec.event_names[w]) for s, w in TEXT_MARKS])
    assert rec.events.tolist() == [list(e) for e in expected]


def test_file_is_the_chunk_sequence_of_the_spec(session):
    path, *_ = session
    found = tags(path)
    assert found[:4] == [1, 2, 2, 2] and found[-3:] == [6, 6, 6]
    assert found.count(3) == len(chunks(N)) + len(INT_MARKS) + len(TEXT_MARKS)
    assert found.count(4) == 6 and found.count(5) == 1  # 15.6 s of data: one boundary


# --- boundaries, crashes, formats, clocks ---------------------------------------------------


def one_second_chunks(path: Path, seconds: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``seconds`` 1-s chunks of one EEG stream; the file size after each write."""
    n = int(seconds * FS)
    data, stamps = eeg(n), T0 + np.arange(n) / FS
    sizes = []
    with XdfWriter(path) as writer:
        sid = writer.add_stream(stream_info("Muse", "EEG", MUSE, FS, "float32"))
        for part in chunks(n, (int(FS),)):
            writer.write(sid, data[part], stamps[part])
            sizes.append(path.stat().st_size)
    return data, stamps, sizes


def test_a_boundary_follows_every_ten_seconds_of_data(tmp_path):
    path = tmp_path / "b.xdf"
    one_second_chunks(path, 25)
    # chunk 10 ends at 10.996 s past the first sample, chunk 20 ten seconds after that
    assert tags(path) == [1, 2] + [3] * 11 + [5] + [3] * 10 + [5] + [3] * 4 + [6]
    assert path.read_bytes().count(BOUNDARY) == 2


def test_a_damaged_chunk_costs_only_the_data_up_to_the_next_boundary(tmp_path):
    path = tmp_path / "damaged.xdf"
    data, stamps, sizes = one_second_chunks(path, 25)
    raw = bytearray(path.read_bytes())
    raw[sizes[4]] = 0x02  # chunk 5's length field: no valid variable-length integer
    path.write_bytes(bytes(raw))
    streams, _ = load(path, dejitter_timestamps=False)
    kept = np.r_[0 : 5 * int(FS), 11 * int(FS) : 25 * int(FS)]  # chunks 5-10 lost
    np.testing.assert_array_equal(streams["Muse"]["time_stamps"], stamps[kept])
    np.testing.assert_array_equal(streams["Muse"]["time_series"], data[kept].astype(np.float32))


def test_a_writer_that_crashes_leaves_a_file_both_readers_read(tmp_path):
    path = tmp_path / "crash.xdf"
    script = textwrap.dedent(
        f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from producer.xdf import XdfWriter
        w = XdfWriter({str(path)!r})
        w.open()
        sid = w.add_stream(sys.stdin.read())
        for k in range(20):
            t = {T0} + np.arange(k * 64, (k + 1) * 64) / {FS}
            w.write(sid, np.tile(np.arange(k * 64, (k + 1) * 64, dtype=float)[:, None], 5), t)
        os._exit(3)  # no close(): no footers, nothing flushed at exit
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=stream_info("Muse", "EEG", MUSE, FS, "float32"),
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert tags(path) == [1, 2] + [3] * 20
    streams, _ = load(path, dejitter_timestamps=False)
    assert streams["Muse"]["time_series"].shape == (1280, 5)
    np.testing.assert_array_equal(streams["Muse"]["time_series"][:, 2], np.arange(1280))
    rec = read_recording(path, channels=MUSE)
    assert rec.n_samples == 1280
    np.testing.assert_array_equal(rec.data[2], np.arange(1280))


def test_a_writer_never_closed_is_readable_while_it_records(tmp_path):
    path = tmp_path / "open.xdf"
    writer = XdfWriter(path)
    writer.open()
    sid = writer.add_stream(stream_info("Muse", "EEG", MUSE, FS, "float32"))
    data, stamps = eeg(600), T0 + np.arange(600) / FS
    for part in chunks(600):
        writer.write(sid, data[part], stamps[part])
    streams, _ = load(path, dejitter_timestamps=False)
    np.testing.assert_array_equal(streams["Muse"]["time_series"], data.astype(np.float32))
    assert "footer" not in streams["Muse"]
    writer.close()
    writer.close()  # idempotent
    assert tags(path)[-1] == 6


NUMERIC = [
    ("float32", np.dtype(np.float32)),
    ("double64", np.dtype(np.float64)),
    ("int8", np.dtype(np.int8)),
    ("int16", np.dtype(np.int16)),
    ("int32", np.dtype(np.int32)),
    ("int64", np.dtype(np.int64)),
]


@pytest.mark.parametrize(("fmt", "dtype"), NUMERIC, ids=[f for f, _ in NUMERIC])
def test_every_numeric_format_round_trips_exactly(tmp_path, fmt, dtype):
    n = 700
    if dtype.kind == "i":  # random values plus both extremes of the type
        info = np.iinfo(dtype)
        values = np.random.default_rng(1).integers(info.min, info.max, (n, 3), endpoint=True)
        values[:2] = [[info.min] * 3, [info.max] * 3]
        values = values.astype(dtype)
    else:  # EEG-like values plus the largest, the smallest normal and a negative zero
        limits = np.finfo(dtype)
        values = (eeg(n, 3) * 1e3).astype(dtype)
        values[0] = [limits.max, limits.tiny, -0.0]
    stamps = T0 + np.arange(n) / 500.0
    path = tmp_path / f"{fmt}.xdf"
    with XdfWriter(path) as writer:
        sid = writer.add_stream(stream_info("S", "EEG", ("a", "b", "c"), 500.0, fmt))
        for part in chunks(n):
            writer.write(sid, values[part], stamps[part])
    streams, _ = load(path, dejitter_timestamps=False)
    assert streams["S"]["time_series"].dtype == dtype
    np.testing.assert_array_equal(streams["S"]["time_series"], values)
    np.testing.assert_array_equal(streams["S"]["time_stamps"], stamps)


def test_integer_values_given_as_floats_are_stored_when_exact(tmp_path):
    with XdfWriter(tmp_path / "m.xdf") as writer:
        sid = writer.add_stream(stream_info("M", "Markers", ("m",), 0, "int16"))
        writer.write(sid, np.array([1.0, -2.0, 300.0]), [T0, T0 + 1, T0 + 2])  # 1-D: one channel
    streams, _ = load(tmp_path / "m.xdf", dejitter_timestamps=False)
    assert streams["M"]["time_series"][:, 0].tolist() == [1, -2, 300]


def test_clock_offsets_are_what_pyxdf_synchronises_with(tmp_path):
    path = tmp_path / "clock.xdf"
    data, stamps = eeg(512), T0 + np.arange(512) / FS
    with XdfWriter(path) as writer:
        sid = writer.add_stream(stream_info("Muse", "EEG", MUSE, FS, "float32"))
        writer.write(sid, data, stamps)
        writer.clock_offset(sid, T0, 0.25)
        writer.clock_offset(sid, T0 + 2, 0.25)
    streams, _ = load(path, synchronize_clocks=True, dejitter_timestamps=False)
    assert streams["Muse"]["clock_times"] == [T0, T0 + 2]
    assert streams["Muse"]["clock_values"] == [0.25, 0.25]
    np.testing.assert_allclose(streams["Muse"]["time_stamps"], stamps + 0.25, rtol=0, atol=1e-9)


def test_chunks_from_two_threads_stay_whole(tmp_path):
    path = tmp_path / "threads.xdf"
    with XdfWriter(path) as writer:
        ids = [
            writer.add_stream(stream_info(f"S{k}", "EEG", ("a", "b"), FS, "int32")) for k in (1, 2)
        ]

        def pump(sid: int) -> None:
            for k in range(300):
                block = np.arange(k * 4, k * 4 + 4, dtype=np.int32)
                writer.write(sid, np.c_[block, -block], T0 + block / FS)

        workers = [threading.Thread(target=pump, args=(sid,)) for sid in ids]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    streams, _ = load(path, dejitter_timestamps=False)
    for name in ("S1", "S2"):
        np.testing.assert_array_equal(streams[name]["time_series"][:, 0], np.arange(1200))
        np.testing.assert_array_equal(streams[name]["time_series"][:, 1], -np.arange(1200))
    assert writer.samples == {1: 1200, 2: 1200}


# --- refusals -------------------------------------------------------------------------------


def test_an_existing_file_is_refused_unless_overwrite(tmp_path):
    path = tmp_path / "taken.xdf"
    path.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists") as caught:
        XdfWriter(path)
    assert str(path) in str(caught.value) and "overwrite=True" in (caught.value.hint or "")
    assert path.read_bytes() == b"precious"
    with XdfWriter(path, overwrite=True) as writer:
        writer.add_stream(stream_info("Muse", "EEG", MUSE, FS, "float32"))
    assert tags(path) == [1, 2, 6]


def test_a_file_created_after_the_writer_is_still_not_overwritten(tmp_path):
    path = tmp_path / "late.xdf"
    writer = XdfWriter(path)
    path.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists"):
        writer.open()
    assert path.read_bytes() == b"precious"


def test_a_missing_directory_is_refused_with_the_path(tmp_path):
    path = tmp_path / "nowhere" / "run.xdf"
    with pytest.raises(ConfigError) as caught:
        XdfWriter(path)
    assert str(path) in str(caught.value) and "does not exist" in str(caught.value)
    assert caught.value.field == "path"
    assert not path.parent.exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_full_disk_is_a_source_error_naming_the_file():
    writer = XdfWriter("/dev/full", overwrite=True)
    with pytest.raises(SourceError, match="/dev/full") as caught:
        writer.open()
    assert "No space left" in str(caught.value)


def test_chunks_the_header_contradicts_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "bad.xdf"
    with XdfWriter(path) as writer:
        eeg_id = writer.add_stream(stream_info("Muse", "EEG", MUSE, FS, "float32"))
        code = writer.add_stream(stream_info("Codes", "Markers", ("c",), 0, "int8"))
        word = writer.add_stream(stream_info("Words", "Markers", ("w",), 0, "string"))
        size = path.stat().st_size
        bad: list[tuple[int, Any, list[float], str]] = [
            (eeg_id, np.zeros((3, 4)), [1.0, 2.0, 3.0], "shape \\(3, 4\\), not \\(3, 5\\)"),
            (eeg_id, np.zeros((2, 5)), [1.0, np.nan], "not finite"),
            (code, np.array([[1.5]]), [1.0], "do not fit int8"),
            (code, np.array([[300]]), [1.0], "do not fit int8"),
            (word, [["a", "b"]], [1.0], "2 values, not 1"),
            (word, [["a"], ["b"]], [1.0], "2 samples and 1 timestamps"),
        ]
        for sid, values, stamps, why in bad:
            with pytest.raises(SourceError, match=why) as caught:
                writer.write(sid, values, stamps)
            assert str(path) in str(caught.value)
        with pytest.raises(SourceError, match="no stream 9"):
            writer.write(9, np.zeros((1, 5)), [1.0])
        undefined = stream_info("U", "Misc", ("x",), 0, "float32").replace("float32", "undefined")
        with pytest.raises(SourceError, match="channel_format is 'undefined'"):
            writer.add_stream(undefined)
        assert path.stat().st_size == size
        assert writer.samples == {1: 0, 2: 0, 3: 0}
    with pytest.raises(SourceError, match="is closed"):
        writer.write(eeg_id, np.zeros((1, 5)), [1.0])


def test_the_file_is_created_with_its_first_stream_and_writes_need_one(tmp_path):
    """A live source that never finds its stream leaves no file behind."""
    path = tmp_path / "early.xdf"
    writer = XdfWriter(path)
    assert not path.exists()
    with pytest.raises(SourceError, match="has no stream 1"):
        writer.write(1, np.zeros((1, 5)), [1.0])
    assert not path.exists()
    stream_id = writer.add_stream(stream_info("Muse", "EEG", MUSE, FS, "float32"))
    writer.write(stream_id, np.zeros((2, 5)), [1.0, 1.004])
    writer.close()
    assert path.read_bytes().startswith(b"XDF:") and writer.samples == {1: 2}


# --- a real recording, streamed through the writer ------------------------------------------


def test_a_real_p300_run_streamed_to_xdf_reads_back_identical(tmp_path):
    files = sorted((EEG_NOTEBOOKS / "visual" / "P300" / "subject2" / "session1").glob("*.csv"))
    if not files:
        pytest.skip(f"real recordings absent: {EEG_NOTEBOOKS} (../shared/data)")
    original = read_recording(files[0])
    assert original.events.shape[0] > 100  # a run of the oddball, not an empty file
    n = original.n_samples
    # the sample clock, not muse-lsl's recorded times, which step backwards within a run
    stamps = T0 + np.arange(n) / original.fs
    samples = original.data.T  # [n, n_channels], µV
    path = tmp_path / "p300.xdf"
    with XdfWriter(path) as writer:
        eeg_id = writer.add_stream(
            stream_info("Muse", "EEG", original.channels, original.fs, "double64")
        )
        marks = writer.add_stream(stream_info("Markers", "Markers", ("code",), 0, "int32"))
        events = original.events.tolist()
        for part in chunks(n, (5,)):  # ~20 ms at 256 Hz, as an inlet delivers them
            writer.write(eeg_id, samples[part], stamps[part])
            now = [(s, c) for s, c in events if part.start <= s < part.stop]
            if now:
                rows = np.array([[c] for _, c in now], dtype=np.int32)
                writer.write(marks, rows, stamps[[s for s, _ in now]])
    assert writer.samples == {1: n, 2: len(events)}
    back = read_recording(path)
    assert back.channels == original.channels and back.fs == original.fs
    np.testing.assert_array_equal(back.events, original.events)
    np.testing.assert_array_equal(back.data, original.data)
    assert back.event_counts() == original.event_counts()
