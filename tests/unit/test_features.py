"""Feature pipelines: registry, parameters, and what the features contain."""

from __future__ import annotations

import numpy as np
import pytest

from neurostream.errors import NeurostreamError
from neurostream.features import (
    FeaturePipeline,
    UnknownPipeline,
    available_pipelines,
    erp2_reference,
    erp_reference,
    get_pipeline,
)
from neurostream.geometry import EpochGeometry

FS = 250.0


def _batch(n: int = 6, c: int = 4, s: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 10, (n, c, s)).astype(np.float32)


def test_registry_lists_and_resolves_pipelines() -> None:
    assert available_pipelines() == ["bandpower@1", "erp@1", "erp@2", "raw@1"]
    erp = get_pipeline("erp@1")
    assert isinstance(erp, FeaturePipeline)
    assert (erp.key, erp.name, erp.version) == ("erp@1", "erp", 1)


def test_unknown_pipeline_names_the_key_and_the_available_ones() -> None:
    with pytest.raises(UnknownPipeline) as exc:
        get_pipeline("erp@9")
    assert isinstance(exc.value, NeurostreamError) and exc.value.status == 422
    assert (exc.value.key, exc.value.field) == ("erp@9", "feature_pipeline")
    assert "erp@9" in str(exc.value) and "erp@1" in str(exc.value)


def test_unknown_param_is_refused() -> None:
    with pytest.raises(ValueError, match="h_frek"):
        get_pipeline("erp@1").transform(_batch(), FS, {"h_frek": 30.0})


def test_erp_shape_dtype_and_channel_major_layout() -> None:
    x = _batch()
    f = get_pipeline("erp@1").transform(x, FS, {})
    assert f.dtype == np.float32 and f.shape == (6, 4 * 80)  # 200 samples @250 Hz -> 80 @100 Hz
    solo = get_pipeline("erp@1").transform(x[:, 2:3], FS, {})
    np.testing.assert_allclose(f[:, 160:240], solo, rtol=1e-5, atol=1e-4)


def test_erp_matrix_form_equals_the_step_by_step_chain() -> None:
    erp = get_pipeline("erp@1")
    x = _batch(seed=3)
    ref = erp_reference(x.astype(np.float64), FS, erp.default_params()).reshape(6, -1)
    np.testing.assert_allclose(erp.transform(x, FS, {}), ref, atol=1e-3)


def test_erp_baseline_removes_offsets_and_filter_removes_fast_noise() -> None:
    t = np.arange(200) / FS - 0.1
    bump = 5.0 * np.exp(-0.5 * ((t - 0.3) / 0.06) ** 2)
    x = (bump + 40.0 + 3.0 * np.sin(2 * np.pi * 60.0 * t))[None, None, :].astype(np.float32)
    f = get_pipeline("erp@1").transform(x, FS, {})[0]
    assert abs(f[:10].mean()) < 0.5  # baseline (first 0.1 s) is ~0 despite the 40 uV offset
    assert np.argmax(f) == pytest.approx(40, abs=2)  # the peak stays at 300 ms after onset
    assert f.max() == pytest.approx(5.0, rel=0.25)


def test_erp_other_sampling_rates() -> None:
    f = get_pipeline("erp@1").transform(_batch(s=128), 128.0, {})
    assert f.shape == (6, 4 * 100)


def test_bandpower_alpha_dominates_for_10hz() -> None:
    t = np.arange(250) / FS
    x = np.stack([np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 20 * t)])[None]
    f = get_pipeline("bandpower@1").transform(x.astype(np.float32), FS, {})
    assert f.shape == (1, 2 * 5) and f.dtype == np.float32
    assert np.argmax(f[0, :5]) == 2 and np.argmax(f[0, 5:]) == 3  # alpha, beta


def test_default_params_are_copies() -> None:
    p = get_pipeline("bandpower@1").default_params()
    p["bands"]["alpha"][0] = 0.0
    assert get_pipeline("bandpower@1").default_params()["bands"]["alpha"][0] == 8.0


def test_bad_batch_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="n_windows"):
        get_pipeline("erp@1").transform(np.zeros((4, 200), np.float32), FS, {})


FILTERED = EpochGeometry(-0.1, 0.7, (-0.1, 0.0), "1-30@4")


def test_erp2_is_baseline_and_bin_means_of_the_epoch_as_cut() -> None:
    fs = 256.0
    x = _batch(5, 4, 205)
    feats = get_pipeline("erp@2").transform(x, fs, {}, FILTERED)
    # 205 samples in bins of round(256 / 64) = 4: 51 per channel, channel-major
    assert feats.shape == (5, 4 * 51) and feats.dtype == np.float32
    base = x - x[..., :26].mean(axis=-1, keepdims=True)  # tmin..0 = the first 26 samples
    by_hand = base[..., : 51 * 4].reshape(5, 4, 51, 4).mean(axis=-1).reshape(5, -1)
    assert np.abs(feats - by_hand).max() < 1e-4
    assert np.abs(feats - erp2_reference(x, fs, (0, 26), 64.0).reshape(5, -1)).max() < 1e-4


def test_erp2_reads_the_baseline_from_the_geometry_not_its_params() -> None:
    fs = 256.0
    x = _batch(3, 2, 205, seed=4)
    late = EpochGeometry(-0.1, 0.7, (-0.05, 0.0), "1-30@4")  # samples 13..26
    got = get_pipeline("erp@2").transform(x, fs, {"target_fs": fs}, late)
    assert np.abs(got.reshape(3, 2, 205) - (x - x[..., 13:26].mean(-1, keepdims=True))).max() < 1e-4
    none = EpochGeometry(1.0, 4.0, None, "1-30@4")  # SSVEP-like: no pre-stimulus part
    plain = get_pipeline("erp@2").transform(x, fs, {"target_fs": fs}, none)
    assert np.abs(plain.reshape(x.shape) - x).max() < 1e-5
    with pytest.raises(NeurostreamError, match="geometry"):
        get_pipeline("erp@2").transform(x, fs, {})
    with pytest.raises(ValueError, match="unknown params"):
        get_pipeline("erp@2").transform(x, fs, {"tmin": -0.1}, FILTERED)


def test_erp2_refuses_epochs_from_another_stream_erp1_takes_any() -> None:
    erp2 = get_pipeline("erp@2")
    params = erp2.default_params()
    assert params == {"target_fs": 64.0, "stream_filter": "1-30@4"}
    assert erp2.check_geometry(params, FILTERED) is None
    unfiltered = EpochGeometry(-0.1, None, (-0.1, 0.0), None)
    reason = erp2.check_geometry(params, unfiltered)
    assert reason == (
        "erp@2 expects epochs cut from a stream filtered 1-30@4, this window came "
        "unfiltered: run the producer with --filter 1-30@4"
    )
    other = EpochGeometry(-0.1, None, None, "0.5-40@2")
    assert "came filtered 0.5-40@2" in (erp2.check_geometry(params, other) or "")
    assert "unfiltered" in (erp2.check_geometry(params, None) or "")
    for key in ("erp@1", "bandpower@1"):
        pipe = get_pipeline(key)
        assert pipe.check_geometry(pipe.default_params(), unfiltered) is None


def test_erp1_ignores_the_geometry_it_is_given() -> None:
    x = _batch(4, 3, 200)
    erp1 = get_pipeline("erp@1")
    shifted = EpochGeometry(-0.3, None, (-0.3, -0.1), "1-30@4")
    assert np.array_equal(erp1.transform(x, FS, {}), erp1.transform(x, FS, {}, shifted))
