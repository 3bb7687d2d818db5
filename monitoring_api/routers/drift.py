"""Data drift: the stored time series, references, on-demand tests and Evidently reports."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from monitoring_api import report, store
from monitoring_api.deps import (
    PAIR_DOC,
    DriftPair,
    EvaluatorDep,
    Pair,
    Pool,
    Service,
    ServicePath,
    SessionFilter,
    Settings,
    TimeRange,
)
from monitoring_api.detector import Features, compare, featurize
from monitoring_api.errors import MonitoringError, NotFound
from monitoring_api.schemas import (
    DriftOut,
    DriftPoint,
    EvidentlyOut,
    ReferenceIn,
    ReferenceOut,
    Scope,
)
from monitoring_api.settings import MonitoringSettings
from neurostream.auth import Writer

router = APIRouter(prefix="/drift", tags=["drift"])


@router.get("/metrics", response_model=list[DriftPoint])
async def drift_metrics(
    pool: Pool,
    settings: Settings,
    service: Service,
    span: TimeRange,
    session_id: SessionFilter = None,
    scope: Scope | None = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> list[dict[str, Any]]:
    """The drift time series (latest ``limit`` rows, oldest first)."""
    async with pool.connection() as conn:
        return await store.drift_series(
            conn,
            service=service,
            session_id=session_id,
            scope=scope,
            name=name,
            start=span.start,
            end=span.end,
            limit=min(limit or settings.page_max, settings.page_max),
        )


@router.get("/references/{service}", response_model=ReferenceOut)
async def get_reference(service: ServicePath, pool: Pool, settings: Settings) -> ReferenceOut:
    """The configured reference, else the default (start of the latest session)."""
    async with pool.connection() as conn:
        latest = await store.latest_window(conn, service)
        ref = await store.reference_for(
            conn, service, latest[1] if latest else None, settings.reference_s
        )
    if ref is None:
        raise NotFound(f"no reference and no archived windows for {service!r}", field="service")
    return ReferenceOut(service=service, **ref.describe())


@router.put("/references/{service}", response_model=ReferenceOut, dependencies=[Writer])
async def set_reference(service: ServicePath, body: ReferenceIn, pool: Pool) -> ReferenceOut:
    async with pool.connection() as conn:
        if body.dataset_id is not None:
            cur = await conn.execute("SELECT 1 FROM datasets WHERE id = %s", [body.dataset_id])
            if await cur.fetchone() is None:
                raise NotFound(f"dataset {body.dataset_id} does not exist", field="dataset_id")
        await conn.execute(
            """INSERT INTO drift_references (service, dataset_id, range_start, range_end)
            VALUES (%s, %s, %s, %s) ON CONFLICT (service) DO UPDATE SET
            dataset_id = EXCLUDED.dataset_id, range_start = EXCLUDED.range_start,
            range_end = EXCLUDED.range_end, updated_at = now()""",
            [service, body.dataset_id, body.start, body.end],
        )
    kind = "dataset" if body.dataset_id is not None else "range"
    return ReferenceOut(service=service, kind=kind, **body.model_dump())


async def _load_pair(
    pool: Pool, settings: MonitoringSettings, pair: Pair
) -> tuple[Features, Features, dict[str, Any], dict[str, Any]]:
    """Load and featurize the reference and current windows the query names."""
    service, current_start, current_end = pair.service, pair.current_start, pair.current_end
    limit = settings.max_windows
    async with pool.connection() as conn:
        if current_start is None or current_end is None:
            latest = await store.latest_window(conn, service)
            if latest is None:
                raise NotFound(f"no archived windows for service {service!r}", field="service")
            current_end = latest[0]
            current_start = current_end - timedelta(seconds=settings.current_window_s)
            session = latest[1]
        else:
            session = None
        if pair.reference_dataset_id is not None:
            ref_def = store.Reference("dataset", dataset_id=pair.reference_dataset_id)
        elif pair.reference_start is not None:
            ref_def = store.Reference("range", start=pair.reference_start, end=pair.reference_end)
        else:
            found = await store.reference_for(conn, service, session, settings.reference_s)
            if found is None:
                raise MonitoringError("no reference configured; give one", field="reference_start")
            ref_def = found
        ref = await store.load_reference(conn, service, ref_def, limit=limit)
        cur = await store.load_range(conn, service, current_start, current_end, limit=limit)
    empty = store.Batch(x=np.empty((0, 1, 1)), fs=0.0, channels=[])
    store.check_pair(ref or empty, cur or empty, settings.min_windows)
    assert ref is not None and cur is not None
    ref_f, cur_f = await asyncio.gather(
        asyncio.to_thread(featurize, ref), asyncio.to_thread(featurize, cur)
    )
    cur_desc = {"start": current_start, "end": current_end, "n_windows": cur.x.shape[0]}
    return ref_f, cur_f, {**ref_def.describe(), "n_windows": ref.x.shape[0]}, cur_desc


@router.get("/evaluate", response_model=DriftOut, description=PAIR_DOC)
async def evaluate(pool: Pool, settings: Settings, pair: DriftPair) -> DriftOut:
    """The streaming detector on one pair (KS per feature/channel + MMD); nothing stored."""
    ref, cur, ref_desc, cur_desc = await _load_pair(pool, settings, pair)
    ev = await asyncio.to_thread(compare, ref, cur, settings)
    return DriftOut(service=pair.service, reference=ref_desc, current=cur_desc, **ev.summary())


@router.get("/report", response_model=EvidentlyOut, description=PAIR_DOC)
async def evidently_json(pool: Pool, settings: Settings, pair: DriftPair) -> EvidentlyOut:
    """Evidently ``DataDriftPreset`` over the band-power features, as JSON."""
    ref, cur, ref_desc, cur_desc = await _load_pair(pool, settings, pair)
    data = await asyncio.to_thread(report.report_json, ref, cur, settings.drift_share)
    return EvidentlyOut(
        service=pair.service,
        reference=ref_desc,
        current=cur_desc,
        summary=report.summarize(data),
        report=data,
    )


@router.get("/report.html", response_class=HTMLResponse, description=PAIR_DOC)
async def evidently_html(pool: Pool, settings: Settings, pair: DriftPair) -> HTMLResponse:
    """The same Evidently report as a self-contained HTML page."""
    ref, cur, _, _ = await _load_pair(pool, settings, pair)
    html = await asyncio.to_thread(report.report_html, ref, cur, settings.drift_share)
    return HTMLResponse(html)


@router.post("/evaluate/{service}", response_model=DriftOut, dependencies=[Writer])
async def evaluate_now(service: ServicePath, evaluator: EvaluatorDep) -> DriftOut:
    """The evaluator's step for one service now (latest window vs reference), stored.

    Through the app's evaluator, so its loop does not store the same window again.
    """
    out = await evaluator.evaluate(service)
    if out is None:
        raise MonitoringError(
            "not enough archived windows after the reference to test yet", field="service"
        )
    cur = {
        "end": out.end,
        "session_id": out.session_id,
        "window_s": evaluator.settings.current_window_s,
    }
    summary = out.evaluation.summary()
    return DriftOut(service=service, reference={}, current=cur, stored=True, **summary)
