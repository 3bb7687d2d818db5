"""Sessions: what was recorded, how much of it is archived and labelled, how well it served.

A session is known when the producer registered it or the archiver saw its windows.
Duration comes from the registration (start to end) or else from the archived windows;
accuracy and ROC-AUC score serving predictions against collected labels.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from ml_data_api import performance, queries
from ml_data_api.deps import Pool, Settings
from ml_data_api.errors import Invalid
from ml_data_api.routers.production import Limit, Offset
from ml_data_api.schemas import ModelPerformance, SessionDetail, SessionOut

router = APIRouter(prefix="/sessions", tags=["sessions"])
SessionId = Annotated[str, Path(max_length=128)]


def summarise(row: dict[str, Any]) -> dict[str, Any]:
    """A session row with its archive statistics -> ``SessionOut`` fields."""
    channels = row["channels"]
    if channels is None and row["w_channels"]:
        channels = json.loads(row["w_channels"])
    windows = row["windows"]
    return {
        "session_id": row["session_id"],
        "service": row["service"] or row["w_service"],
        "board": row["board"],
        "fs": row["fs"] if row["fs"] is not None else row["w_fs"],
        "channels": channels,
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "windows": windows,
        "labelled": row["labelled"],
        "labelled_share": row["labelled"] / windows if windows else None,
    }


def duration_s(row: dict[str, Any]) -> float | None:
    if row["started_at"] is not None and row["ended_at"] is not None:
        return (row["ended_at"] - row["started_at"]).total_seconds()
    if row["first_ts"] is None or not row["w_fs"]:
        return None
    span = (row["last_ts"] - row["first_ts"]).total_seconds()
    return span + row["n_samples"] / row["w_fs"]


@router.get("", response_model=list[SessionOut])
async def list_sessions(
    pool: Pool, settings: Settings, limit: Limit = 100, offset: Offset = 0
) -> list[SessionOut]:
    if limit > settings.page_max:
        raise Invalid("limit", f"must be at most {settings.page_max}")
    async with pool.connection() as conn:
        rows = await queries.sessions(conn, limit=limit, offset=offset)
    return [SessionOut(**summarise(r)) for r in rows[:limit]]


@router.get("/{session_id}", response_model=SessionDetail, responses={404: {}})
async def get_session(session_id: SessionId, pool: Pool) -> SessionDetail:
    async with pool.connection() as conn:
        rows = await queries.sessions(conn, limit=1, offset=0, session_id=session_id)
        if not rows:
            raise HTTPException(404, detail=f"session_id: session {session_id!r} does not exist")
        labels, predictions = await queries.session_counts(conn, session_id)
        scored = await queries.scored_predictions(conn, session_id)
    row = rows[0]
    scores = performance.by_model_version(scored)
    overall = scores[-1]
    return SessionDetail(
        **summarise(row),
        paradigm=row["paradigm"] or {},
        epochs=row["epochs"],
        duration_s=duration_s(row),
        first_window_ts=row["first_ts"],
        last_window_ts=row["last_ts"],
        labels=labels,
        predictions=predictions,
        accuracy=overall["accuracy"],
        roc_auc=overall["roc_auc"],
        by_model_version=[ModelPerformance(**s) for s in scores],
    )
