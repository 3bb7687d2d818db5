"""Jobs (one window through one model version, or a rejected window) and session summaries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from neurostream import registry
from queue_manager import queries
from queue_manager.deps import Pool
from queue_manager.schemas import INT32, JobOut, JobsPage, JobStatus, SessionSummary

router = APIRouter(tags=["jobs"])
SESSION_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"


@router.get("/jobs", response_model=JobsPage)
async def list_jobs(
    pool: Pool,
    service: Annotated[str | None, Query(max_length=128)] = None,
    session_id: Annotated[str | None, Query(pattern=SESSION_PATTERN)] = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT32)] = 0,
) -> JobsPage:
    """Newest first; ``latency_ms`` = predicted_at - sent_at."""
    async with pool.connection() as conn:
        rows = await queries.list_jobs(
            conn, service=service, session_id=session_id, status=status, limit=limit, offset=offset
        )
    return JobsPage(items=[JobOut(**r) for r in rows], limit=limit, offset=offset)


@router.get(
    "/sessions/{session_id}/summary",
    response_model=SessionSummary,
    responses={404: {"description": "Nothing known about the session"}},
)
async def session_summary(
    session_id: Annotated[str, Path(pattern=SESSION_PATTERN)], pool: Pool
) -> SessionSummary:
    """Counts, seq gaps (windows neither predicted nor rejected) and per-version stats."""
    async with pool.connection() as conn:
        summary = await queries.session_summary(conn, session_id)
    if summary is None:
        raise registry.NotFound(f"session {session_id!r} not found", field="session_id")
    return SessionSummary(**summary)
