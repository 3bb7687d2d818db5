"""Recording readers: one small file per format written here and read back, and real files."""

from __future__ import annotations

import csv
from pathlib import Path

import mne
import numpy as np
import pylsl
import pytest
from brainflow.board_shim import BoardIds, BoardShim
from brainflow.data_filter import DataFilter

from neurostream.errors import ConfigError, SourceError
from neurostream.recordings import (
    estimate_fs,
    format_of,
    nearest_sample,
    parse_event_mapping,
    read_recording,
    sample_label,
)
from producer.xdf import XdfWriter
from tests.recording_files import (
    EEG_NOTEBOOKS,
    MUSE_CHANNELS,
    eeg_signal,
    mne_raw,
    write_muse_csv,
    write_openbci_csv,
    write_xdf,
)

EVENTS = [(100, 1), (400, 2), (401, 1), (777, 2)]
NAMES = ["Fz", "Cz", "Pz"]


def assert_events(rec, expected) -> None:
    assert rec.events.dtype == np.int64
    assert rec.events.tolist() == [list(e) for e in expected]


# --- one test per format ---------------------------------------------------------------


def test_muse_lsl_csv(tmp_path: Path) -> None:
    x = eeg_signal(4, 2048, 256.0)
    path = write_muse_csv(tmp_path / "run.csv", x, EVENTS)
    rec = read_recording(path)
    assert (rec.format, rec.channels, rec.fs) == ("csv", MUSE_CHANNELS, 256.0)
    assert rec.dropped == ("Right AUX",)
    np.testing.assert_allclose(rec.data, x, atol=5e-4)  # written with 3 decimals
    assert rec.data.dtype == np.float64 and rec.data.shape == (4, 2048)
    assert_events(rec, EVENTS)
    assert rec.times[0] == pytest.approx(151462.006)
    assert rec.duration_s == pytest.approx(8.0)
    aux = read_recording(path, channels=["Right AUX", "TP9"])
    assert aux.channels == ("Right AUX", "TP9")
    np.testing.assert_allclose(aux.data[0], 80.078)
    np.testing.assert_allclose(aux.data[1], x[0], atol=5e-4)
    assert aux.dropped == ("AF7", "AF8", "TP10")


def test_openbci_gui_csv(tmp_path: Path) -> None:
    x = eeg_signal(8, 1000, 250.0)
    rec = read_recording(write_openbci_csv(tmp_path / "OpenBCI-RAW-x.txt", x, EVENTS, fs=250))
    assert rec.channels == tuple(f"EXG Channel {i}" for i in range(8))
    assert rec.fs == 250.0  # from '%Sample Rate = 250 Hz'
    np.testing.assert_allclose(rec.data, x, atol=1e-6)
    assert_events(rec, EVENTS)
    assert "Accel Channel 0" in rec.dropped and "Analog Channel 2" in rec.dropped
    assert rec.times[1] - rec.times[0] == pytest.approx(1 / 250, abs=1e-6)  # Unix seconds
    accel = read_recording(rec.path, channels=["Accel Channel 2"])
    np.testing.assert_allclose(accel.data, 0.998)


def test_brainflow_file_in_a_named_boards_layout(tmp_path: Path) -> None:
    board = BoardIds.MUSE_2016_BOARD.value
    rows, n = BoardShim.get_num_rows(board), 1024
    raw = np.zeros((rows, n))
    x = eeg_signal(4, n, 256.0)
    raw[BoardShim.get_eeg_channels(board)] = x
    raw[BoardShim.get_timestamp_channel(board)] = 1.7e9 + np.arange(n) / 256
    for sample, code in EVENTS:
        raw[BoardShim.get_marker_channel(board), sample] = code
    path = tmp_path / "muse.csv"
    DataFilter.write_file(raw, str(path), "w")
    rec = read_recording(path, board="MUSE_2016_BOARD")  # headerless .csv: BrainFlow
    assert (rec.format, rec.channels, rec.fs) == ("brainflow", MUSE_CHANNELS, 256.0)
    np.testing.assert_allclose(rec.data, x, atol=1e-6)  # write_file keeps 6 decimals
    assert_events(rec, EVENTS)
    assert rec.dropped == ("package_num",)
    assert read_recording(path, format="brainflow", board=board).channels == MUSE_CHANNELS


def test_brainflow_synthetic_board_is_the_default(tmp_path: Path) -> None:
    board = BoardIds.SYNTHETIC_BOARD.value
    raw = np.zeros((BoardShim.get_num_rows(board), 300))
    raw[BoardShim.get_eeg_channels(board)] = 7.5
    raw[BoardShim.get_marker_channel(board), 42] = 3
    path = tmp_path / "synthetic.csv"
    DataFilter.write_file(raw, str(path), "w")
    rec = read_recording(path)
    assert rec.channels == tuple(BoardShim.get_eeg_names(board)) and rec.fs == 250.0
    assert_events(rec, [(42, 3)])
    assert "accel0" in rec.dropped and "battery" in rec.dropped
    np.testing.assert_allclose(rec.data, 7.5)


@pytest.mark.parametrize(
    ("fmt", "name", "atol"),
    [("edf", "rec.edf", 1e-3), ("bdf", "rec.bdf", 1e-4), ("eeglab", "rec.set", 1e-4)],
)
def test_mne_exported_formats(tmp_path: Path, fmt: str, name: str, atol: float) -> None:
    x = eeg_signal(3, 1000, 250.0)
    path = tmp_path / name
    mne.export.export_raw(path, mne_raw(x, NAMES, 250.0, EVENTS), fmt=fmt, verbose="error")
    rec = read_recording(path)
    assert (rec.format, rec.channels, rec.fs) == (fmt, tuple(NAMES), 250.0)
    np.testing.assert_allclose(rec.data, x, atol=atol)  # µV, not volts
    assert_events(rec, EVENTS)
    assert rec.times[:2].tolist() == [0.0, 1 / 250]


def test_brainvision(tmp_path: Path) -> None:
    x = eeg_signal(3, 1000, 500.0)
    raw = mne_raw(x, NAMES, 500.0)
    raw.set_annotations(
        mne.Annotations(
            [0.2, 0.8, 1.0], [0, 0, 0], ["Stimulus/S  2", "Stimulus/S  1", "Response/R  3"]
        )
    )
    path = tmp_path / "rec.vhdr"
    mne.export.export_raw(path, raw, fmt="brainvision", verbose="error")
    rec = read_recording(path)
    assert (rec.format, rec.channels, rec.fs) == ("brainvision", tuple(NAMES), 500.0)
    np.testing.assert_allclose(rec.data, x, atol=1e-4)
    code = rec.event_names["Response/R  3"]
    assert code not in (1, 2)  # text gets a code no numeric marker uses
    assert_events(rec, [(100, 2), (400, 1), (500, code)])


def test_fif_with_annotations_and_a_stim_channel(tmp_path: Path) -> None:
    x = eeg_signal(3, 1000, 256.0)
    path = tmp_path / "rec_raw.fif"
    mne_raw(x, NAMES, 256.0, EVENTS[:2], stim=True).save(path, verbose="error")
    rec = read_recording(path)
    assert (rec.format, rec.channels, rec.fs, rec.dropped) == (
        "fif",
        tuple(NAMES),
        256.0,
        ("STI 014",),
    )
    np.testing.assert_allclose(rec.data, x, rtol=1e-6)
    assert_events(rec, EVENTS[:2])
    texts = mne_raw(x, NAMES, 256.0)
    texts.set_annotations(mne.Annotations([1.0, 2.0, 3.0], [0, 0, 0], ["go", "BAD_blink", "stop"]))
    texts.save(tmp_path / "text_raw.fif.gz", verbose="error")
    rec = read_recording(tmp_path / "text_raw.fif.gz")
    assert rec.event_names == {"go": 1, "stop": 2}  # BAD_ annotations are not events
    assert_events(rec, [(256, 1), (768, 2)])


def test_xdf_eeg_and_marker_streams(tmp_path: Path) -> None:
    fs, t0 = 250.0, 5000.0
    x = eeg_signal(4, 1000, fs)
    markers = [
        (t0 - 1.0, "before the recording"),
        (t0 + 100 / fs, "target"),
        (t0 + 400.3 / fs, "2"),
        (t0 + 776.8 / fs, "nontarget"),
    ]
    labels, types = ["C3", "Cz", "C4", "AUX1"], ["EEG", "EEG", "EEG", "AUX"]
    path = write_xdf(tmp_path / "rec.xdf", x, labels, fs, markers, t0=t0, channel_types=types)
    rec = read_recording(path)
    assert (rec.format, rec.channels, rec.fs) == ("xdf", ("C3", "Cz", "C4"), 250.0)
    assert rec.dropped == ("AUX1",)
    np.testing.assert_allclose(rec.data, x[:3], rtol=1e-6)
    assert rec.event_names == {"nontarget": 1, "target": 3}
    assert_events(rec, [(100, 3), (400, 2), (777, 1)])  # nearest sample; outside: no event
    assert rec.times[0] == pytest.approx(t0)
    numeric = write_xdf(tmp_path / "n.xdf", x, ["C3", "Cz", "C4", "AUX1"], fs,
                        [(t0 + 1.0, 5)], t0=t0, marker_format="int32")  # fmt: skip
    assert_events(read_recording(numeric, stream="Muse"), [(250, 5)])


def test_xdf_marker_streams_as_the_lsl_source_records_them(tmp_path: Path) -> None:
    # what a live session leaves (producer.xdf.XdfWriter, the outlets' own StreamInfo XML):
    # a trigger box at the EEG rate with two lines, a program's two text columns under its
    # own type, and an irregular three-axis stream that is not a marker stream
    fs, t0, n = 250.0, 5000.0, 1000
    eeg = pylsl.StreamInfo("Amp", "EEG", 3, fs, "float32", "amp")
    channels = eeg.desc().append_child("channels")
    for label in ("C3", "Cz", "C4"):
        channels.append_child("channel").append_child_value("label", label)
    x = eeg_signal(3, n, fs)
    grid = t0 + np.arange(n) / fs
    lines = np.zeros((n, 2), dtype=np.int16)
    lines[100, 1], lines[500, 0] = 4, 3  # the code on whichever line carries it
    program = [["", "target"], ["fixation", ""], ["", ""]]
    with XdfWriter(tmp_path / "live.xdf") as xdf:
        amp = xdf.add_stream(eeg.as_xml())
        box = xdf.add_stream(pylsl.StreamInfo("Box", "Markers", 2, fs, "int16", "box").as_xml())
        texts = xdf.add_stream(pylsl.StreamInfo("Task", "Stim", 2, 0, "string", "t").as_xml())
        axes = xdf.add_stream(pylsl.StreamInfo("Acc", "Accel", 3, 0, "float32", "a").as_xml())
        xdf.write(amp, x.T.astype(np.float32), grid)
        xdf.write(box, lines, grid)
        xdf.write(texts, program, t0 + np.array([300.2, 699.6, 800.0]) / fs)
        xdf.write(axes, np.ones((2, 3), dtype=np.float32), t0 + np.array([1.0, 2.0]))
    rec = read_recording(tmp_path / "live.xdf")
    assert rec.channels == ("C3", "Cz", "C4")
    names = rec.event_names
    assert set(names) == {"fixation", "target"} and not {3, 4} & set(names.values())
    assert_events(rec, [(100, 4), (300, names["target"]), (500, 3), (700, names["fixation"])])


def test_nearest_sample_and_sample_label() -> None:
    times = np.array([0.0, 1.0, 2.0, 4.0])
    got = [nearest_sample(times, t) for t in (-5.0, 0.4, 0.5, 0.6, 2.9, 3.1, 9.0)]
    assert got == [0, 0, 0, 1, 2, 3, 3]  # a tie goes to the earlier sample
    assert nearest_sample(np.array([7.0]), 100.0) == 0
    assert [sample_label(v) for v in (["", " ", "go"], [0, 0.0, 5], ["0", ""], 3.0)] == [
        "go", 5, None, 3,
    ]  # fmt: skip


# --- real recordings (../shared/data) ------------------------------------------------------


def real(folder: str, run: int) -> Path:
    files = sorted((EEG_NOTEBOOKS / folder).glob("*.csv"))
    if not files:
        pytest.skip(f"real recordings absent: {EEG_NOTEBOOKS / folder} (../shared/data)")
    return files[run - 1]


def marker_column(path: Path) -> tuple[list[float], list[int]]:
    with path.open() as f:
        rows = list(csv.reader(f))
    return [float(r[0]) for r in rows[1:]], [int(float(r[-1])) for r in rows[1:]]


@pytest.mark.parametrize(
    "folder",
    [
        "visual/P300/subject2/session1",
        "auditory/P300/subject1/session1",
        "visual/SSVEP/subject1/session1",
    ],
)
def test_real_muse_recordings(folder: str) -> None:
    path = real(folder, 1)
    rec = read_recording(path)
    assert rec.fs == 256.0  # ms-rounded times: a plain median step would say 250
    assert rec.channels == MUSE_CHANNELS and rec.dropped == ("Right AUX",)
    times, markers = marker_column(path)
    codes, counts = np.unique([m for m in markers if m], return_counts=True)
    assert rec.event_counts() == dict(zip(codes.tolist(), counts.tolist(), strict=True))
    assert rec.data.shape == (4, len(markers))
    assert read_recording(path, channels=["Right AUX"]).data.shape == (1, len(markers))


def test_backward_timestamps_move_no_event() -> None:
    path = real("auditory/P300/subject1/session1", 1)
    times, markers = marker_column(path)
    assert np.sum(np.diff(times) < 0) > 10  # the file's clock does step back
    rec = read_recording(path)
    expected = [[i, m] for i, m in enumerate(markers) if m]
    assert rec.events.tolist() == expected  # every marker row, at its row, with its code
    np.testing.assert_array_equal(rec.times, times)  # times kept as recorded


# --- helpers ---------------------------------------------------------------------------------


def test_pick_reorders_and_records_what_it_left_out(tmp_path: Path) -> None:
    rec = read_recording(write_muse_csv(tmp_path / "r.csv", eeg_signal(4, 1024, 256.0), EVENTS))
    picked = rec.pick(["AF8", "TP9"])
    assert picked.channels == ("AF8", "TP9")
    np.testing.assert_array_equal(picked.data, rec.data[[2, 0]])
    assert picked.dropped == ("Right AUX", "AF7", "TP10")
    assert read_recording(rec.path, drop=["AF7"]).channels == ("TP9", "AF8", "TP10")
    with pytest.raises(ConfigError, match=r"no channel 'Oz'.*TP9, AF7, AF8, TP10"):
        rec.pick(["Oz"])
    with pytest.raises(ConfigError, match=r"Right AUX of .*r\.csv was left out when it was read"):
        rec.pick(["Right AUX"])
    with pytest.raises(ConfigError, match=r"'tp9': did you mean 'TP9'"):
        read_recording(rec.path, channels=["tp9"])


def test_fs_estimate_and_override(tmp_path: Path) -> None:
    t = np.round(100 + np.arange(3000) / 256, 3)
    assert estimate_fs(t) == 256.0
    t[1000:1010] -= 0.05  # a clock that steps back
    assert estimate_fs(t) == 256.0
    assert estimate_fs(np.arange(1000) / 333.3) == 333.3  # not near a nominal rate: kept
    path = write_muse_csv(tmp_path / "r.csv", eeg_signal(4, 512, 256.0), [])
    assert read_recording(path, fs=255.0).fs == 255.0


def test_parse_event_mapping() -> None:
    assert parse_event_mapping("target=2,nontarget=1") == {"target": 2, "nontarget": 1}
    assert parse_event_mapping(" 30hz = 1 , 20hz=2 ") == {"30hz": 1, "20hz": 2}
    assert parse_event_mapping("target=Target,nontarget=2") == {"target": "Target", "nontarget": 2}
    for bad, why in [
        ("", "empty"),
        ("target", "cannot read 'target'"),
        ("target=nan", "means 'no event'"),
        ("target=0", "means 'no event'"),
        ("a=1,a=2", "given twice"),
        ("a=1,b=1", "given to both 'a' and 'b'"),
        ("a=1,,b=2", "empty item"),
    ]:
        with pytest.raises(ConfigError, match=why) as caught:
            parse_event_mapping(bad)
        assert caught.value.field == "events"


# --- errors ----------------------------------------------------------------------------------


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.edf does not exist"):
        read_recording(tmp_path / "missing.edf")
    odd = tmp_path / "rec.mat"
    odd.write_bytes(b"\0")
    with pytest.raises(SourceError, match=r"rec\.mat: unknown recording extension '\.mat'") as e:
        read_recording(odd)
    assert "format=" in (e.value.hint or "")
    with pytest.raises(SourceError, match="unknown recording extension"):
        format_of("x.mat")
    with pytest.raises(ConfigError, match="unknown recording format 'matlab'"):
        read_recording(odd, format="matlab")


def test_csv_without_marker_column_has_no_events(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("time,C3,C4\n" + "".join(f"{i / 128},{i},{-i}\n" for i in range(256)))
    rec = read_recording(path)
    assert rec.channels == ("C3", "C4") and rec.fs == 128.0
    assert rec.events.shape == (0, 2) and rec.event_counts() == {}


def test_csv_without_times_needs_fs(tmp_path: Path) -> None:
    path = tmp_path / "untimed.csv"
    path.write_text("C3,C4,Marker\n" + "".join(f"{i},{-i},{int(i == 5)}\n" for i in range(64)))
    with pytest.raises(SourceError, match=r"untimed\.csv \(csv\): it has no time column") as e:
        read_recording(path)
    assert "fs=" in (e.value.hint or "")
    rec = read_recording(path, fs=128)
    assert rec.fs == 128.0 and rec.times[1] == pytest.approx(1 / 128)
    assert_events(rec, [(5, 1)])


def test_brainflow_file_with_another_boards_layout(tmp_path: Path) -> None:
    path = tmp_path / "muse.csv"
    DataFilter.write_file(np.zeros((7, 64)), str(path), "w")
    with pytest.raises(SourceError) as caught:
        read_recording(path)  # the synthetic board's layout: 32 rows
    message = str(caught.value)
    assert "muse.csv" in message and "SYNTHETIC_BOARD" in message
    assert "7 rows per sample" in message and "lays out 32" in message
    assert "MUSE_2016_BOARD" in (caught.value.hint or "")
    with pytest.raises(ConfigError, match="unknown BrainFlow board 'MUSE'"):
        read_recording(path, board="MUSE")
    with pytest.raises(SourceError, match=r"muse\.csv as csv: its first line is numbers") as e:
        read_recording(path, format="csv")
    assert "format='brainflow'" in (e.value.hint or "")


def test_unreadable_files_name_the_format(tmp_path: Path) -> None:
    bad = tmp_path / "broken.edf"
    bad.write_text("not an EDF file")
    with pytest.raises(SourceError, match=r"cannot read .*broken\.edf as edf: MNE"):
        read_recording(bad)
    empty = tmp_path / "empty.xdf"
    empty.write_bytes(b"XDF:")
    with pytest.raises(
        SourceError, match=r"empty\.xdf as xdf: it has no EEG stream \(streams: none\)"
    ):
        read_recording(empty)
