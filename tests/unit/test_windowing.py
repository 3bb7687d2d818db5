"""Windower: gap-free seq, exact sample spans, chunking-independent output."""

from __future__ import annotations

import numpy as np
import pytest

from neurostream.contract import WindowKind, decode, encode
from producer.windowing import Windower

FS = 250.0
CHANNELS = ("Fz", "Cz", "Pz")


def stream(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose value is their index, so a window shows exactly which span it holds."""
    idx = np.arange(n, dtype=np.float32)
    data = np.stack([idx, idx + 0.5, -idx])
    return data, 1000.0 + np.arange(n) / FS


def run(n: int, chunk: int, markers: dict[int, int] | None = None, **kw: object) -> list:
    data, ts = stream(n)
    mk = np.zeros(n)
    for i, code in (markers or {}).items():
        mk[i] = code
    w = Windower(session_id="s1", fs=FS, channels=CHANNELS, **kw)  # type: ignore[arg-type]
    out = []
    for a in range(0, n, chunk):
        out += w.push(data[:, a : a + chunk], ts[a : a + chunk], mk[a : a + chunk])
    return out


def test_sliding_windows_cover_exact_spans_with_gap_free_seq() -> None:
    windows = run(1000, 37, window_s=1.0, step_s=0.5)
    assert [w.header.seq for w in windows] == list(range(len(windows)))
    assert len(windows) == 7  # starts 0,125,...,750 end <= 1000
    for k, w in enumerate(windows):
        assert w.header.kind is WindowKind.SLIDING
        assert w.data.shape == (3, 250)
        assert w.data[0, 0] == 125 * k and w.data[0, -1] == 125 * k + 249
        assert w.header.t0 == pytest.approx(1000.0 + 125 * k / FS)


def test_epochs_span_tmin_to_tmax_around_each_marker() -> None:
    windows = run(1000, 50, markers={100: 1, 400: 2}, sliding=False, tmin=-0.1, tmax=0.7)
    assert [(w.header.marker, w.header.seq) for w in windows] == [(1, 0), (2, 1)]
    first = windows[0]
    assert first.header.kind is WindowKind.EPOCH
    assert first.data.shape == (3, 200)
    assert first.data[0, 0] == 100 - 25 and first.data[0, -1] == 100 + 174


def test_output_does_not_depend_on_chunking() -> None:
    markers = {30: 1, 95: 2, 300: 2, 640: 1, 900: 1}
    ref = run(1200, 1200, markers)
    for chunk in (1, 7, 64, 250):
        got = run(1200, chunk, markers)
        assert [(w.header.seq, w.header.kind, w.header.marker) for w in got] == [
            (w.header.seq, w.header.kind, w.header.marker) for w in ref
        ]
        assert all(np.array_equal(a.data, b.data) for a, b in zip(got, ref, strict=True))


def test_interleaved_kinds_are_ordered_by_last_sample() -> None:
    windows = run(600, 600, {100: 1})
    ends = [w.data[0, -1] for w in windows]
    assert ends == sorted(ends)
    assert [w.header.kind.value for w in windows] == ["sliding", "epoch", "sliding", "sliding"]


def test_marker_too_early_is_skipped_not_cut_short() -> None:
    w = Windower(session_id="s1", fs=FS, channels=CHANNELS, sliding=False)
    data, ts = stream(400)
    mk = np.zeros(400)
    mk[10] = 1
    assert w.push(data, ts, mk) == []
    assert w.epochs_skipped == 1


def test_windows_survive_buffer_compaction_and_round_trip_the_contract() -> None:
    windows = run(50_000, 333, {i: 1 + i % 2 for i in range(500, 49_000, 63)})
    first = windows[0]
    assert first.data[0, 0] == 0.0  # not overwritten by later compaction
    body, headers = encode(windows[-1])
    back = decode(body, headers, expected_fs=FS)
    assert back.header.seq == len(windows) - 1
    assert np.array_equal(back.data, windows[-1].data)


def test_rejects_a_chunk_with_the_wrong_channel_count() -> None:
    w = Windower(session_id="s1", fs=FS, channels=CHANNELS)
    with pytest.raises(ValueError, match="3 channels"):
        w.push(np.zeros((2, 10), np.float32), np.zeros(10))
