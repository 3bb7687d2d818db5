"""The background evaluator's lifecycle and its idempotent drift store, on real PostgreSQL.

A pass is held in progress the way production would see it: another connection holds a
lock on ``alert_rules``, so the pass waits inside PostgreSQL until the lock goes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from monitoring_api.app import create_app
from monitoring_api.evaluator import Evaluator
from monitoring_api.settings import MonitoringSettings
from neurostream.db import migrate
from neurostream.settings import CoreSettings
from tests.factories import app_client, unique
from tests.monitoring_support import STEP_S, cut, insert_windows, session_stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
AUTH = {"Authorization": "Bearer test-token-0123456789abcdef"}
SETTINGS = MonitoringSettings(evaluate_every_s=0.1, current_window_s=10, reference_s=15)


async def _session(pool: Any, seconds: float = 40) -> tuple[str, str]:
    """One archived session of ``seconds``, C3 shifted after half of it; (service, session)."""
    service, session = unique("ev"), unique("s")
    stream = session_stream(
        seconds, shift_after_s=seconds / 2, shift_channels=["C3"], gain=3, seed=5
    )
    n = int((seconds - 1) / STEP_S)
    t0 = round(time.time() - seconds - 5, 3) + np.arange(n) * STEP_S
    async with pool.connection() as conn:
        await insert_windows(conn, service, session, cut(stream, 0, n), range(n), t0)
    return service, session


async def _rows(pool: Any, service: str) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT time, scope, name, session_id FROM drift_metrics WHERE service = %s",
            [service],
        )
        return await cur.fetchall()


async def test_evaluating_the_same_window_twice_stores_it_once(
    core: CoreSettings, pool: Any
) -> None:
    service, session = await _session(pool)
    evaluator = Evaluator(core, SETTINGS)  # creates its own pool and client
    await evaluator.open()
    try:
        first = await evaluator.evaluate(service)
        assert first is not None and first.session_id == session
        once = await _rows(pool, service)
        second = await evaluator.evaluate(service)
        assert second is not None and second.end == first.end
        twice = await _rows(pool, service)
    finally:
        await evaluator.close()
    assert evaluator.pool is None and evaluator.client is None  # it closed what it made
    n_features = len(first.evaluation.result.features)
    n_channels = len(first.evaluation.result.channels)
    assert len(once) == n_features + n_channels + 2  # + share and MMD
    assert sorted(twice) == sorted(once)
    assert {r[0] for r in twice} == {first.end} and {r[3] for r in twice} == {session}
    names = [r[2] for r in twice if r[1] == "feature"]
    assert len(names) == len(set(names)) == n_features


async def test_the_endpoint_and_the_loop_store_one_evaluation(
    core: CoreSettings, pool: Any
) -> None:
    """The demo's double write: POST /drift/evaluate, then the loop's pass over the same
    (no longer growing) archive."""
    service, _ = await _session(pool)
    app = create_app(core, SETTINGS.model_copy(update={"evaluate_every_s": 0.2}))
    async with app_client(app, base_url="http://m", timeout=5) as api:
        stored = await api.post(f"/drift/evaluate/{service}", headers=AUTH)
        assert stored.status_code == 200 and stored.json()["stored"] is True
        evaluator: Evaluator = app.state.evaluator
        ticks = evaluator.ticks
        while evaluator.ticks < ticks + 3:  # the loop has passed over the service since
            await asyncio.sleep(0.05)
        series = (
            await api.get("/drift/metrics", params={"service": service, "scope": "feature"})
        ).json()
    assert len({r["time"] for r in series}) == 1
    assert len(series) == len({r["name"] for r in series}) == len(stored.json()["features"])


async def test_migration_drops_copies_written_before_the_key(core: CoreSettings, pool: Any) -> None:
    service = unique("dup")
    async with pool.connection() as conn:
        await conn.execute(
            "ALTER TABLE drift_metrics DROP CONSTRAINT IF EXISTS drift_metrics_evaluation"
        )
        for delay in ("0 s", "3 s"):  # the same evaluation, written 3 s apart
            await conn.execute(
                """INSERT INTO drift_metrics (time, service, scope, name, method, statistic,
                    drifted, evaluated_at)
                SELECT '2024-01-01T00:00:10Z', %s, 'feature', n, 'ks', 0.5, false,
                    now() + %s::interval
                FROM unnest(ARRAY['C3:alpha', 'C4:alpha']) AS n""",
                [service, delay],
            )
    assert len(await _rows(pool, service)) == 4
    await migrate(pool)
    await migrate(pool)  # every start-up runs it: the second run is a no-op
    assert sorted(r[2] for r in await _rows(pool, service)) == ["C3:alpha", "C4:alpha"]
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute(
                """INSERT INTO drift_metrics (time, service, scope, name, method, statistic)
                VALUES ('2024-01-01T00:00:10Z', %s, 'feature', 'C3:alpha', 'ks', 0.1)""",
                [service],
            )


async def _pass_waiting_on(pool: Any, lock_holder: Any) -> None:
    """Until a query of another connection waits on the lock ``lock_holder`` holds."""
    mine = lock_holder.info.backend_pid
    for _ in range(200):
        async with pool.connection() as conn:
            cur = await conn.execute(
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                AND wait_event_type = 'Lock' AND %s = ANY(pg_blocking_pids(pid))""",
                [mine],
            )
            if (await cur.fetchone())[0]:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the evaluator's pass never reached the locked table")


@pytest.fixture
async def locked_rules(core: CoreSettings) -> AsyncIterator[Any]:
    """A connection holding ``alert_rules`` exclusively until the test commits it."""
    conn = await psycopg.AsyncConnection.connect(core.database_url)
    await conn.execute("LOCK TABLE alert_rules IN ACCESS EXCLUSIVE MODE")
    yield conn
    await conn.close()


async def test_close_lets_the_pass_in_progress_finish(
    core: CoreSettings, pool: Any, locked_rules: Any
) -> None:
    async with httpx.AsyncClient() as client:
        settings = SETTINGS.model_copy(update={"evaluate_every_s": 3600, "close_timeout_s": 30})
        evaluator = Evaluator(core, settings, pool=pool, client=client)
        await evaluator.start()
        await _pass_waiting_on(pool, locked_rules)
        evaluator.request_stop()  # as a signal handler would
        closing = asyncio.create_task(evaluator.close())
        await asyncio.sleep(0.3)
        assert not closing.done() and evaluator.ticks == 0  # still draining
        await locked_rules.commit()  # the pass can go on
        await asyncio.wait_for(closing, 10)
        assert evaluator.ticks == 1 and not evaluator.running
        assert not client.is_closed  # injected: the caller's to close
    async with pool.connection() as conn:  # and so is the pool
        assert (await (await conn.execute("SELECT 1")).fetchone())[0] == 1


async def test_close_cancels_a_pass_stuck_past_the_timeout(
    core: CoreSettings, pool: Any, locked_rules: Any
) -> None:
    async with httpx.AsyncClient() as client:
        settings = SETTINGS.model_copy(update={"close_timeout_s": 0.5})
        evaluator = Evaluator(core, settings, pool=pool, client=client)
        await evaluator.start()
        await _pass_waiting_on(pool, locked_rules)
        started = time.monotonic()
        await asyncio.wait_for(evaluator.close(), 10)
        took = time.monotonic() - started
    assert 0.4 < took < 5 and evaluator.ticks == 0 and not evaluator.running
    await locked_rules.commit()
    async with pool.connection() as conn:  # the cancelled pass left the pool usable
        assert (await (await conn.execute("SELECT 1")).fetchone())[0] == 1
