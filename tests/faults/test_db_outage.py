"""PostgreSQL stopped for ~10 s mid-stream (own cluster): workers hold, then catch up.

Workers only ack a window after its prediction is durably written, so while the database
is down they stop acking: the broker keeps the windows (the queue grows) and the workers
retry the write with back-off. When the database returns, everything is written once.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from neurostream import topology
from neurostream.settings import CoreSettings
from producer.board import RecordingSource
from producer.session import run_session
from producer.settings import ProducerSettings
from tests.faults.conftest import (
    counts,
    isolated_core,
    register_service,
    report,
    scalar,
    wait_stored,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


async def queue_depth(amqp_url: str, service: str) -> int:
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(topology.service_queue(service), passive=True)
        return int(q.declaration_result.message_count or 0)


async def test_database_outage_mid_stream_loses_nothing(
    core: CoreSettings, own_pg, lda16, recording, worker_procs
) -> None:
    assert core.api_token is not None
    dcore = isolated_core(
        own_pg.url("neurostream_faults"), core.amqp_url, core.api_token.get_secret_value()
    )
    svc = await register_service(dcore.database_url, lda16)
    procs = [
        worker_procs.start(dcore, svc["name"], prefetch=32, batch_max=16, write_retry_max_s=1)
        for _ in range(2)
    ]
    await worker_procs.wait_ready(dcore.database_url, procs)
    settings = ProducerSettings(service=svc["name"], duration_s=480.0, seed=13)
    source = RecordingSource.from_file(recording, speed=30, loop=True)  # ~16 s of wall time
    session = asyncio.create_task(run_session(dcore, settings, source=source))
    stored = "SELECT count(*) FROM predictions WHERE session_id = %s"
    while await scalar(dcore.database_url, stored, [settings.session_id]) < 100:
        assert not session.done()
        await asyncio.sleep(0.05)
    before = await scalar(dcore.database_url, stored, [settings.session_id])
    depths: list[int] = []
    t0 = time.monotonic()
    await asyncio.to_thread(own_pg.stop)
    try:
        while time.monotonic() - t0 < 10:
            depths.append(await queue_depth(core.amqp_url, svc["name"]))
            await asyncio.sleep(0.5)
    finally:
        if not own_pg.running:
            await asyncio.to_thread(own_pg.start)
    down_s = time.monotonic() - t0
    for p in procs:
        assert p.proc.poll() is None, f"a worker died in the outage:\n{p.tail()}"
    result = await asyncio.wait_for(session, 120)
    assert result.flushed and result.windows_confirmed == result.windows_published > 1000

    c = await wait_stored(dcore.database_url, settings.session_id, result.windows_confirmed, 90)
    await asyncio.to_thread(worker_procs.stop_all)
    processed = await scalar(
        dcore.database_url,
        "SELECT sum(processed) FROM workers WHERE worker_id = ANY(%s)",
        [[p.worker_id for p in procs]],
    )
    retries = sum(p.log.read_text().count("write failed") for p in procs)
    c = await counts(dcore.database_url, settings.session_id, result.windows_confirmed)
    report(
        "database-outage",
        sent=result.windows_published,
        confirmed=result.windows_confirmed,
        stored=c.rows,
        missing=c.missing,
        duplicated=c.duplicated,
        dead_lettered=c.dead,
        stored_before_outage=before,
        db_down_s=round(down_s, 1),
        max_queue_depth_during_outage=max(depths),
        write_retries_logged=retries,
        redelivered_absorbed=int(processed) - c.rows,
    )
    assert max(depths) > 100, "the broker should have kept the windows the workers could not ack"
    assert retries > 0
    assert c.distinct == c.rows == result.windows_confirmed
    assert c.per_version == {svc["v1"]: result.windows_confirmed}
    assert c.missing == 0 and c.duplicated == 0 and c.dead == 0
