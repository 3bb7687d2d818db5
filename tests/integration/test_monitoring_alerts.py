"""Alerts clear when their condition stops holding on the latest data, on real PostgreSQL.

Drift rows are written as the evaluator writes them (one evaluation per window time, tagged
with its session); windows and predictions as the archiver and the workers write them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np
import pytest
from psycopg.rows import dict_row

from monitoring_api import alerts
from tests.factories import unique
from tests.monitoring_support import insert_predictions, insert_windows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def _rule(pool: Any, service: str, metric: str, threshold: float, window_s: float) -> str:
    name = unique("rule")
    async with pool.connection() as conn:
        await conn.execute(
            """INSERT INTO alert_rules (name, service, metric, comparison, threshold, window_s)
            VALUES (%s, %s, %s, '>', %s, %s)""",
            [name, service, metric, threshold, window_s],
        )
    return name


async def _alerts(pool: Any, rule: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM alerts WHERE rule_name = %s ORDER BY id", [rule])
        return await cur.fetchall()


async def _pass(pool: Any, rule: str) -> list[str]:
    async with httpx.AsyncClient() as client:
        done = await alerts.evaluate_rules(pool, client)
    return [t["event"] for t in done if t["rule"] == rule]


async def _session(pool: Any, service: str, t_first: float, share: float) -> str:
    """A session's archived windows and one evaluation at its last window."""
    session = unique("s")
    t0 = t_first + np.arange(4) * 0.25
    async with pool.connection() as conn:
        await insert_windows(conn, service, session, np.zeros((4, 2, 10)), range(4), t0, ["a", "b"])
        await conn.execute(
            """INSERT INTO drift_metrics (time, service, session_id, scope, name, method,
                statistic, drifted) VALUES (to_timestamp(%s), %s, %s, 'overall', 'share', 'ks',
                %s, %s > 0.5)""",
            [float(t0[-1]), service, session, share, share],
        )
    return session


async def test_a_drift_alert_of_an_earlier_session_clears_in_the_next(pool: Any) -> None:
    service = unique("al")
    rule = await _rule(pool, service, "drift_share", 0.2, 60)
    t = time.time() - 100
    await _session(pool, service, t, share=0.6)
    assert await _pass(pool, rule) == ["fired"]
    assert await _pass(pool, rule) == []  # still holds: one episode, not one per pass
    # A new session streams; its first evaluation has not happened yet (it waits for the
    # reference): the earlier session's drift no longer speaks for the service.
    async with pool.connection() as conn:
        await insert_windows(
            conn,
            service,
            unique("s"),
            np.zeros((2, 2, 10)),
            [0, 1],
            [t + 10, t + 10.25],
            ["a", "b"],
        )
    assert await _pass(pool, rule) == ["cleared"]
    [alert] = await _alerts(pool, rule)
    assert alert["state"] == "cleared" and alert["cleared_at"] is not None
    assert alert["cleared_value"] is None  # nothing to measure yet


async def test_a_drift_alert_clears_when_the_latest_evaluation_stops_drifting(pool: Any) -> None:
    service = unique("al")
    rule = await _rule(pool, service, "drift_share", 0.2, 1)
    await _session(pool, service, time.time() - 100, share=0.6)
    assert await _pass(pool, rule) == ["fired"]
    async with pool.connection() as conn:  # a later evaluation of the same session
        await conn.execute(
            """INSERT INTO drift_metrics (time, service, session_id, scope, name, method,
                statistic) SELECT max(time) + interval '5 s', service, session_id, scope, name,
                method, 0.05 FROM drift_metrics WHERE service = %s GROUP BY 2, 3, 4, 5, 6""",
            [service],
        )
    assert await _pass(pool, rule) == ["cleared"]
    [alert] = await _alerts(pool, rule)
    assert alert["state"] == "cleared" and alert["cleared_value"] == pytest.approx(0.05)


async def test_a_serving_alert_clears_when_there_is_nothing_left_to_measure(pool: Any) -> None:
    service, session = unique("al"), unique("s")
    rule = await _rule(pool, service, "throughput_per_s", 0, 1.5)
    async with pool.connection() as conn:
        await insert_predictions(conn, service, session, [0, 1, 2], [1.0, 1.25, 1.5], [0.9] * 3)
    assert await _pass(pool, rule) == ["fired"]
    await asyncio.sleep(1.6)  # the session ended: no prediction in the rule's window
    assert await _pass(pool, rule) == ["cleared"]
    [alert] = await _alerts(pool, rule)
    assert alert["state"] == "cleared" and alert["cleared_at"] > alert["fired_at"]


async def test_disabling_a_rule_clears_what_it_fired(pool: Any) -> None:
    service = unique("al")
    rule = await _rule(pool, service, "drift_share", 0.2, 60)
    await _session(pool, service, time.time() - 100, share=0.9)
    assert await _pass(pool, rule) == ["fired"]
    async with pool.connection() as conn:
        await conn.execute("UPDATE alert_rules SET enabled = false WHERE name = %s", [rule])
    await _pass(pool, rule)
    assert [a["state"] for a in await _alerts(pool, rule)] == ["cleared"]
