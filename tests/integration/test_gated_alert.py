"""The data-quality alert on the artifact gate: ``gated_share`` is the share of the current
session's epochs the serving version's gate kept from scoring, so a session whose loose
electrode rejects nearly everything fires an alert instead of going quiet."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from psycopg.rows import dict_row

from monitoring_api import alerts
from neurostream.results import GatedRow, write_gated
from tests.factories import unique
from tests.monitoring_support import insert_predictions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def gated_rows(session: str, seqs: range, role: str = "serving") -> list[GatedRow]:
    return [
        GatedRow(
            session,
            q,
            1,
            1.7e9 + q * 0.25,
            role,
            "epoch",
            1,
            "peak-to-peak 412 µV on AF7 > 100 µV",
            ["AF7"],
        )
        for q in seqs
    ]


async def test_gated_share_is_the_current_sessions_gated_share_and_fires_an_alert(
    pool: Any,
) -> None:
    service, old, current = unique("gs"), unique("s"), unique("s")
    async with pool.connection() as conn:
        assert await alerts.metric_value(conn, "gated_share", service, 60) is None
        # An earlier session, clean: it does not speak for the current one.
        await insert_predictions(
            conn, service, old, range(10), [1.7e9 + i for i in range(10)], [0.5] * 10
        )
        assert await alerts.metric_value(conn, "gated_share", service, 60) == 0.0
        # The current session: 2 scored, 18 gated (a loose electrode); shadow rows don't count.
        await insert_predictions(conn, service, current, [0, 1], [1.7e9, 1.7e9 + 0.25], [0.5, 0.5])
        assert await write_gated(conn, service, "w1", gated_rows(current, range(2, 20))) == 18
        assert await write_gated(conn, service, "w1", gated_rows(current, range(2, 20))) == 0
        await write_gated(conn, service, "w1", gated_rows(current, range(20, 40), role="shadow"))
        assert await alerts.metric_value(conn, "gated_share", service, 60) == pytest.approx(0.9)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT reason, channels FROM gated WHERE session_id = %s AND seq = 2", [current]
            )
            assert await cur.fetchone() == {
                "reason": "peak-to-peak 412 µV on AF7 > 100 µV",
                "channels": ["AF7"],
            }
        name = unique("rule")
        await conn.execute(
            """INSERT INTO alert_rules (name, service, metric, comparison, threshold, window_s)
            VALUES (%s, %s, 'gated_share', '>', 0.5, 60)""",
            [name, service],
        )
    async with httpx.AsyncClient() as client:
        done = await alerts.evaluate_rules(pool, client)
    assert [(t["event"], t["value"]) for t in done if t["rule"] == name] == [
        ("fired", pytest.approx(0.9))
    ]
