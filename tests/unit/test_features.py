"""Feature pipelines: registry, parameters, and what the features contain."""

from __future__ import annotations

import numpy as np
import pytest

from neurostream.errors import NeurostreamError
from neurostream.features import (
    FeaturePipeline,
    UnknownPipeline,
    available_pipelines,
    erp_reference,
    get_pipeline,
)

FS = 250.0


def _batch(n: int = 6, c: int = 4, s: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 10, (n, c, s)).astype(np.float32)


def test_registry_lists_and_resolves_pipelines() -> None:
    assert available_pipelines() == ["bandpower@1", "erp@1"]
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
