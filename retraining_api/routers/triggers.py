"""Retraining triggers: a schedule or labelled-data growth that enqueues jobs by itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from neurostream import registry
from neurostream.auth import Writer
from retraining_api import triggers
from retraining_api.deps import Pool
from retraining_api.schemas import INT32, TriggerCreate, TriggerOut
from retraining_api.validation import resolve_dataset, resolve_training

router = APIRouter(prefix="/triggers", tags=["triggers"])
TriggerId = Annotated[int, Path(ge=1, le=INT32, description="Trigger id")]
_404: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown trigger"}}


@router.post(
    "",
    response_model=TriggerOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Writer],
    responses={404: {"description": "Unknown dataset or service"}},
)
async def create_trigger(body: TriggerCreate, pool: Pool) -> TriggerOut:
    """Datasets, family and params are checked now; dataset names (and a family left to
    the champion) resolve again at each firing."""
    async with pool.connection() as conn:
        await resolve_training(conn, body.job, body.model_name)
        if body.service is not None and await registry.get_service(conn, body.service) is None:
            raise registry.NotFound(f"service {body.service!r} not found", field="service")
        await resolve_dataset(conn, body.job.testing_dataset, field="job.testing_dataset")
        if body.kind == "schedule" and body.job.training_dataset is not None:
            await resolve_dataset(conn, body.job.training_dataset, field="job.training_dataset")
        row = await triggers.create(conn, body)
    return TriggerOut(**row)


@router.get("", response_model=list[TriggerOut])
async def list_triggers(pool: Pool) -> list[TriggerOut]:
    async with pool.connection() as conn:
        return [TriggerOut(**r) for r in await triggers.list_all(conn)]


@router.get("/{trigger_id}", response_model=TriggerOut, responses=_404)
async def get_trigger(trigger_id: TriggerId, pool: Pool) -> TriggerOut:
    async with pool.connection() as conn:
        row = await triggers.get(conn, trigger_id)
    if row is None:
        raise registry.NotFound(f"trigger {trigger_id} not found", field="trigger_id")
    return TriggerOut(**row)


@router.delete(
    "/{trigger_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Writer],
    responses=_404,
)
async def delete_trigger(trigger_id: TriggerId, pool: Pool) -> Response:
    async with pool.connection() as conn:
        if not await triggers.delete(conn, trigger_id):
            raise registry.NotFound(f"trigger {trigger_id} not found", field="trigger_id")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
