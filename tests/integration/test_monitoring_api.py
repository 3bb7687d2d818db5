"""Monitoring API endpoints against real PostgreSQL: happy paths and 4xx naming the field."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest

from monitoring_api.alerts import metric_value
from monitoring_api.app import create_app
from monitoring_api.settings import MonitoringSettings
from neurostream import datasets, scoring
from neurostream.settings import CoreSettings
from tests.factories import app_client, unique
from tests.monitoring_support import (
    CHANNELS,
    FS,
    STEP_S,
    cut,
    free_port,
    insert_labels,
    insert_predictions,
    insert_windows,
    session_stream,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
AUTH = {"Authorization": "Bearer test-token-0123456789abcdef"}


@pytest.fixture(scope="module")
async def api(core: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(core, MonitoringSettings(evaluator=False, min_windows=10))
    async with app_client(app, base_url="http://monitoring", timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
async def recorded(core: CoreSettings) -> dict[str, Any]:
    """60 s of one session, C3 x3 from 30 s, with predictions and labels for the first half."""
    from neurostream.db import open_pool

    service, session = unique("svc"), unique("s")
    stream = session_stream(60, shift_after_s=30, shift_channels=["C3"], gain=3.0, seed=3)
    n = 230
    seqs = np.arange(n)
    # Whole milliseconds: PostgreSQL's to_timestamp and Python's fromtimestamp round a
    # half-microsecond differently, which moved an inclusive bound past its window.
    t0 = round(time.time() - 80, 3) + seqs * STEP_S
    rng = np.random.default_rng(1)
    y = (rng.random(n) < 0.4).astype(int)
    p = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.2, n), 0.01, 0.99)
    x = cut(stream, 0, n)
    pool = await open_pool(core.database_url, max_size=1)
    async with pool.connection() as conn:
        await insert_windows(conn, service, session, x, seqs, t0)
        await insert_predictions(conn, service, session, seqs, t0, p)
        await insert_labels(conn, session, seqs[: n // 2], y[: n // 2])
        snap = await datasets.create_snapshot(
            conn,
            name=unique("ref"),
            kind="training",
            windows=x[:100],
            labels=y[:100],
            fs=FS,
            channels=CHANNELS,
        )
    await pool.close()
    return {
        "service": service,
        "session": session,
        "t0": t0,
        "y": y,
        "p": p,
        "n": n,
        "dataset_id": snap["id"],
    }


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def fields(r: httpx.Response) -> set[str]:
    return {e["field"] for e in r.json().get("errors", [])} or {r.json()["detail"].split(":")[0]}


async def test_health_and_dashboard_page(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json()["status"] == "ok"
    page = await api.get("/dashboard")
    assert page.status_code == 200 and 'id="chart-drift"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


async def test_on_demand_drift_against_a_time_range_and_a_dataset(
    api: httpx.AsyncClient, recorded: dict[str, Any]
) -> None:
    t0, svc = recorded["t0"], recorded["service"]
    current = {"current_start": iso(t0[-60]), "current_end": iso(t0[-1])}
    by_range = await api.get(
        "/drift/evaluate",
        params={
            "service": svc,
            "reference_start": iso(t0[0]),
            "reference_end": iso(t0[80]),
            **current,
        },
    )
    assert by_range.status_code == 200, by_range.text
    assert by_range.json()["drifted_channels"] == ["C3"]
    assert by_range.json()["current"]["n_windows"] == 60
    by_dataset = await api.get(
        "/drift/evaluate",
        params={"service": svc, "reference_dataset_id": recorded["dataset_id"], **current},
    )
    assert by_dataset.json()["drifted_channels"] == ["C3"]
    assert by_dataset.json()["reference"]["kind"] == "dataset"


async def test_drift_bad_inputs_name_the_field(
    api: httpx.AsyncClient, recorded: dict[str, Any]
) -> None:
    svc, t0 = recorded["service"], recorded["t0"]
    r = await api.get("/drift/metrics")
    assert r.status_code == 422 and fields(r) == {"service"}
    r = await api.get("/drift/evaluate", params={"service": svc, "reference_start": iso(t0[0])})
    assert r.status_code == 422 and fields(r) == {"reference_end"}
    r = await api.get(
        "/drift/evaluate",
        params={"service": svc, "reference_start": iso(t0[9]), "reference_end": iso(t0[1])},
    )
    assert r.status_code == 422 and fields(r) == {"reference_end"}
    r = await api.get("/drift/report", params={"service": unique("nobody")})
    assert r.status_code == 404 and fields(r) == {"service"}
    r = await api.get("/drift/evaluate", params={"service": svc, "reference_dataset_id": 999999})
    assert r.status_code == 404 and fields(r) == {"reference_dataset_id"}
    r = await api.get(
        "/drift/evaluate",
        params={"service": svc, "reference_start": iso(t0[0]), "reference_end": iso(t0[2])},
    )
    assert r.status_code == 422 and fields(r) == {"reference"}  # 3 windows < min_windows
    r = await api.get("/drift/metrics", params={"service": svc, "scope": "galaxy"})
    assert r.status_code == 422 and fields(r) == {"scope"}


async def test_references_and_the_stored_evaluation(
    api: httpx.AsyncClient, recorded: dict[str, Any]
) -> None:
    svc, t0 = recorded["service"], recorded["t0"]
    assert (await api.get(f"/drift/references/{svc}")).json()["kind"] == "session-start"
    body = {"start": iso(t0[0]), "end": iso(t0[80])}
    assert (await api.put(f"/drift/references/{svc}", json=body)).status_code == 401
    r = await api.put(f"/drift/references/{svc}", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["kind"] == "range"
    bad = await api.put(
        f"/drift/references/{svc}", headers=AUTH, json={"dataset_id": 1, "start": iso(t0[0])}
    )
    assert bad.status_code == 422 and "dataset_id or start and end" in bad.json()["detail"]
    r = await api.put(f"/drift/references/{svc}", headers=AUTH, json={"dataset_id": 999999})
    assert r.status_code == 404 and fields(r) == {"dataset_id"}
    stored = await api.post(f"/drift/evaluate/{svc}", headers=AUTH)
    assert stored.status_code == 200 and stored.json()["stored"] is True
    assert stored.json()["drifted_channels"] == ["C3"]
    series = (
        await api.get("/drift/metrics", params={"service": svc, "scope": "channel", "name": "C3"})
    ).json()
    assert series[-1]["drifted"] is True and series[-1]["n_current"] > 0


async def test_predictions_distribution_and_performance(
    api: httpx.AsyncClient, recorded: dict[str, Any]
) -> None:
    svc, n, y, p = recorded["service"], recorded["n"], recorded["y"], recorded["p"]
    dist = (
        await api.get("/predictions/distribution", params={"service": svc, "bucket_s": 3600})
    ).json()
    assert sum(b["n"] for b in dist) == n
    assert sum(b["class_counts"].get("1", 0) for b in dist) == int((p >= 0.5).sum())
    perf = (await api.get("/performance", params={"service": svc, "bucket_s": 10})).json()
    measured = [b for b in perf["per_version"] if not b["estimated"]][0]
    half = n // 2
    want = scoring.score(y[:half], p[:half], predicted=(p[:half] >= 0.5).astype(int))
    keys = ("roc_auc", "balanced_accuracy", "accuracy", "accuracy_chance", "f1", "mcc", "n")
    for k in keys:
        assert measured[k] == pytest.approx(want[k], rel=1e-4)
    estimate = [b for b in perf["per_version"] if b["estimated"]][0]
    assert estimate["n"] == n - half and estimate["calibrated"] is True
    true = scoring.score(y[half:], p[half:], classes=[0, 1])
    assert estimate["expected_accuracy"] == pytest.approx(true["accuracy"], abs=0.12)
    assert estimate["expected_balanced_accuracy"] == pytest.approx(
        true["balanced_accuracy"], abs=0.12
    )
    assert estimate["expected_roc_auc"] == pytest.approx(true["roc_auc"], abs=0.12)
    assert estimate["roc_auc"] is None  # measured fields stay empty on an estimate
    assert any(b["estimated"] for b in perf["buckets"])
    r = await api.get("/performance", params={"service": svc, "bucket_s": 0})
    assert r.status_code == 422 and fields(r) == {"bucket_s"}
    r = await api.get("/performance", params={"service": unique("nobody")})
    assert r.status_code == 404 and fields(r) == {"service"}
    # Found by schemathesis: a bound at year 1 overflowed ``end - 1 h`` into a 500.
    r = await api.get(
        "/predictions/distribution", params={"service": svc, "end": "0001-01-01T00:00:00Z"}
    )
    assert r.status_code == 422 and fields(r) == {"end"}
    # A naive time is UTC, so it compares with stored (aware) times instead of raising.
    r = await api.get(
        "/predictions/distribution",
        params={"service": svc, "start": "2000-01-01T00:00:00", "end": "9998-01-01T00:00:00Z"},
    )
    assert r.status_code == 200 and sum(b["n"] for b in r.json()) == n


async def test_alert_metrics_on_labels_are_the_scorers(recorded: dict[str, Any], pool: Any) -> None:
    svc, y, p, half = recorded["service"], recorded["y"], recorded["p"], recorded["n"] // 2
    want = scoring.score(y[:half], predicted=(p[:half] >= 0.5).astype(int))
    assert want["balanced_accuracy"] != pytest.approx(want["accuracy"])  # 40 % targets
    async with pool.connection() as conn:
        for metric in ("balanced_accuracy", "accuracy"):
            value = await metric_value(conn, metric, svc, 3600)
            assert value == pytest.approx(want[metric])
        assert await metric_value(conn, "balanced_accuracy", unique("nobody"), 3600) is None


async def test_session_quality(api: httpx.AsyncClient, pool: Any) -> None:
    session, service = unique("q"), unique("svc")
    x = np.random.default_rng(0).normal(0, 10, (30, 4, 100)).astype(np.float32)
    x[:, 1] = 0  # electrode off
    x[:, 2] = 5  # flat
    seqs = [s for s in range(30) if s not in (10, 11, 12)]
    async with pool.connection() as conn:
        await insert_windows(
            conn,
            service,
            session,
            x[seqs],
            seqs,
            [1.7e9 + s for s in seqs],
            channels=["A", "B", "C", "D"],
        )
        await conn.execute(
            """INSERT INTO sessions (session_id, service, board, fs, channels, windows_confirmed)
            VALUES (%s, %s, 'test', 250, '["A","B","C","D"]', 32)""",
            [session, service],
        )
    q = (await api.get(f"/quality/sessions/{session}")).json()
    assert q["dropped"] == 5 and q["gaps"] == [{"start": 10, "end": 12}, {"start": 30, "end": 31}]
    assert {c["channel"]: c["flags"] for c in q["channels"]} == {
        "A": [],
        "B": ["missing"],
        "C": ["flat"],
        "D": [],
    }
    r = await api.get(f"/quality/sessions/{unique('none')}")
    assert r.status_code == 404 and fields(r) == {"session_id"}
    r = await api.get(f"/quality/sessions/{session}", params={"flat_uv": -1})
    assert r.status_code == 422 and fields(r) == {"flat_uv"}


async def test_alert_rule_crud_and_validation(api: httpx.AsyncClient) -> None:
    rule = {
        "name": unique("rule"),
        "service": "p300",
        "metric": "latency_p95_ms",
        "comparison": ">",
        "threshold": 250,
        "window_s": 60,
        "webhook_url": "http://127.0.0.1:9/hook",
    }
    assert (await api.post("/alerts/rules", json=rule)).status_code == 401
    created = await api.post("/alerts/rules", json=rule, headers=AUTH)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert (await api.post("/alerts/rules", json=rule, headers=AUTH)).status_code == 409
    for field, value in (
        ("metric", "vibes"),
        ("comparison", "=="),
        ("webhook_url", "not a url"),
        ("window_s", 0),
        ("name", ""),
    ):
        r = await api.post("/alerts/rules", json={**rule, field: value}, headers=AUTH)
        assert r.status_code == 422 and fields(r) == {field}, (field, r.text)
    r = await api.put(f"/alerts/rules/{rid}", json={**rule, "threshold": 500}, headers=AUTH)
    assert r.json()["threshold"] == 500
    assert rid in [x["id"] for x in (await api.get("/alerts/rules")).json()]
    assert (await api.delete(f"/alerts/rules/{rid}", headers=AUTH)).status_code == 204
    r = await api.get(f"/alerts/rules/{rid}")
    assert r.status_code == 404 and fields(r) == {"rule_id"}
    r = await api.get("/alerts", params={"state": "burning"})
    assert r.status_code == 422 and fields(r) == {"state"}


async def test_a_dead_webhook_is_retried_recorded_and_does_not_stop_the_loop(
    core: CoreSettings, recorded: dict[str, Any]
) -> None:
    settings = MonitoringSettings(
        evaluate_every_s=0.2, webhook_retries=2, webhook_backoff_s=0.01, webhook_timeout_s=1
    )
    app = create_app(core, settings)
    async with app_client(app, base_url="http://m", timeout=5) as client:
        dead = f"http://127.0.0.1:{free_port()}/hook"
        rule = await client.post(
            "/alerts/rules",
            headers=AUTH,
            json={
                "name": unique("dead"),
                "service": recorded["service"],
                "metric": "throughput_per_s",
                "comparison": ">",
                "threshold": 0,
                "window_s": 3600,
                "webhook_url": dead,
            },
        )
        assert rule.status_code == 201
        evaluator = app.state.evaluator
        for _ in range(150):
            alerts = (await client.get("/alerts", params={"rule_id": rule.json()["id"]})).json()
            if alerts and alerts[0]["webhook_status"] and evaluator.ticks >= 3:
                break
            await asyncio.sleep(0.1)
        assert alerts[0]["state"] == "firing"
        assert alerts[0]["webhook_status"].startswith("fired: failed after 2 attempts")
        ticks = evaluator.ticks
        for _ in range(100):
            if evaluator.ticks > ticks:
                break
            await asyncio.sleep(0.1)
        assert evaluator.ticks > ticks
        await client.delete(f"/alerts/rules/{rule.json()['id']}", headers=AUTH)


async def test_overview(api: httpx.AsyncClient, recorded: dict[str, Any]) -> None:
    o = (await api.get("/overview", params={"service": recorded["service"]})).json()
    assert o["predictions"] == recorded["n"] and o["versions"][0]["model_version_id"] == 1
    assert sum(pt["n"] for pt in o["series"]) == recorded["n"]
    r = await api.get("/overview", params={"bucket_s": -1})
    assert r.status_code == 422 and fields(r) == {"bucket_s"}
