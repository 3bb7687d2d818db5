"""Shared set-up for the benchmark scripts: an isolated database/vhost, a served model,
worker processes and pre-built windows. Benchmarks print tables; they never assert."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import aio_pika
import numpy as np
import psycopg
from psycopg import sql

from neurostream import infra, registry, topology
from neurostream.contract import Window, encode, make_window
from neurostream.db import open_pool
from neurostream.events import publish_model_event
from neurostream.models.training import TrainedModel, train_model
from neurostream.settings import CoreSettings

FS, N_CH, N_S = 250.0, 16, 200  # one P300 epoch of the synthetic board
CHANNELS = tuple(f"ch{i}" for i in range(N_CH))


def bench_core(name: str) -> CoreSettings:
    """A fresh database and vhost for this benchmark run."""
    core = CoreSettings(
        database_url=f"postgresql://postgres@127.0.0.1:5432/{name}",
        amqp_url=f"amqp://guest:guest@127.0.0.1:5672/{name}",
    )
    infra.ensure_rabbitmq("amqp://guest:guest@127.0.0.1:5672/")
    infra.delete_vhost(name)
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    infra.ensure_local(core.database_url, core.amqp_url)
    return core


def epochs() -> tuple[np.ndarray, np.ndarray]:
    """600 synthetic P300 epochs (one in six a target), the same for every family."""
    rng = np.random.default_rng(0)
    t = np.arange(N_S) / FS - 0.1
    y = (np.arange(600) % 6 == 0).astype(np.int64)
    x = rng.normal(0, 10, (600, N_CH, N_S)).astype(np.float32)
    x[y == 1] += (6 * np.exp(-((t - 0.3) ** 2) / (2 * 0.06**2))).astype(np.float32)
    return x, y


def train(family: str = "sklearn-lda") -> TrainedModel:
    """A served version of ``family``: the project's own (``sklearn-lda``, ``torch-eegnet``),
    EEGNet exported to ONNX (``onnx``), or a user's pyRiemann pipeline on raw epochs
    (``sklearn-pipeline``: XDAWN covariances + tangent space + logistic regression)."""
    x, y = epochs()
    if family == "onnx":
        from neurostream.models.export import onnx_version

        return onnx_version(train_model("torch-eegnet", x, y, FS))
    if family != "sklearn-pipeline":
        return train_model(family, x, y, FS)
    import dataclasses

    from pyriemann.estimation import XdawnCovariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from neurostream.models import artifacts
    from neurostream.models.families import SklearnClassifier

    pipe = make_pipeline(
        XdawnCovariances(nfilter=2, estimator="lwf", xdawn_estimator="scm"),
        TangentSpace(metric="riemann"),
        LogisticRegression(max_iter=1000),
    ).fit(x.astype(np.float64), y)
    artifact = artifacts.dump(pipe, "sklearn-pipeline")
    lda = train_model("sklearn-lda", x, y, FS)  # for its input_spec and dataset hash
    return dataclasses.replace(
        lda,
        family="sklearn-pipeline",
        feature_pipeline="raw@1",
        feature_params={"stream_filter": None, "decimate": 1, "baseline": False},
        model_params={},
        artifact=artifact,
        sha256=artifacts.sha256_hex(artifact),
        metrics={},
        classifier=SklearnClassifier(pipe),
    )


async def serve_model(
    core: CoreSettings, service: str, trained: TrainedModel, *, assign: bool = True
) -> int:
    """Register ``trained`` for ``service``; with ``assign=False`` the workers wait for it."""
    pool = await open_pool(core.database_url, max_size=1)
    try:
        async with pool.connection() as conn:
            row = await registry.register_trained(conn, f"{service}-model", trained)
            if await registry.get_service(conn, service) is None:
                await registry.create_service(conn, service)
            if assign:
                await registry.assign(conn, service, f"{service}-model", str(row["version"]))
            return int(row["id"])
    finally:
        await pool.close()


async def assign_now(core: CoreSettings, service: str) -> None:
    """Assign the service's latest model and tell its workers at once over models.events,
    so every replica loads it at the same moment (heartbeat checks would stagger them)."""
    pool = await open_pool(core.database_url, max_size=1)
    try:
        async with pool.connection() as conn:
            models = await registry.list_versions(conn, f"{service}-model")
            latest = max(int(v["version"]) for v in models)
            resolved = await registry.assign(conn, service, f"{service}-model", str(latest))
    finally:
        await pool.close()
    amqp = await aio_pika.connect_robust(core.amqp_url)
    async with amqp:
        ch = await amqp.channel(publisher_confirms=True)
        await publish_model_event(ch, service, resolved.serving, resolved.shadow, "bench")


async def wait_workers(
    core: CoreSettings, service: str, n: int = 1, *, loaded: bool = True, timeout_s: float = 60
) -> None:
    """Until ``n`` workers of ``service`` heartbeat (with a model loaded, if ``loaded``)."""
    deadline = time.monotonic() + timeout_s
    cond = "AND model_version_id IS NOT NULL" if loaded else ""
    while time.monotonic() < deadline:
        async with await psycopg.AsyncConnection.connect(core.database_url) as c:
            row = await (
                await c.execute(
                    "SELECT count(*) FROM workers WHERE service = %s AND status = 'running' "
                    + cond,
                    [service],
                )
            ).fetchone()
        if row and row[0] >= n:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{n} workers of {service} not ready in {timeout_s} s")


async def steady_rate(core: CoreSettings, session: str) -> tuple[float, int]:
    """Rows/s while every replica was writing (from the last one's first row to the first
    one's last row), and the rows stored; start-up and tail skew stay out of the figure."""
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        row = await (
            await c.execute(
                """WITH w AS (SELECT min(predicted_at) AS f, max(predicted_at) AS l
                              FROM predictions WHERE session_id = %(s)s GROUP BY worker_id),
                        span AS (SELECT max(f) AS a, min(l) AS b FROM w)
                   SELECT count(*) FILTER (WHERE p.predicted_at BETWEEN span.a AND span.b),
                          extract(epoch FROM span.b - span.a)::float8, count(*)
                   FROM predictions p, span WHERE p.session_id = %(s)s
                   GROUP BY span.a, span.b""",
                {"s": session},
            )
        ).fetchone()
    assert row is not None, f"no predictions for {session}"
    inside, seconds, stored = row
    return (inside - 1) / seconds, int(stored)


def epoch(data: np.ndarray, session: str, seq: int, t0: float) -> Window:
    """One epoch window as every benchmark sends it (``N_CH`` channels at ``FS``, marker
    2), so the numbers of different benchmarks are over the same messages."""
    return make_window(
        data, session_id=session, seq=seq, t0=t0, fs=FS, channels=CHANNELS, kind="epoch", marker=2
    )


def windows(session: str, n: int) -> list[tuple[bytes, dict[str, object]]]:
    """Pre-encoded epochs (encoding cost stays out of the consumer's numbers)."""
    rng = np.random.default_rng(1)
    base = rng.normal(0, 10, (N_CH, N_S)).astype(np.float32)
    return [encode(epoch(base, session, seq, 1.7e9 + seq * 0.25)) for seq in range(n)]


async def fill(
    core: CoreSettings,
    service: str,
    items: list[tuple[bytes, dict[str, object]]],
    *,
    in_flight: int = 1000,
) -> float:
    """Publish with confirms, ``in_flight`` at once; returns messages/s."""
    conn = await aio_pika.connect_robust(core.amqp_url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await topology.declare_service(ch, service)
        ex = await ch.get_exchange(topology.WINDOWS_EXCHANGE)
        sem = asyncio.Semaphore(in_flight)

        async def one(body: bytes, headers: dict[str, object]) -> None:
            async with sem:
                await ex.publish(
                    aio_pika.Message(
                        body,
                        headers=headers,  # type: ignore[arg-type]
                        message_id=f"{headers['session_id']}:{headers['seq']}",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    service,
                )

        t = time.perf_counter()
        await asyncio.gather(*(one(b, h) for b, h in items))
        return len(items) / (time.perf_counter() - t)


@contextmanager
def worker_procs(core: CoreSettings, service: str, n: int, **settings: str) -> Iterator[None]:
    env = (
        dict(os.environ)
        | {
            "NEUROSTREAM_DATABASE_URL": core.database_url,
            "NEUROSTREAM_AMQP_URL": core.amqp_url,
            "NEUROSTREAM_WORKER_SERVICE": service,
        }
        | {f"NEUROSTREAM_WORKER_{k.upper()}": v for k, v in settings.items()}
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "workers"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)


async def count(core: CoreSettings, session: str) -> int:
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        row = await (
            await c.execute("SELECT count(*) FROM predictions WHERE session_id = %s", [session])
        ).fetchone()
        return int(row[0])  # type: ignore[index]


async def wait_count(core: CoreSettings, session: str, n: int, timeout_s: float = 300) -> int:
    deadline = time.monotonic() + timeout_s
    got = 0
    while time.monotonic() < deadline:
        got = await count(core, session)
        if got >= n:
            break
        await asyncio.sleep(0.2)
    return got


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print("  " + "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)))
