"""The workers dashboard against a real Prometheus scraping real workers.

Two ``python -m workers`` replicas serve one service with their metrics on free ports; a
local ``prometheus`` (Debian's package, own port and data directory, 1 s scrapes, the alert
rules loaded) scrapes them while windows, resent duplicates and malformed windows go
through. Every panel's PromQL is read out of neurostream-workers.json, its Grafana
variables filled in, and run through ``/api/v1/query``: each must come back well formed,
and the key ones with the numbers the test put through. The monitoring API's alert gauge,
which the drift alert reads, is checked against the alerts table here too.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client import REGISTRY

from monitoring_api import alerts
from neurostream import registry
from neurostream.contract import make_window
from neurostream.models.training import train_model
from neurostream.settings import CoreSettings
from tests.factories import FS, epoch_windows, publish_windows, synthetic_p300, unique

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/provisioning/dashboards/neurostream-workers.json"
RULES = ROOT / "deploy/prometheus/rules/neurostream.yml"
PROMETHEUS = shutil.which("prometheus")
CHANNELS = 4
N, DUPLICATES, POISON, REPLICAS = 120, 20, 3, 2
# What Grafana puts in for its variables: a range long enough to hold the whole test.
VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "15s"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def panel_queries(service: str) -> dict[tuple[str, str], str]:
    """Every target's PromQL by (panel title, refId), variables filled in as Grafana does."""
    dash = json.loads(DASHBOARD.read_text())
    out: dict[tuple[str, str], str] = {}
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in {**VARIABLES, "$service": service}.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: unfilled variable in {expr}"
            out[(panel["title"], target["refId"])] = expr
    return out


class Prometheus:
    """A throwaway Prometheus server: own port, own TSDB, the repository's alert rules."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "workers", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=out,
            )

    async def ready(self, http: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if (await http.get(f"{self.url}/-/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError("prometheus not ready in 60 s:\n" + self.log.read_text()[-3000:])

    async def query(self, http: httpx.AsyncClient, expr: str) -> dict[str, Any]:
        response = await http.get(f"{self.url}/api/v1/query", params={"query": expr})
        body: dict[str, Any] = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        data: dict[str, Any] = body["data"]
        return data

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_worker(core: CoreSettings, service: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")}
    env |= {
        "NEUROSTREAM_DATABASE_URL": core.database_url,
        "NEUROSTREAM_AMQP_URL": core.amqp_url,
        "NEUROSTREAM_API_TOKEN": core.api_token.get_secret_value() if core.api_token else "",
        "NEUROSTREAM_WORKER_SERVICE": service,
        "NEUROSTREAM_WORKER_WORKER_ID": unique(f"pw-{port}"),
        "NEUROSTREAM_WORKER_HEARTBEAT_S": "0.5",
        "NEUROSTREAM_WORKER_METRICS_PORT": str(port),
        "NEUROSTREAM_WORKER_DECIDE": "false",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers"], env=env, cwd=ROOT, stdout=out, stderr=out
        )


@pytest.fixture
def needs_prometheus() -> None:
    if PROMETHEUS is None:
        pytest.skip("prometheus missing: apt-get install prometheus (scripts/setup)")


@pytest.fixture
async def service(pool: Any) -> dict[str, Any]:
    """A fresh service serving version 1 of a fresh LDA."""
    x, y = synthetic_p300(channels=CHANNELS, seed=1)
    name, model = unique("svc"), unique("lda")
    async with pool.connection() as conn:
        v1 = await registry.register_trained(
            conn, model, train_model("sklearn-lda", x, y, FS), code_version="test"
        )
        await registry.create_service(conn, name)
        await registry.assign(conn, name, model, "1")
    return {"name": name, "model": model, "v1": v1["id"]}


@pytest.fixture
def scraped(
    core: CoreSettings, service: dict[str, Any], tmp_path: Path, needs_prometheus: None
) -> Iterator[Prometheus]:
    """Two worker replicas of ``service`` and a Prometheus scraping both."""
    ports = [free_port() for _ in range(REPLICAS)]
    procs = [start_worker(core, service["name"], p, tmp_path / f"w{p}.log") for p in ports]
    prom = Prometheus(tmp_path, [f"127.0.0.1:{p}" for p in ports])
    try:
        yield prom
    finally:
        prom.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def publish(channel: Any, service: str, session: str) -> None:
    """``N`` epochs, the first ``DUPLICATES`` of them again, and ``POISON`` with 8 channels."""
    x, _ = synthetic_p300(n=N, channels=CHANNELS, seed=7)
    good = epoch_windows(x, session)
    poison = [
        make_window(
            np.zeros((8, x.shape[2])),
            session_id=session,
            seq=N + i,
            t0=1.7e9,
            fs=FS,
            channels=[f"x{j}" for j in range(8)],
            kind="epoch",
        )
        for i in range(POISON)
    ]
    await publish_windows(channel, service, [*good, *good[:DUPLICATES], *poison])


def scalar_of(data: dict[str, Any]) -> float | None:
    """The one sample of an instant vector (None when empty)."""
    result = data["result"]
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def well_formed(data: dict[str, Any]) -> None:
    assert data["resultType"] in {"vector", "scalar"}, data
    if data["resultType"] == "scalar":
        float(data["result"][1])
        return
    for sample in data["result"]:
        assert isinstance(sample["metric"], dict)
        float(sample["value"][1])  # "NaN" and "+Inf" parse too: checked where it matters


async def wait_until(prom: Prometheus, http: httpx.AsyncClient, want: dict[str, float]) -> None:
    """Until each query's single sample equals its value, or a minute passed (then fail)."""
    got: dict[str, float | None] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = {expr: scalar_of(await prom.query(http, expr)) for expr in want}
        if got == want:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"never reached {want}; last {got}")


async def test_every_dashboard_query_answers_from_real_workers(
    core: CoreSettings,
    pool: Any,
    service: dict[str, Any],
    scraped: Prometheus,
    http: httpx.AsyncClient,
    channel: Any,
) -> None:
    name = service["name"]
    sel = f'{{service="{name}"}}'
    await scraped.ready(http)
    # Both replicas heartbeat (their counters start at 0 in Prometheus before any window).
    await wait_until(
        scraped, http, {f"count(neurostream_worker_last_heartbeat_timestamp_seconds{sel})": 2}
    )
    session = unique("s")
    await publish(channel, name, session)
    await wait_until(
        scraped,
        http,
        {
            f"sum(neurostream_worker_windows_total{sel})": N + DUPLICATES,
            f"sum(neurostream_worker_rejected_total{sel})": POISON,
            f"sum(neurostream_worker_duplicates_total{sel})": DUPLICATES,
            f"max(neurostream_worker_queue_depth{sel})": 0,
        },
    )
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM predictions WHERE session_id = %s AND role = 'serving'",
            [session],
        )
        assert (await cur.fetchone())[0] == N  # each window once, duplicates not stored twice

    results = {key: await scraped.query(http, expr) for key, expr in panel_queries(name).items()}
    for key, data in results.items():
        try:
            well_formed(data)
        except (AssertionError, KeyError, ValueError) as exc:
            raise AssertionError(f"panel {key}: {data}") from exc

    def one(title: str, ref: str = "A") -> float | None:
        return scalar_of(results[(title, ref)])

    def by(title: str, ref: str, label: str) -> dict[str, float]:
        return {s["metric"][label]: float(s["value"][1]) for s in results[(title, ref)]["result"]}

    assert one("Windows written") == N + DUPLICATES
    assert (one("Windows/s") or 0) > 0
    assert one("Replicas up", "A") == REPLICAS and one("Replicas up", "B") == REPLICAS
    for title, top in (
        ("Latency p50 / p99 (publish to written)", 5.0),
        ("Worker's share p50 / p99 (received to acked)", 1.0),
    ):
        p50, p99 = one(title, "A"), one(title, "B")
        assert p50 is not None and p99 is not None and not math.isnan(p50), (title, p50, p99)
        assert 0 < p50 <= p99 <= top, (title, p50, p99)  # within the histogram's buckets
    assert one("Queue depth (ready windows)", "A") == 0
    assert results[("Queue depth (ready windows)", "B")]["result"] == []  # no broker job here
    assert (one("Dead-lettered windows/s") or 0) > 0
    assert one("Write retries/s") == 0  # the series exists (from 0) and stays there
    assert (one("Duplicates and redeliveries/s", "A") or 0) > 0
    assert one("Duplicates and redeliveries/s", "B") == 0  # no replica died: none redelivered
    for ref in ("A", "B"):  # newest and oldest agree: both replicas serve v1, no shadow
        assert by("Model version serving", ref, "role") == {"serving": service["v1"], "shadow": 0}
    assert by("Models refused", "A", "stage") == {"load": 0, "predict": 0}
    gc_p99 = by("GC pauses", "A", "generation")
    assert all(v >= 0 or math.isnan(v) for v in gc_p99.values())
    assert results[("Alerts firing", "A")]["result"] == []

    # The dashboard's $service variable lists the service.
    labels = await http.get(
        f"{scraped.url}/api/v1/label/service/values",
        params={"match[]": "neurostream_worker_windows_total"},
    )
    assert name in labels.json()["data"]
    # The alert rules Prometheus loaded evaluate without error on the real series.
    groups = (await http.get(f"{scraped.url}/api/v1/rules")).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 6 and {r["health"] for r in rules} == {"ok"}, rules


async def test_the_monitoring_api_exports_which_of_its_alert_rules_fire(pool: Any) -> None:
    service = unique("svc")
    drift, latency = f"{service}-drift", f"{service}-latency"
    async with pool.connection() as conn:
        cur = await conn.execute(
            """INSERT INTO alert_rules (name, service, metric, comparison, threshold, window_s)
            VALUES (%s, %s, 'drift_share', '>', 0.5, 60), (%s, %s, 'latency_p95_ms', '>', 50, 60)
            RETURNING id""",
            [drift, service, latency, service],
        )
        drift_id = (await cur.fetchone())[0]
        await conn.execute(
            """INSERT INTO alerts (rule_id, rule_name, service, metric, comparison, threshold,
                value, state) VALUES (%s, %s, %s, 'drift_share', '>', 0.5, 0.8, 'firing')""",
            [drift_id, drift, service],
        )
        await conn.commit()

    def firing(rule: str, metric: str, kind: str) -> float | None:
        labels = {"service": service, "rule": rule, "metric": metric, "kind": kind}
        return REGISTRY.get_sample_value("neurostream_monitoring_alert_firing", labels)

    await alerts.refresh_firing(pool)
    assert firing(drift, "drift_share", "drift") == 1
    assert firing(latency, "latency_p95_ms", "serving") == 0
    async with pool.connection() as conn:
        await conn.execute("UPDATE alerts SET state = 'cleared' WHERE rule_id = %s", [drift_id])
        await conn.commit()
    await alerts.refresh_firing(pool)
    assert firing(drift, "drift_share", "drift") == 0
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM alert_rules WHERE service = %s", [service])
        await conn.commit()
    await alerts.refresh_firing(pool)  # a deleted rule's series goes, not stays at its value
    assert firing(drift, "drift_share", "drift") is None
    assert firing(latency, "latency_p95_ms", "serving") is None


async def test_a_refused_model_is_counted_once_per_version_and_stage(
    pool: Any, service: dict[str, Any]
) -> None:
    from workers.model_slot import ModelSlot

    name = service["name"]

    def refused(stage: str) -> float | None:
        labels = {"service": name, "stage": stage}
        return REGISTRY.get_sample_value("neurostream_worker_models_refused_total", labels)

    slot = ModelSlot(pool, name)
    assert await slot.sync() and slot.current.ids == (service["v1"], None)
    x, y = synthetic_p300(channels=CHANNELS, seed=2)
    async with pool.connection() as conn:
        bad = await registry.register_trained(
            conn, service["model"], train_model("sklearn-lda", x, y, FS), code_version="test"
        )
        await conn.execute(
            "UPDATE model_versions SET feature_pipeline = 'erp@99' WHERE id = %s", [bad["id"]]
        )
        await registry.assign(conn, name, service["model"], str(bad["version"]))
    assert not await slot.sync() and not await slot.sync()  # refused, then not retried
    assert refused("load") == 1 and slot.current.ids == (service["v1"], None)
    assert not slot.fail_current("raised on predict")  # no previous model to fall back to
    assert refused("predict") == 1
