"""Data quality of windows and the producer's channel shift (scores: test_scoring.py)."""

from __future__ import annotations

import numpy as np
import pytest

from neurostream.quality import Thresholds, channel_quality, seq_gaps
from producer.shift import ChannelShift


def test_channel_quality_flags_flat_saturated_and_out_of_range_channels() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 10, (20, 5, 200)).astype(np.float32)
    x[:, 1] = 0.0  # missing
    x[:, 2] = 3.0 + rng.normal(0, 0.01, (20, 200))  # flat
    x[:, 3] = np.clip(x[:, 3] * 10, -50, 50)  # clipped amplifier
    x[:, 4] *= 80  # way out of the EEG range
    rows = channel_quality(x, ["ok", "missing", "flat", "sat", "big"], Thresholds())
    flags = {r["channel"]: r["flags"] for r in rows}
    assert flags == {
        "ok": [],
        "missing": ["missing"],
        "flat": ["flat"],
        "sat": ["saturated"],
        "big": ["out_of_range"],
    }


def test_seq_gaps() -> None:
    assert seq_gaps([0, 1, 2, 5, 6, 9]) == [(3, 4), (7, 8)]
    assert seq_gaps([2, 3], expected_end=6) == [(0, 1), (4, 6)]
    assert seq_gaps([]) == []


def test_channel_shift_starts_at_the_sample_and_touches_only_its_channels() -> None:
    shift = ChannelShift(100.0, ["Fz", "Cz", "Pz"], after_s=1.0, shift_channels=["cz"], gain=3.0)
    x = np.ones((3, 150), dtype=np.float32)
    a = shift.apply(x[:, :80], 0)
    b = shift.apply(x[:, 80:], 80)
    out = np.concatenate([a, b], axis=1)
    assert (out[[0, 2]] == 1).all()
    assert (out[1, :100] == 1).all() and (out[1, 100:] == 3).all()
    noisy = ChannelShift(100.0, ["Fz", "Cz"], after_s=0, shift_channels=["Fz"], noise_uv=5.0)
    y = noisy.apply(np.zeros((2, 1000), np.float32), 0)
    assert 4 < y[0].std() < 6 and (y[1] == 0).all()
    with pytest.raises(ValueError, match="Oz"):
        ChannelShift(100.0, ["Fz"], after_s=0, shift_channels=["Oz"])
