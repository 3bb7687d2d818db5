"""Retraining triggers: enqueue a job on a schedule or when labelled data has grown.

The runner calls ``fire_due`` every few seconds. Each trigger is locked with
``FOR UPDATE SKIP LOCKED`` while it is evaluated, so replicas never fire one twice; a
trigger whose last job is still queued or running does not fire again. A growth trigger
counts labels (of its service's sessions) created since the later of the model's newest
version and the trigger's last firing, and trains on a fresh snapshot of every labelled
session (``datasets.snapshot_from_sessions``). A firing that fails records ``last_error``
and counts as a firing, so a broken trigger does not retry every few seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from neurostream import datasets
from neurostream.errors import NeurostreamError
from retraining_api import store
from retraining_api.schemas import JobSpec, TriggerCreate
from retraining_api.validation import resolve_job

log = logging.getLogger(__name__)
_COLS = """id, model_name, service, kind, every_s, min_new_labels, template, snapshot_name,
    enabled, last_fired_at, last_job_id, last_error, created_at"""
_LABELLED_SESSIONS = """
SELECT DISTINCT l.session_id FROM labels l
WHERE %(svc)s::text IS NULL OR EXISTS (
    SELECT 1 FROM sessions s WHERE s.session_id = l.session_id AND s.service = %(svc)s)
ORDER BY l.session_id"""
_NEW_LABELS = """
SELECT count(*) AS n FROM labels l
WHERE l.created_at > GREATEST(
        (SELECT max(created_at) FROM model_versions WHERE model_name = %(m)s),
        %(fired)s::timestamptz, '-infinity'::timestamptz)
  AND (%(svc)s::text IS NULL OR EXISTS (
    SELECT 1 FROM sessions s WHERE s.session_id = l.session_id AND s.service = %(svc)s))"""


async def _rows(conn: AsyncConnection[Any], query: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def create(conn: AsyncConnection[Any], body: TriggerCreate) -> dict[str, Any]:
    template = body.job.model_dump(mode="json")
    rows = await _rows(
        conn,
        f"""INSERT INTO retrain_triggers (model_name, service, kind, every_s, min_new_labels,
            template, snapshot_name, enabled) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING {_COLS}""",
        [
            body.model_name,
            body.service,
            body.kind,
            body.every_s,
            body.min_new_labels,
            Jsonb(template),
            body.training_snapshot,
            body.enabled,
        ],
    )
    return rows[0]


async def get(conn: AsyncConnection[Any], trigger_id: int) -> dict[str, Any] | None:
    rows = await _rows(conn, f"SELECT {_COLS} FROM retrain_triggers WHERE id = %s", [trigger_id])
    return rows[0] if rows else None


async def list_all(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    return await _rows(conn, f"SELECT {_COLS} FROM retrain_triggers ORDER BY id", [])


async def delete(conn: AsyncConnection[Any], trigger_id: int) -> bool:
    cur = await conn.execute("DELETE FROM retrain_triggers WHERE id = %s", [trigger_id])
    return cur.rowcount > 0


async def _is_due(conn: AsyncConnection[Any], t: dict[str, Any]) -> bool:
    if t["last_job_id"] is not None:
        job = await store.get(conn, t["last_job_id"])
        if job is not None and job["status"] in ("queued", "running"):
            return False
    if t["kind"] == "schedule":
        rows = await _rows(
            conn,
            "SELECT now() >= %s::timestamptz + make_interval(secs => %s) AS due",
            [t["last_fired_at"] or t["created_at"], t["every_s"]],
        )
        return bool(rows[0]["due"])
    params = {"m": t["model_name"], "fired": t["last_fired_at"], "svc": t["service"]}
    new = (await _rows(conn, _NEW_LABELS, params))[0]["n"]
    return int(new) >= int(t["min_new_labels"])


async def _fire(conn: AsyncConnection[Any], t: dict[str, Any]) -> dict[str, Any]:
    """Enqueue the trigger's job (building the grown training snapshot first)."""
    spec = JobSpec.model_validate(
        {**t["template"], "training_dataset": t["template"].get("training_dataset") or 0}
    )
    override: int | None = None
    if t["kind"] == "growth":
        sessions = [
            r["session_id"] for r in await _rows(conn, _LABELLED_SESSIONS, {"svc": t["service"]})
        ]
        snapshot = await datasets.snapshot_from_sessions(
            conn,
            name=t["snapshot_name"] or f"{t['model_name']}-train",
            kind="training",
            session_ids=sessions,
            description=f"grown training data for {t['model_name']} (trigger {t['id']})",
        )
        override = int(snapshot["id"])
    name, stored = await resolve_job(
        conn, spec, model_name=t["model_name"], service=t["service"], training_override=override
    )
    return await store.enqueue(
        conn,
        model_name=name,
        service=t["service"],
        family=stored["family"],
        spec=stored,
        trigger_id=t["id"],
    )


async def _try(pool: AsyncConnectionPool, trigger_id: int) -> int | None:
    """Fire one trigger if it is due and no other replica holds it; the job id."""
    async with pool.connection() as conn:
        try:
            async with conn.transaction():
                rows = await _rows(
                    conn,
                    f"""SELECT {_COLS} FROM retrain_triggers WHERE id = %s AND enabled
                    FOR UPDATE SKIP LOCKED""",
                    [trigger_id],
                )
                if not rows or not await _is_due(conn, rows[0]):
                    return None
                job = await _fire(conn, rows[0])
                await conn.execute(
                    """UPDATE retrain_triggers SET last_fired_at = now(), last_job_id = %s,
                        last_error = NULL WHERE id = %s""",
                    [job["id"], trigger_id],
                )
                return int(job["id"])
        except (NeurostreamError, ValidationError) as exc:  # or a template JobSpec refuses
            log.warning("trigger %s could not fire: %s", trigger_id, exc)
            field = getattr(exc, "field", None)
            await conn.execute(
                "UPDATE retrain_triggers SET last_fired_at = now(), last_error = %s WHERE id = %s",
                [f"{field}: {exc}" if field else str(exc), trigger_id],
            )
            await conn.commit()
            return None


async def fire_due(pool: AsyncConnectionPool) -> list[int]:
    """Evaluate every enabled trigger; ids of the jobs enqueued."""
    async with pool.connection() as conn:
        ids = [
            r["id"]
            for r in await _rows(
                conn, "SELECT id FROM retrain_triggers WHERE enabled ORDER BY id", []
            )
        ]
    fired = []
    for trigger_id in ids:
        job_id = await _try(pool, trigger_id)
        if job_id is not None:
            fired.append(job_id)
    return fired
