"""The Cutter: the causal stream filter before the windower, gaps, the epochs' geometry."""

from __future__ import annotations

import numpy as np

from neurostream.contract import decode, encode
from neurostream.geometry import EpochGeometry
from neurostream.streamfilter import StreamFilter
from producer.board import Chunk
from producer.session import Cutter, SessionResult
from producer.settings import ProducerSettings

FS = 256.0
CHANNELS = ("TP9", "AF7", "AF8", "TP10")


def settings(**kw: object) -> ProducerSettings:
    return ProducerSettings(session_id="cut", paradigm="none", **kw)  # type: ignore[arg-type]


def signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (300 + 15 * rng.standard_normal((len(CHANNELS), n))).astype(np.float32)


def chunk(x: np.ndarray, t0: float, markers: dict[int, int], *, gap: bool = False) -> Chunk:
    mk = np.zeros(x.shape[1])
    for i, code in markers.items():
        mk[i] = code
    return Chunk(x, t0 + np.arange(x.shape[1]) / FS, mk, gap)


def test_epochs_are_cut_from_the_causally_filtered_stream_with_their_geometry() -> None:
    x = signal(2000)
    cutter = Cutter(settings(), FS, CHANNELS, paradigm="none")
    windows = cutter.push(chunk(x, 100.0, {500: 2, 1200: 1}))
    expected = StreamFilter(FS, 4, 1.0, 30.0, 4).process(x).astype(np.float32)
    assert [w.header.marker for w in windows] == [2, 1]
    first = windows[0]
    assert np.array_equal(first.data, expected[:, 500 - 26 : 500 + 179])  # round(-.1*256)=-26
    geometry = EpochGeometry(-0.1, None, (-0.1, 0.0), "1-30@4")
    assert first.header.geometry == geometry
    body, headers = encode(first)
    assert decode(body, headers).header.geometry == geometry  # it travels in the headers
    assert cutter.geometry == EpochGeometry(-0.1, 0.7, (-0.1, 0.0), "1-30@4")


def test_no_filter_leaves_the_samples_as_they_came() -> None:
    x = signal(1000)
    cutter = Cutter(settings(filter_l_freq=None, filter_h_freq=None), FS, CHANNELS, paradigm="none")
    (w,) = cutter.push(chunk(x, 0.0, {400: 1}))
    assert np.array_equal(w.data, x[:, 400 - 26 : 400 + 179])
    assert w.header.filtered is None and w.header.geometry is not None
    assert w.header.geometry.baseline == (-0.1, 0.0)


def test_a_declared_gap_restarts_the_filter_and_drops_the_epochs_spanning_it() -> None:
    x = signal(3000)
    cutter = Cutter(settings(), FS, CHANNELS, paradigm="none")
    # marker at 900: its epoch (874..1079) would run past the end of the first chunk (1000)
    first = cutter.push(chunk(x[:, :1000], 0.0, {300: 1, 900: 2}))
    # the source says samples were lost: the next chunk starts a new stretch, and a marker
    # 10 samples in has its baseline before the gap; the one at 600 is whole after it
    after = x[:, 1000:]
    second = cutter.push(chunk(after, 50.0, {10: 1, 600: 2}, gap=True))
    assert [w.header.marker for w in first + second] == [1, 2]
    assert [w.header.seq for w in first + second] == [0, 1]  # still gap-free
    assert cutter.gaps == 1
    assert cutter.windower.epochs_dropped_gap == 2
    fresh = StreamFilter(FS, 4).process(after).astype(np.float32)  # as if the stream began
    assert np.array_equal(second[0].data, fresh[:, 600 - 26 : 600 + 179])


def test_a_sample_time_jump_inside_a_chunk_is_a_gap() -> None:
    x = signal(2400)
    ts = np.arange(2400) / FS
    ts[1200:] += 2.0  # two seconds of samples never arrived
    mk = np.zeros(2400)
    mk[[400, 1190, 1800]] = [1, 2, 1]
    cutter = Cutter(settings(), FS, CHANNELS, paradigm="none")
    windows = cutter.push(Chunk(x, ts, mk))
    assert [w.header.marker for w in windows] == [1, 1]
    assert cutter.gaps == 1 and cutter.windower.epochs_dropped_gap == 1
    fresh = StreamFilter(FS, 4).process(x[:, 1200:]).astype(np.float32)
    assert np.array_equal(windows[1].data, fresh[:, 600 - 26 : 600 + 179])
    # jitter well under gap_s is no gap
    jitter = Cutter(settings(), FS, CHANNELS, paradigm="none")
    ts2 = np.arange(2400) / FS + np.random.default_rng(3).uniform(0, 0.02, 2400)
    assert len(jitter.push(Chunk(x, ts2, mk))) == 3 and jitter.gaps == 0


def test_sliding_windows_spanning_a_gap_are_dropped_too() -> None:
    x = signal(2000)
    cutter = Cutter(settings(sliding=True), FS, CHANNELS, paradigm="none")
    first = cutter.push(chunk(x[:, :700], 0.0, {}))  # windows of 256 every 128: ends 256..640
    second = cutter.push(chunk(x[:, 700:], 9.0, {}, gap=True))
    assert [w.header.t0 for w in first] == [k * 128 / FS for k in range(4)]
    # starts 512 and 640 would cross sample 700: dropped; the grid restarts at the gap
    assert cutter.windower.windows_dropped_gap == 2
    assert second[0].header.t0 == 9.0 and all(w.header.filtered == "1-30@4" for w in second)
    result = SessionResult("cut", "p300", FS, CHANNELS, gaps=1, windows_dropped_gap=2)
    assert any("1 gap(s) in the stream" in line for line in result.summary())


def test_the_summary_tells_an_interrupted_lsl_session() -> None:
    result = SessionResult("s-1", "p300", FS, CHANNELS, source="lsl:Muse")
    result.interruptions = [
        {"last_sample_at": 10.0, "resumed_at": 14.5, "gap_s": 4.5, "samples_before": 2560},
        {"last_sample_at": 30.0, "resumed_at": None, "gap_s": None, "samples_before": 7680},
    ]
    result.lsl = {
        "clock_offsets": {"eeg": 0.0001, "markers": -5000.0},
        "markers": {"received": 50, "placed": 48, "late": 2, "outside": 0},
    }
    result.predictions_pushed = 40
    lines = "\n".join(result.summary())
    assert "INTERRUPTED: the LSL stream was lost 2 time(s) (4.5 s, not back)" in lines
    assert "LSL markers: 48/50 placed on their sample; 2 arrived too late" in lines
    assert "marker clock offset -5000.000 s" in lines
    assert "40 predictions pushed on the LSL outlet" in lines
    assert "INTERRUPTED" not in "\n".join(SessionResult("s-2", "p300", FS, CHANNELS).summary())
