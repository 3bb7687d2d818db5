"""Retrain jobs in PostgreSQL: enqueue, claim, heartbeat, finish, cancel, and read back.

The job table is the queue: any replica's runner claims the oldest queued job with
``FOR UPDATE SKIP LOCKED`` (so replicas never take the same one), and every later write
by that runner is guarded by ``runner_id`` and ``status = 'running'``, so a runner that
lost its job (marked failed as interrupted, or cancelled) cannot overwrite the outcome.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

INTERRUPTED = "interrupted: the retraining API restarted"
_COLS = """id, model_name, service, family, spec, status, progress, cancel_requested, runner_id,
    trigger_id, error, result, created_at, started_at, heartbeat_at, finished_at"""


async def _one(conn: AsyncConnection[Any], query: str, params: Any) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _all(conn: AsyncConnection[Any], query: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def enqueue(
    conn: AsyncConnection[Any],
    *,
    model_name: str,
    service: str | None,
    family: str,
    spec: dict[str, Any],
    trigger_id: int | None = None,
) -> dict[str, Any]:
    row = await _one(
        conn,
        f"""INSERT INTO retrain_jobs (model_name, service, family, spec, trigger_id)
        VALUES (%s, %s, %s, %s, %s) RETURNING {_COLS}""",
        [model_name, service, family, Jsonb(spec), trigger_id],
    )
    assert row is not None
    await add_logs(conn, row["id"], [("info", "queued")])
    return row


async def claim(conn: AsyncConnection[Any], runner_id: str) -> dict[str, Any] | None:
    """Take the oldest queued job for ``runner_id``; None when the queue is empty."""
    return await _one(
        conn,
        f"""UPDATE retrain_jobs SET status = 'running', runner_id = %(r)s, started_at = now(),
            heartbeat_at = now()
        WHERE id = (SELECT id FROM retrain_jobs WHERE status = 'queued'
                    ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING {_COLS}""",
        {"r": runner_id},
    )


async def heartbeat(
    conn: AsyncConnection[Any], job_id: int, runner_id: str, progress: float
) -> dict[str, Any] | None:
    """Refresh the heartbeat and progress; returns {cancel_requested} or None if lost."""
    return await _one(
        conn,
        """UPDATE retrain_jobs SET heartbeat_at = now(), progress = %s
        WHERE id = %s AND runner_id = %s AND status = 'running'
        RETURNING cancel_requested""",
        [max(0.0, min(1.0, progress)), job_id, runner_id],
    )


async def finish(
    conn: AsyncConnection[Any],
    job_id: int,
    runner_id: str,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome; False if the job was no longer this runner's to finish."""
    cur = await conn.execute(
        """UPDATE retrain_jobs SET status = %s, result = %s, error = %s, finished_at = now(),
            heartbeat_at = now(), progress = CASE WHEN %s = 'succeeded' THEN 1 ELSE progress END
        WHERE id = %s AND runner_id = %s AND status = 'running'""",
        [status, Jsonb(result) if result is not None else None, error, status, job_id, runner_id],
    )
    return cur.rowcount == 1


async def annotate(conn: AsyncConnection[Any], job_id: int, extra: dict[str, Any]) -> None:
    """Merge keys into a finished job's result (what is only known after the commit)."""
    await conn.execute(
        "UPDATE retrain_jobs SET result = result || %s WHERE id = %s", [Jsonb(extra), job_id]
    )


async def fail_stale(conn: AsyncConnection[Any], stale_after_s: float) -> list[int]:
    """Mark running jobs whose runner stopped heartbeating as failed; their ids."""
    rows = await _all(
        conn,
        """UPDATE retrain_jobs SET status = 'failed', finished_at = now(),
            error = %(e)s || ' (runner ' || COALESCE(runner_id, '?') || ' stopped at '
                || to_char(heartbeat_at, 'YYYY-MM-DD"T"HH24:MI:SSOF') || ')'
        WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => %(s)s)
        RETURNING id""",
        {"e": INTERRUPTED, "s": stale_after_s},
    )
    ids = [int(r["id"]) for r in rows]
    for job_id in ids:
        await add_logs(conn, job_id, [("error", f"{INTERRUPTED}; resubmit the job to retry")])
    return ids


async def request_cancel(conn: AsyncConnection[Any], job_id: int) -> dict[str, Any] | None:
    """Cancel a queued job now, flag a running one; the job row (None if unknown)."""
    await conn.execute(
        """UPDATE retrain_jobs SET status = 'cancelled', finished_at = now(),
            cancel_requested = true, error = 'cancelled before it started'
        WHERE id = %s AND status = 'queued'""",
        [job_id],
    )
    await conn.execute(
        "UPDATE retrain_jobs SET cancel_requested = true WHERE id = %s AND status = 'running'",
        [job_id],
    )
    return await get(conn, job_id)


async def add_logs(conn: AsyncConnection[Any], job_id: int, lines: list[tuple[str, str]]) -> None:
    if lines:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO retrain_job_logs (job_id, level, message) VALUES (%s, %s, %s)",
                [(job_id, level, message) for level, message in lines],
            )


async def add_trials(conn: AsyncConnection[Any], job_id: int, trials: list[dict[str, Any]]) -> None:
    if trials:
        async with conn.cursor() as cur:
            await cur.executemany(
                """INSERT INTO retrain_trials (job_id, number, state, params, value, metrics,
                    duration_s) VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (job_id, number) DO NOTHING""",
                [
                    (
                        job_id,
                        t["number"],
                        t["state"],
                        Jsonb(t["params"]),
                        t["value"],
                        Jsonb(t["metrics"]),
                        t["duration_s"],
                    )
                    for t in trials
                ],
            )


async def get(conn: AsyncConnection[Any], job_id: int) -> dict[str, Any] | None:
    return await _one(conn, f"SELECT {_COLS} FROM retrain_jobs WHERE id = %s", [job_id])


async def list_jobs(
    conn: AsyncConnection[Any],
    *,
    model_name: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest first."""
    return await _all(
        conn,
        f"""SELECT {_COLS} FROM retrain_jobs
        WHERE (%(m)s::text IS NULL OR model_name = %(m)s)
          AND (%(s)s::text IS NULL OR status = %(s)s)
        ORDER BY created_at DESC, id DESC LIMIT %(l)s OFFSET %(o)s""",
        {"m": model_name, "s": status, "l": limit, "o": offset},
    )


async def logs(conn: AsyncConnection[Any], job_id: int, limit: int = 500) -> list[dict[str, Any]]:
    """The last ``limit`` log lines, oldest first."""
    return await _all(
        conn,
        """SELECT at, level, message FROM (SELECT id, at, level, message FROM retrain_job_logs
            WHERE job_id = %s ORDER BY id DESC LIMIT %s) t ORDER BY id""",
        [job_id, limit],
    )


async def trials(conn: AsyncConnection[Any], job_id: int) -> list[dict[str, Any]]:
    return await _all(
        conn,
        """SELECT job_id, number, state, params, value, metrics, duration_s, finished_at
        FROM retrain_trials WHERE job_id = %s ORDER BY number""",
        [job_id],
    )
