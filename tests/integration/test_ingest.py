"""The ML data API's ingestion (label collector + window archiver) as one long-running
loop on the real broker and database: run, stop on a signal, own only what it opened."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import aio_pika
import pytest

from ml_data_api.ingest import Ingest
from ml_data_api.settings import DataApiSettings
from neurostream import topology
from neurostream.settings import CoreSettings
from tests.factories import unique

pytestmark = pytest.mark.integration


async def label_stored(pool: Any, session_id: str, wait_s: float = 20.0) -> int | None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        async with pool.connection() as conn:
            row = await (
                await conn.execute("SELECT label FROM labels WHERE session_id = %s", [session_id])
            ).fetchone()
        if row is not None:
            return int(row[0])
        await asyncio.sleep(0.05)
    return None


async def test_run_stops_on_a_signal_and_leaves_an_injected_pool_and_connection_open(
    core: CoreSettings, pool: Any
) -> None:
    connection = await aio_pika.connect_robust(core.amqp_url)
    try:
        ingest = Ingest(core, DataApiSettings(), pool=pool, connection=connection)
        run = asyncio.create_task(ingest.run())
        deadline = time.monotonic() + 20
        while not all(c.running for c in ingest.consumers):
            assert time.monotonic() < deadline and not run.done(), "ingest did not start"
            await asyncio.sleep(0.02)
        session = unique("s")
        channel = await connection.channel()
        labels = await channel.get_exchange(topology.LABELS_EXCHANGE)
        body = {"session_id": session, "seq": 0, "label": 1, "source": "test"}
        await labels.publish(aio_pika.Message(json.dumps(body).encode()), routing_key=session)
        assert await label_stored(pool, session) == 1
        ingest.handle_signal(signal.SIGTERM)
        await asyncio.wait_for(run, 30)
        assert ingest.stopping and not any(c.running for c in ingest.consumers)
        assert ingest.collector.written >= 1
        assert not connection.is_closed and not channel.is_closed and not pool.closed
        await channel.close()
    finally:
        await connection.close()


async def test_close_closes_what_it_opened(core: CoreSettings) -> None:
    ingest = Ingest(core, DataApiSettings())
    await ingest.start()
    assert ingest.pool is not None and ingest.connection is not None
    assert all(c.running for c in ingest.consumers)
    await ingest.close()
    await ingest.close()  # idempotent
    assert ingest.connection.is_closed and ingest.pool.closed
    assert not any(c.running for c in ingest.consumers)
