"""The registry SQL and model events against the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import numpy as np
import pytest

from neurostream import registry, topology
from neurostream.events import parse_model_event, publish_model_event
from neurostream.models.serving import ServingModel
from neurostream.models.training import TrainedModel, train_model
from neurostream.settings import CoreSettings

pytestmark = pytest.mark.integration
FS = 250.0


def synthetic_p300(n: int = 120, channels: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Epochs [-0.1, 0.7) s with a Gaussian bump at 300 ms on targets."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.8 * FS)) / FS - 0.1
    y = (np.arange(n) % 3 == 0).astype(np.int64)
    x = rng.normal(0, 5, (n, channels, t.size)).astype(np.float32)
    x[y == 1] += (8 * np.exp(-((t - 0.3) ** 2) / (2 * 0.05**2))).astype(np.float32)
    return x, y


@pytest.fixture(scope="session")
def lda() -> TrainedModel:
    x, y = synthetic_p300()
    return train_model("sklearn-lda", x, y, FS)


def _kwargs(trained: TrainedModel, name: str) -> dict[str, Any]:
    return {
        "model_name": name,
        "family": trained.family,
        "feature_pipeline": trained.feature_pipeline,
        "feature_params": trained.feature_params,
        "model_params": trained.model_params,
        "input_spec": trained.input_spec,
        "classes": trained.classes,
        "metrics": trained.metrics,
        "dataset_hash": trained.dataset_hash,
        "code_version": "test",
        "artifact": trained.artifact,
    }


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_versions_are_numbered_and_rows_load_as_serving_models(pool, lda) -> None:
    name = _name("lda")
    async with pool.connection() as conn:
        v1 = await registry.register_version(conn, **_kwargs(lda, name))
        v2 = await registry.register_version(conn, **_kwargs(lda, name))
        row = await registry.fetch_version(conn, v2["id"])
        listed = await registry.list_versions(conn, name)
        model = await registry.get_model(conn, name)
    assert (v1["version"], v2["version"]) == (1, 2)
    assert v1["sha256"] == lda.sha256 and v1["artifact_size"] == len(lda.artifact)
    assert "artifact" not in v1 and all("artifact" not in r for r in listed)
    assert [r["version"] for r in listed] == [2, 1]
    assert model is not None and model["versions"] == 2 and model["latest"] == 2
    assert row is not None and bytes(row["artifact"]) == lda.artifact
    served = ServingModel.from_row(row)
    assert served.version_id == v2["id"] and served.label == f"{name}:2"
    x, _ = synthetic_p300(n=6, seed=1)
    expected = lda.classifier.predict_proba(served.pipeline.transform(x, FS, served.feature_params))
    np.testing.assert_allclose(served.predict(x, FS).proba, expected, rtol=1e-6)


async def test_concurrent_registrations_get_distinct_consecutive_versions(core, lda) -> None:
    from neurostream.db import open_pool

    name = _name("race")
    pool = await open_pool(core.database_url, max_size=6, migrate_schema=False)
    try:

        async def one() -> int:
            async with pool.connection() as conn:
                return int((await registry.register_version(conn, **_kwargs(lda, name)))["version"])

        versions = await asyncio.gather(*(one() for _ in range(6)))
    finally:
        await pool.close()
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]


async def test_refs_aliases_and_assignment_resolve_to_version_ids(pool, lda) -> None:
    name, service = _name("m"), _name("svc")
    async with pool.connection() as conn:
        v1 = await registry.register_version(conn, **_kwargs(lda, name))
        v2 = await registry.register_version(conn, **_kwargs(lda, name))
        assert await registry.resolve_service(conn, service) == registry.ServiceModels(None, None)
        await registry.create_service(conn, service, description="test")
        with pytest.raises(registry.Conflict):
            await registry.create_service(conn, service)
        assert (await registry.resolve_ref(conn, name, "2")) == v2["id"]
        assert (await registry.resolve_ref(conn, name, "9")) is None
        assert (await registry.resolve_ref(conn, name, "champion")) is None

        alias = await registry.set_alias(conn, name, "champion", version=1)
        assert (alias["version"], alias["version_id"]) == (1, v1["id"])
        got = await registry.assign(conn, service, name, "champion", shadow_ref="2")
        assert got == registry.ServiceModels(v1["id"], v2["id"])
        assert await registry.services_following(conn, name, "champion") == [service]

        await registry.set_alias(conn, name, "champion", version_id=v2["id"])
        assert await registry.resolve_service(conn, service) == registry.ServiceModels(
            v2["id"], v2["id"]
        )
        row = await registry.get_service(conn, service)
        assert row is not None and row["model_ref"] == "champion"
        assert row["serving_version_id"] == v2["id"]

        with pytest.raises(registry.BadRef) as bad:
            await registry.assign(conn, service, name, "7")
        assert bad.value.field == "ref"
        with pytest.raises(registry.BadRef) as bad:
            await registry.assign(conn, service, name, "1", shadow_ref="nope")
        assert bad.value.field == "shadow_ref"
        with pytest.raises(registry.NotFound) as missing:
            await registry.assign(conn, service, _name("absent"), "1")
        assert missing.value.field == "model_name"
        with pytest.raises(registry.NotFound) as missing:
            await registry.set_alias(conn, name, "champion", version=5)
        assert missing.value.field == "version"
        with pytest.raises(registry.BadRef):
            await registry.set_alias(conn, name, "42", version=1)
        with pytest.raises(registry.Conflict):
            await registry.delete_alias(conn, name, "champion")

        assert await registry.delete_service(conn, service) is True
        assert await registry.delete_service(conn, service) is False
        await registry.delete_alias(conn, name, "champion")
        assert await registry.list_aliases(conn, name) == []


async def test_model_event_reaches_a_bound_queue(core: CoreSettings) -> None:
    service = _name("evt")
    connection = await aio_pika.connect_robust(core.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = await topology.declare_exchanges(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchanges[topology.MODEL_EVENTS_EXCHANGE], routing_key=service)
        other = await channel.declare_queue(exclusive=True, auto_delete=True)
        await other.bind(exchanges[topology.MODEL_EVENTS_EXCHANGE], routing_key=_name("other"))

        sent = await publish_model_event(channel, service, 12, None, "assign")
        message = None
        for _ in range(100):
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.05)
        assert message is not None
        event = parse_model_event(message.body)
        assert event == sent
        assert (event.service, event.serving_version_id, event.shadow_version_id) == (
            service,
            12,
            None,
        )
        assert message.routing_key == service and message.content_type == "application/json"
        assert await other.get(no_ack=True, fail=False) is None
