"""A retrain job's challenger keeps how its champion's epochs were cut and gated.

A dataset's windows do not record their epoch geometry or the gate; the champion's
signature does. Retraining an ``erp@2`` champion (which reads the baseline from the
geometry) must work, carry the same geometry and gate, and leave gated epochs out. A
``sklearn-pipeline`` champion (a user's pyRiemann pipeline) is refitted from a clone of its
estimator; an ``onnx`` one is not retrained here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import clone

from neurostream.datasets import Snapshot
from neurostream.errors import InvalidRequest
from neurostream.gate import Gate
from neurostream.geometry import EpochGeometry
from neurostream.models import artifacts
from neurostream.models.serving import ServingModel
from neurostream.models.training import train_model
from retraining_api import families, retrain
from retraining_api.progress import JobProgress
from tests.factories import FS, synthetic_p300
from tests.hostile_artifacts import p300_epochs, xdawn_pipeline_artifact

CHANNELS = ["Fz", "Cz", "Pz", "Oz"]
GEOMETRY = EpochGeometry(-0.1, 0.7, (-0.1, 0.0), "1-30@4")


def _snapshot(x: np.ndarray, y: np.ndarray) -> Snapshot:
    meta = {"fs": FS, "channels": CHANNELS}
    return Snapshot(meta, x, y, [None] * len(y), [None] * len(y))


def test_an_erp2_champion_is_retrained_with_its_geometry_and_gate() -> None:
    x, y = synthetic_p300(240, channels=4, seed=1)
    gate = Gate(peak_to_peak_uv=100.0, flat_uv=0.5)
    champion = train_model(
        "sklearn-lda", x, y, FS, pipeline="erp@2", channels=CHANNELS, gate=gate,
        geometry=GEOMETRY,
    )  # fmt: skip
    row = champion.to_row(model_name="p300-erp2")
    train_x, train_y = synthetic_p300(240, channels=4, seed=2)
    train_x[:5, 2] += np.linspace(0, 400, train_x.shape[-1], dtype=np.float32)  # 400 µV drift
    spec = {
        "family": "sklearn-lda",
        "params": {"feature_pipeline": "erp@2"},
        "seed": 0,
        "validation_size": 0.2,
    }
    test_x, test_y = synthetic_p300(120, channels=4, seed=3)
    progress = JobProgress()
    outcome = retrain.run(
        spec, _snapshot(train_x, train_y), _snapshot(test_x, test_y), row, progress
    )
    challenger = outcome.trained.input_spec
    assert challenger["tmin"] == -0.1 and challenger["baseline"] == [-0.1, 0.0]
    assert challenger["filtered"] == "1-30@4"
    assert challenger["gate"] == {"peak_to_peak_uv": 100.0, "flat_uv": 0.5}
    _, logs, _ = progress.drain()
    assert any("5 of 240 left out" in message for _, message in logs)
    assert outcome.test["roc_auc"] > 0.9 and outcome.champion_test is not None


# --- champions brought by users: sklearn-pipeline refitted, onnx refused ---------------------


def _pipeline_champion() -> tuple[Any, dict[str, Any]]:
    """A fitted pyRiemann pipeline and the registry row of a champion serving it, whose
    estimator answers "NonTarget"/"Target" (MOABB's labels) through a class_map."""
    fitted = xdawn_pipeline_artifact()
    y = np.where(fitted.y == 1, "Target", "NonTarget")
    est = clone(fitted.estimator).fit(fitted.x.astype(np.float64), y)
    artifact = artifacts.dump(est, "sklearn-pipeline")
    meta = fitted.metadata(class_map={"NonTarget": 0, "Target": 1}, positive_class=1)
    row = meta | {
        "id": 3,
        "model_name": "p300-xdawn",
        "version": 4,
        "artifact": artifact,
        "sha256": artifacts.sha256_hex(artifact),
    }
    return est, row


def _p300_snapshot(n: int, seed: int) -> Snapshot:
    x, y = p300_epochs(n=n, seed=seed)
    return Snapshot({"fs": 128.0, "channels": CHANNELS}, x, y, [None] * n, [None] * n)


def test_a_pipeline_champion_is_refitted_from_a_clone_of_its_estimator() -> None:
    est, row = _pipeline_champion()
    spec = {
        "family": "sklearn-pipeline",
        "params": families.refit_params(row, {"feature_pipeline": None}),
        "seed": 0,
        "validation_size": 0.2,
    }
    assert spec["params"] == {
        "feature_pipeline": "raw@1",
        "feature_params": {"stream_filter": None},
        "model_params": {"positive_class": 1},
    }
    progress = JobProgress()
    outcome = retrain.run(spec, _p300_snapshot(80, 5), _p300_snapshot(60, 6), row, progress)
    trained = outcome.trained
    assert trained.family == "sklearn-pipeline" and trained.feature_pipeline == "raw@1"
    assert trained.model_params == {"positive_class": 1}  # learnt 0/1: no class_map needed
    assert trained.classes == [0, 1] and trained.input_spec["channels"] == CHANNELS
    refitted = trained.classifier.estimator  # type: ignore[attr-defined]
    assert refitted is not est
    assert [type(s) for _, s in refitted.steps] == [type(s) for _, s in est.steps]
    assert _plain_params(refitted) == _plain_params(est)
    assert list(est.classes_) == ["NonTarget", "Target"] and list(refitted.classes_) == [0, 1]
    assert not np.allclose(refitted[-1].coef_, est[-1].coef_)
    served = ServingModel.from_row(trained.to_row(model_name="p300-xdawn", version=5))
    assert served.family == "sklearn-pipeline"
    assert outcome.test["roc_auc"] > 0.9 and outcome.champion_test is not None
    assert outcome.champion_test["roc_auc"] > 0.9
    _, logs, _ = progress.drain()
    shown = "XdawnCovariances + TangentSpace + LogisticRegression"
    assert f"refitting a clone of champion p300-xdawn:4's {shown}" in [m for _, m in logs]


def _plain_params(est: Any) -> dict[str, Any]:
    """Hyperparameters, without the nested estimator objects themselves."""
    params = est.get_params(deep=True).items()
    return {k: v for k, v in params if k != "steps" and not hasattr(v, "get_params")}


def test_a_refit_refuses_search_and_a_champion_that_changed() -> None:
    _, row = _pipeline_champion()
    spec = {
        "family": "sklearn-pipeline",
        "params": families.refit_params(row, {}),
        "seed": 0,
        "validation_size": 0.2,
        "search": {"trials": 2},
    }
    train, test = _p300_snapshot(40, 1), _p300_snapshot(20, 2)
    with pytest.raises(InvalidRequest, match="no search space for a user's estimator"):
        retrain.run(spec, train, test, row, JobProgress())
    lda = train_model("sklearn-lda", train.x, train.y, 128.0, channels=CHANNELS)
    lda_row = lda.to_row(model_name="p300-xdawn", version=6)
    with pytest.raises(InvalidRequest, match="no estimator to clone .its champion p300-xdawn:6"):
        retrain.run(spec | {"search": None}, train, test, lda_row, JobProgress())


def test_the_family_of_a_job() -> None:
    _, pipeline = _pipeline_champion()
    onnx = pipeline | {"family": "onnx"}
    lda = pipeline | {"family": "sklearn-lda", "feature_pipeline": "erp@1"}
    job_family = families.job_family
    assert job_family(None, pipeline, model_name="m") == "sklearn-pipeline"
    assert job_family(None, lda, model_name="m") == "sklearn-lda"
    assert job_family("sklearn-lda", onnx, model_name="m") == "sklearn-lda"
    assert job_family("torch-eegnet", None, model_name="m") == "torch-eegnet"
    with pytest.raises(InvalidRequest, match="p300-xdawn:4 is onnx: an ONNX network is trained"):
        job_family(None, onnx, model_name="m")
    with pytest.raises(InvalidRequest, match="has no estimator to clone .it has no champion"):
        job_family("sklearn-pipeline", None, model_name="m")
    with pytest.raises(InvalidRequest, match="'m' has no champion whose family"):
        job_family(None, None, model_name="m")
    with pytest.raises(InvalidRequest, match="cannot be trained by a job") as info:
        job_family(None, pipeline | {"family": "other"}, model_name="m")
    assert info.value.field == "family" and info.value.status == 422


def test_refit_params_keep_the_champions_and_refuse_new_hyperparameters() -> None:
    _, row = _pipeline_champion()
    params = families.refit_params(
        row, {"feature_params": {"baseline": True}, "model_params": {"positive_class": 0}}
    )
    assert params["feature_params"] == {"stream_filter": None, "baseline": True}
    assert params["model_params"] == {"positive_class": 0}
    with pytest.raises(InvalidRequest, match="reads what champion p300-xdawn:4 reads, raw@1"):
        families.refit_params(row, {"feature_pipeline": "erp@1"})
    with pytest.raises(InvalidRequest, match=r"model_params \['C'\] cannot be set") as info:
        families.refit_params(row, {"model_params": {"C": 0.1}})
    assert info.value.field == "params.model_params"
