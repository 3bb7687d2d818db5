"""Fixtures of the fault-injection suite: private broker and database, worker processes.

Every fault test asserts on the database afterwards and prints one ``FAULT`` line with its
counts (sent / confirmed / stored / duplicated / dead-lettered), visible with ``pytest -s``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from neurostream import registry
from neurostream.db import ensure_database, open_pool
from neurostream.models.training import TrainedModel, train_model
from neurostream.settings import CoreSettings
from tests.factories import FS, synthetic_p300, unique
from tests.faults.infra import OwnBroker, OwnCluster, OwnPostgres

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def own_broker() -> Iterator[OwnBroker]:
    """A second RabbitMQ node on free ports, stopped and deleted at the end."""
    broker = OwnBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.shutdown()


@pytest.fixture(scope="session")
def own_pg() -> Iterator[OwnPostgres]:
    """A second PostgreSQL cluster on a free port, stopped and deleted at the end."""
    pg = OwnPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.shutdown()


@pytest.fixture(scope="session")
def lda4() -> TrainedModel:
    x, y = synthetic_p300(channels=4, seed=1)
    return train_model("sklearn-lda", x, y, FS)


@pytest.fixture(scope="session")
def lda16() -> TrainedModel:
    """Fits the producer's epochs of the synthetic board: 16 channels x 200 samples."""
    x, y = synthetic_p300(channels=16, seed=3)
    return train_model("sklearn-lda", x, y, FS)


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seconds of SYNTHETIC_BOARD, replayed fast (and looped) by the sessions."""
    from producer.board import record

    path = tmp_path_factory.mktemp("faults") / "synthetic.brainflow.csv"
    record("synthetic", 3.0, path)
    return path


async def register_service(
    database_url: str, trained: TrainedModel, *, service: str | None = None
) -> dict[str, Any]:
    """A fresh service following version 1 of a fresh model (schema migrated on the way)."""
    name, model = service or unique("fsvc"), unique("fmodel")
    pool = await open_pool(database_url, max_size=1)
    try:
        async with pool.connection() as conn:
            v = await registry.register_trained(conn, model, trained, code_version="faults")
            await registry.create_service(conn, name)
            await registry.assign(conn, name, model, "1")
    finally:
        await pool.close()
    return {"name": name, "model": model, "v1": v["id"]}


def isolated_core(database_url: str, amqp_url: str, token: str) -> CoreSettings:
    ensure_database(database_url)
    return CoreSettings(database_url=database_url, amqp_url=amqp_url, api_token=token)


async def scalar(database_url: str, query: str, params: list[Any] | None = None) -> Any:
    async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=5) as conn:
        row = await (await conn.execute(query, params or [])).fetchone()
    return row[0] if row else None


@dataclass
class Counts:
    expected: int
    rows: int
    distinct: int
    per_version: dict[int, int]
    dead: int

    @property
    def missing(self) -> int:
        return self.expected - self.distinct

    @property
    def duplicated(self) -> int:
        """Rows beyond one per (window, model version): must be 0."""
        return self.rows - sum(self.per_version.values())


async def counts(database_url: str, session_id: str, expected: int) -> Counts:
    async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=5) as conn:
        rows, distinct = await (
            await conn.execute(
                "SELECT count(*), count(DISTINCT seq) FROM predictions WHERE session_id = %s",
                [session_id],
            )
        ).fetchone()  # type: ignore[misc]
        per_version: dict[int, int] = dict(
            await (
                await conn.execute(
                    "SELECT model_version_id, count(DISTINCT seq) FROM predictions "
                    "WHERE session_id = %s GROUP BY 1",
                    [session_id],
                )
            ).fetchall()
        )
        dead = (
            await (
                await conn.execute(
                    "SELECT count(*) FROM rejections WHERE session_id = %s", [session_id]
                )
            ).fetchone()
        )[0]  # type: ignore[index]
    return Counts(expected, rows, distinct, per_version, dead)


async def wait_stored(
    database_url: str, session_id: str, expected: int, timeout: float = 60
) -> Counts:
    """Poll until every expected window has a prediction (or time runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = await counts(database_url, session_id, expected)
            if c.distinct >= expected or time.monotonic() > deadline:
                return c
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.25)


def report(fault: str, **numbers: object) -> None:
    print(f"\nFAULT {fault}: " + " ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


@dataclass
class WorkerProc:
    worker_id: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


class WorkerProcs:
    """``python -m workers`` replicas, as the demo runs them; all stopped at teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[WorkerProc] = []

    def start(self, core: CoreSettings, service: str, **settings: object) -> WorkerProc:
        worker_id = unique(f"fw-{service}")
        env = dict(os.environ) | {
            "NEUROSTREAM_DATABASE_URL": core.database_url,
            "NEUROSTREAM_AMQP_URL": core.amqp_url,
            "NEUROSTREAM_API_TOKEN": core.api_token.get_secret_value() if core.api_token else "",
            "NEUROSTREAM_WORKER_SERVICE": service,
            "NEUROSTREAM_WORKER_WORKER_ID": worker_id,
            "NEUROSTREAM_WORKER_HEARTBEAT_S": "0.5",
        }
        env |= {f"NEUROSTREAM_WORKER_{k.upper()}": str(v) for k, v in settings.items()}
        log = self.logdir / f"{worker_id}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers"], env=env, cwd=ROOT, stdout=out, stderr=out
            )
        wp = WorkerProc(worker_id, proc, log)
        self.procs.append(wp)
        return wp

    async def wait_ready(self, database_url: str, procs: list[WorkerProc], timeout=60) -> None:
        ids = [p.worker_id for p in procs]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in procs:
                assert p.proc.poll() is None, f"worker {p.worker_id} exited:\n{p.tail()}"
            n = await scalar(
                database_url,
                "SELECT count(*) FROM workers WHERE worker_id = ANY(%s) AND status = 'running' "
                "AND model_version_id IS NOT NULL",
                [ids],
            )
            if n == len(ids):
                return
            await asyncio.sleep(0.3)
        raise AssertionError("workers not ready:\n" + "\n".join(p.tail() for p in procs))

    def kill(self, wp: WorkerProc) -> None:
        wp.proc.send_signal(signal.SIGKILL)
        wp.proc.wait(10)

    def stop_all(self) -> None:
        for wp in self.procs:
            if wp.proc.poll() is None:
                wp.proc.terminate()
        for wp in self.procs:
            try:
                wp.proc.wait(40)
            except subprocess.TimeoutExpired:
                wp.proc.kill()
                wp.proc.wait(10)


@pytest.fixture
async def worker_procs(tmp_path: Path) -> AsyncIterator[WorkerProcs]:
    procs = WorkerProcs(tmp_path)
    try:
        yield procs
    finally:
        await asyncio.to_thread(procs.stop_all)


@pytest.fixture(scope="session")
def own_cluster() -> Iterator[OwnCluster]:
    """A three-node RabbitMQ cluster on free ports (about 30 s to start), deleted at the end."""
    cluster = OwnCluster()
    try:
        cluster.start()
        print(f"\nown cluster up in {cluster.startup_s:.1f} s: {cluster.url}", flush=True)
        yield cluster
    finally:
        cluster.shutdown()
