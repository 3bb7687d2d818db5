"""Signal processing: values, not just shapes."""

from __future__ import annotations

import numpy as np
import pytest

from neurostream import signal

FS = 250.0


def _sine(freq: float, seconds: float = 2.0, fs: float = FS) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return np.sin(2 * np.pi * freq * t)[None, None, :].repeat(3, axis=0).repeat(2, axis=1)


def _amplitude(x: np.ndarray, freq: float, fs: float = FS) -> float:
    """Amplitude of one frequency (integer cycles per window), blind to slow transients."""
    t = np.arange(x.shape[-1]) / fs
    return float(2 * np.abs(np.mean(x[0, 0] * np.exp(-2j * np.pi * freq * t))))


def test_bandpass_removes_out_of_band_sine_and_keeps_in_band() -> None:
    removed = signal.bandpass(_sine(10.0), FS, 0.5, 8.0)
    far = signal.bandpass(_sine(20.0), FS, 0.5, 8.0)
    kept = signal.bandpass(_sine(3.0), FS, 0.5, 8.0)
    assert removed.shape == (3, 2, 500)
    # Order-4 Butterworth run forwards and backwards: ~-17 dB at 10 Hz, < -40 dB at 20 Hz.
    assert _amplitude(removed, 10.0) < 0.2
    assert _amplitude(far, 20.0) < 0.01
    assert _amplitude(kept, 3.0) == pytest.approx(1.0, abs=0.05)


def test_bandpass_is_zero_phase() -> None:
    x = _sine(3.0)
    y = signal.bandpass(x, FS, 0.5, 8.0)
    lag = np.argmax(np.correlate(y[0, 0, 100:-100], x[0, 0, 100:-100], mode="full")) - 299
    assert lag == 0


def test_bandpass_handles_short_windows_and_bad_cutoffs() -> None:
    assert signal.bandpass(np.ones((1, 1, 20)), FS, 0.5, 20.0).shape == (1, 1, 20)
    with pytest.raises(ValueError, match="h_freq"):
        signal.bandpass(_sine(3.0), FS, 0.5, 200.0)
    with pytest.raises(ValueError, match="below"):
        signal.bandpass(_sine(3.0), FS, 20.0, 5.0)


def test_baseline_correct_zeroes_the_pre_stimulus_mean() -> None:
    x = np.random.default_rng(0).normal(5.0, 1.0, (4, 3, 100))
    y = signal.baseline_correct(x, 25)
    np.testing.assert_allclose(y[..., :25].mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y - x, (y - x)[..., :1].repeat(100, axis=-1))
    assert signal.baseline_correct(x, 0) is x


def test_resample_reaches_rational_rate_and_keeps_the_signal() -> None:
    assert signal.resample_ratio(250.0, 100.0) == (2, 5)
    assert signal.resample_ratio(128.0, 100.0) == (25, 32)
    y, fs = signal.resample(_sine(5.0), FS, 100.0)
    assert fs == 100.0 and y.shape == (3, 2, 200)
    t = np.arange(200) / 100.0
    np.testing.assert_allclose(y[0, 0, 20:-20], np.sin(2 * np.pi * 5.0 * t)[20:-20], atol=0.02)


def test_alpha_band_power_is_largest_for_a_10hz_sine() -> None:
    bp = signal.band_powers(_sine(10.0), FS)
    assert bp.shape == (3, 2, 5)
    assert list(signal.BANDS)[int(np.argmax(bp[0, 0]))] == "alpha"
    lin = signal.band_powers(_sine(10.0), FS, log=False)
    assert lin[0, 0, 2] == pytest.approx(0.5, rel=0.1)  # power of a unit sine
