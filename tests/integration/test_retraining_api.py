"""The retraining API end to end: real PostgreSQL (scratch database), real RabbitMQ (vhost).

The app runs with its lifespan (so its job runner claims and runs jobs) under
``httpx.AsyncClient`` + ``ASGITransport``. Datasets are created directly with
``neurostream.datasets.create_snapshot`` from synthetic P300 epochs; jobs are polled to
completion without timing assertions (the machine is shared).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import numpy as np
import pytest
from aio_pika.abc import AbstractQueue
from psycopg.types.json import Jsonb

import neurostream
from neurostream import datasets, registry, topology
from neurostream.events import ModelEvent, parse_model_event
from neurostream.settings import CoreSettings
from retraining_api.app import create_app
from retraining_api.settings import RetrainingSettings
from retraining_api.store import INTERRUPTED
from tests.factories import FS, app_client, synthetic_p300

pytestmark = pytest.mark.integration
CHANNELS = ["Fz", "Cz", "Pz", "Oz"]
TERMINAL = {"succeeded", "failed", "cancelled"}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _settings(**overrides: Any) -> RetrainingSettings:
    fast = {"poll_s": 0.2, "heartbeat_s": 0.3, "stale_after_s": 30, "trigger_check_s": 0.5}
    return RetrainingSettings(**{**fast, **overrides})


@pytest.fixture(scope="session")
async def api(core: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An authorised client on a running app (lifespan entered, runner running)."""
    app = create_app(core, _settings())
    async with app_client(app, core, base_url="http://rt", timeout=120) as client:
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


async def next_event(queue: AbstractQueue, wait_s: float = 15.0) -> ModelEvent:
    for _ in range(int(wait_s / 0.05)):
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return parse_model_event(message.body)
        await asyncio.sleep(0.05)
    raise AssertionError("no models.events message arrived")


def p300_only_on(n: int, seed: int, active: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Epochs whose first ``active`` channels carry the P300; the rest are pure noise."""
    x, y = synthetic_p300(n=n, channels=len(CHANNELS), seed=seed)
    rng = np.random.default_rng(seed + 100)
    x[:, active:] = rng.normal(0, 5, x[:, active:].shape).astype(np.float32)
    return x, y


@pytest.fixture
async def data(pool: Any) -> dict[str, dict[str, Any]]:
    """A fresh training (90 rows) and testing (60 rows) snapshot."""
    name = _name("p300")
    xtr, ytr = p300_only_on(90, seed=1)
    xte, yte = p300_only_on(60, seed=2)
    async with pool.connection() as conn:
        train = await datasets.create_snapshot(
            conn,
            name=f"{name}-train",
            kind="training",
            windows=xtr,
            labels=ytr,
            fs=FS,
            channels=CHANNELS,
        )
        test = await datasets.create_snapshot(
            conn,
            name=f"{name}-test",
            kind="testing",
            windows=xte,
            labels=yte,
            fs=FS,
            channels=CHANNELS,
        )
    return {"train": train, "test": test}


def job_body(data: dict[str, dict[str, Any]], model_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "family": "sklearn-lda",
        "training_dataset": f"{data['train']['name']}@{data['train']['version']}",
        "testing_dataset": data["test"]["name"],
        **extra,
    }


async def wait_job(api: httpx.AsyncClient, job_id: int, wait_s: float = 180.0) -> dict[str, Any]:
    for _ in range(int(wait_s / 0.2)):
        job = (await api.get(f"/jobs/{job_id}")).json()
        if job["status"] in TERMINAL:
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def run_job(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post("/jobs", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    job = await wait_job(api, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


async def test_health_metrics_and_openapi(api: httpx.AsyncClient) -> None:
    r = await api.get("/health")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert "neurostream_http_requests_total" in (await api.get("/metrics")).text
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert {"/jobs", "/jobs/{job_id}/trials", "/models/{name}/promote", "/triggers"} <= set(paths)


async def test_job_registers_a_challenger_with_metrics_and_lineage(
    api: httpx.AsyncClient, pool: Any, data: dict[str, dict[str, Any]]
) -> None:
    model = _name("lda")
    job = await run_job(api, job_body(data, model))
    assert job["progress"] == 1.0 and job["model_name"] == model
    assert any("registered" in line["message"] for line in job["logs"])
    result = job["result"]
    assert result["version"] == 1 and result["promoted"] is False
    assert result["champion"] is None
    assert result["challenger"]["test"]["roc_auc"] > 0.8
    assert set(result["comparison"]) >= {"roc_auc", "balanced_accuracy", "f1", "mcc"}
    async with pool.connection() as conn:
        version = await registry.get_version(conn, model, 1)
        aliases = {a["alias"]: a["version"] for a in await registry.list_aliases(conn, model)}
    assert version is not None
    assert version["dataset_hash"] == data["train"]["content_hash"]
    assert version["code_version"] == neurostream.__version__
    metrics = version["metrics"]
    assert {"validation", "test", "champion_test"} <= set(metrics)
    assert set(metrics["test"]) >= {"roc_auc", "balanced_accuracy", "f1", "mcc", "confusion_matrix"}
    assert metrics["lineage"]["training_dataset_id"] == data["train"]["id"]
    assert metrics["lineage"]["testing_dataset_id"] == data["test"]["id"]
    assert aliases == {"challenger": 1}
    listed = (await api.get("/jobs", params={"model_name": model})).json()
    assert [j["id"] for j in listed] == [job["id"]]


async def test_promote_rule_promotes_and_notifies_following_services(
    api: httpx.AsyncClient, pool: Any, data: dict[str, dict[str, Any]], events: Any
) -> None:
    model, service = _name("lda"), _name("svc")
    rule = {"metric": "roc_auc", "min_improvement": 0.01}
    first = (await run_job(api, job_body(data, model, promote=rule)))["result"]
    assert first["promoted"] is True and "no champion" in first["promotion_reason"]
    async with pool.connection() as conn:
        await registry.create_service(conn, service)
        await registry.assign(conn, service, model, "champion")
    queue = await events(service)

    # The same data cannot beat the champion by 1.0: challenger only, side by side.
    body = job_body(data, model, promote={"metric": "roc_auc", "min_improvement": 1.0})
    second = (await run_job(api, body))["result"]
    assert second["promoted"] is False and second["aliases_moved"] == ["challenger"]
    assert second["champion"]["version"] == 1
    row = second["comparison"]["roc_auc"]
    assert row["champion"] == pytest.approx(first["challenger"]["test"]["roc_auc"])
    assert row["delta"] == pytest.approx(row["challenger"] - row["champion"])

    body = job_body(data, model, promote={"metric": "mcc", "min_improvement": -1.0})
    third = (await run_job(api, body))["result"]
    assert third["promoted"] is True and third["services_notified"] == [service]
    assert third["event_published"] is True
    event = await next_event(queue)
    assert event.service == service and event.serving_version_id == third["version_id"]
    async with pool.connection() as conn:
        assert (await registry.resolve_service(conn, service)).serving == third["version_id"]


async def test_manual_promotion_moves_champion_and_notifies(
    api: httpx.AsyncClient, pool: Any, data: dict[str, dict[str, Any]], events: Any
) -> None:
    model, service = _name("lda"), _name("svc")
    await run_job(api, job_body(data, model))
    r = await api.post(f"/models/{model}/promote", json={})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["previous_version"] is None
    async with pool.connection() as conn:
        await registry.create_service(conn, service)
        await registry.assign(conn, service, model, "champion")
    second = (await run_job(api, job_body(data, model)))["result"]
    queue = await events(service)
    r = await api.post(
        f"/models/{model}/promote", json={"from_alias": "challenger", "to_alias": "champion"}
    )
    assert r.status_code == 200
    assert r.json()["previous_version"] == 1 and r.json()["version"] == 2
    assert r.json()["services_notified"] == [service] and r.json()["event_published"]
    event = await next_event(queue)
    assert event.serving_version_id == second["version_id"]


async def test_optuna_search_records_each_trial(
    api: httpx.AsyncClient, data: dict[str, dict[str, Any]]
) -> None:
    body = job_body(data, _name("lda"), search={"trials": 3}, seed=7)
    job = await run_job(api, body)
    trials = (await api.get(f"/jobs/{job['id']}/trials")).json()
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert all(t["state"] == "complete" and 0 <= t["value"] <= 1 for t in trials)
    assert all({"shrinkage", "l_freq", "h_freq"} == set(t["params"]) for t in trials)
    search = job["result"]["search"]
    assert search["trials"] == 3 and search["sampler"] == "TPESampler"
    assert search["best_value"] == max(t["value"] for t in trials)


async def test_running_job_can_be_cancelled(
    api: httpx.AsyncClient, data: dict[str, dict[str, Any]]
) -> None:
    body = job_body(data, _name("lda"), search={"trials": 200})
    job_id = (await api.post("/jobs", json=body)).json()["job_id"]
    for _ in range(600):
        if (await api.get(f"/jobs/{job_id}/trials")).json():
            break
        await asyncio.sleep(0.2)
    r = await api.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    job = await wait_job(api, job_id)
    assert job["status"] == "cancelled" and job["result"] is None
    assert len((await api.get(f"/jobs/{job_id}/trials")).json()) < 200
    assert (await api.post(f"/jobs/{job_id}/cancel")).status_code == 200  # idempotent


async def test_job_interrupted_by_a_restart_is_marked_failed(core: CoreSettings, pool: Any) -> None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            """INSERT INTO retrain_jobs (model_name, family, spec, status, runner_id,
                started_at, heartbeat_at)
            VALUES ('ghost', 'sklearn-lda', '{}', 'running', 'dead-runner',
                now() - interval '2 hours', now() - interval '1 hour'),
                ('alive', 'sklearn-lda', '{}', 'running', 'live-runner', now(), now())
            RETURNING id"""
        )
        stale, alive = [r[0] for r in await cur.fetchall()]
    app = create_app(core, _settings(stale_after_s=600))
    async with app_client(app, base_url="http://rt", timeout=5) as client:
        job = (await client.get(f"/jobs/{stale}")).json()
        other = (await client.get(f"/jobs/{alive}")).json()
    assert job["status"] == "failed" and job["error"].startswith(INTERRUPTED)
    assert "dead-runner" in job["error"] and job["finished_at"] is not None
    assert any(INTERRUPTED in line["message"] for line in job["logs"])
    assert other["status"] == "running"
    async with pool.connection() as conn:
        await conn.execute("UPDATE retrain_jobs SET status = 'failed' WHERE id = %s", [alive])


async def test_importance_ranks_the_p300_channels_first(
    api: httpx.AsyncClient, data: dict[str, dict[str, Any]]
) -> None:
    model = _name("lda")
    await run_job(api, job_body(data, model))
    test_ref = f"{data['test']['name']}@{data['test']['version']}"
    r = await api.get(
        f"/models/{model}/versions/1/importance", params={"dataset": test_ref, "repeats": 3}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["rows"] == 60 and out["baseline_roc_auc"] > 0.8
    per = {c["channel"]: c["importance"] for c in out["per_channel"]}
    assert set(per) == set(CHANNELS)
    assert min(per["Fz"], per["Cz"]) > max(per["Pz"], per["Oz"])
    assert set(out["ranking"][:2]) == {"Fz", "Cz"}
    assert len(out["per_feature"]) == 80  # erp@1: 0.8 s at 100 Hz, one entry per latency
    assert out["per_feature"][0]["feature"] == "-100ms"

    url = f"/models/{model}/versions"
    assert (await api.get(f"{url}/9/importance", params={"dataset": test_ref})).status_code == 404
    r = await api.get(f"{url}/1/importance", params={"dataset": "no-such-dataset"})
    assert r.status_code == 404 and r.json()["detail"].startswith("dataset")
    r = await api.get(f"{url}/1/importance", params={"dataset": test_ref, "repeats": 0})
    assert r.status_code == 422 and "repeats" in r.json()["detail"]
    r = await api.get(f"/models/{_name('nope')}/versions/1/importance", params={"dataset": 1})
    assert r.status_code == 404


async def test_bad_inputs_are_4xx_naming_the_field(
    api: httpx.AsyncClient, data: dict[str, dict[str, Any]]
) -> None:
    model = _name("lda")
    ok = job_body(data, model)
    r = await api.post("/jobs", json=ok, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401

    async def refused(status: int, field: str, **change: Any) -> None:
        body = {k: v for k, v in {**ok, **change}.items() if v is not None}
        r = await api.post("/jobs", json=body)
        assert r.status_code == status, r.text
        assert field in r.json()["detail"], r.json()

    await refused(404, "training_dataset", training_dataset="no-such-dataset")
    await refused(404, "testing_dataset", testing_dataset=999_999_999)
    await refused(422, "training_dataset", training_dataset="bad ref!")
    await refused(422, "testing_dataset", testing_dataset=data["train"]["id"])  # wrong kind
    await refused(422, "family", family="xgboost")
    await refused(422, "params.model_params", params={"model_params": {"bogus": 1}})
    await refused(422, "params.feature_params", params={"feature_params": {"h_frq": 9}})
    await refused(422, "params.feature_pipeline", params={"feature_pipeline": "nope@1"})
    await refused(422, "search.trials", search={"trials": 0})
    await refused(422, "promote.metric", promote={"metric": "accuracy"})
    await refused(422, "model_name", model_name=None)
    await refused(422, "model_name", model_name="bad name")
    await refused(404, "service", service=_name("svc"))

    r = await api.get("/jobs/999999999")
    assert r.status_code == 404 and r.json()["detail"].startswith("job_id")
    assert (await api.get("/jobs/999999999/trials")).status_code == 404
    assert (await api.post("/jobs/999999999/cancel")).status_code == 404
    assert (await api.get("/jobs", params={"status": "exploded"})).status_code == 422
    r = await api.post(f"/models/{model}/promote", json={})
    assert r.status_code == 404 and r.json()["detail"].startswith("model_name")
    r = await api.post(f"/models/{model}/promote", json={"to_alias": "1champion"})
    assert r.status_code == 422 and "to_alias" in r.json()["detail"]


async def test_mismatched_montage_and_single_class_are_refused(
    api: httpx.AsyncClient, pool: Any, data: dict[str, dict[str, Any]]
) -> None:
    x2, y2 = synthetic_p300(n=30, channels=2, seed=3)
    async with pool.connection() as conn:
        other = await datasets.create_snapshot(
            conn,
            name=_name("two-ch"),
            kind="testing",
            windows=x2,
            labels=y2,
            fs=FS,
            channels=["Fz", "Cz"],
        )
        one_class = await datasets.create_snapshot(
            conn,
            name=_name("ones"),
            kind="training",
            windows=x2,
            labels=np.ones(30, int),
            fs=FS,
            channels=["Fz", "Cz"],
        )
    r = await api.post("/jobs", json=job_body(data, _name("m"), testing_dataset=other["id"]))
    assert r.status_code == 422 and r.json()["detail"].startswith("testing_dataset")
    body = job_body(data, _name("m"), training_dataset=one_class["id"])
    r = await api.post("/jobs", json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith("training_dataset")


async def test_schedule_trigger_enqueues_jobs(
    api: httpx.AsyncClient, data: dict[str, dict[str, Any]]
) -> None:
    model = _name("lda")
    template = {k: v for k, v in job_body(data, model).items() if k != "model_name"}
    bad = {"model_name": model, "kind": "schedule", "job": template}
    r = await api.post("/triggers", json=bad)
    assert r.status_code == 422 and "every_s" in r.json()["detail"]
    r = await api.post(
        "/triggers", json={**bad, "every_s": 1, "job": {**template, "testing_dataset": "nope"}}
    )
    assert r.status_code == 404 and r.json()["detail"].startswith("job.testing_dataset")
    r = await api.post("/triggers", json={**bad, "every_s": 1})
    assert r.status_code == 201, r.text
    trigger = r.json()
    assert trigger["id"] in [t["id"] for t in (await api.get("/triggers")).json()]
    jobs: list[dict[str, Any]] = []
    for _ in range(300):
        jobs = (await api.get("/jobs", params={"model_name": model})).json()
        if jobs:
            break
        await asyncio.sleep(0.2)
    assert jobs and jobs[-1]["trigger_id"] == trigger["id"]
    assert (await api.delete(f"/triggers/{trigger['id']}")).status_code == 204
    assert (await api.delete(f"/triggers/{trigger['id']}")).status_code == 404
    assert (await wait_job(api, jobs[-1]["id"]))["status"] == "succeeded"


async def test_growth_trigger_retrains_on_a_fresh_snapshot_of_labelled_sessions(
    api: httpx.AsyncClient, pool: Any, data: dict[str, dict[str, Any]]
) -> None:
    model, service, session = _name("lda"), _name("svc"), _name("sess")
    x, y = p300_only_on(60, seed=4)
    async with pool.connection() as conn:
        await registry.create_service(conn, service)
        await conn.execute(
            """INSERT INTO sessions (session_id, service, board, fs, channels)
            VALUES (%s, %s, 'synthetic', %s, %s)""",
            [session, service, FS, Jsonb(CHANNELS)],
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                """INSERT INTO windows (session_id, seq, window_ts, service, kind, marker, fs,
                    n_channels, n_samples, data, channels)
                VALUES (%s, %s, to_timestamp(%s), %s, 'epoch', 1, %s, %s, %s, %s, %s)""",
                [
                    (
                        session,
                        i,
                        1.7e9 + i,
                        service,
                        FS,
                        x.shape[1],
                        x.shape[2],
                        x[i].astype("<f4").tobytes(),
                        Jsonb(CHANNELS),
                    )
                    for i in range(len(y))
                ],
            )
            await cur.executemany(
                "INSERT INTO labels (session_id, seq, label) VALUES (%s, %s, %s)",
                [(session, i, int(y[i])) for i in range(len(y))],
            )
    template = {k: v for k, v in job_body(data, model).items() if k != "model_name"}
    template.pop("training_dataset")
    body = {
        "model_name": model,
        "service": service,
        "kind": "growth",
        "min_new_labels": 50,
        "job": template,
    }
    r = await api.post("/triggers", json=body)
    assert r.status_code == 201, r.text
    jobs: list[dict[str, Any]] = []
    for _ in range(300):
        jobs = (await api.get("/jobs", params={"model_name": model})).json()
        if jobs:
            break
        await asyncio.sleep(0.2)
    assert jobs, (await api.get(f"/triggers/{r.json()['id']}")).json()
    await api.delete(f"/triggers/{r.json()['id']}")
    job = await wait_job(api, jobs[-1]["id"])
    assert job["status"] == "succeeded", job
    assert job["spec"]["training_dataset"] == f"{model}-train@1"
    async with pool.connection() as conn:
        snapshot = await datasets.get_dataset(conn, f"{model}-train")
    assert snapshot is not None and snapshot["n_rows"] == 60
    assert job["result"]["dataset_hash"] == snapshot["content_hash"]


async def test_eegnet_search_job(api: httpx.AsyncClient, data: dict[str, dict[str, Any]]) -> None:
    params = {"model_params": {"epochs": 2, "F1": 4, "D": 1, "F2": 4}}
    body = job_body(data, _name("eegnet"), family="torch-eegnet", params=params)
    job = await run_job(api, {**body, "search": {"trials": 2}})
    trials = (await api.get(f"/jobs/{job['id']}/trials")).json()
    assert [set(t["params"]) for t in trials] == [{"lr", "dropout", "l_freq", "h_freq"}] * 2
    assert job["result"]["challenger"]["test"]["n"] == 60


async def _running_job(pool: Any, runner: Any) -> dict[str, Any]:
    """A long search job (200 trials) recorded as claimed by ``runner``, not started yet."""
    from retraining_api import store
    from retraining_api.schemas import JobCreate
    from retraining_api.validation import resolve_job

    name = _name("p300")
    x, y = p300_only_on(90, seed=5)
    async with pool.connection() as conn:
        train = await datasets.create_snapshot(
            conn, name=name, kind="training", windows=x, labels=y, fs=FS, channels=CHANNELS
        )
        test = await datasets.create_snapshot(
            conn, name=f"{name}-t", kind="testing", windows=x, labels=y, fs=FS, channels=CHANNELS
        )
        body = JobCreate(
            model_name=_name("lda"),
            family="sklearn-lda",
            training_dataset=train["id"],
            testing_dataset=test["id"],
            search={"trials": 200},
        )
        model_name, spec = await resolve_job(conn, body, model_name=body.model_name, service=None)
        cur = await conn.execute(
            """INSERT INTO retrain_jobs (model_name, family, spec, status, runner_id,
                started_at, heartbeat_at) VALUES (%s, %s, %s, 'running', %s, now(), now())
            RETURNING id""",
            [model_name, "sklearn-lda", Jsonb(spec), runner.runner_id],
        )
        row = await store.get(conn, (await cur.fetchone())[0])
    assert row is not None
    return row


async def test_shutdown_marks_a_running_job_interrupted(pool: Any, core: CoreSettings) -> None:
    """Closing the runner stops the job at its next checkpoint and records why."""
    from neurostream.notify import Notifier
    from retraining_api import store
    from retraining_api.runner import Runner

    runner = Runner(pool, Notifier(pool, None), _settings())  # type: ignore[arg-type]
    row = await _running_job(pool, runner)
    runner.run_claimed(row)
    assert runner.running_jobs == [row["id"]]
    for _ in range(600):
        async with pool.connection() as conn:
            if await store.trials(conn, row["id"]):
                break
        await asyncio.sleep(0.2)
    await runner.close(wait_s=60)
    assert runner.running_jobs == []
    async with pool.connection() as conn:
        job = await store.get(conn, row["id"])
        n_trials = len(await store.trials(conn, row["id"]))
    assert job is not None and job["status"] == "failed"
    assert job["error"].startswith(INTERRUPTED) and "shut down" in job["error"]
    assert 1 <= n_trials < 200


async def test_a_job_that_outlives_the_drain_bound_is_recorded_interrupted(
    pool: Any, core: CoreSettings
) -> None:
    """``close()`` is bounded: a job not yet at a checkpoint is cancelled and recorded."""
    from neurostream.notify import Notifier
    from retraining_api import store
    from retraining_api.runner import Runner

    runner = Runner(pool, Notifier(pool, None), _settings())  # type: ignore[arg-type]
    row = await _running_job(pool, runner)
    task = runner.run_claimed(row)
    await runner.close(wait_s=0.001)
    assert task.cancelled() and runner.running_jobs == []
    async with pool.connection() as conn:
        job = await store.get(conn, row["id"])
    assert job is not None and job["status"] == "failed"
    assert job["error"].startswith(INTERRUPTED) and "did not stop within" in job["error"]


@pytest.mark.parametrize("how", ["request_stop", "handle_signal"])
async def test_a_stop_request_ends_the_claim_loop(pool: Any, how: str) -> None:
    import signal

    from neurostream.notify import Notifier
    from retraining_api.runner import Runner

    runner = Runner(pool, Notifier(pool, None), _settings(poll_s=30.0))  # type: ignore[arg-type]
    await runner.start()
    assert runner.claiming
    if how == "request_stop":
        runner.request_stop()
    else:
        runner.handle_signal(signal.SIGTERM)
    for _ in range(100):  # woken at once, not after the 30 s poll
        if not runner.claiming:
            break
        await asyncio.sleep(0.02)
    assert runner.stopping and not runner.claiming
    await runner.close()
