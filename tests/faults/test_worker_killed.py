"""A worker replica SIGKILLed mid-session: its unacked windows go to the other replica.

Two ``python -m workers`` processes serve one service while a producer session replays a
synthetic recording; one of them is killed with SIGKILL (no shutdown, no acks). Afterwards
every confirmed window has exactly one prediction per serving model version.
"""

from __future__ import annotations

import asyncio

import pytest

from neurostream.settings import CoreSettings
from producer.board import RecordingSource
from producer.session import run_session
from producer.settings import ProducerSettings
from tests.faults.conftest import counts, register_service, report, scalar, wait_stored

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


async def test_sigkill_one_of_two_workers_mid_session(
    core: CoreSettings, lda16, recording, worker_procs
) -> None:
    svc = await register_service(core.database_url, lda16)
    a = worker_procs.start(core, svc["name"], prefetch=64, batch_max=16)
    b = worker_procs.start(core, svc["name"], prefetch=64, batch_max=16)
    await worker_procs.wait_ready(core.database_url, [a, b])
    settings = ProducerSettings(service=svc["name"], duration_s=240.0, seed=11)
    source = RecordingSource.from_file(recording, speed=30, loop=True)  # ~8 s of wall time
    session = asyncio.create_task(run_session(core, settings, source=source))
    by_a = "SELECT count(*) FROM predictions WHERE session_id = %s AND worker_id = %s"
    while await scalar(core.database_url, by_a, [settings.session_id, a.worker_id]) < 50:
        assert not session.done(), "the session ended before worker a wrote anything"
        await asyncio.sleep(0.05)
    worker_procs.kill(a)
    killed_mid_session = not session.done()
    written_by_a = await scalar(core.database_url, by_a, [settings.session_id, a.worker_id])
    result = await session
    assert killed_mid_session
    assert result.flushed and result.windows_confirmed == result.windows_published > 500

    c = await wait_stored(core.database_url, settings.session_id, result.windows_confirmed)
    b.proc.terminate()  # graceful: its last heartbeat carries the final counters
    await asyncio.to_thread(b.proc.wait, 40)
    processed_b = await scalar(
        core.database_url, "SELECT processed FROM workers WHERE worker_id = %s", [b.worker_id]
    )
    by_b = await scalar(core.database_url, by_a, [settings.session_id, b.worker_id])
    c = await counts(core.database_url, settings.session_id, result.windows_confirmed)
    report(
        "worker-killed",
        sent=result.windows_published,
        confirmed=result.windows_confirmed,
        stored=c.rows,
        missing=c.missing,
        duplicated=c.duplicated,
        dead_lettered=c.dead,
        rows_by_killed_worker=written_by_a,
        rows_by_survivor=by_b,
        redelivered_absorbed=processed_b - by_b,
    )
    assert c.distinct == c.rows == result.windows_confirmed
    assert c.per_version == {svc["v1"]: result.windows_confirmed}
    assert c.missing == 0 and c.duplicated == 0 and c.dead == 0
    seqs = await scalar(
        core.database_url,
        "SELECT array_agg(seq ORDER BY seq) FROM predictions WHERE session_id = %s",
        [settings.session_id],
    )
    assert seqs == list(range(result.windows_confirmed))
