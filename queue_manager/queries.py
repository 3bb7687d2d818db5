"""Read-only SQL over what workers write: jobs (predictions, rejections), sessions, workers.

A "job" is one window through one model version (a ``predictions`` row) or one refused
window (a ``rejections`` row); latency is ``predicted_at - sent_at`` (the producer's send
time travels in the window header).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

MAX_GAPS = 100

_JOBS = """
SELECT * FROM (
    SELECT 'predicted' AS status, service, session_id, seq, model_version_id, role, kind, marker,
        predicted, score::float8 AS score, NULL::text AS reason, worker_id, predicted_at AS at,
        sent_at, (EXTRACT(EPOCH FROM predicted_at - sent_at) * 1000)::float8 AS latency_ms
    FROM predictions
    WHERE %(want_predicted)s
      AND (%(service)s::text IS NULL OR service = %(service)s)
      AND (%(session)s::text IS NULL OR session_id = %(session)s)
    UNION ALL
    SELECT 'rejected', service, session_id, seq, NULL, NULL, NULL, NULL, NULL, NULL, reason,
        worker_id, rejected_at, NULL, NULL
    FROM rejections
    WHERE %(want_rejected)s
      AND (%(service)s::text IS NULL OR service = %(service)s)
      AND (%(session)s::text IS NULL OR session_id = %(session)s)
) jobs
ORDER BY at DESC, session_id, seq
LIMIT %(limit)s OFFSET %(offset)s
"""

_SEEN = """
WITH seen AS (
    SELECT seq FROM predictions WHERE session_id = %(s)s
    UNION SELECT seq FROM rejections WHERE session_id = %(s)s AND seq IS NOT NULL
)"""

_COUNTS = (
    _SEEN
    + """
SELECT (SELECT count(*) FROM seen) AS windows_seen,
    (SELECT min(seq) FROM seen) AS min_seq, (SELECT max(seq) FROM seen) AS max_seq,
    (SELECT count(DISTINCT seq) FROM predictions
        WHERE session_id = %(s)s AND role = 'serving') AS predicted,
    (SELECT count(DISTINCT seq) FROM rejections WHERE session_id = %(s)s) AS rejected,
    (SELECT count(*) FROM labels WHERE session_id = %(s)s) AS labels
"""
)

_INNER_GAPS = (
    _SEEN
    + """, ordered AS (SELECT seq, lead(seq) OVER (ORDER BY seq) AS nxt FROM seen)
SELECT seq + 1 AS start, nxt - 1 AS "end" FROM ordered WHERE nxt > seq + 1
ORDER BY seq LIMIT %(n)s
"""
)

_PER_VERSION = """
SELECT p.model_version_id, p.role, count(*) AS predictions,
    avg(p.score)::float8 AS mean_score,
    avg((p.predicted = 1)::int)::float8 AS positive_rate,
    percentile_cont(0.5) WITHIN GROUP (
        ORDER BY EXTRACT(EPOCH FROM p.predicted_at - p.sent_at) * 1000) AS latency_ms_p50,
    percentile_cont(0.95) WITHIN GROUP (
        ORDER BY EXTRACT(EPOCH FROM p.predicted_at - p.sent_at) * 1000) AS latency_ms_p95,
    CASE WHEN v.id IS NULL THEN NULL ELSE v.model_name || ':' || v.version END AS label
FROM predictions p LEFT JOIN model_versions v ON v.id = p.model_version_id
WHERE p.session_id = %(s)s
GROUP BY p.model_version_id, p.role, v.id, v.model_name, v.version
ORDER BY p.role DESC, p.model_version_id
"""

_WORKERS = """
SELECT worker_id, service, host, model_version_id, shadow_version_id, processed, rejected,
    gated, duplicates, redelivered, write_retries, errors, last_error, started_at, last_seen,
    status AS reported_status,
    CASE WHEN status <> 'stopped' AND last_seen < now() - make_interval(secs => %(stale_s)s)
        THEN 'stale' ELSE status END AS status,
    EXTRACT(EPOCH FROM now() - last_seen)::float8 AS seconds_since_seen
FROM workers
WHERE %(service)s::text IS NULL OR service = %(service)s
ORDER BY service, worker_id
"""


async def _all(conn: AsyncConnection[Any], query: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def list_jobs(
    conn: AsyncConnection[Any],
    *,
    service: str | None = None,
    session_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest jobs first, filtered; ``status`` is 'predicted', 'rejected' or None (both)."""
    params = {
        "service": service,
        "session": session_id,
        "want_predicted": status in (None, "predicted"),
        "want_rejected": status in (None, "rejected"),
        "limit": limit,
        "offset": offset,
    }
    return await _all(conn, _JOBS, params)


def _gaps(
    inner: list[tuple[int, int]], min_seq: int | None, max_seq: int | None, expected_end: int
) -> list[tuple[int, int]]:
    """Missing seq ranges over [0, expected_end], given the gaps between seen seqs."""
    if min_seq is None or max_seq is None:
        return [(0, expected_end)] if expected_end >= 0 else []
    ranges = [(0, min_seq - 1)] if min_seq > 0 else []
    ranges += inner
    if expected_end > max_seq:
        ranges.append((max_seq + 1, expected_end))
    return ranges


async def session_summary(conn: AsyncConnection[Any], session_id: str) -> dict[str, Any] | None:
    """Counts, seq gaps and per-version statistics of one session; None if nothing is known."""
    params = {"s": session_id, "n": MAX_GAPS}
    session = await _all(conn, "SELECT * FROM sessions WHERE session_id = %(s)s", params)
    counts = (await _all(conn, _COUNTS, params))[0]
    if not session and counts["windows_seen"] == 0 and counts["labels"] == 0:
        return None
    info = session[0] if session else {}
    confirmed = info.get("windows_confirmed")
    max_seq = counts["max_seq"]
    expected_end = max(max_seq if max_seq is not None else -1, (confirmed or 0) - 1)
    inner = [(r["start"], r["end"]) for r in await _all(conn, _INNER_GAPS, params)]
    # Gap rows are capped at MAX_GAPS; the missing count comes from totals, so it stays exact.
    ranges = _gaps(inner, counts["min_seq"], max_seq, expected_end)
    missing = expected_end + 1 - counts["windows_seen"]
    return {
        "session_id": session_id,
        "service": info.get("service"),
        "board": info.get("board"),
        "fs": info.get("fs"),
        "started_at": info.get("started_at"),
        "ended_at": info.get("ended_at"),
        "windows_confirmed": confirmed,
        **{k: counts[k] for k in ("windows_seen", "predicted", "rejected", "labels")},
        "max_seq": max_seq,
        "missing": max(missing, 0),
        "gaps": [{"start": s, "end": e} for s, e in ranges[:MAX_GAPS]],
        "per_version": await _all(conn, _PER_VERSION, params),
    }


async def list_workers(
    conn: AsyncConnection[Any], *, heartbeat_s: float, service: str | None = None
) -> list[dict[str, Any]]:
    """Heartbeat rows; a running worker silent for 3 heartbeats is reported 'stale'."""
    return await _all(conn, _WORKERS, {"service": service, "stale_s": 3 * heartbeat_s})
