"""Retraining a model a user brought: a sklearn-pipeline champion is refitted, an onnx one
is not (real PostgreSQL and RabbitMQ, the API's own runner, small snapshots).

The champion is a real pyRiemann XdawnCovariances + TangentSpace + LogisticRegression
pipeline on ``raw@1`` epochs (``tests.hostile_artifacts.xdawn_pipeline_artifact``), and the
onnx champion a small real ONNX graph over the same epochs, both registered as
``neurostream models push`` would. Jobs go through ``POST /jobs`` and are polled to the end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from neurostream import datasets, registry
from neurostream.models.serving import ServingModel
from neurostream.settings import CoreSettings
from retraining_api.app import create_app
from retraining_api.settings import RetrainingSettings
from tests.factories import app_client
from tests.hostile_artifacts import CHANNELS, FS, p300_epochs, xdawn_pipeline_artifact

pytestmark = pytest.mark.integration
TERMINAL = {"succeeded", "failed", "cancelled"}
ONNX_SAYS = "an ONNX network is trained outside neurostream and cannot be refitted here"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def api(core: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An authorised client on a running app (lifespan entered, runner running)."""
    settings = RetrainingSettings(poll_s=0.2, heartbeat_s=0.3, trigger_check_s=0.5)
    app = create_app(core, settings)
    async with app_client(app, core, base_url="http://rt", timeout=120) as client:
        yield client


@pytest.fixture
async def data(pool: Any) -> dict[str, str]:
    """Training (80 rows) and testing (60 rows) snapshots of the champion's kind of epochs."""
    name = _name("p300")
    refs: dict[str, str] = {}
    sizes: list[tuple[Literal["training", "testing"], int, int]] = [
        ("training", 80, 5),
        ("testing", 60, 6),
    ]
    async with pool.connection() as conn:
        for kind, n, seed in sizes:
            x, y = p300_epochs(n=n, seed=seed)
            row = await datasets.create_snapshot(
                conn,
                name=f"{name}-{kind}",
                kind=kind,
                windows=x,
                labels=y,
                fs=FS,
                channels=list(CHANNELS),
            )
            refs[kind] = f"{row['name']}@{row['version']}"
            refs[f"{kind}_hash"] = row["content_hash"]
    return refs


async def _champion(
    pool: Any, model: str, family: str, artifact: bytes, meta: dict[str, Any]
) -> dict[str, Any]:
    """Register ``artifact`` as version 1 of ``model`` and point its champion alias at it."""
    async with pool.connection() as conn:
        row = await registry.register_version(
            conn,
            model_name=model,
            **(meta | {"family": family}),
            metrics={},
            dataset_hash="fitted-elsewhere",
            code_version=None,
            artifact=artifact,
        )
        await registry.set_alias(conn, model, "champion", version_id=row["id"])
    return row


def _onnx_net() -> bytes:
    """A real ONNX network over raw epochs [batch, 4, 64]: flatten, one linear layer."""
    weights = np.random.default_rng(0).normal(scale=0.01, size=(len(CHANNELS) * 64, 2))
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["X"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        ],
        "user-net",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", len(CHANNELS), 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel().tolist())
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


async def _run(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post("/jobs", json=body)
    assert r.status_code == 202, r.text
    for _ in range(900):
        job = (await api.get(f"/jobs/{r.json()['job_id']}")).json()
        if job["status"] in TERMINAL:
            assert job["status"] == "succeeded", job
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job did not finish: {job}")


def _hyperparameters(est: Any) -> dict[str, Any]:
    """An estimator's hyperparameters, without the nested estimator objects themselves."""
    params = est.get_params(deep=True).items()
    return {k: v for k, v in params if k != "steps" and not hasattr(v, "get_params")}


async def test_a_pipeline_champion_is_refitted_and_compared(
    api: httpx.AsyncClient, pool: Any, data: dict[str, str]
) -> None:
    model, fitted = _name("xdawn"), xdawn_pipeline_artifact()
    champion = await _champion(
        pool, model, "sklearn-pipeline", fitted.artifact, fitted.metadata(positive_class=1)
    )
    body = {
        "model_name": model,  # no family: the champion's
        "training_dataset": data["training"],
        "testing_dataset": data["testing"],
        "promote": {"metric": "roc_auc", "min_improvement": -1.0},
    }
    job = await _run(api, body)
    assert job["family"] == "sklearn-pipeline"
    assert job["spec"]["params"] == {
        "feature_pipeline": "raw@1",
        "feature_params": {"stream_filter": None},
        "model_params": {"positive_class": 1},
    }
    shown = "XdawnCovariances + TangentSpace + LogisticRegression"
    assert f"refitting a clone of champion {model}:1's {shown}" in [
        line["message"] for line in job["logs"]
    ]
    result = job["result"]
    assert result["version"] == 2 and result["champion"]["version"] == 1
    for metric in ("roc_auc", "balanced_accuracy"):
        side = result["comparison"][metric]
        assert side["challenger"] > 0.8 and side["champion"] > 0.8
        assert side["delta"] == pytest.approx(side["challenger"] - side["champion"])
    assert result["promoted"] is True and result["aliases_moved"] == ["challenger", "champion"]

    async with pool.connection() as conn:
        challenger = await registry.fetch_version(conn, result["version_id"])
    assert challenger is not None and challenger["family"] == "sklearn-pipeline"
    assert challenger["feature_pipeline"] == "raw@1"
    assert challenger["input_spec"]["channels"] == list(CHANNELS)
    assert challenger["dataset_hash"] == data["training_hash"] != champion["dataset_hash"]
    assert challenger["sha256"] != champion["sha256"]
    assert {"roc_auc", "balanced_accuracy"} <= set(challenger["metrics"]["test"])
    assert challenger["metrics"]["champion_test"]["roc_auc"] > 0.8
    refitted = ServingModel.from_row(challenger).classifier.estimator  # type: ignore[attr-defined]
    assert [type(s) for _, s in refitted.steps] == [type(s) for _, s in fitted.estimator.steps]
    assert _hyperparameters(refitted) == _hyperparameters(fitted.estimator)
    assert not np.allclose(refitted[-1].coef_, fitted.estimator[-1].coef_)
    assert not np.allclose(refitted[0].P_, fitted.estimator[0].P_)  # Xdawn prototypes

    body["search"] = {"trials": 2}
    r = await api.post("/jobs", json=body)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "search"
    assert "no search space for a user's estimator" in r.json()["detail"]
    r = await api.post("/jobs", json={**body, "search": None, "params": {"model_params": {"C": 1}}})
    assert r.status_code == 422 and "keeps the champion's hyperparameters" in r.json()["detail"]


async def test_an_onnx_champion_is_not_refitted_but_a_named_family_trains(
    api: httpx.AsyncClient, pool: Any, data: dict[str, str]
) -> None:
    model, fitted = _name("net"), xdawn_pipeline_artifact()
    await _champion(pool, model, "onnx", _onnx_net(), fitted.metadata())
    body = {
        "model_name": model,
        "training_dataset": data["training"],
        "testing_dataset": data["testing"],
    }
    for family in (None, "onnx"):
        r = await api.post("/jobs", json=body | ({"family": family} if family else {}))
        assert r.status_code == 422, r.text
        assert ONNX_SAYS in r.json()["detail"] and "`neurostream models push`" in r.json()["detail"]
        assert r.json()["errors"][0]["field"] == "family"
    r = await api.post("/jobs", json=body | {"family": "sklearn-pipeline"})
    assert r.status_code == 422
    assert f"no estimator to clone (its champion {model}:1 is onnx)" in r.json()["detail"]
    template = {k: v for k, v in body.items() if k != "model_name"}
    trigger = {"model_name": model, "kind": "schedule", "every_s": 3600, "job": template}
    r = await api.post("/triggers", json=trigger)
    assert r.status_code == 422 and ONNX_SAYS in r.json()["detail"]

    job = await _run(api, body | {"family": "sklearn-lda", "params": {"feature_pipeline": "erp@1"}})
    assert job["family"] == "sklearn-lda" and job["result"]["champion"]["version"] == 1
    assert job["result"]["champion"]["test"]["n"] == 60  # the onnx champion, scored as ever
    assert job["result"]["challenger"]["test"]["roc_auc"] > 0.8


async def test_a_refit_without_a_pipeline_champion_is_refused(
    api: httpx.AsyncClient, data: dict[str, str]
) -> None:
    body = {
        "model_name": _name("new"),
        "training_dataset": data["training"],
        "testing_dataset": data["testing"],
    }
    r = await api.post("/jobs", json=body | {"family": "sklearn-pipeline"})
    assert r.status_code == 422
    assert "no estimator to clone (it has no champion)" in r.json()["detail"]
    assert "push a fitted estimator with `neurostream models push`" in r.json()["detail"]
    r = await api.post("/jobs", json=body)
    assert r.status_code == 422 and "has no champion whose family" in r.json()["detail"]
