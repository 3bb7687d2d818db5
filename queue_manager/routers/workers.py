"""Workers as their heartbeats report them; silence for 3 heartbeats reads as 'stale'."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from queue_manager import queries
from queue_manager.deps import Pool, Settings
from queue_manager.schemas import WorkerOut

router = APIRouter(tags=["workers"])


@router.get("/workers", response_model=list[WorkerOut])
async def list_workers(
    pool: Pool, settings: Settings, service: Annotated[str | None, Query(max_length=128)] = None
) -> list[WorkerOut]:
    async with pool.connection() as conn:
        rows = await queries.list_workers(
            conn, heartbeat_s=settings.worker_heartbeat_s, service=service
        )
    return [WorkerOut(**r) for r in rows]
