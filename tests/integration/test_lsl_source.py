"""The LSL source against real outlets: replay processes and outlets in this process.

The visual P300 run 1 (muse-lsl CSV, 256 Hz) is streamed by ``neurostream lsl-replay``:
its EEG from one process, its markers from another whose LSL clock is 5000 s off ours
(``unshare --time``), and the source must find the offset, put every marker back on its
file sample and hand on the file's µV samples bit for bit. Then text markers and the
event mapping, markers that arrive late or early, the EEG stream lost and back (a gap
the session sees), a stream that comes back different, and what a person reads when no
stream matches. Then the edges: codes for unmapped text that no class or numeric marker
holds, markers stamped on another clock, what is held back at the end (``flush()``), a
stream that comes back with another layout while recording, multi-channel and regular
marker streams, the newest of several matching streams, and a stream pylsl cannot open.
No database or broker: the integration marker is for the real LSL network these tests
open on this machine.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from neurostream.errors import SourceError
from neurostream.recordings import read_recording
from producer.board import Chunk
from producer.lsl import MAX_WAITING, Interruption, LslSource, StreamQuery, lsl_offset
from producer.xdf import XdfWriter
from tests.factories import unique
from tests.lsl_support import Pusher, Replays, drain, joined, samples, unshare_refusal
from tests.recording_files import EEG_NOTEBOOKS

RUN1 = EEG_NOTEBOOKS / "visual/P300/subject2/session1/data_2017-02-09-18.12.53.csv"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
needs_run1 = pytest.mark.skipif(
    not RUN1.exists(), reason=f"the shared recordings are absent ({RUN1} not found)"
)
FS = 256.0
OFFSET_S = 5000


class Recorded:
    """A recorder as ``producer.lsl.Recorder`` asks: what the source handed it."""

    def __init__(self) -> None:
        self.headers: list[str] = []
        self.rows: dict[int, list[tuple[object, np.ndarray]]] = {}
        self.closed = False

    def add_stream(self, info_xml: str) -> int:
        self.headers.append(info_xml)
        self.rows[len(self.headers)] = []
        return len(self.headers)

    def write(self, stream_id: int, values: object, timestamps: np.ndarray) -> None:
        self.rows[stream_id].append((values, np.array(timestamps)))

    def close(self) -> None:
        self.closed = True


def placed(markers: np.ndarray) -> list[tuple[int, int]]:
    index = np.flatnonzero(markers)
    return [(int(i), int(markers[i])) for i in index]


@needs_run1
def test_markers_from_another_clock_land_on_their_samples(replays: Replays) -> None:
    refusal = unshare_refusal(OFFSET_S)
    if refusal is not None:
        pytest.skip(refusal)
    rec = read_recording(RUN1)
    name, span_s = unique("p300"), 20.0
    start_at = time.time() + 1.5
    replays.spawn(RUN1, name=name, only="eeg", start_at=start_at, duration=span_s)
    story = replays.spawn(
        RUN1, name=name, only="markers", start_at=start_at, duration=span_s,
        clock_offset_s=OFFSET_S,
    ).story  # fmt: skip
    source = LslSource(
        StreamQuery(name=name, type="EEG"),
        StreamQuery(name=f"{name}-markers"),
        lost_after_s=1.0,
        give_up_after_s=0.2,
    )
    source.start()
    try:
        streams = source.describe()["streams"]
        assert isinstance(streams, dict) and "markers" in streams  # there: opened in start()
        chunks, ended = drain(source, lambda _: False, timeout_s=60)
    finally:
        source.stop()
    assert ended
    n = round(span_s * FS)
    data, times, markers = joined(chunks)
    assert (source.fs, source.channels) == (rec.fs, rec.channels)
    assert data.shape == (4, n)
    np.testing.assert_array_equal(data, rec.data[:, :n].astype(np.float32))
    # LSL clock to wall clock: sample 0 is the replay's --start-at, the grid 1/fs
    assert abs(times[0] - start_at) < 0.01
    np.testing.assert_allclose(np.diff(times), 1 / FS, atol=1e-6)
    # the marker process's clock is 5000 s ahead: liblsl's offset says so, and says it again
    assert abs(source.clock_offsets["markers"] + OFFSET_S) < 1.0
    assert abs(source.clock_offsets["eeg"]) < 0.01
    expected = [(int(s), int(c)) for s, c in rec.events if s < n]
    got = placed(markers)
    assert f"markers '{name}-markers' ({len(expected)} int32)" in story
    assert [c for _, c in got] == [c for _, c in expected]
    errors = [g - e for (g, _), (e, _) in zip(got, expected, strict=True)]
    print(f"LSL markers: offset {source.clock_offsets['markers']:.4f} s, {len(got)} markers, "
          f"sample errors {sorted(set(errors))}")  # fmt: skip
    assert max(abs(e) for e in errors) <= 1
    assert (source.markers_received, source.markers_placed) == (len(expected), len(expected))
    assert source.markers_late == source.markers_outside == source.markers_merged == 0
    # the replay ending is a loss the source reports, after every sample was handed on
    (lost,) = source.interruptions
    assert lost.samples_before == n and lost.last_sample_at == times[-1]
    assert lost.resumed_at is None


@needs_run1
def test_text_markers_get_the_mapping_codes_and_fresh_ones(replays: Replays) -> None:
    rec = read_recording(RUN1)
    name, span_s = unique("text"), 5.6  # 9 markers, the 9th a target (sample 1407)
    args = ["--marker-names", "2=target,1=standard"]
    replays.spawn(RUN1, name=name, start_at=time.time() + 0.5, duration=span_s, args=args)
    recorder = Recorded()
    source = LslSource(
        StreamQuery(name=name),
        StreamQuery(name=f"{name}-markers", type="Markers"),
        text_codes={"target": 2, "nontarget": 1},
        give_up_after_s=0.2,
        recorder=recorder,
    )
    source.start()
    chunks, ended = drain(source, lambda _: False)
    source.stop()
    n = round(span_s * FS)
    _, _, markers = joined(chunks)
    # 'standard' is not in the mapping: a code above every code it has (2), reported
    assert source.texts == {"standard": 3, "target": 2}
    fresh = {1: 3, 2: 2}
    expected = [(int(s), fresh[int(c)]) for s, c in rec.events if s < n]
    got = placed(markers)
    assert [c for _, c in got] == [c for _, c in expected] and {c for _, c in got} == {2, 3}
    assert max(abs(g - e) for (g, _), (e, _) in zip(got, expected, strict=True)) <= 1
    # the recorder got both headers and every pulled chunk: raw values, our LSL times
    assert recorder.closed and len(recorder.headers) == 2
    assert f"<name>{name}-markers</name>" in recorder.headers[1]
    texts = [row[0] for values, _ in recorder.rows[2] for row in values]  # type: ignore[attr-defined]
    assert texts == ["standard" if c == 1 else "target" for s, c in rec.events if s < n]
    eeg = np.concatenate([v for v, _ in recorder.rows[1]])
    np.testing.assert_array_equal(eeg.T, rec.data[:, :n].astype(np.float32))
    stamps = np.concatenate([t for _, t in recorder.rows[1]])
    np.testing.assert_allclose(stamps + source.lsl_offset, joined(chunks)[1])


def test_late_markers_count_early_ones_wait(replays: Replays) -> None:
    name = unique("late")
    marker_info = pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, "int32", unique("m"))
    outlet = pylsl.StreamOutlet(marker_info)
    pusher = Pusher(name)
    source = LslSource(StreamQuery(name=name), StreamQuery(name=f"{name}-m"), marker_delay_s=0.25)
    source.start()
    assert outlet.wait_for_consumers(5)
    try:
        chunks, _ = drain(source, lambda c: samples(c) >= FS, tick=pusher.push)
        now = pylsl.local_clock()
        for code, age in ((7, 0.15), (8, 0.5), (9, -0.1)):  # 0.15 s, 0.5 s old, 0.1 s ahead
            outlet.push_sample([code], now - age)
        more, _ = drain(source, lambda c: samples(c) >= FS, tick=pusher.push)
    finally:
        source.stop()
    _, times, markers = joined(chunks + more)
    got = dict((code, i) for i, code in placed(markers))
    assert set(got) == {7, 9}  # 8's sample was handed on 0.25 s after it arrived
    for code, age in ((7, 0.15), (9, -0.1)):
        assert abs(times[got[code]] - (now - age + source.lsl_offset)) <= 0.5 / FS
    assert (source.markers_received, source.markers_placed, source.markers_late) == (3, 2, 1)
    # every sample is handed on once, in order, on the grid: the hold-back loses nothing
    np.testing.assert_allclose(np.diff(times), 1 / FS, atol=1e-6)


@needs_run1
def test_a_lost_stream_is_an_interruption_and_its_return_a_gap(replays: Replays) -> None:
    rec = read_recording(RUN1)
    name, source_id = unique("lost"), unique("muse")
    args = ["--source-id", source_id]
    first = replays.spawn(RUN1, name=name, only="eeg", duration=30, args=args)
    recorder = Recorded()
    source = LslSource(StreamQuery(name=name), lost_after_s=0.5, recorder=recorder)
    source.start()
    try:
        before, _ = drain(source, lambda c: samples(c) >= FS)
        first.kill()
        during, _ = drain(source, lambda _: bool(source.interruptions))
        n_before = samples(before) + samples(during)
        waiting, _ = drain(source, lambda c: len(c) >= 20)  # lost: empty chunks, not None
        assert samples(waiting) == 0
        replays.spawn(RUN1, name=name, only="eeg", duration=30, args=args)
        after, _ = drain(source, lambda c: samples(c) >= FS)
    finally:
        source.stop()
    (lost,) = source.interruptions
    assert isinstance(lost, Interruption)
    assert lost.samples_before == n_before
    _, times_before, _ = joined(before + during)
    assert lost.last_sample_at == times_before[-1]
    assert not any(c.gap for c in before + during + waiting)
    resumed = [c for c in after if c.n]
    assert resumed[0].gap and not any(c.gap for c in resumed[1:])
    assert lost.resumed_at == resumed[0].timestamps[0]
    assert lost.gap_s is not None and lost.gap_s > 0.5
    assert lost.describe()["gap_s"] == lost.gap_s
    # both halves are the file from its start: the first until the kill, then again
    data_before, _, _ = joined(before + during)
    data_after, _, _ = joined(after)
    np.testing.assert_array_equal(data_before, rec.data[:, :n_before].astype(np.float32))
    np.testing.assert_array_equal(data_after, rec.data[:, : data_after.shape[1]].astype(np.float32))
    # the reconnected stream is recorded under its first id
    assert len(recorder.headers) == 1
    assert sum(len(t) for _, t in recorder.rows[1]) >= n_before + data_after.shape[1]


def test_silence_is_a_loss_and_a_different_stream_is_refused() -> None:
    name, source_id = unique("silent"), unique("src")
    pusher = Pusher(name, source_id=source_id)
    source = LslSource(StreamQuery(name=name), lost_after_s=0.3, give_up_after_s=30)
    source.start()
    try:
        drain(source, lambda c: samples(c) >= FS / 2, tick=pusher.push)
        pusher.paused = True  # the outlet stays, its samples stop (a headset out of range)
        drain(source, lambda _: bool(source.interruptions), tick=pusher.push)
        pusher.close()
        wider = Pusher(name, n_channels=8, source_id=source_id)
        with pytest.raises(
            SourceError, match=r"came back at 256 Hz with channels ch0, .*ch7; the "
        ):
            drain(source, lambda _: False, tick=wider.push, timeout_s=15)
    finally:
        source.stop()


def test_give_up_ends_the_source() -> None:
    name = unique("gone")
    pusher = Pusher(name)
    source = LslSource(StreamQuery(name=name), lost_after_s=0.3, give_up_after_s=0.3)
    source.start()
    try:
        chunks, _ = drain(source, lambda c: samples(c) >= FS / 4, tick=pusher.push)
        pusher.close()
        rest, ended = drain(source, lambda _: False)
        # given up is final: the same stream back later is not read into this session
        again = Pusher(name)
        after: list[Chunk | None] = []
        deadline = time.monotonic() + 3.0  # a reconnect takes about 1 s (the clock offset)
        while time.monotonic() < deadline:
            again.push()
            after.append(source.read())
            time.sleep(0.01)
    finally:
        source.stop()
    assert ended and source.interruptions[0].samples_before == samples(chunks + rest)
    assert len(after) > 100 and all(c is None for c in after)
    assert len(source.interruptions) == 1  # no second loss: the stream was not taken back


@needs_run1
def test_channels_units_and_refusals_as_the_recording_readers() -> None:
    # muse-lsl types every channel EEG, Right AUX too; its CSV reads as four channels
    muse = ["TP9", "AF7", "AF8", "TP10", "Right AUX"]
    name = unique("muse")
    outlet = Pusher(name, 5, labels=muse, types=["EEG"] * 5, units=["microvolts"] * 5)
    source = LslSource(StreamQuery(name=name, type="EEG"))
    source.start()
    source.stop()
    assert source.channels == read_recording(RUN1).channels == ("TP9", "AF7", "AF8", "TP10")
    assert source.describe()["streams"]["eeg"]["units"] == ["microvolts"] * 5  # type: ignore[index]
    outlet.close()
    # units to µV, and a name with both quotes found by a quote-safe predicate
    name = unique("""it's "units" """)
    units = ["volts", "millivolts", "microvolts", "nanovolts"]
    ones = Pusher(
        name, labels=["C3", "Cz", "C4", "Pz"], units=units, values=lambda a, b: np.ones((b - a, 4))
    )
    source = LslSource(StreamQuery(name=name))
    source.start()
    try:
        chunks, _ = drain(source, lambda c: samples(c) > 0, tick=ones.push)
    finally:
        source.stop()
    data, _, _ = joined(chunks)
    np.testing.assert_allclose(data[:, 0], [1e6, 1e3, 1.0, 1e-3], rtol=1e-6)
    ones.close()
    # an irregular stream is not EEG
    irregular = unique("irregular")
    info = pylsl.StreamInfo(irregular, "EEG", 1, 0, "float32", unique("i"))
    markers = pylsl.StreamOutlet(info)
    with pytest.raises(SourceError, match=r"irregular rate \(nominal_srate 0\): it is not an EEG"):
        LslSource(StreamQuery(name=irregular)).start()
    del markers


def test_no_stream_names_the_query_and_what_is_there() -> None:
    visible = unique("visible")
    pusher = Pusher(visible, source_id=f"{visible}-id")
    wanted = unique("absent")
    source = LslSource(StreamQuery(name=wanted, type="EEG"), resolve_timeout_s=0.5)
    with pytest.raises(SourceError) as caught:
        source.start()
    message = str(caught.value)
    assert f"no LSL stream with name '{wanted}', type 'EEG' appeared within 0.5 s" in message
    assert f"'{visible}' (type 'EEG', source_id '{visible}-id')" in message
    assert "lsl-replay" in (caught.value.hint or "")
    pusher.close()


def test_queries_are_quote_safe_predicates() -> None:
    assert StreamQuery(name="Muse", type="EEG").predicate() == "name='Muse' and type='EEG'"
    assert StreamQuery(name="it's").predicate() == 'name="it\'s"'
    assert StreamQuery(source_id="""a'b"c""").predicate() == """source_id=concat('a', "'", 'b"c')"""
    assert StreamQuery().predicate() == "true()" and StreamQuery().describe() == "any stream"
    assert StreamQuery(name="Muse", type="EEG").describe() == "name 'Muse', type 'EEG'"


def test_unmapped_text_takes_no_code_in_use() -> None:
    # --events target=2,nontarget=1: numeric classes, so text_codes is empty and the
    # coordinator reserves 1 and 2; PsychoPy's "fixation" must not become nontarget
    name = unique("reserved")
    outlet = pylsl.StreamOutlet(
        pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, "string", unique("m"))
    )
    pusher = Pusher(name)
    source = LslSource(
        StreamQuery(name=name), StreamQuery(name=f"{name}-m"), reserved={2, 1}, marker_delay_s=0.2
    )
    source.start()
    assert outlet.wait_for_consumers(5)
    try:
        drain(source, lambda c: samples(c) >= FS / 4, tick=pusher.push)
        now = pylsl.local_clock() - 0.1
        for k, value in enumerate(["fixation", "1", "9", "cue", "fixation"]):
            outlet.push_sample([value], now + k * 0.02)
        chunks, _ = drain(source, lambda c: len(placed(joined(c)[2])) == 5, tick=pusher.push)
    finally:
        source.stop()
    # fixation: above the reserved 2; cue: above the numeric 9 the stream sent
    assert source.texts == {"fixation": 3, "cue": 10}
    assert [code for _, code in placed(joined(chunks)[2])] == [3, 1, 9, 10, 3]


def test_markers_on_another_clock_are_dropped_as_ahead(caplog: pytest.LogCaptureFixture) -> None:
    name = unique("ahead")
    outlet = pylsl.StreamOutlet(
        pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, "int32", unique("m"))
    )
    pusher = Pusher(name)
    source = LslSource(
        StreamQuery(name=name), StreamQuery(name=f"{name}-m"), marker_delay_s=0.1, lost_after_s=0.4
    )
    source.start()
    assert outlet.wait_for_consumers(5)
    try:
        drain(source, lambda c: samples(c) >= FS / 4, tick=pusher.push)
        outlet.push_sample([5], time.time())  # PsychoPy's core.getTime(): wall time, not LSL
        outlet.push_sample([6], pylsl.local_clock())
        chunks, _ = drain(source, lambda _: source.markers_ahead == 1, tick=pusher.push)
        counts = source.describe()["markers"]
        # while the EEG is lost, markers stamped ahead pile up: at most MAX_WAITING wait
        pusher.paused = True
        drain(source, lambda _: bool(source.interruptions), tick=pusher.push)
        for _ in range(MAX_WAITING + 5):
            outlet.push_sample([7], time.time())
        drain(source, lambda _: source.markers_received == MAX_WAITING + 7, tick=pusher.push)
    finally:
        source.stop()
    assert [code for _, code in placed(joined(chunks)[2])] == [6]
    assert counts == {
        "received": 2, "placed": 1, "late": 0, "outside": 0, "merged": 0, "ahead": 1,
        "waiting": 0,
    }  # fmt: skip
    assert source.markers_ahead == 1 + 5
    assert source.describe()["markers"]["waiting"] == MAX_WAITING  # type: ignore[index]
    (warning,) = [r for r in caplog.records if "ahead of the newest EEG sample" in r.message]
    assert "stamp markers with pylsl.local_clock() (or push them without a timestamp)" in (
        warning.message
    )
    found = re.search(r"stamped ([0-9.]+) s ahead", warning.message)
    assert found is not None and abs(float(found.group(1)) - lsl_offset()) < 5.0


def test_flush_hands_on_what_is_held_back() -> None:
    name = unique("flush")
    outlet = pylsl.StreamOutlet(
        pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, "int32", unique("m"))
    )
    pusher = Pusher(name)
    source = LslSource(
        StreamQuery(name=name), StreamQuery(name=f"{name}-m"), marker_delay_s=0.5, lost_after_s=5
    )
    source.start()
    assert outlet.wait_for_consumers(5)
    try:
        chunks, _ = drain(source, lambda c: samples(c) >= FS, tick=pusher.push)
        last = pusher.t0 + (pusher.sent - 1) / FS  # the newest sample sent; no more come
        outlet.push_sample([4], last)
        more, _ = drain(source, lambda _: source.markers_placed == 1)  # on a held sample
        held = source.flush()
        again = source.flush()
    finally:
        source.stop()
    assert held is not None and again is None
    handed = samples(chunks + more)
    assert handed + held.n == pusher.sent  # every sample, the held-back 0.5 s too
    assert held.n >= round(0.5 * FS)
    assert placed(held.markers) == [(held.n - 1, 4)]
    assert abs(held.timestamps[-1] - (last + source.lsl_offset)) < 0.5 / FS
    data, _, _ = joined([*chunks, *more, held])
    np.testing.assert_array_equal(data[0], np.arange(pusher.sent, dtype=np.float32))


def test_a_stream_back_with_another_layout_is_recorded_as_a_new_stream(tmp_path: Path) -> None:
    name = unique("layout")
    eeg_labels = ["C3", "Cz", "C4", "Pz"]
    pusher = Pusher(name, labels=eeg_labels, types=["EEG"] * 4)
    ints = pylsl.StreamOutlet(pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, "int32", unique("m")))
    xdf = XdfWriter(tmp_path / "run.xdf")
    xdf.open()
    source = LslSource(
        StreamQuery(name=name), StreamQuery(name=f"{name}-m"), text_codes={"target": 2},
        marker_delay_s=0.1, lost_after_s=0.5, recorder=xdf,
    )  # fmt: skip
    source.start()
    assert ints.wait_for_consumers(5)
    try:
        chunks, _ = drain(source, lambda c: samples(c) >= FS / 2, tick=pusher.push)
        ints.push_sample([5], pylsl.local_clock() - 0.05)
        chunks += drain(source, lambda _: source.markers_received == 1, tick=pusher.push)[0]
        pusher.close()
        del ints  # both outlets gone: the EEG loss is an interruption, the markers are lost
        chunks += drain(source, lambda _: bool(source.interruptions))[0]
        # back: an AUX channel more (the same EEG channels), markers as text now
        wider = Pusher(name, 5, labels=[*eeg_labels, "AUX"], types=["EEG"] * 4 + ["AUX"])
        texts = pylsl.StreamOutlet(
            pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, "string", unique("m"))
        )

        def reconnected(c: list[Chunk]) -> bool:
            streams = source.describe()["streams"]
            return streams["markers"]["channel_format"] == "string"  # type: ignore[index]

        chunks += drain(source, reconnected, tick=wider.push)[0]
        chunks += drain(source, lambda c: samples(c) >= FS / 2, tick=wider.push)[0]
        texts.push_sample(["target"], pylsl.local_clock() - 0.05)
        chunks += drain(source, lambda _: source.markers_received == 2, tick=wider.push)[0]
        rest = source.flush()
    finally:
        source.stop()
    assert rest is not None
    handed = samples(chunks) + rest.n
    streams, _ = pyxdf.load_xdf(str(tmp_path / "run.xdf"), dejitter_timestamps=False)
    layout = [
        (s["info"]["name"][0], int(s["info"]["channel_count"][0]), s["info"]["channel_format"][0])
        for s in streams
    ]
    assert sorted(layout) == sorted([
        (name, 4, "float32"), (f"{name}-m", 1, "int32"),
        (name, 5, "float32"), (f"{name}-m", 1, "string"),
    ])  # fmt: skip
    eeg = [s for s in streams if s["info"]["name"][0] == name]
    assert sum(len(s["time_stamps"]) for s in eeg) == handed  # recorded is what was handed on
    markers = {s["info"]["channel_format"][0]: s["time_series"] for s in streams if s not in eeg}
    assert np.asarray(markers["int32"]).tolist() == [[5]] and markers["string"] == [["target"]]
    assert [code for _, code in placed(joined([*chunks, rest])[2])] == [5, 2]


def test_multichannel_and_regular_marker_streams(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="producer.lsl")
    name = unique("multi")
    # PsychoPy-like: three text columns, the event in whichever is filled
    columns = pylsl.StreamOutlet(
        pylsl.StreamInfo(f"{name}-m", "Markers", 3, 0, "string", unique("m"))
    )
    pusher = Pusher(name)
    source = LslSource(
        StreamQuery(name=name), StreamQuery(name=f"{name}-m"), text_codes={"target": 2},
        marker_delay_s=0.2,
    )  # fmt: skip
    source.start()
    assert columns.wait_for_consumers(5)
    try:
        drain(source, lambda c: samples(c) >= FS / 4, tick=pusher.push)
        now = pylsl.local_clock() - 0.1
        for k, row in enumerate([["", "target", ""], ["", "", ""], ["0", "", "7"]]):
            columns.push_sample(row, now + k * 0.02)
        chunks, _ = drain(source, lambda c: len(placed(joined(c)[2])) == 2, tick=pusher.push)
    finally:
        source.stop()
    assert [code for _, code in placed(joined(chunks)[2])] == [2, 7]
    assert source.markers_received == 2  # the empty row is no marker
    streams = source.describe()["streams"]
    assert streams["markers"]["read_as"] == "the first non-empty of its 3 channels"  # type: ignore[index]
    notes = [r for r in caplog.records if "first non-empty channel" in r.message]
    assert len(notes) == 1 and "3 channels" in notes[0].message

    # a trigger box: a regular 256 Hz stream of zeros and codes, jittered timestamps
    name = unique("trigger")
    trigger = pylsl.StreamOutlet(
        pylsl.StreamInfo(f"{name}-t", "Markers", 1, FS, "int16", unique("t"))
    )
    pusher = Pusher(name)
    recorder = Recorded()
    source = LslSource(
        StreamQuery(name=name), StreamQuery(name=f"{name}-t"), marker_delay_s=0.2,
        recorder=recorder,
    )  # fmt: skip
    source.start()
    assert trigger.wait_for_consumers(5)
    try:
        drain(source, lambda c: samples(c) >= FS / 4, tick=pusher.push)
        rng = np.random.default_rng(7)
        n, t0 = 512, pylsl.local_clock() - 2.0
        stamps = t0 + np.arange(n) / FS + rng.uniform(-1.5e-3, 1.5e-3, n)
        for i in range(n):
            trigger.push_sample([3 if i == 400 else 0], stamps[i])
        drain(source, lambda _: sum(len(t) for _, t in recorder.rows[2]) == n, tick=pusher.push)
    finally:
        source.stop()
    times = np.concatenate([t for _, t in recorder.rows[2]])
    # dejittered onto the nominal grid: the pushed steps scatter by ~1.3 ms, these do not
    assert np.std(np.diff(stamps)) > 1e-3 and np.std(np.diff(times)) < 2e-4
    assert source.markers_received == 1
    assert source.describe()["streams"]["markers"]["fs"] == FS  # type: ignore[index]


def test_several_matches_the_newest_is_read() -> None:
    name = unique("many")
    ids = [unique("older"), unique("old"), unique("newest")]
    pushers = [Pusher(name, source_id=i) for i in ids]  # created one after the other
    source = LslSource(StreamQuery(name=name))
    source.start()
    source.stop()
    assert source.describe()["streams"]["eeg"]["source_id"] == ids[-1]  # type: ignore[index]
    for p in pushers:
        p.close()


def test_a_string_stream_is_refused_with_what_to_do() -> None:
    name = unique("strings")
    info = pylsl.StreamInfo(name, "EEG", 1, 100, "string", unique("s"))
    outlet = pylsl.StreamOutlet(info)
    with pytest.raises(SourceError, match="carries strings, not EEG samples") as caught:
        LslSource(StreamQuery(name=name)).start()
    assert "--marker-name" in (caught.value.hint or "")
    del outlet


def test_a_stream_pylsl_cannot_open_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    # a channel format pylsl has no type for (0, undefined): its StreamInlet raises
    # TypeError, not one of pylsl's RuntimeErrors; the finder must keep looking
    name = unique("unopenable")
    broken = pylsl.StreamOutlet(pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, 0, unique("b")))
    pusher = Pusher(name)
    source = LslSource(StreamQuery(name=name), StreamQuery(name=f"{name}-m"))
    source.start()
    try:

        def warned(_: list[Chunk]) -> bool:
            return any("cannot open the markers stream" in r.message for r in caplog.records)

        drain(source, warned, tick=pusher.push, timeout_s=15)
        good = pylsl.StreamOutlet(
            pylsl.StreamInfo(f"{name}-m", "Markers", 1, 0, "int32", unique("g"))
        )
        drain(source, lambda _: "markers" in source.describe()["streams"], tick=pusher.push)  # type: ignore[operator]
    finally:
        source.stop()
    (warning,) = [r for r in caplog.records if "cannot open the markers stream" in r.message]
    assert "TypeError" in warning.message and "still looking" in warning.message
    assert source.describe()["streams"]["markers"]["channel_format"] == "int32"  # type: ignore[index]
    del broken, good
