"""Oddball paradigm: schedule, target rate, P300 shape and place, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from producer.paradigm import NON_TARGET, TARGET, OddballParadigm, channel_weights, label_for

FS = 250.0
CHANNELS = ("Fz", "Cz", "Pz", "Oz", "F8")


def paradigm(**kw: object) -> OddballParadigm:
    return OddballParadigm(FS, CHANNELS, weights={"Pz": 1.0, "Cz": 0.5}, **kw)  # type: ignore[arg-type]


def test_stimuli_every_soa_with_about_the_target_rate() -> None:
    p = paradigm(soa_s=0.25, target_prob=1 / 6, seed=3)
    stims = p.stimuli(0, int(FS * 600))
    gaps = np.diff([s.index for s in stims])
    assert set(gaps.tolist()) <= {62, 63} and gaps.mean() == pytest.approx(62.5, abs=0.01)
    rate = np.mean([s.marker == TARGET for s in stims])
    assert rate == pytest.approx(1 / 6, abs=0.02)
    assert {s.marker for s in stims} == {TARGET, NON_TARGET}


def test_p300_peaks_300ms_after_targets_on_weighted_channels_only() -> None:
    p = paradigm(amplitude_uv=5.0, latency_s=0.3, width_s=0.06, target_prob=0.5, seed=1)
    n = int(FS * 20)
    out, markers = p.apply(np.zeros((len(CHANNELS), n), np.float32), 0)
    onsets = np.flatnonzero(markers == TARGET)
    assert len(onsets) > 10
    # Average around target onsets: the peak sits at 300 ms with the full amplitude on Pz.
    avg = np.mean([out[:, i : i + 150] for i in onsets if i + 150 <= n], axis=0)
    assert int(np.argmax(avg[2])) == pytest.approx(75, abs=2)
    assert avg[2].max() >= 5.0  # overlapping neighbours only add
    assert np.allclose(out[[0, 3, 4]], 0.0)  # Fz, Oz, F8 have no weight here
    np.testing.assert_allclose(out[1], 0.5 * out[2], atol=1e-5)


def test_non_targets_add_nothing() -> None:
    p = paradigm(target_prob=0.999999, seed=0)
    q = OddballParadigm(FS, CHANNELS, target_prob=1e-9, seed=0)
    out, markers = q.apply(np.ones((len(CHANNELS), 2000), np.float32), 0)
    assert set(np.unique(markers)) == {0.0, NON_TARGET}
    assert np.array_equal(out, np.ones_like(out))
    assert p.stimuli(0, 200)[0].label == 1


def test_same_seed_same_output_whatever_the_chunking() -> None:
    data = np.random.default_rng(0).normal(size=(len(CHANNELS), 3000)).astype(np.float32)
    whole, mk_whole = paradigm(seed=7, noise_uv=2.0).apply(data, 0)
    p = paradigm(seed=7, noise_uv=2.0)
    parts = [p.apply(data[:, a : a + 77], a) for a in range(0, 3000, 77)]
    np.testing.assert_allclose(np.concatenate([o for o, _ in parts], axis=1), whole, atol=1e-5)
    assert np.array_equal(np.concatenate([m for _, m in parts]), mk_whole)
    other, _ = paradigm(seed=8, noise_uv=2.0).apply(data, 0)
    assert not np.allclose(other, whole)


def test_noise_has_the_requested_standard_deviation() -> None:
    p = OddballParadigm(FS, CHANNELS, target_prob=1e-9, noise_uv=10.0, seed=2)
    out, _ = p.apply(np.zeros((len(CHANNELS), 20_000), np.float32), 0)
    assert out.std() == pytest.approx(10.0, rel=0.02)


def test_labels_and_weights() -> None:
    assert (label_for(TARGET), label_for(NON_TARGET), label_for(7)) == (1, 0, None)
    assert channel_weights(("ch0", "ch1"), {"Pz": 1.0}).tolist() == [1.0, 1.0]
    assert channel_weights(("PZ", "Fz"), {"Pz": 0.7}).tolist() == pytest.approx([0.7, 0.0])


def test_rejects_an_impossible_target_probability() -> None:
    with pytest.raises(ValueError, match="target_prob"):
        OddballParadigm(FS, CHANNELS, target_prob=1.5)
