"""Worker heartbeats: who serves which service with which model, and how much."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

if TYPE_CHECKING:
    from workers.worker import Worker

_UPSERT = """
INSERT INTO workers (worker_id, service, host, model_version_id, shadow_version_id, processed,
                     rejected, errors, last_error, status, last_seen)
VALUES (%(worker_id)s, %(service)s, %(host)s, %(serving)s, %(shadow)s, %(processed)s,
        %(rejected)s, %(errors)s, %(last_error)s, %(status)s, now())
ON CONFLICT (worker_id) DO UPDATE SET
    model_version_id = EXCLUDED.model_version_id, shadow_version_id = EXCLUDED.shadow_version_id,
    processed = EXCLUDED.processed, rejected = EXCLUDED.rejected, errors = EXCLUDED.errors,
    last_error = EXCLUDED.last_error, status = EXCLUDED.status, last_seen = now()
"""


async def beat(pool: AsyncConnectionPool, worker: Worker, *, status: str) -> None:
    assert worker.slot is not None
    serving, shadow = worker.slot.current.ids
    async with pool.connection() as conn:
        await conn.execute(
            _UPSERT,
            {
                "worker_id": worker.settings.worker_id,
                "service": worker.service,
                "host": socket.gethostname(),
                "serving": serving,
                "shadow": shadow,
                "processed": worker.counters.processed,
                "rejected": worker.counters.rejected,
                "errors": worker.slot.errors,
                "last_error": worker.slot.last_error,
                "status": status,
            },
        )
