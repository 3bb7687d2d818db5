"""The streaming drift detector: KS per feature (vs scipy), Bonferroni, channels, MMD."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from neurostream.drift import BAND_NAMES, band_features, ks_2samp_columns, ks_drift, mmd_rbf

FS, N_CH, N_S = 250.0, 6, 200
CHANNELS = [f"ch{i}" for i in range(N_CH)]


def eeg(n: int, seed: int, gain: dict[int, float] | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10, (n, N_CH, N_S)).astype(np.float32)
    for c, g in (gain or {}).items():
        x[:, c] *= g
    return x


def test_vectorised_ks_matches_scipy_including_ties() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(80, 5))
    cur = rng.normal(0.3, 1, size=(60, 5))
    ref[:, 4], cur[:, 4] = rng.integers(0, 4, 80), rng.integers(0, 4, 60)  # heavy ties
    d, p = ks_2samp_columns(ref, cur)
    for j in range(5):
        want = stats.ks_2samp(ref[:, j], cur[:, j], method="asymp")
        assert d[j] == pytest.approx(want.statistic, abs=1e-12)
        assert p[j] == pytest.approx(want.pvalue, rel=1e-6, abs=1e-12)


def test_identical_distributions_do_not_drift() -> None:
    ref, names, ch_of = band_features(eeg(150, 1), FS, CHANNELS)
    cur, _, _ = band_features(eeg(150, 2), FS, CHANNELS)
    r = ks_drift(ref, cur, names, ch_of, CHANNELS)
    assert r.share == 0.0 and r.drifted_channels == []
    assert len(names) == N_CH * len(BAND_NAMES)


def test_a_shifted_channel_drifts_and_the_others_do_not() -> None:
    ref, names, ch_of = band_features(eeg(150, 1), FS, CHANNELS)
    cur, _, _ = band_features(eeg(150, 2, gain={2: 2.0, 4: 1.8}), FS, CHANNELS)
    r = ks_drift(ref, cur, names, ch_of, CHANNELS)
    assert r.drifted_channels == ["ch2", "ch4"]
    assert r.channel_share[2] == 1.0  # every band of a gained channel moves
    assert r.share == pytest.approx(2 / N_CH)
    assert r.channel_statistic[2] > 0.5 > r.channel_statistic[[0, 1, 3, 5]].max()


def test_bonferroni_multiplies_by_the_number_of_features() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=(50, 20)), rng.normal(size=(50, 20))
    cur[:, 0] += 0.45  # significant alone (p ~ 0.004), not after 20 tests
    cur[:, 1] += 1.5  # significant either way
    names = [f"f{i}" for i in range(20)]
    r = ks_drift(ref, cur, names, np.arange(20), names, alpha=0.05)
    np.testing.assert_allclose(r.p_adjusted, np.minimum(1, r.p_value * 20))
    assert 0.05 / 20 < r.p_value[0] < 0.05 and not r.drifted[0]
    assert r.drifted[1] and r.drifted.sum() == 1 and r.share == pytest.approx(1 / 20)


def test_mmd_is_larger_under_shift() -> None:
    ref, _, _ = band_features(eeg(200, 1), FS, CHANNELS)
    same, _, _ = band_features(eeg(200, 2), FS, CHANNELS)
    shifted, _, _ = band_features(eeg(200, 2, gain={1: 1.5}), FS, CHANNELS)
    m_same, m_shift = mmd_rbf(ref, same), mmd_rbf(ref, shifted)
    assert abs(m_same) < 0.02
    assert m_shift > 5 * max(m_same, 0.005)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="channels"):
        band_features(eeg(3, 0), FS, CHANNELS[:2])
    with pytest.raises(ValueError, match="alpha"):
        ks_drift(np.ones((3, 1)), np.ones((3, 1)), ["a"], np.zeros(1, int), ["a"], alpha=2)
