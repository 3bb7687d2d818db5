"""Signal processing: pure, vectorised functions over EEG batches.

Every function takes a float array ``[n_windows, n_channels, n_samples]`` (any leading
shape works; time is the last axis) and returns a new array, so feature pipelines in
``neurostream.features`` can chain them without I/O or state. Filter designs are cached
because workers call these for every micro-batch with the same parameters.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from types import MappingProxyType
from typing import Final

import numpy as np
from scipy import signal as sps

# Classic clinical EEG bands (Hz), half-open [low, high).
BANDS: Final = MappingProxyType(
    {
        "delta": (1.0, 4.0),
        "theta": (4.0, 8.0),
        "alpha": (8.0, 13.0),
        "beta": (13.0, 30.0),
        "gamma": (30.0, 45.0),
    }
)
_EPS: Final = 1e-12


@lru_cache(maxsize=64)
def butter_sos(l_freq: float | None, h_freq: float | None, fs: float, order: int) -> np.ndarray:
    """Butterworth design in second-order sections (numerically stable at low cut-offs)."""
    nyq = fs / 2.0
    if l_freq is not None and not 0 < l_freq < nyq:
        raise ValueError(f"l_freq {l_freq} Hz must lie in (0, {nyq}) for fs={fs} Hz")
    if h_freq is not None and not 0 < h_freq < nyq:
        raise ValueError(f"h_freq {h_freq} Hz must lie in (0, {nyq}) for fs={fs} Hz")
    if l_freq is not None and h_freq is not None:
        if l_freq >= h_freq:
            raise ValueError(f"l_freq {l_freq} Hz must be below h_freq {h_freq} Hz")
        sos = sps.butter(order, [l_freq, h_freq], btype="bandpass", fs=fs, output="sos")
    elif l_freq is not None:
        sos = sps.butter(order, l_freq, btype="highpass", fs=fs, output="sos")
    elif h_freq is not None:
        sos = sps.butter(order, h_freq, btype="lowpass", fs=fs, output="sos")
    else:
        raise ValueError("give l_freq, h_freq or both")
    sos.setflags(write=False)
    return np.asarray(sos)


def bandpass(
    x: np.ndarray,
    fs: float,
    l_freq: float | None,
    h_freq: float | None,
    order: int = 4,
) -> np.ndarray:
    """Zero-phase Butterworth filter, so ERP latencies are not shifted."""
    sos = butter_sos(
        None if l_freq is None else float(l_freq),
        None if h_freq is None else float(h_freq),
        float(fs),
        int(order),
    )
    n = x.shape[-1]
    # sosfiltfilt's default padding can exceed short epochs; shrink it rather than fail.
    default_pad = 3 * (
        2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    )
    # scipy needs a writable design; the cached one is read-only so it cannot be corrupted.
    out: np.ndarray = sps.sosfiltfilt(sos.copy(), x, axis=-1, padlen=min(default_pad, n - 1))
    return out


def baseline_correct(x: np.ndarray, n_baseline: int) -> np.ndarray:
    """Subtract each channel's mean over the first ``n_baseline`` (pre-stimulus) samples."""
    if n_baseline <= 0:
        return x
    if n_baseline > x.shape[-1]:
        raise ValueError(f"baseline of {n_baseline} samples exceeds {x.shape[-1]} samples")
    out: np.ndarray = x - x[..., :n_baseline].mean(axis=-1, keepdims=True)
    return out


def resample_ratio(fs: float, target_fs: float, max_denominator: int = 100) -> tuple[int, int]:
    """Small rational ``(up, down)`` with ``fs * up / down`` close to ``target_fs``."""
    if fs <= 0 or target_fs <= 0:
        raise ValueError(f"sampling rates must be positive (fs={fs}, target_fs={target_fs})")
    ratio = Fraction(target_fs / fs).limit_denominator(max_denominator)
    if ratio == 0:
        ratio = Fraction(1, max_denominator)
    return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, fs: float, target_fs: float) -> tuple[np.ndarray, float]:
    """Polyphase resampling (anti-aliased); returns the data and the rate actually reached."""
    up, down = resample_ratio(fs, target_fs)
    if up == down:
        return x, float(fs)
    out: np.ndarray = sps.resample_poly(x, up, down, axis=-1)
    return out, float(fs) * up / down


def welch_psd(
    x: np.ndarray, fs: float, nperseg: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD along time; segment length defaults to 1 s (or the whole window)."""
    n = x.shape[-1]
    seg = min(n, int(nperseg) if nperseg else int(round(fs)))
    freqs, psd = sps.welch(x, fs=fs, nperseg=max(seg, 1), axis=-1)
    return np.asarray(freqs), np.asarray(psd)


def band_powers(
    x: np.ndarray,
    fs: float,
    bands: dict[str, tuple[float, float]] | MappingProxyType[str, tuple[float, float]] = BANDS,
    nperseg: int | None = None,
    log: bool = True,
) -> np.ndarray:
    """Power per band ``[..., n_bands]`` (log10 by default, so features are near-Gaussian)."""
    freqs, psd = welch_psd(x, fs, nperseg)
    df = freqs[1] - freqs[0] if len(freqs) > 1 else 1.0
    out = np.empty(psd.shape[:-1] + (len(bands),), dtype=np.float64)
    for i, (lo, hi) in enumerate(bands.values()):
        mask = (freqs >= lo) & (freqs < hi)
        out[..., i] = psd[..., mask].sum(axis=-1) * df
    return np.log10(out + _EPS) if log else out
