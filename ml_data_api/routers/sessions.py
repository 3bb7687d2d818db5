"""Sessions: what was recorded, how much of it is archived and labelled, how well it served.

A session is known when the producer registered it or the archiver saw its windows.
Duration comes from the registration (start to end) or else from the archived windows;
``neurostream.scoring`` scores serving predictions against collected labels, ROC-AUC and
balanced accuracy first (accuracy only beside its chance level: targets are rare).
A trial-based paradigm's session also has its decisions (one per trial and stopping rule,
from ``workers.decider``) and its trials' truth (from the label collector); a decision is
scored when read, so a truth that arrives after it still counts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from ml_data_api import queries
from ml_data_api.deps import Pool, Settings
from ml_data_api.errors import Invalid
from ml_data_api.routers.production import Limit, Offset
from ml_data_api.schemas import DecisionOut, ModelPerformance, SessionDetail, SessionOut, TrialOut
from ml_data_api.settings import DataApiSettings
from neurostream import scoring

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
        "interrupted": row["interrupted"],
        "interruptions": row["interruptions"],
    }


Scored = tuple[int, int, Sequence[float], int]  # model_version_id, predicted, proba, label
_SUMMARY = ("roc_auc", "balanced_accuracy", "accuracy", "accuracy_chance", "n")


def score(rows: Sequence[Scored]) -> dict[str, Any]:
    """The scorer's summary of labelled predictions (every value None when there are none)."""
    if not rows:
        return {k: 0 if k == "n" else None for k in _SUMMARY}
    widths = {len(r[2]) for r in rows}
    proba = [r[2] for r in rows] if len(widths) == 1 and widths != {0} else None
    m = scoring.score([r[3] for r in rows], proba, predicted=[r[1] for r in rows])
    return {k: m[k] for k in _SUMMARY}


def by_model_version(rows: Sequence[Scored]) -> list[dict[str, Any]]:
    """One score per model version, then all versions together (``model_version_id`` None)."""
    groups: dict[int, list[Scored]] = defaultdict(list)
    for r in rows:
        groups[r[0]].append(r)
    out = [{"model_version_id": v, **score(g)} for v, g in sorted(groups.items())]
    return out + [{"model_version_id": None, **score(rows)}]


def duration_s(row: dict[str, Any]) -> float | None:
    if row["started_at"] is not None and row["ended_at"] is not None:
        return float((row["ended_at"] - row["started_at"]).total_seconds())
    if row["first_ts"] is None or not row["w_fs"]:
        return None
    span = float((row["last_ts"] - row["first_ts"]).total_seconds())
    return span + float(row["n_samples"]) / float(row["w_fs"])


@router.get("", response_model=list[SessionOut])
async def list_sessions(
    pool: Pool, settings: Settings, limit: Limit = 100, offset: Offset = 0
) -> list[SessionOut]:
    if limit > settings.page_max:
        raise Invalid(f"must be at most {settings.page_max}", field="limit")
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
    scores = by_model_version(scored)
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
        roc_auc=overall["roc_auc"],
        balanced_accuracy=overall["balanced_accuracy"],
        accuracy=overall["accuracy"],
        accuracy_chance=overall["accuracy_chance"],
        by_model_version=[ModelPerformance(**s) for s in scores],
    )


_DECISIONS = """
SELECT d.session_id, d.trial, d.rule, d.service, d.symbol_index, d.symbol, d.codes,
       d.posterior, d.repetitions, d.epochs, d.model_version_ids, d.evidence,
       d.last_event_at, d.last_sample_at, d.decided_at,
       extract(epoch FROM d.decided_at - d.last_sample_at)::float8 AS latency_s,
       t.targets, t.symbol AS true_symbol,
       CASE WHEN t.targets IS NULL THEN NULL
            ELSE d.codes @> t.targets AND t.targets @> d.codes END AS correct
FROM decisions d
LEFT JOIN trials t ON t.session_id = d.session_id AND t.trial = d.trial
WHERE d.session_id = %(s)s AND (%(rule)s::text IS NULL OR d.rule = %(rule)s)
ORDER BY d.trial, d.rule
LIMIT %(limit)s OFFSET %(offset)s
"""
_TRIALS = """
SELECT session_id, trial, targets, symbol, source, created_at FROM trials
WHERE session_id = %(s)s ORDER BY trial LIMIT %(limit)s OFFSET %(offset)s
"""


async def _rows_of_session(
    conn: AsyncConnection[Any], query: str, session_id: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """A session's rows; 404 when there are none and the session is unknown."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {"s": session_id, **params})
        rows = await cur.fetchall()
    if not rows and not await queries.known_sessions(conn, [session_id]):
        raise HTTPException(404, detail=f"session_id: session {session_id!r} does not exist")
    return rows


def _check_limit(limit: int, settings: DataApiSettings) -> None:
    if limit > settings.page_max:
        raise Invalid(f"must be at most {settings.page_max}", field="limit")


@router.get("/{session_id}/decisions", response_model=list[DecisionOut], responses={404: {}})
async def list_decisions(
    session_id: SessionId,
    pool: Pool,
    settings: Settings,
    rule: Annotated[str | None, Query(max_length=64, description="Only this rule's.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[DecisionOut]:
    """The session's decisions by trial and rule, each with its trial's truth and whether
    it was right (``correct`` null until the truth is collected)."""
    _check_limit(limit, settings)
    params = {"rule": rule, "limit": limit, "offset": offset}
    async with pool.connection() as conn:
        rows = await _rows_of_session(conn, _DECISIONS, session_id, params)
    return [DecisionOut(**r) for r in rows]


@router.get("/{session_id}/trials", response_model=list[TrialOut], responses={404: {}})
async def list_trials(
    session_id: SessionId, pool: Pool, settings: Settings, limit: Limit = 100, offset: Offset = 0
) -> list[TrialOut]:
    """The truth of each of the session's trials (target stimulus codes, symbol)."""
    _check_limit(limit, settings)
    async with pool.connection() as conn:
        rows = await _rows_of_session(conn, _TRIALS, session_id, {"limit": limit, "offset": offset})
    return [TrialOut(**r) for r in rows]
