"""Production data: the predictions workers wrote and the windows the archiver kept.

Filters are optional and combine; pages are ``limit``/``offset`` with ``next_offset`` set
while more rows exist. Windows come as metadata unless ``include_data=true``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query

from ml_data_api import queries
from ml_data_api.deps import Pool, Settings
from ml_data_api.errors import Invalid
from ml_data_api.schemas import PredictionOut, PredictionPage, WindowOut, WindowPage
from neurostream.api import Timestamp

router = APIRouter(tags=["production data"])

Service = Annotated[str | None, Query(max_length=128)]
SessionId = Annotated[str | None, Query(max_length=128)]
VersionId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
From = Annotated[
    Timestamp | None, Query(alias="from", description="Window time >= (ISO 8601 or Unix s).")
]
To = Annotated[Timestamp | None, Query(alias="to", description="Window time <=.")]
Limit = Annotated[int, Query(ge=1, description="Page size (at most NEUROSTREAM_DATA_PAGE_MAX).")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]


def page(rows: list[dict[str, Any]], limit: int, offset: int) -> tuple[list[Any], int | None]:
    """Split a ``limit + 1`` fetch into the page and the next offset (None on the last)."""
    more = len(rows) > limit
    return rows[:limit], (offset + limit if more else None)


def check_page(limit: int, t_from: datetime | None, t_to: datetime | None, cap: int) -> None:
    if limit > cap:
        raise Invalid(f"must be at most {cap}", field="limit")
    if t_from is not None and t_to is not None and t_to < t_from:
        raise Invalid("must not be before 'from'", field="to")


@router.get("/predictions", response_model=PredictionPage)
async def list_predictions(
    pool: Pool,
    settings: Settings,
    service: Service = None,
    session_id: SessionId = None,
    model_version_id: VersionId = None,
    role: Literal["serving", "shadow"] | None = None,
    t_from: From = None,
    t_to: To = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> PredictionPage:
    """Predictions (newest window first), each joined with its ground-truth label."""
    check_page(limit, t_from, t_to, settings.page_max)
    async with pool.connection() as conn:
        rows = await queries.predictions(
            conn,
            limit=limit,
            offset=offset,
            service=service,
            session_id=session_id,
            model_version_id=model_version_id,
            role=role,
            t_from=t_from,
            t_to=t_to,
        )
    items, next_offset = page(rows, limit, offset)
    return PredictionPage(
        items=[PredictionOut(**r) for r in items],
        limit=limit,
        offset=offset,
        next_offset=next_offset,
    )


@router.get("/windows", response_model=WindowPage)
async def list_windows(
    pool: Pool,
    settings: Settings,
    service: Service = None,
    session_id: SessionId = None,
    model_version_id: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Windows this version predicted.")
    ] = None,
    kind: Literal["epoch", "sliding"] | None = None,
    t_from: From = None,
    t_to: To = None,
    include_data: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> WindowPage:
    """Archived windows (newest first), with samples as ``[channels][samples]`` on request."""
    check_page(limit, t_from, t_to, settings.page_max)
    async with pool.connection() as conn:
        rows = await queries.windows(
            conn,
            limit=limit,
            offset=offset,
            include_data=include_data,
            service=service,
            session_id=session_id,
            kind=kind,
            model_version_id=model_version_id,
            t_from=t_from,
            t_to=t_to,
        )
    items, next_offset = page(rows, limit, offset)
    out = []
    for r in items:
        raw = r.pop("data")
        data = None
        if raw is not None:
            shape = (r["n_channels"], r["n_samples"])
            data = np.frombuffer(bytes(raw), dtype="<f4").reshape(shape).tolist()
        out.append(WindowOut(**r, data=data))
    return WindowPage(items=out, limit=limit, offset=offset, next_offset=next_offset)
