"""The causal stream filter: chunking-independent, no start-up step, restarted by a gap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from neurostream.errors import ConfigError
from neurostream.streamfilter import FilterSpec, StreamFilter

FS = 256.0


def eeg(n: int, c: int = 4, seed: int = 0) -> np.ndarray:
    """Noise plus a 10 Hz rhythm on large, different DC offsets (as electrodes have)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    offsets = np.array([800.0, -350.0, 40.0, 1200.0])[:c, None]
    return offsets + 20 * np.sin(2 * np.pi * 10 * t) + 10 * rng.standard_normal((c, n))


def test_one_chunk_or_many_of_random_sizes_give_the_same_output() -> None:
    x = eeg(20_000)
    whole = StreamFilter(FS, 4).process(x)
    rng = np.random.default_rng(1)
    f = StreamFilter(FS, 4)
    parts, a = [], 0
    while a < x.shape[1]:
        n = int(rng.integers(0, 700))  # empty chunks included
        parts.append(f.process(x[:, a : a + n]))
        a += n
    chunked = np.concatenate(parts, axis=1)
    assert chunked.shape == x.shape
    assert np.abs(chunked - whole).max() < 1e-10


def test_it_is_scipy_sosfilt_with_the_steady_state_of_the_first_sample() -> None:
    x = eeg(3000)
    sos = sps.butter(4, [1.0, 30.0], btype="bandpass", fs=FS, output="sos")
    zi = sps.sosfilt_zi(sos)[:, None, :] * x[None, :, 0, None]
    expected, _ = sps.sosfilt(sos, x, axis=-1, zi=zi)
    assert np.abs(StreamFilter(FS, 4, 1.0, 30.0, 4).process(x) - expected).max() < 1e-9


def test_no_start_up_step_from_a_dc_offset() -> None:
    flat = np.full((2, 512), [[1000.0], [-500.0]])
    y = StreamFilter(FS, 2).process(flat)
    assert np.abs(y).max() < 1e-6  # a high-pass started from zero state would ring at ~1000
    # and the band passes: a 10 Hz sine comes through at unit gain once settled
    t = np.arange(4096) / FS
    sine = np.sin(2 * np.pi * 10 * t)[None, :]
    out = StreamFilter(FS, 1).process(sine)
    assert np.abs(out[0, 2048:]).max() == pytest.approx(1.0, abs=0.02)


def test_reset_restarts_as_a_fresh_filter() -> None:
    x = eeg(2000)
    f = StreamFilter(FS, 4)
    f.process(x[:, :1000])
    assert f.started
    f.reset()
    assert not f.started
    after = f.process(x[:, 1000:])
    assert np.abs(after - StreamFilter(FS, 4).process(x[:, 1000:])).max() < 1e-12


def test_a_chunk_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[4, n_samples\]"):
        StreamFilter(FS, 4).process(np.zeros((3, 10)))


@pytest.mark.parametrize(
    ("text", "spec", "label"),
    [
        ("1-30", FilterSpec(1.0, 30.0, 4), "1-30@4"),
        ("0.5-40@2", FilterSpec(0.5, 40.0, 2), "0.5-40@2"),
        ("1-@4", FilterSpec(1.0, None, 4), "1-@4"),
        ("-30@6", FilterSpec(None, 30.0, 6), "-30@6"),
    ],
)
def test_filter_labels_round_trip(text: str, spec: FilterSpec, label: str) -> None:
    assert FilterSpec.parse(text) == spec
    assert spec.label == label
    assert FilterSpec.parse(label) == spec


@pytest.mark.parametrize("text", ["1..30", "30", "-", "a-b@4"])
def test_an_unreadable_filter_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        FilterSpec.parse(text)
    assert err.value.field == "filter"


def test_an_edge_above_nyquist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="1-200@4 at 256 Hz"):
        StreamFilter(FS, 4, 1.0, 200.0)
