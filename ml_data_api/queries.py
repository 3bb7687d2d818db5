"""Read-only SQL over production data: predictions, archived windows, labels, sessions.

Pages fetch ``limit + 1`` rows so the caller knows whether another page exists without a
``count(*)`` over a hypertable. Every filter is a bound parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

_PREDICTIONS = """
SELECT p.session_id, p.seq, p.model_version_id, p.window_ts, p.service, p.role, p.kind,
    p.marker, p.predicted, p.score::float8 AS score, p.proba::float8[] AS proba, l.label,
    p.predicted_at, p.worker_id
FROM predictions p LEFT JOIN labels l ON l.session_id = p.session_id AND l.seq = p.seq
WHERE (%(service)s::text IS NULL OR p.service = %(service)s)
  AND (%(session_id)s::text IS NULL OR p.session_id = %(session_id)s)
  AND (%(model_version_id)s::int IS NULL OR p.model_version_id = %(model_version_id)s)
  AND (%(role)s::text IS NULL OR p.role = %(role)s)
  AND (%(t_from)s::timestamptz IS NULL OR p.window_ts >= %(t_from)s)
  AND (%(t_to)s::timestamptz IS NULL OR p.window_ts <= %(t_to)s)
ORDER BY p.window_ts DESC, p.session_id, p.seq, p.model_version_id
LIMIT %(limit)s OFFSET %(offset)s
"""

_WINDOWS = """
SELECT w.session_id, w.seq, w.window_ts, w.service, w.kind, w.marker, w.fs, w.n_channels,
    w.n_samples, w.channels, l.label, w.stored_at,
    CASE WHEN %(include_data)s THEN w.data END AS data
FROM windows w LEFT JOIN labels l ON l.session_id = w.session_id AND l.seq = w.seq
WHERE (%(service)s::text IS NULL OR w.service = %(service)s)
  AND (%(session_id)s::text IS NULL OR w.session_id = %(session_id)s)
  AND (%(kind)s::text IS NULL OR w.kind = %(kind)s)
  AND (%(model_version_id)s::int IS NULL OR EXISTS (
      SELECT 1 FROM predictions p WHERE p.session_id = w.session_id AND p.seq = w.seq
        AND p.model_version_id = %(model_version_id)s))
  AND (%(t_from)s::timestamptz IS NULL OR w.window_ts >= %(t_from)s)
  AND (%(t_to)s::timestamptz IS NULL OR w.window_ts <= %(t_to)s)
ORDER BY w.window_ts DESC, w.session_id, w.seq
LIMIT %(limit)s OFFSET %(offset)s
"""

_LABELS = """
SELECT session_id, seq, label, source, created_at FROM labels
WHERE (%(session_id)s::text IS NULL OR session_id = %(session_id)s)
ORDER BY session_id, seq LIMIT %(limit)s OFFSET %(offset)s
"""

# Sessions are those the producer registered plus any only seen through archived windows.
_SESSIONS = """
WITH ids AS (
    SELECT session_id FROM sessions WHERE %(id)s::text IS NULL OR session_id = %(id)s
    UNION
    SELECT DISTINCT session_id FROM windows WHERE %(id)s::text IS NULL OR session_id = %(id)s
), page AS (SELECT session_id FROM ids ORDER BY session_id LIMIT %(limit)s OFFSET %(offset)s)
SELECT page.session_id, s.service, s.board, s.fs, s.channels, s.paradigm, s.started_at,
    s.ended_at, coalesce(s.interrupted, false) AS interrupted,
    coalesce(s.interruptions, '[]'::jsonb) AS interruptions, st.windows, st.epochs,
    st.labelled, st.first_ts, st.last_ts, st.w_fs, st.w_channels, st.w_service, st.n_samples
FROM page LEFT JOIN sessions s USING (session_id)
CROSS JOIN LATERAL (
    SELECT count(*)::int AS windows, count(*) FILTER (WHERE w.kind = 'epoch')::int AS epochs,
        count(l.seq)::int AS labelled, min(w.window_ts) AS first_ts,
        max(w.window_ts) AS last_ts, max(w.fs) AS w_fs, max(w.channels::text) AS w_channels,
        max(w.service) AS w_service, max(w.n_samples) AS n_samples
    FROM windows w LEFT JOIN labels l ON l.session_id = w.session_id AND l.seq = w.seq
    WHERE w.session_id = page.session_id
) st
ORDER BY page.session_id
"""

_SCORED = """
SELECT p.model_version_id, p.predicted, p.proba::float8[] AS proba, l.label
FROM predictions p JOIN labels l ON l.session_id = p.session_id AND l.seq = p.seq
WHERE p.session_id = %s AND p.role = 'serving'
"""


def _page_params(limit: int, offset: int) -> dict[str, int]:
    return {"limit": limit + 1, "offset": offset}


async def predictions(
    conn: AsyncConnection[Any],
    *,
    limit: int,
    offset: int,
    service: str | None = None,
    session_id: str | None = None,
    model_version_id: int | None = None,
    role: str | None = None,
    t_from: datetime | None = None,
    t_to: datetime | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit + 1`` predictions, newest window first, each with its label if any."""
    params = {
        "service": service,
        "session_id": session_id,
        "model_version_id": model_version_id,
        "role": role,
        "t_from": t_from,
        "t_to": t_to,
        **_page_params(limit, offset),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_PREDICTIONS, params)
        return await cur.fetchall()


async def windows(
    conn: AsyncConnection[Any],
    *,
    limit: int,
    offset: int,
    include_data: bool = False,
    service: str | None = None,
    session_id: str | None = None,
    kind: str | None = None,
    model_version_id: int | None = None,
    t_from: datetime | None = None,
    t_to: datetime | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit + 1`` archived windows' metadata (and raw bytes when asked)."""
    params = {
        "include_data": include_data,
        "service": service,
        "session_id": session_id,
        "kind": kind,
        "model_version_id": model_version_id,
        "t_from": t_from,
        "t_to": t_to,
        **_page_params(limit, offset),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_WINDOWS, params)
        return await cur.fetchall()


async def labels(
    conn: AsyncConnection[Any], *, limit: int, offset: int, session_id: str | None = None
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LABELS, {"session_id": session_id, **_page_params(limit, offset)})
        return await cur.fetchall()


async def sessions(
    conn: AsyncConnection[Any], *, limit: int, offset: int, session_id: str | None = None
) -> list[dict[str, Any]]:
    """Session rows with archive statistics (up to ``limit + 1``)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SESSIONS, {"id": session_id, **_page_params(limit, offset)})
        return await cur.fetchall()


async def session_counts(conn: AsyncConnection[Any], session_id: str) -> tuple[int, int]:
    """(labels collected, serving predictions) of one session."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM labels WHERE session_id = %(s)s)::int, "
        "(SELECT count(*) FROM predictions WHERE session_id = %(s)s AND role = 'serving')::int",
        {"s": session_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def scored_predictions(
    conn: AsyncConnection[Any], session_id: str
) -> list[tuple[int, int, list[float], int]]:
    """(model_version_id, predicted, proba, label) of the session's labelled predictions."""
    cur = await conn.execute(_SCORED, [session_id])
    return [(r[0], r[1], list(r[2]), r[3]) for r in await cur.fetchall()]


async def known_sessions(conn: AsyncConnection[Any], ids: list[str]) -> set[str]:
    """Which of ``ids`` exist (registered, archived windows or predictions)."""
    cur = await conn.execute(
        """SELECT session_id FROM sessions WHERE session_id = ANY(%(ids)s)
        UNION SELECT DISTINCT session_id FROM windows WHERE session_id = ANY(%(ids)s)
        UNION SELECT DISTINCT session_id FROM predictions WHERE session_id = ANY(%(ids)s)""",
        {"ids": ids},
    )
    return {r[0] for r in await cur.fetchall()}
