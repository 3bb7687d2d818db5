"""Ground-truth labels over HTTP: post by window or time range (all or nothing), list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from ml_data_api import labelling, queries
from ml_data_api.deps import Pool, Settings
from ml_data_api.errors import Invalid
from ml_data_api.routers.production import Limit, Offset, page
from ml_data_api.schemas import LabelByRange, LabelBySeq, LabelOut, LabelPage, LabelsStored
from neurostream.auth import Writer

router = APIRouter(prefix="/labels", tags=["labels"])


@router.post(
    "",
    response_model=LabelsStored,
    status_code=201,
    dependencies=[Writer],
    responses={404: {"description": "Unknown session"}},
)
async def post_labels(
    items: Annotated[
        list[LabelBySeq | LabelByRange],
        Body(
            min_length=1,
            examples=[
                [
                    {"session_id": "s1", "seq": 4, "label": 1},
                    {"session_id": "s1", "t_from": 1700000000, "t_to": 1700000010, "label": 0},
                ]
            ],
        ),
    ],
    pool: Pool,
    settings: Settings,
) -> LabelsStored:
    """Upsert labels; an unknown session (404) or missing window (422) writes nothing."""
    if len(items) > settings.max_label_items:
        raise Invalid(f"at most {settings.max_label_items} items per request", field="body")
    async with pool.connection() as conn:
        stored = await labelling.store_labels(conn, items)
    return LabelsStored(stored=stored)


@router.get("", response_model=LabelPage)
async def list_labels(
    pool: Pool,
    settings: Settings,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> LabelPage:
    if limit > settings.page_max:
        raise Invalid(f"must be at most {settings.page_max}", field="limit")
    async with pool.connection() as conn:
        rows = await queries.labels(conn, limit=limit, offset=offset, session_id=session_id)
    items, next_offset = page(rows, limit, offset)
    return LabelPage(
        items=[LabelOut(**r) for r in items], limit=limit, offset=offset, next_offset=next_offset
    )
