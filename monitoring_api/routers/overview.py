"""The live view of a service (throughput, latency, model in service), its sessions and the
dashboard."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from monitoring_api.deps import Pool, Service, ServiceFilter

router = APIRouter(tags=["overview"])

_SERIES = """
SELECT to_timestamp(floor(extract(epoch FROM predicted_at) / %(b)s) * %(b)s) AS start,
    count(*) AS n, (count(*) / %(b)s)::float8 AS per_s,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM predicted_at - sent_at) * 1000)
        AS latency_ms_p50,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM predicted_at - sent_at) * 1000)
        AS latency_ms_p95
FROM predictions
WHERE service = %(service)s AND role = 'serving'
  AND predicted_at > (SELECT max(predicted_at) FROM predictions WHERE service = %(service)s)
      - make_interval(secs => %(w)s)
GROUP BY 1 ORDER BY 1
"""
_SERVING = """
SELECT p.model_version_id, p.role, count(*) AS predictions, max(p.predicted_at) AS last_at,
    CASE WHEN v.id IS NULL THEN NULL ELSE v.model_name || ':' || v.version END AS label
FROM predictions p LEFT JOIN model_versions v ON v.id = p.model_version_id
WHERE p.service = %(service)s
  AND p.predicted_at > (SELECT max(predicted_at) FROM predictions WHERE service = %(service)s)
      - make_interval(secs => %(w)s)
GROUP BY p.model_version_id, p.role, v.id ORDER BY last_at DESC
"""
# Totals over the window, as the series: a count over all of a service's predictions
# grows with the table (the soak bench saw the dashboard's poll pass 4 s within 15 min).
_TOTALS = """
WITH last AS (SELECT max(predicted_at) AS at FROM predictions WHERE service = %(service)s)
SELECT count(p.*) AS predictions, count(DISTINCT p.session_id) AS sessions,
    (SELECT at FROM last) AS last_predicted_at,
    (SELECT count(*) FROM rejections WHERE service = %(service)s
        AND rejected_at > (SELECT at FROM last) - make_interval(secs => %(w)s)) AS rejections
FROM predictions p
WHERE p.service = %(service)s AND p.role = 'serving'
  AND p.predicted_at > (SELECT at FROM last) - make_interval(secs => %(w)s)
"""
_SERVICES = """
SELECT name FROM services UNION SELECT DISTINCT service FROM drift_metrics
UNION SELECT DISTINCT service FROM alert_rules ORDER BY 1
"""


class ThroughputPoint(BaseModel):
    start: datetime
    n: int
    per_s: float
    latency_ms_p50: float | None
    latency_ms_p95: float | None


class VersionInService(BaseModel):
    model_version_id: int
    label: str | None = Field(description="'<model>:<version>' when registered")
    role: str
    predictions: int
    last_at: datetime


class OverviewOut(BaseModel):
    service: str | None
    services: list[str]
    predictions: int = Field(0, description="Serving predictions in the window")
    sessions: int = Field(0, description="Sessions with predictions in the window")
    rejections: int = Field(0, description="Windows dead-lettered in the window")
    last_predicted_at: datetime | None = None
    versions: list[VersionInService] = Field(description="Versions seen in the window")
    series: list[ThroughputPoint]


@router.get("/overview", response_model=OverviewOut)
async def overview(
    pool: Pool,
    service: ServiceFilter = None,
    window_s: Annotated[float, Query(gt=0, le=7 * 86400)] = 300.0,
    bucket_s: Annotated[float, Query(gt=0, le=86400)] = 5.0,
) -> dict[str, Any]:
    """Throughput and latency per bucket over the last ``window_s`` of predictions (the
    window ends at the service's last prediction), with the window's totals."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SERVICES)
        services = [r["name"] for r in await cur.fetchall()]
        out: dict[str, Any] = {
            "service": service,
            "services": services,
            "versions": [],
            "series": [],
        }
        if service is None:
            return out
        params = {"service": service, "w": window_s, "b": bucket_s}
        await cur.execute(_TOTALS, params)
        out |= await cur.fetchone() or {}
        await cur.execute(_SERVING, params)
        out["versions"] = await cur.fetchall()
        await cur.execute(_SERIES, params)
        out["series"] = await cur.fetchall()
    return out


_SESSIONS = """
SELECT p.session_id, min(p.window_ts) AS start, max(p.window_ts) AS end,
    count(*) AS predictions, count(l.label) AS labelled
FROM predictions p LEFT JOIN labels l ON l.session_id = p.session_id AND l.seq = p.seq
WHERE p.service = %(service)s AND p.role = 'serving'
GROUP BY p.session_id ORDER BY start DESC LIMIT %(limit)s
"""


class SessionOut(BaseModel):
    session_id: str
    start: datetime = Field(description="First window served (data time)")
    end: datetime = Field(description="Last window served (data time)")
    predictions: int
    labelled: int = Field(description="Predictions with a ground-truth label")


@router.get("/sessions", response_model=list[SessionOut])
async def sessions(
    pool: Pool,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """The service's sessions, newest first, with the time range each one covers."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SESSIONS, {"service": service, "limit": limit})
        return await cur.fetchall()


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=True)
async def dashboard() -> HTMLResponse:
    """The built-in dashboard: plain HTML + JS polling the JSON endpoints."""
    page = resources.files("monitoring_api").joinpath("static/dashboard.html").read_text()
    return HTMLResponse(page)
