"""Worker heartbeats: who serves which service with which model, and how much.

A heartbeat writes a ``Snapshot`` the worker takes of itself (``Worker.snapshot``), so
this module knows nothing of the worker and the two do not import each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from psycopg_pool import AsyncConnectionPool

_UPSERT = """
INSERT INTO workers (worker_id, service, host, model_version_id, shadow_version_id, processed,
                     rejected, gated, duplicates, redelivered, write_retries, errors, last_error,
                     status, last_seen)
VALUES (%(worker_id)s, %(service)s, %(host)s, %(serving)s, %(shadow)s, %(processed)s,
        %(rejected)s, %(gated)s, %(duplicates)s, %(redelivered)s, %(write_retries)s, %(errors)s,
        %(last_error)s, %(status)s, now())
ON CONFLICT (worker_id) DO UPDATE SET
    model_version_id = EXCLUDED.model_version_id, shadow_version_id = EXCLUDED.shadow_version_id,
    processed = EXCLUDED.processed, rejected = EXCLUDED.rejected, gated = EXCLUDED.gated,
    duplicates = EXCLUDED.duplicates, redelivered = EXCLUDED.redelivered,
    write_retries = EXCLUDED.write_retries, errors = EXCLUDED.errors,
    last_error = EXCLUDED.last_error, status = EXCLUDED.status, last_seen = now()
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One row of the ``workers`` table: a replica's state at one moment."""

    worker_id: str
    service: str
    host: str
    serving: int | None
    shadow: int | None
    processed: int
    rejected: int
    gated: int
    duplicates: int  # rows a write found already stored (no-op inserts)
    redelivered: int  # deliveries the broker marked redelivered
    write_retries: int
    errors: int
    last_error: str | None
    status: str  # running | stopped


async def beat(pool: AsyncConnectionPool, snapshot: Snapshot) -> None:
    async with pool.connection() as conn:
        await conn.execute(_UPSERT, asdict(snapshot))
