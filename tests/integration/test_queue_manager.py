"""The queue manager API end to end: real PostgreSQL (scratch database), real RabbitMQ.

The app runs with its lifespan under ``httpx.AsyncClient`` + ``ASGITransport``; assertions
are on status codes, JSON bodies, database rows and ``models.events`` messages received on
a queue the test binds.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import numpy as np
import pytest
from aio_pika.abc import AbstractQueue

from neurostream import registry, topology
from neurostream.events import ModelEvent, parse_model_event
from neurostream.models.training import TrainedModel, train_model
from neurostream.settings import CoreSettings
from queue_manager.app import create_app
from queue_manager.settings import QueueManagerSettings
from tests.factories import app_client

pytestmark = pytest.mark.integration
FS = 250.0
MAX_UPLOAD = 2 * 1024 * 1024


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def lda() -> TrainedModel:
    rng = np.random.default_rng(0)
    t = np.arange(int(0.8 * FS)) / FS - 0.1
    y = (np.arange(120) % 3 == 0).astype(np.int64)
    x = rng.normal(0, 5, (120, 4, t.size)).astype(np.float32)
    x[y == 1] += (8 * np.exp(-((t - 0.3) ** 2) / (2 * 0.05**2))).astype(np.float32)
    return train_model("sklearn-lda", x, y, FS)


@pytest.fixture(scope="session")
async def api(core: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An authorised client on a running app (lifespan entered)."""
    app = create_app(core, QueueManagerSettings(max_upload_bytes=MAX_UPLOAD, worker_heartbeat_s=1))
    async with app_client(app, core, base_url="http://qm", timeout=30) as client:
        yield client


@pytest.fixture
async def events(core: CoreSettings) -> AsyncIterator[Any]:
    """``bind(service)`` -> a queue receiving that service's models.events messages."""
    connection = await aio_pika.connect_robust(core.amqp_url)
    channel = await connection.channel()
    exchange = (await topology.declare_exchanges(channel))[topology.MODEL_EVENTS_EXCHANGE]

    async def bind(service: str) -> AbstractQueue:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=service)
        return queue

    yield bind
    await connection.close()


async def next_event(queue: AbstractQueue, wait_s: float = 5.0) -> ModelEvent:
    for _ in range(int(wait_s / 0.05)):
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return parse_model_event(message.body)
        await asyncio.sleep(0.05)
    raise AssertionError("no models.events message arrived")


def _metadata(trained: TrainedModel, **overrides: Any) -> str:
    meta = {
        "family": trained.family,
        "feature_pipeline": trained.feature_pipeline,
        "feature_params": trained.feature_params,
        "model_params": trained.model_params,
        "input_spec": trained.input_spec,
        "classes": trained.classes,
        "metrics": trained.metrics,
        "dataset_hash": trained.dataset_hash,
        "code_version": "test",
    }
    return json.dumps({**meta, **overrides})


async def upload(
    api: httpx.AsyncClient,
    name: str,
    trained: TrainedModel,
    artifact: bytes | None = None,
    **meta: Any,
) -> httpx.Response:
    return await api.post(
        f"/models/{name}/versions",
        files={"artifact": ("model.skops", artifact if artifact is not None else trained.artifact)},
        data={"metadata": _metadata(trained, **meta)},
    )


async def test_health_and_metrics(api: httpx.AsyncClient) -> None:
    r = await api.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["checks"] == {"database": "ok", "broker": "ok"}
    r = await api.get("/metrics")
    assert r.status_code == 200
    assert (
        'neurostream_http_requests_total{app="queue_manager",method="GET",route="/health"' in r.text
    )
    assert "/services" in (await api.get("/openapi.json")).json()["paths"]


async def test_writes_need_the_bearer_token(api: httpx.AsyncClient) -> None:
    name = _name("svc")
    body = {"name": name}
    r = await api.post("/services", json=body, headers={"Authorization": ""})
    assert r.status_code == 401 and "authorization" in r.json()["detail"]
    r = await api.post("/services", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert (await api.get(f"/services/{name}")).status_code == 404
    r = await api.post("/services", json=body)
    assert r.status_code == 201 and r.json()["name"] == name


async def test_service_crud_and_bad_input_is_4xx(api: httpx.AsyncClient, pool) -> None:
    name = _name("svc")
    r = await api.post("/services", json={"name": name, "description": "p300 speller"})
    assert r.status_code == 201
    assert r.json()["serving_version_id"] is None and r.json()["description"] == "p300 speller"
    assert (await api.post("/services", json={"name": name})).status_code == 409
    r = await api.put(f"/services/{name}", json={"description": "renamed"})
    assert r.status_code == 200 and r.json()["description"] == "renamed"
    assert name in [s["name"] for s in (await api.get("/services")).json()]

    r = await api.post("/services", json={"name": "bad name!"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"
    r = await api.post("/services", json={"name": _name("s"), "description": "nul\x00byte"})
    assert r.status_code == 422 and "invalid value" in r.json()["detail"]
    r = await api.post("/services", json={"name": _name("s"), "extra": 1})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "extra"
    assert (await api.get("/jobs", params={"limit": 0})).status_code == 422
    assert (await api.get("/models/x/versions/99999999999")).status_code == 422
    r = await api.put(f"/services/{name}/assign", json={"model_name": "m"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "ref"

    assert (await api.delete(f"/services/{name}")).status_code == 204
    assert (await api.delete(f"/services/{name}")).status_code == 404
    async with pool.connection() as conn:
        assert await registry.get_service(conn, name) is None


async def test_registry_errors_are_their_status_and_message(api: httpx.AsyncClient) -> None:
    name = _name("svc")
    r = await api.get(f"/services/{name}")
    assert (r.status_code, r.json()["detail"]) == (404, f"service: service {name!r} not found")
    assert r.json()["errors"] == [
        {"field": "service", "message": f"service {name!r} not found", "type": "not_found"}
    ]
    assert (await api.post("/services", json={"name": name})).status_code == 201
    r = await api.post("/services", json={"name": name})
    assert (r.status_code, r.json()["detail"]) == (409, f"name: service {name!r} already exists")
    r = await api.delete(f"/services/{name}")
    assert r.status_code == 204


async def test_upload_list_get_and_download(api: httpx.AsyncClient, pool, lda) -> None:
    name = _name("lda")
    r = await upload(api, name, lda, sha256=lda.sha256)
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert (v1["version"], v1["sha256"], v1["artifact_size"]) == (1, lda.sha256, len(lda.artifact))
    assert "artifact" not in v1 and v1["metrics"]["roc_auc"] == lda.metrics["roc_auc"]
    assert (await upload(api, name, lda)).json()["version"] == 2

    listed = (await api.get(f"/models/{name}/versions")).json()
    assert [v["version"] for v in listed] == [2, 1]
    assert (await api.get(f"/models/{name}/versions/1")).json()["id"] == v1["id"]
    model = (await api.get(f"/models/{name}")).json()
    assert (model["versions"], model["latest"], model["family"]) == (2, 2, "sklearn-lda")

    r = await api.get(f"/models/{name}/versions/1/artifact")
    assert r.status_code == 200 and r.content == lda.artifact
    assert r.headers["x-artifact-sha256"] == lda.sha256
    async with pool.connection() as conn:
        row = await registry.fetch_version(conn, v1["id"])
    assert row is not None and bytes(row["artifact"]) == lda.artifact

    assert (await api.get(f"/models/{name}/versions/3")).status_code == 404
    assert (await api.get(f"/models/{_name('none')}")).status_code == 404
    assert (await api.get(f"/models/{_name('none')}/versions")).status_code == 404


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("garbage", "artifact"),
        ("tampered", "artifact"),
        ("empty", "artifact"),
        ("sha", "metadata.sha256"),
        ("pipeline", "metadata.feature_pipeline"),
        ("family", "artifact"),
        ("classes", "artifact"),
        ("missing", "metadata.family"),
        ("json", "metadata"),
    ],
)
async def test_uploads_that_cannot_serve_are_refused(
    api: httpx.AsyncClient, pool, lda, case: str, field: str
) -> None:
    name = _name("bad")
    tampered = bytearray(lda.artifact)
    tampered[len(tampered) // 2] ^= 0xFF
    cases: dict[str, tuple[bytes, dict[str, Any]]] = {
        "garbage": (b"not a model", {}),
        "tampered": (bytes(tampered), {}),
        "empty": (b"", {}),
        "sha": (lda.artifact, {"sha256": "0" * 64}),
        "pipeline": (lda.artifact, {"feature_pipeline": "nope@9"}),
        "family": (lda.artifact, {"family": "xgboost"}),
        "classes": (lda.artifact, {"classes": [0, 1, 2]}),
    }
    artifact, meta = cases.get(case, (lda.artifact, {}))
    if case in {"missing", "json"}:
        text = "{not json" if case == "json" else json.dumps({"feature_pipeline": "erp@1"})
        r = await api.post(
            f"/models/{name}/versions",
            files={"artifact": ("m", lda.artifact)},
            data={"metadata": text},
        )
    else:
        r = await upload(api, name, lda, artifact, **meta)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(field), r.json()
    async with pool.connection() as conn:
        assert await registry.get_model(conn, name) is None


async def test_oversized_uploads_get_413_before_being_read_whole(
    api: httpx.AsyncClient, pool, lda
) -> None:
    name = _name("big")
    big = b"\0" * (MAX_UPLOAD + 1)
    r = await upload(api, name, lda, big)
    assert r.status_code == 413

    sent = 0

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        nonlocal sent
        boundary = b"--b0undary"
        yield (
            boundary + b'\r\nContent-Disposition: form-data; name="artifact"; filename="m"\r\n\r\n'
        )
        for _ in range(64):
            sent += 1
            yield b"\0" * 65536
        yield b"\r\n" + boundary + b"--\r\n"

    r = await api.post(
        f"/models/{name}/versions",
        content=chunked(),
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert r.status_code == 413
    assert sent < 64  # refused part-way: the 4 MiB body was never read whole
    async with pool.connection() as conn:
        assert await registry.get_model(conn, name) is None


async def test_assignment_and_alias_moves_publish_model_events(
    api: httpx.AsyncClient, pool, lda, events
) -> None:
    name, service = _name("p300"), _name("svc")
    v1 = (await upload(api, name, lda)).json()
    v2 = (await upload(api, name, lda)).json()
    assert (await api.post("/services", json={"name": service})).status_code == 201
    queue = await events(service)

    r = await api.put(f"/services/{service}/assign", json={"model_name": name, "ref": "1"})
    assert r.status_code == 200, r.text
    assert (r.json()["serving_version_id"], r.json()["event_published"]) == (v1["id"], True)
    event = await next_event(queue)
    assert (event.service, event.serving_version_id, event.shadow_version_id, event.reason) == (
        service,
        v1["id"],
        None,
        "assign",
    )

    r = await api.put(f"/models/{name}/aliases/champion", json={"version": 1})
    assert r.status_code == 200 and r.json()["services_notified"] == []
    r = await api.post(
        f"/services/{service}/assign",
        json={"model_name": name, "ref": "champion", "shadow_ref": "2"},
    )
    assert r.status_code == 200
    event = await next_event(queue)
    assert (event.serving_version_id, event.shadow_version_id) == (v1["id"], v2["id"])

    r = await api.put(f"/models/{name}/aliases/champion", json={"version": 2})
    assert r.status_code == 200
    assert (r.json()["version_id"], r.json()["services_notified"]) == (v2["id"], [service])
    event = await next_event(queue)
    assert (event.serving_version_id, event.reason) == (v2["id"], "alias")
    async with pool.connection() as conn:
        assert await registry.resolve_service(conn, service) == registry.ServiceModels(
            v2["id"], v2["id"]
        )
    aliases = (await api.get(f"/models/{name}/aliases")).json()
    assert [(a["alias"], a["version"]) for a in aliases] == [("champion", 2)]
    assert (await api.get(f"/models/{name}")).json()["aliases"] == {"champion": 2}
    assert (await api.delete(f"/models/{name}/aliases/champion")).status_code == 409

    bad = [
        ({"model_name": name, "ref": "7"}, 422, "ref"),
        ({"model_name": name, "ref": "1", "shadow_ref": "nope"}, 422, "shadow_ref"),
        ({"model_name": _name("none"), "ref": "1"}, 404, "model_name"),
    ]
    for body, code, field in bad:
        r = await api.put(f"/services/{service}/assign", json=body)
        assert (r.status_code, r.json()["detail"].split(":")[0]) == (code, field)
    r = await api.put(f"/services/{_name('none')}/assign", json={"model_name": name, "ref": "1"})
    assert r.status_code == 404
    assert (await api.put(f"/models/{name}/aliases/x", json={"version": 9})).status_code == 404
    assert await queue.get(no_ack=True, fail=False) is None  # refused changes publish nothing

    assert (await api.delete(f"/services/{service}")).status_code == 204
    event = await next_event(queue)
    assert (event.serving_version_id, event.reason) == (None, "service-deleted")


async def test_jobs_session_summary_and_workers(api: httpx.AsyncClient, pool, lda) -> None:
    name, service, session = _name("m"), _name("svc"), _name("sess")
    vid = (await upload(api, name, lda)).json()["id"]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO sessions (session_id, service, board, fs, channels, windows_confirmed) "
            "VALUES (%s, %s, 'synthetic', 250, '[\"c0\"]', 8)",
            [session, service],
        )
        for seq in (0, 1, 2, 5):  # 3 is rejected; 4, 6 and 7 never arrived
            sent = t0 + timedelta(seconds=seq)
            await conn.execute(
                "INSERT INTO predictions (session_id, seq, model_version_id, window_ts, service, "
                "kind, predicted, score, proba, sent_at, predicted_at, worker_id) VALUES "
                "(%s, %s, %s, %s, %s, 'epoch', %s, %s, %s, %s, %s, 'w1')",
                [
                    session,
                    seq,
                    vid,
                    sent,
                    service,
                    seq % 2,
                    0.25 * seq,
                    [0.5, 0.5],
                    sent,
                    sent + timedelta(milliseconds=10 * (seq + 1)),
                ],
            )
        await conn.execute(
            "INSERT INTO rejections (service, session_id, seq, reason, worker_id, rejected_at) "
            "VALUES (%s, %s, 3, 'non-finite values', 'w1', %s)",
            [service, session, t0 + timedelta(seconds=3.5)],
        )
        await conn.execute(
            "INSERT INTO workers (worker_id, service, model_version_id, status, last_seen) VALUES "
            "(%s, %s, %s, 'running', now()), (%s, %s, %s, 'running', now() - interval '1 min')",
            [f"{service}-a", service, vid, f"{service}-b", service, vid],
        )

    page = (await api.get("/jobs", params={"session_id": session, "limit": 10})).json()
    assert len(page["items"]) == 5
    predicted = {j["seq"]: j for j in page["items"] if j["status"] == "predicted"}
    assert predicted[2]["latency_ms"] == pytest.approx(30.0)
    assert predicted[5]["score"] == pytest.approx(1.25) and predicted[5]["model_version_id"] == vid
    rejected = (await api.get("/jobs", params={"session_id": session, "status": "rejected"})).json()
    assert [(j["seq"], j["reason"]) for j in rejected["items"]] == [(3, "non-finite values")]
    paged = (await api.get("/jobs", params={"service": service, "limit": 2, "offset": 1})).json()
    assert [j["seq"] for j in paged["items"]] == [3, 2]  # newest first: 5, 3, 2, 1, 0
    assert (await api.get("/jobs", params={"status": "done"})).status_code == 422

    summary = (await api.get(f"/sessions/{session}/summary")).json()
    assert (summary["windows_seen"], summary["predicted"], summary["rejected"]) == (5, 4, 1)
    assert (summary["max_seq"], summary["missing"]) == (5, 3)
    assert summary["gaps"] == [{"start": 4, "end": 4}, {"start": 6, "end": 7}]
    (per,) = summary["per_version"]
    assert (per["model_version_id"], per["label"], per["predictions"]) == (vid, f"{name}:1", 4)
    assert per["latency_ms_p50"] == pytest.approx(25.0)
    assert (await api.get(f"/sessions/{_name('none')}/summary")).status_code == 404

    workers = (await api.get("/workers", params={"service": service})).json()
    assert [(w["worker_id"], w["status"]) for w in workers] == [
        (f"{service}-a", "running"),
        (f"{service}-b", "stale"),
    ]


async def test_torch_upload_loads_with_its_architecture(api: httpx.AsyncClient, lda) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 5, (60, 4, 200)).astype(np.float32)
    y = (np.arange(60) % 3 == 0).astype(np.int64)
    net = train_model("torch-eegnet", x, y, FS, model_params={"epochs": 1})
    name = _name("eegnet")
    r = await upload(api, name, net, artifact=net.artifact)
    assert r.status_code == 201, r.text
    assert (r.json()["family"], r.json()["model_params"]["n_channels"]) == ("torch-eegnet", 4)
    wrong = {**net.model_params, "n_channels": 6}  # state_dict no longer fits the architecture
    r = await upload(api, name, net, artifact=net.artifact, model_params=wrong)
    assert r.status_code == 422 and r.json()["detail"].startswith("artifact")
    r = await upload(api, name, net, artifact=lda.artifact)  # skops bytes as torch
    assert r.status_code == 422 and r.json()["detail"].startswith("artifact")


@pytest.mark.parametrize(("client", "expected"), [("127.0.0.1", 201), ("10.1.2.3", 401)])
async def test_dev_mode_without_token_opens_writes_to_localhost_only(
    core: CoreSettings, client: str, expected: int
) -> None:
    open_core = core.model_copy(update={"api_token": None, "mode": "dev"})
    app = create_app(open_core, QueueManagerSettings())
    async with app_client(app, base_url="http://qm", timeout=5, client=(client, 40000)) as api:
        r = await api.post("/services", json={"name": _name("dev")})
        assert r.status_code == expected, r.text
        assert (await api.get("/services")).status_code == 200


@pytest.mark.parametrize(
    ("channels", "words"),
    [
        (["Fz", "Cz", "Cz", "Oz"], "Cz more than once"),
        (["Fz", "Cz", "Pz"], "names 3 channels but n_channels is 4"),
        (["Fz", " ", "Pz", "Oz"], "empty names"),
        ("Fz,Cz,Pz,Oz", "must be a list of channel names"),
    ],
)
async def test_upload_metadata_channels_are_validated(
    api: httpx.AsyncClient, pool, lda, channels: Any, words: str
) -> None:
    assert lda.input_spec["n_channels"] == 4
    name = _name("sig")
    r = await upload(api, name, lda, input_spec={**lda.input_spec, "channels": channels})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["detail"].startswith("metadata.input_spec.channels: ") and words in body["detail"]
    assert body["errors"][0]["field"] == "metadata.input_spec.channels"
    async with pool.connection() as conn:
        assert await registry.get_model(conn, name) is None


async def test_an_upload_records_its_channel_names_and_geometry(
    api: httpx.AsyncClient, lda
) -> None:
    spec = {**lda.input_spec, "channels": ["TP9", "AF7", "AF8", "TP10"], "tmin": -0.1, "tmax": 0.7}
    r = await upload(api, _name("sig"), lda, input_spec=spec)
    assert r.status_code == 201, r.text
    assert r.json()["input_spec"] == spec
    r = await upload(api, _name("sig"), lda, input_spec={**spec, "units": "kV"})
    assert r.status_code == 422 and r.json()["detail"].startswith("metadata.input_spec.units")
