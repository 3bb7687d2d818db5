"""Prediction writes against the real PostgreSQL: exact values, any session id, NULLs and
non-finite scores, and idempotent on redelivery."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from neurostream.results import PredictionRow, write_predictions

pytestmark = pytest.mark.integration


def rows(session: str, n: int = 5) -> list[PredictionRow]:
    return [
        PredictionRow(
            session_id=session,
            seq=i,
            model_version_id=7,
            t0=1_763_900_000.123456 + i * 0.25,
            role="serving" if i % 2 == 0 else "shadow",
            kind="epoch" if i % 3 else "sliding",
            marker=None if i == 1 else i + 1,
            predicted=i % 2,
            score=0.1 + i / 10,
            proba=[0.9 - i / 10, 0.1 + i / 10],
            sent_at=None if i == 2 else 1_763_900_001.5 + i,
        )
        for i in range(n)
    ]


async def stored(pool: Any, session: str) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq, model_version_id, extract(epoch FROM window_ts)::float8, service, role,"
            " kind, marker, predicted, score, proba, extract(epoch FROM sent_at)::float8,"
            " worker_id FROM predictions WHERE session_id = %s ORDER BY seq",
            [session],
        )
        return await cur.fetchall()


@pytest.mark.parametrize(
    "session",
    [
        f"plain-{uuid.uuid4().hex[:8]}",
        f'odd "quoted", {{braced}} \\ {uuid.uuid4().hex[:8]}',  # array-literal syntax
        "NULL",  # read as null by an unquoted array literal
    ],
)
async def test_rows_round_trip_exactly_and_redelivery_is_a_no_op(pool: Any, session: str) -> None:
    batch = rows(session)
    async with pool.connection() as conn:
        assert await write_predictions(conn, "svc-r", "w-1", batch) == 5
        await conn.commit()
    got = await stored(pool, session)
    assert [g[0] for g in got] == [0, 1, 2, 3, 4]
    for g, r in zip(got, batch, strict=True):
        assert g[1] == 7 and g[3] == "svc-r" and g[11] == "w-1"
        assert g[2] == pytest.approx(r.t0, abs=1e-6)  # timestamptz keeps microseconds
        assert (g[4], g[5], g[6], g[7]) == (r.role, r.kind, r.marker, r.predicted)
        assert g[8] == pytest.approx(r.score, rel=1e-6)  # real column
        assert g[9] == pytest.approx(list(r.proba), rel=1e-5)
        assert (g[10] is None) == (r.sent_at is None)
        if r.sent_at is not None:
            assert g[10] == pytest.approx(r.sent_at, abs=1e-6)
    async with pool.connection() as conn:
        # A redelivered batch, plus one new window: only the new one counts.
        assert await write_predictions(conn, "svc-r", "w-2", rows(session, 6)) == 1
        await conn.commit()
    again = await stored(pool, session)
    assert len(again) == 6 and {g[11] for g in again[:5]} == {"w-1"}


async def test_a_batch_mixing_plain_and_odd_ids_keeps_each_id(pool: Any) -> None:
    plain, odd = f"p-{uuid.uuid4().hex[:8]}", f'q"{uuid.uuid4().hex[:8]}'
    batch = rows(plain, 2) + rows(odd, 2)
    async with pool.connection() as conn:
        assert await write_predictions(conn, "svc-r", "w-1", batch) == 4
        await conn.commit()
    assert [g[0] for g in await stored(pool, plain)] == [0, 1]
    assert [g[0] for g in await stored(pool, odd)] == [0, 1]


async def test_non_finite_scores_are_stored_as_such(pool: Any) -> None:
    session = f"nf-{uuid.uuid4().hex[:8]}"
    batch = rows(session, 2)
    batch[0].score, batch[1].score = math.nan, math.inf
    async with pool.connection() as conn:
        assert await write_predictions(conn, "svc-r", "w-1", batch) == 2
        await conn.commit()
    got = await stored(pool, session)
    assert math.isnan(got[0][8]) and got[1][8] == math.inf


async def test_a_batch_with_no_marker_and_no_send_time_at_all_stores_nulls(pool: Any) -> None:
    """Sliding windows carry no marker; producers that do not stamp ``sent_at`` exist too:
    an all-NULL array parameter has no element type to infer from."""
    session = f"nulls-{uuid.uuid4().hex[:8]}"
    batch = [
        PredictionRow(
            session_id=session,
            seq=i,
            model_version_id=7,
            t0=1_763_900_000.0 + i,
            role="serving",
            kind="sliding",
            marker=None,
            predicted=1,
            score=0.75,
            proba=[0.25, 0.75],
            sent_at=None,
        )
        for i in range(3)
    ]
    async with pool.connection() as conn:
        assert await write_predictions(conn, "svc-r", "w-1", batch) == 3
        await conn.commit()
    got = await stored(pool, session)
    assert [(g[0], g[6], g[10], g[8]) for g in got] == [(i, None, None, 0.75) for i in range(3)]
