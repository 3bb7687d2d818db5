"""The file source: a recording replayed once (or looped) with its own markers, times never
ahead of the wall clock, epochs independent of chunking and equal to the offline path's;
the simulated paradigm and BrainFlow's marker-less playback refused on real files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams
from brainflow.data_filter import DataFilter

from neurostream.contract import WindowKind
from neurostream.errors import ConfigError
from neurostream.labelling import EventMapping
from neurostream.recordings import Recording
from neurostream.streamfilter import StreamFilter
from producer.board import BrainFlowSource, Chunk, FileSource, RecordingSource
from producer.offline import epochs_from_recording
from producer.session import Cutter, resolve_paradigm
from producer.settings import ProducerSettings
from producer.sources import open_source
from tests.recording_files import eeg_signal, write_muse_csv

FS = 256.0
EVENTS = [(40, 1), (300, 2), (555, 1), (700, 3), (900, 2), (1100, 1)]


def recording(n: int = 1280, events: list[tuple[int, int]] = EVENTS) -> Recording:
    return Recording(
        path=Path("run1.csv"),
        format="csv",
        channels=("TP9", "AF7", "AF8", "TP10"),
        fs=FS,
        data=eeg_signal(4, n, FS),
        times=np.arange(n) / FS,
        events=np.asarray(events, dtype=np.int64).reshape(-1, 2),
    )


def read_all(source: FileSource, limit: int = 10_000) -> list[Chunk]:
    source.start()
    chunks: list[Chunk] = []
    while (chunk := source.read()) is not None and len(chunks) < limit:
        if chunk.n:
            chunks.append(chunk)
    return chunks


def cut(rec: Recording, max_chunk_s: float, **settings: Any) -> list[tuple[int, int, bytes]]:
    source = FileSource(rec, speed=0, max_chunk_s=max_chunk_s)
    cutter = Cutter(ProducerSettings(**settings), source.fs, source.channels, paradigm="none")
    return [
        (w.header.seq, w.header.marker or 0, w.data.tobytes())
        for chunk in read_all(source)
        for w in cutter.push(chunk)
    ]


def test_one_pass_by_default_with_every_marker_at_its_sample() -> None:
    rec = recording()
    chunks = read_all(FileSource(rec, speed=0, max_chunk_s=0.5))
    markers = np.concatenate([c.markers for c in chunks])
    assert markers.size == rec.n_samples  # once, not looped
    assert [(int(i), int(markers[i])) for i in np.flatnonzero(markers)] == EVENTS
    data = np.concatenate([c.data for c in chunks], axis=1)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, rec.data.astype(np.float32))


def test_loop_replays_the_file_again() -> None:
    rec = recording(n=512, events=[(100, 2)])
    source = FileSource(rec, speed=0, loop=True, max_chunk_s=0.3)
    source.start()
    got = 0
    markers: list[np.ndarray] = []
    while got < 3 * 512:
        chunk = source.read()
        assert chunk is not None
        got += chunk.n
        markers.append(chunk.markers)
    onsets = np.flatnonzero(np.concatenate(markers)[: 3 * 512])
    assert onsets.tolist() == [100, 612, 1124] and source.passes == 3


def test_epochs_do_not_depend_on_chunking() -> None:
    rec = recording()
    reference = cut(rec, 2.0)
    assert [m for _, m, _ in reference] == [code for _, code in EVENTS]
    for max_chunk_s in (0.01, 0.137, 0.5):
        assert cut(rec, max_chunk_s) == reference
    with_sliding = cut(rec, 2.0, sliding=True)
    assert [m for _, m, _ in with_sliding if m] == [code for _, code in EVENTS]
    assert [s for s, _, _ in with_sliding] == list(range(len(with_sliding)))


@pytest.mark.parametrize("speed", [0.0, 4.0])
def test_no_sample_is_stamped_in_the_future(speed: float) -> None:
    rec = recording(n=512)  # 2 s: 0.5 s of wall time at speed 4
    source = FileSource(rec, speed=speed, max_chunk_s=0.1)
    source.start()
    stamps: list[np.ndarray] = []
    while (chunk := source.read()) is not None:
        now = time.time()
        if chunk.n:
            assert chunk.timestamps[-1] <= now
            stamps.append(chunk.timestamps)
        else:
            time.sleep(0.01)
    t = np.concatenate(stamps)
    assert t.size == 512
    np.testing.assert_allclose(np.diff(t), 1 / FS, rtol=1e-6)
    assert t[-1] >= time.time() - 2.0  # recent: the span ends about when it was read


def test_real_time_stamps_replay_start_plus_i_over_fs() -> None:
    rec = recording(n=64)  # 0.25 s
    source = FileSource(rec, speed=1.0)
    before = time.time()
    chunks = read_all(source)
    while sum(c.n for c in chunks) < 64:
        time.sleep(0.02)
        chunk = source.read()
        assert chunk is not None
        if chunk.n:
            chunks.append(chunk)
    t = np.concatenate([c.timestamps for c in chunks])
    assert before <= t[0] <= before + 0.05
    np.testing.assert_allclose(t - t[0], np.arange(64) / FS, atol=1e-9)


def test_the_offline_epochs_are_the_live_epochs() -> None:
    rec = recording()
    mapping = EventMapping.parse("target=2,nontarget=1")
    settings = ProducerSettings(session_id="live")
    source = FileSource(rec, speed=0, max_chunk_s=0.07)
    cutter = Cutter(settings, source.fs, source.channels, paradigm="none", mapping=mapping)
    live = [w for c in read_all(source) for w in cutter.push(c)]
    offline = epochs_from_recording(rec, settings, mapping)
    assert [w.header.seq for w in live] == offline.seqs.tolist() == [0, 1, 2, 3, 4]
    assert [w.header.marker for w in live] == offline.codes.tolist() == [1, 2, 1, 2, 1]
    assert [cutter.label_of(w) for w in live] == offline.y.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(np.stack([w.data for w in live]), offline.x)
    assert offline.x.dtype == np.float32 and offline.x.shape == (5, 4, 205)
    assert offline.unmapped == cutter.unmapped == {3: 1}
    assert all(w.header.kind is WindowKind.EPOCH for w in live)
    onset = EVENTS[1][0]
    # cut from the causally filtered stream (the producer's default 1-30 Hz), as live
    filtered = StreamFilter(rec.fs, 4, 1.0, 30.0, 4).process(rec.data).astype(np.float32)
    np.testing.assert_allclose(offline.x[1], filtered[:, onset - 26 : onset + 179], atol=1e-4)
    assert offline.geometry is not None and offline.geometry.filtered == "1-30@4"
    raw = epochs_from_recording(
        rec, ProducerSettings(session_id="raw", filter_l_freq=None, filter_h_freq=None), mapping
    )
    np.testing.assert_array_equal(
        raw.x[1], rec.data[:, onset - 26 : onset + 179].astype(np.float32)
    )
    shorter = epochs_from_recording(rec, mapping=mapping, tmin=0.0, tmax=0.5)
    assert shorter.x.shape == (5, 4, 128)


def test_without_a_mapping_every_marker_cuts_an_unlabelled_epoch() -> None:
    epochs = epochs_from_recording(recording())
    assert epochs.codes.tolist() == [code for _, code in EVENTS]
    assert set(epochs.y.tolist()) == {-1} and epochs.unmapped == {}


def test_a_file_replays_through_the_file_source_with_its_own_board_name(tmp_path: Path) -> None:
    path = write_muse_csv(tmp_path / "run.csv", eeg_signal(4, 600, FS), [(100, 2), (400, 1)])
    source = open_source(ProducerSettings(file=str(path), drop_channels=["TP10"]))
    assert isinstance(source, FileSource)
    assert source.name == "file:csv" and source.channels == ("TP9", "AF7", "AF8")
    assert source.speed == 1.0 and source.loop is False and source.simulated is False
    picked = open_source(ProducerSettings(file=str(path), channels="AF8,TP9"))
    assert picked.channels == ("AF8", "TP9")
    assert resolve_paradigm(ProducerSettings(file=str(path)), source) == "none"


def test_oddball_on_a_real_source_is_refused(tmp_path: Path) -> None:
    path = write_muse_csv(tmp_path / "run.csv", eeg_signal(4, 300, FS), [(100, 2)])
    settings = ProducerSettings(file=str(path), paradigm="oddball")
    with pytest.raises(ConfigError, match="synthetic board only; file:csv is real EEG") as e:
        resolve_paradigm(settings, open_source(settings))
    assert e.value.field == "paradigm" and "--events" in (e.value.hint or "")
    cyton = open_source(ProducerSettings(board="CYTON_BOARD", serial_port="/dev/ttyUSB7"))
    assert resolve_paradigm(ProducerSettings(), cyton) == "none"
    with pytest.raises(ConfigError, match="synthetic board only"):
        resolve_paradigm(ProducerSettings(paradigm="oddball"), cyton)


def test_the_synthetic_board_keeps_its_simulated_paradigm() -> None:
    synthetic = BrainFlowSource("synthetic")
    assert resolve_paradigm(ProducerSettings(), synthetic) == "oddball"
    assert resolve_paradigm(ProducerSettings(paradigm="none"), synthetic) == "none"
    assert resolve_paradigm(ProducerSettings(events="target=1"), synthetic) == "none"
    with pytest.raises(ConfigError, match="--events labels a recording"):
        resolve_paradigm(ProducerSettings(paradigm="oddball", events="target=1"), synthetic)
    replay = RecordingSource(np.zeros((32, 250)), board="synthetic")
    assert resolve_paradigm(ProducerSettings(), replay) == "oddball"


def _brainflow_file(path: Path, markers: dict[int, float]) -> Path:
    board = BoardIds.SYNTHETIC_BOARD.value
    data = np.zeros((BoardShim.get_num_rows(board), 500))
    for i, code in markers.items():
        data[BoardShim.get_marker_channel(board), i] = code
    DataFilter.write_file(data, str(path), "w")
    return path


def test_playback_of_a_file_with_markers_is_refused_towards_the_file_source(
    tmp_path: Path,
) -> None:
    path = _brainflow_file(tmp_path / "rec.csv", {100: 2.0, 300: 1.0})
    with pytest.raises(ConfigError, match="has 2 markers, which BrainFlow's playback") as e:
        open_source(ProducerSettings(board="playback", file=str(path)))
    assert e.value.field == "board" and f"--file {path}" in (e.value.hint or "")
    plain = _brainflow_file(tmp_path / "plain.csv", {})
    params = BrainFlowInputParams()
    params.file = str(plain)
    assert BrainFlowSource("playback", params).name == "PLAYBACK_FILE_BOARD"
    replay = open_source(ProducerSettings(file=str(path), layout="synthetic"))
    assert isinstance(replay, FileSource) and replay.name == "file:brainflow"
    markers = np.concatenate([c.markers for c in read_all(replay)])
    assert np.flatnonzero(markers).tolist() == [100, 300]


def test_a_file_and_a_live_board_together_are_refused(tmp_path: Path) -> None:
    path = write_muse_csv(tmp_path / "run.csv", eeg_signal(4, 300, FS), [(100, 2)])
    with pytest.raises(ConfigError, match="name two sources"):
        open_source(ProducerSettings(board="CYTON_BOARD", file=str(path)))


def test_settings_defaults_do_not_loop_or_simulate_real_files() -> None:
    settings = ProducerSettings()
    assert (settings.loop, settings.paradigm, settings.record_only) == (False, "auto", False)
    assert ProducerSettings(file="x.csv").source_kind == "file"
    assert ProducerSettings(board="recording", file="x.csv").source_kind == "file"
    assert ProducerSettings().source_kind == "synthetic"
    assert ProducerSettings(events="target=2,nontarget=1").event_mapping == EventMapping.parse(
        "target=2,nontarget=1"
    )


def test_an_lsl_stream_named_is_the_lsl_source_and_its_options_need_one(tmp_path: Path) -> None:
    assert ProducerSettings(lsl_name="Muse").source_kind == "lsl"
    assert ProducerSettings(board="lsl").source_kind == "lsl"
    assert ProducerSettings(lsl_type="EEG", file="x.csv").source_kind == "file"
    path = write_muse_csv(tmp_path / "run.csv", eeg_signal(4, 300, FS), [(100, 2)])
    for given in ({"marker_type": "Markers"}, {"record": str(tmp_path / "s.xdf")}):
        with pytest.raises(ConfigError, match="read a live LSL source") as caught:
            open_source(ProducerSettings(file=str(path), **given))  # type: ignore[arg-type]
        assert "source is file" in str(caught.value)
    with pytest.raises(ConfigError, match="read a live LSL source"):
        open_source(ProducerSettings(marker_name="PsychoPy"))  # the synthetic board


def test_a_files_text_markers_take_the_mappings_text_codes(tmp_path: Path) -> None:
    """``--events target=Target`` names a text marker; the file's own numbering gives way."""
    x = eeg_signal(4, 600, FS)
    path = write_muse_csv(tmp_path / "run.csv", x, [(100, "Target"), (300, "NonTarget")])
    settings = ProducerSettings(file=str(path), events="target=Target,nontarget=NonTarget")
    replay = open_source(settings)
    assert isinstance(replay, FileSource)
    markers = np.concatenate([c.markers for c in read_all(replay)])
    mapping = settings.event_mapping
    assert mapping is not None and mapping.text_codes == {"Target": 1, "NonTarget": 2}
    assert {int(i): int(markers[i]) for i in np.flatnonzero(markers)} == {100: 1, 300: 2}
