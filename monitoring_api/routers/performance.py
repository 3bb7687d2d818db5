"""Prediction drift and performance over time, per model version.

Predictions are bucketed by window time. Per bucket: the distribution of predicted classes
and scores; with labels, ``neurostream.scoring`` (ROC-AUC and balanced accuracy first,
accuracy beside its chance level, F1, MCC); without, ``neurostream.estimation``'s
CBPE-style expected ROC-AUC and balanced accuracy marked ``estimated: true``, calibrated
on the version's labelled predictions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query

from monitoring_api.deps import Pool, Service, Settings, TimeRange
from monitoring_api.errors import MonitoringError, NotFound
from monitoring_api.schemas import (
    DistributionBucket,
    PerformanceBucket,
    PerformanceOut,
)
from neurostream import estimation, scoring

router = APIRouter(tags=["performance"])
Bucket = Annotated[float, Query(gt=0, le=30 * 86400, description="Bucket width (seconds)")]

_ROWS = """
SELECT p.window_ts, p.model_version_id, p.role, p.predicted, p.score::float8, p.proba, l.label
FROM predictions p LEFT JOIN labels l ON l.session_id = p.session_id AND l.seq = p.seq
WHERE p.service = %(service)s AND p.window_ts >= %(start)s AND p.window_ts <= %(end)s
  AND (%(version)s::int IS NULL OR p.model_version_id = %(version)s)
ORDER BY p.window_ts LIMIT %(limit)s
"""
MAX_ROWS = 500_000


async def _rows(
    pool: Pool,
    service: str,
    start: datetime | None,
    end: datetime | None,
    version: int | None,
) -> tuple[list[tuple[Any, ...]], datetime, datetime]:
    if start is not None and end is not None and end <= start:
        raise MonitoringError("must be after start", field="end")
    async with pool.connection() as conn:
        if end is None:
            cur = await conn.execute(
                "SELECT max(window_ts) FROM predictions WHERE service = %s", [service]
            )
            end = (await cur.fetchone() or [None])[0]
            if end is None:
                raise NotFound(f"no predictions for service {service!r}", field="service")
        start = start or end - timedelta(hours=1)
        params = {"service": service, "start": start, "end": end, "version": version}
        cur = await conn.execute(_ROWS, params | {"limit": MAX_ROWS})
        return await cur.fetchall(), start, end


def _bucket(ts: datetime, width: float) -> datetime:
    return datetime.fromtimestamp(ts.timestamp() // width * width, tz=UTC)


def _positive(proba: list[float], score: float) -> float:
    return float(proba[1]) if len(proba) == 2 else float(score)


def _proba(rows: list[list[float]]) -> list[list[float]] | None:
    """The stored probability rows when they are one matrix, for the scorer."""
    widths = {len(p) for p in rows}
    return rows if len(widths) == 1 and widths != {0} else None


MEASURED = ("roc_auc", "balanced_accuracy", "accuracy", "accuracy_chance", "f1", "mcc", "n")


@router.get("/predictions/distribution", response_model=list[DistributionBucket])
async def distribution(
    pool: Pool,
    service: Service,
    span: TimeRange,
    bucket_s: Bucket = 60.0,
    model_version_id: Annotated[int | None, Query(ge=1)] = None,
) -> list[DistributionBucket]:
    """Predicted classes and score histogram per time bucket and model version."""
    rows, _, _ = await _rows(pool, service, span.start, span.end, model_version_id)
    groups: dict[tuple[datetime, int, str], list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        groups[(_bucket(r[0], bucket_s), r[1], r[2])].append(r)
    out = []
    for (b, version, role), g in sorted(groups.items()):
        scores = np.array([r[4] for r in g])
        hist = np.histogram(np.clip(scores, 0, 1), bins=10, range=(0, 1))[0]
        counts = Counter(str(r[3]) for r in g)
        out.append(
            DistributionBucket(
                start=b,
                model_version_id=version,
                role=role,
                n=len(g),
                class_counts=dict(sorted(counts.items())),
                mean_score=float(scores.mean()),
                score_histogram=hist.tolist(),
            )
        )
    return out


def _score(
    key: tuple[datetime, int, str], g: list[tuple[Any, ...]], calib: dict[int, Any]
) -> list[PerformanceBucket]:
    b, version, role = key
    labelled = [r for r in g if r[6] is not None]
    unlabelled = [r for r in g if r[6] is None]
    out = []
    if labelled:
        m = scoring.score(
            [r[6] for r in labelled],
            _proba([r[5] for r in labelled]),
            predicted=[r[3] for r in labelled],
        )
        fields = {k: m[k] for k in MEASURED}
        out.append(
            PerformanceBucket(
                start=b, model_version_id=version, role=role, estimated=False, **fields
            )
        )
    if unlabelled:
        lp, ly = calib.get(version, (None, None))
        est = estimation.estimate(np.array([_positive(r[5], r[4]) for r in unlabelled]), lp, ly)
        out.append(PerformanceBucket(start=b, model_version_id=version, role=role, **est))
    return out


@router.get("/performance", response_model=PerformanceOut)
async def performance_over_time(
    pool: Pool,
    settings: Settings,
    service: Service,
    span: TimeRange,
    bucket_s: Bucket = 60.0,
    model_version_id: Annotated[int | None, Query(ge=1)] = None,
) -> PerformanceOut:
    """Measured metrics where labels exist, estimates (``estimated: true``) where not."""
    rows, start, end = await _rows(pool, service, span.start, span.end, model_version_id)
    calib: dict[int, Any] = {}
    by_version: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        by_version[r[1]].append(r)
    for version, g in by_version.items():
        lab = [r for r in g if r[6] is not None]
        calib[version] = (
            np.array([_positive(r[5], r[4]) for r in lab]),
            np.array([r[6] for r in lab]),
        )
    groups: dict[tuple[datetime, int, str], list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        groups[(_bucket(r[0], bucket_s), r[1], r[2])].append(r)
    buckets = [b for key, g in sorted(groups.items()) for b in _score(key, g, calib)]
    whole: dict[tuple[int, str], list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        whole[(r[1], r[2])].append(r)
    per_version = [
        b for (v, role), g in sorted(whole.items()) for b in _score((start, v, role), g, calib)
    ]
    return PerformanceOut(
        service=service,
        start=start,
        end=end,
        bucket_s=bucket_s,
        buckets=buckets[-settings.page_max :],
        per_version=per_version,
    )
