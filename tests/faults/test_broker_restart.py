"""The broker restarted mid-session (own RabbitMQ node): everyone reconnects by themselves.

``rabbitmqctl stop_app`` / ``start_app`` on a private node while a producer session streams
and two worker processes consume: the producer buffers and resends unconfirmed windows,
the workers' robust connections come back and resume; nothing is lost, nothing stored twice.
"""

from __future__ import annotations

import asyncio
import time

import pytest

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


async def test_broker_restart_mid_session_loses_and_duplicates_nothing(
    core: CoreSettings, own_broker, lda16, recording, worker_procs
) -> None:
    assert core.api_token is not None
    bcore = isolated_core(core.database_url, own_broker.url, core.api_token.get_secret_value())
    svc = await register_service(bcore.database_url, lda16)
    procs = [worker_procs.start(bcore, svc["name"], prefetch=64, batch_max=16) for _ in range(2)]
    await worker_procs.wait_ready(bcore.database_url, procs)
    settings = ProducerSettings(service=svc["name"], duration_s=450.0, seed=12)
    source = RecordingSource.from_file(recording, speed=30, loop=True)  # ~15 s of wall time
    session = asyncio.create_task(run_session(bcore, settings, source=source))
    stored = "SELECT count(*) FROM predictions WHERE session_id = %s"
    while await scalar(bcore.database_url, stored, [settings.session_id]) < 100:
        assert not session.done()
        await asyncio.sleep(0.05)
    before = await scalar(bcore.database_url, stored, [settings.session_id])
    t0 = time.monotonic()
    await asyncio.to_thread(own_broker.stop_app)
    # Down while the source still streams: a session cannot end before its windows are
    # confirmed, so it is mid-session now. (Checked here, not after start_app: under load
    # the source may run out during the outage and the session flush right after it.)
    restarted_mid_session = not session.done()
    try:
        await asyncio.sleep(4)
        during = await scalar(bcore.database_url, stored, [settings.session_id])
    finally:
        await asyncio.to_thread(own_broker.start_app)
    down_s = time.monotonic() - t0
    result = await asyncio.wait_for(session, 120)
    assert restarted_mid_session
    assert result.flushed and result.windows_confirmed == result.windows_published > 500

    c = await wait_stored(bcore.database_url, settings.session_id, result.windows_confirmed, 45)
    if c.distinct < result.windows_confirmed:  # say where the missing windows are
        print(
            own_broker.ctl(
                "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers"
            ).stdout
        )
        for p in procs:
            print(p.worker_id, p.tail(40))
    await asyncio.to_thread(worker_procs.stop_all)
    processed = await scalar(
        bcore.database_url,
        "SELECT sum(processed) FROM workers WHERE worker_id = ANY(%s)",
        [[p.worker_id for p in procs]],
    )
    c = await counts(bcore.database_url, settings.session_id, result.windows_confirmed)
    report(
        "broker-restart",
        sent=result.windows_published,
        confirmed=result.windows_confirmed,
        stored=c.rows,
        missing=c.missing,
        duplicated=c.duplicated,
        dead_lettered=c.dead,
        stored_before_stop=before,
        stored_at_end_of_outage=during,
        broker_down_s=round(down_s, 1),
        redelivered_or_resent_absorbed=int(processed) - c.rows,
    )
    assert c.distinct == c.rows == result.windows_confirmed
    assert c.per_version == {svc["v1"]: result.windows_confirmed}
    assert c.missing == 0 and c.duplicated == 0 and c.dead == 0
    for p in procs:
        assert p.proc.returncode == 0, p.tail()
