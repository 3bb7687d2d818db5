"""``raw@1``: epochs as they came from the producer's stream filter, for models that read
epochs; the flat-feature families refuse it at training and at upload."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from neurostream.errors import ArtifactError, ConfigError
from neurostream.features import available_pipelines, get_pipeline
from neurostream.geometry import EpochGeometry
from neurostream.models.serving import ServingModel
from neurostream.models.training import train_model
from tests import hostile_artifacts as hostile

FS = 256.0
RAW = get_pipeline("raw@1")
GEOMETRY = EpochGeometry.cut(-0.1, 0.7, filtered="1-30@4")


@pytest.fixture
def batch() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5, 3, 205)).astype(np.float32)


def test_raw_is_registered_and_marked_raw() -> None:
    assert "raw@1" in available_pipelines()
    assert RAW.raw and not get_pipeline("erp@2").raw and not get_pipeline("erp@1").raw
    assert RAW.default_params() == {"stream_filter": "1-30@4", "decimate": 1, "baseline": False}


def test_epochs_pass_as_they_came(batch: np.ndarray) -> None:
    out = RAW.transform(batch, FS, {}, GEOMETRY)
    assert out.dtype == np.float64 and out.shape == batch.shape
    np.testing.assert_array_equal(out, batch.astype(np.float64))


def test_decimate_keeps_every_kth_sample(batch: np.ndarray) -> None:
    out = RAW.transform(batch, FS, {"decimate": 4}, GEOMETRY)  # Nyquist 32 Hz > 30 Hz
    assert out.shape == (5, 3, 52) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, batch[..., ::4].astype(np.float64))


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"decimate": 5}, "Nyquist of 25.6 Hz, under the stream filter's 30 Hz edge"),
        ({"decimate": 2, "stream_filter": None}, "needs a low-pass stream_filter"),
        ({"decimate": 2, "stream_filter": "1-@4"}, "needs a low-pass stream_filter"),
        ({"decimate": 0}, "whole number >= 1"),
        ({"decimate": 1.5}, "whole number >= 1"),
    ],
)
def test_decimation_that_would_alias_is_refused(
    batch: np.ndarray, params: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        RAW.transform(batch, FS, params, GEOMETRY)
    assert info.value.field == "feature_params.decimate"


def test_baseline_is_the_geometrys(batch: np.ndarray) -> None:
    out = RAW.transform(batch, FS, {"baseline": True}, GEOMETRY)
    a, b = GEOMETRY.baseline_samples(FS, batch.shape[-1]) or (0, 0)
    assert (a, b) == (0, 26)
    x = batch.astype(np.float64)
    np.testing.assert_allclose(out, x - x[..., a:b].mean(axis=-1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(out[..., a:b].mean(axis=-1), 0.0, atol=1e-12)
    with pytest.raises(ConfigError, match="pass geometry="):
        RAW.transform(batch, FS, {"baseline": True})


def test_geometry_check_is_the_stream_filter() -> None:
    assert RAW.check_geometry({}, GEOMETRY) is None
    other = EpochGeometry.cut(-0.1, 0.7, filtered="0.5-40@4")
    reason = RAW.check_geometry({}, other)
    assert reason is not None and "filtered 1-30@4" in reason and "came filtered 0.5-40@4" in reason
    assert "unfiltered" in (RAW.check_geometry({}, None) or "")
    assert RAW.check_geometry({"stream_filter": None}, None) is None
    assert RAW.check_geometry({"stream_filter": None}, other) is None


def test_flat_families_refuse_raw_epochs() -> None:
    x, y = hostile.p300_epochs()
    for family in ("sklearn-lda", "torch-eegnet"):
        with pytest.raises(ConfigError, match="reads flat feature vectors") as info:
            train_model(family, x, y, 128.0, pipeline="raw@1")
        assert info.value.field == "pipeline"
    trained = train_model("sklearn-lda", x, y, 128.0, pipeline="erp@1")
    row = trained.to_row(model_name="m") | {"feature_pipeline": "raw@1", "feature_params": {}}
    with pytest.raises(ArtifactError, match="sklearn-lda reads flat feature vectors") as err:
        ServingModel.from_row(row)
    assert err.value.field == "feature_pipeline"


def test_a_raw_model_refuses_windows_from_another_stream() -> None:
    fitted = hostile.xdawn_pipeline_artifact()
    meta = fitted.metadata()
    meta["feature_params"] = {"stream_filter": "1-30@4"}
    blob = fitted.artifact
    row = {
        "id": 3,
        "model_name": "raw",
        "version": 1,
        **meta,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "artifact": blob,
    }
    model = ServingModel.from_row(row)
    ok = EpochGeometry.cut(-0.1, 0.4, filtered="1-30@4")
    assert model.check_geometry(ok) is None
    reason = model.check_geometry(EpochGeometry.cut(-0.1, 0.4))
    assert reason is not None and "came unfiltered" in reason and "(model raw:1)" in reason
    got = model.predict(fitted.x, fitted.fs, channels=list(fitted.channels), geometry=ok)
    np.testing.assert_array_equal(
        got.proba, fitted.estimator.predict_proba(fitted.x.astype(np.float64))
    )
