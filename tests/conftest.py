"""Shared fixtures: an isolated PostgreSQL database and RabbitMQ vhost per test session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import numpy as np
import psycopg
import pytest
from psycopg import sql

from neurostream import infra, topology
from neurostream.contract import Window, make_window
from neurostream.settings import CoreSettings
from tests.lsl_support import Replays

if TYPE_CHECKING:
    from workers.worker import Worker

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def core() -> Iterator[CoreSettings]:
    """CoreSettings pointing at a fresh database and vhost, dropped after the session."""
    suffix = uuid.uuid4().hex[:8]
    dbname, vhost = f"ns_test_{suffix}", f"ns_test_{suffix}"
    settings = CoreSettings(
        database_url=f"postgresql://postgres@127.0.0.1:5432/{dbname}",
        amqp_url=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        api_token="test-token-0123456789abcdef",
    )
    infra.ensure_local(settings.database_url, settings.amqp_url)
    yield settings
    infra.delete_vhost(vhost)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@pytest.fixture(scope="session")
def qm(core: CoreSettings) -> Iterator[str]:
    """A real queue manager's base URL, for what talks to it over HTTP as against a remote
    deployment."""
    from queue_manager.app import create_app
    from queue_manager.settings import QueueManagerSettings
    from tests.factories import served

    with served(create_app(core, QueueManagerSettings()), "queue manager") as url:
        yield url


@pytest.fixture
def replays(tmp_path: Path) -> Iterator[Replays]:
    """``neurostream lsl-replay`` processes a test starts, all killed after it."""
    started = Replays(tmp_path)
    yield started
    started.close()


@pytest.fixture(scope="session")
def data_api(core: CoreSettings) -> Iterator[str]:
    """A real ML data API's base URL (no consumers: the tests feed the store themselves)."""
    from ml_data_api.app import create_app
    from ml_data_api.settings import DataApiSettings
    from tests.factories import served

    with served(create_app(core, DataApiSettings(consumers=False)), "ML data API") as url:
        yield url


@pytest.fixture(scope="session")
def token(core: CoreSettings) -> str:
    """The write token of the test session's services."""
    assert core.api_token is not None
    return core.api_token.get_secret_value()


@pytest.fixture
async def channel(core: CoreSettings) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A confirmed channel on the test vhost with the topology's exchanges declared."""
    conn = await aio_pika.connect_robust(core.amqp_url)
    ch = await conn.channel(publisher_confirms=True)
    await topology.declare_exchanges(ch)
    yield ch
    await conn.close()


@pytest.fixture
async def pool(core: CoreSettings) -> AsyncIterator[object]:
    from neurostream.db import open_pool

    p = await open_pool(core.database_url, max_size=4)
    yield p
    await p.close()


@pytest.fixture
async def workers() -> AsyncIterator[list[Worker]]:
    """The in-process worker replicas a test starts (``tests.factories.start_worker``),
    closed after it."""
    started: list[Worker] = []
    yield started
    for w in started:
        await w.close()


def window_factory(
    *,
    session_id: str = "s-test",
    seq: int = 0,
    n_channels: int = 16,
    n_samples: int = 200,
    fs: float = 250.0,
    kind: str = "epoch",
    marker: int | None = 2,
    seed: int = 0,
) -> Window:
    data = np.random.default_rng(seed).normal(0, 10, (n_channels, n_samples))
    return make_window(
        data,
        session_id=session_id,
        seq=seq,
        t0=1_700_000_000.0 + seq * 0.25,
        fs=fs,
        channels=[f"ch{i}" for i in range(n_channels)],
        kind=kind,
        marker=marker,
    )


@pytest.fixture
def make_window_() -> object:
    return window_factory
