"""A service's canary: start one, read it, roll it back by hand.

``PUT /services/{name}/canary`` starts a canary version on a share of the service's new
sessions (checked as an assignment is: the ref resolves, the declared input meets it) and
tells the workers over ``models.events``; ``DELETE`` rolls a running one back (the one
mid-session switch: its sessions go back to the champion, each recording the seq where it
did). The rule promotes or rolls it back on its own (the monitoring API's canary judge);
``GET`` here is the registry's record, the monitoring API's the live figures.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from neurostream import registry
from neurostream.auth import Writer
from neurostream.canary import CanaryRule, EventName
from queue_manager.deps import Notify, Pool
from queue_manager.schemas import NAME_PATTERN, CanaryChangeOut, CanaryOut, CanaryStart

router = APIRouter(prefix="/services", tags=["canary"])
ServiceName = Annotated[str, Path(pattern=NAME_PATTERN, description="Service name")]


async def _out(pool: Pool, row: dict[str, Any]) -> CanaryOut:
    async with pool.connection() as conn:
        n = await registry.canary_counts(conn, row["id"])
    return CanaryOut(
        **row | {"rule": CanaryRule.from_stored(registry.json_column(row["rule"]))},
        sessions={"canary": n["canary"], "champion": n["champion"]},
        switched_sessions=n["switched"],
        failed_windows=n["failed"],
    )


async def _tell(
    pool: Pool, notify: Notify, event: EventName, row: dict[str, Any], reason: str
) -> CanaryChangeOut:
    async with pool.connection() as conn:
        body = await registry.canary_event(conn, event, row, reason)
    published = await notify.canary(body)
    out = await _out(pool, row)
    return CanaryChangeOut(**out.model_dump(), event_published=published)


@router.put(
    "/{name}/canary",
    response_model=CanaryChangeOut,
    dependencies=[Writer],
    responses={
        404: {"description": "Unknown service or model"},
        409: {
            "description": "A canary is already running, the ref is the champion, the service "
            "serves no model, or its declared input cannot meet the version"
        },
        422: {"description": "ref resolves to nothing, or share not in (0, 1)"},
    },
)
async def start_canary(
    name: ServiceName, body: CanaryStart, pool: Pool, notify: Notify
) -> CanaryChangeOut:
    """Serve ``ref`` to ``share`` of the service's new sessions (sticky by session_id)."""
    async with pool.connection() as conn:
        row = await registry.start_canary(
            conn,
            name,
            body.ref,
            body.share,
            body.rule.model_dump(),
            model_name=body.model_name,
        )
    return await _tell(pool, notify, "canary_started", row, "started")


@router.get(
    "/{name}/canary",
    response_model=CanaryOut,
    responses={404: {"description": "The service never ran a canary"}},
)
async def get_canary(name: ServiceName, pool: Pool) -> CanaryOut:
    """The service's latest canary, running or ended."""
    async with pool.connection() as conn:
        row = await registry.require_canary(conn, name)
    return await _out(pool, row)


@router.delete(
    "/{name}/canary",
    response_model=CanaryChangeOut,
    dependencies=[Writer],
    responses={
        404: {"description": "The service never ran a canary"},
        409: {"description": "Its latest canary has already ended"},
    },
)
async def roll_back_canary(name: ServiceName, pool: Pool, notify: Notify) -> CanaryChangeOut:
    """Roll the running canary back by hand: its sessions return to the champion."""
    reason = "rolled back by hand"
    async with pool.connection() as conn:
        row = await registry.require_canary(conn, name)
        ended = await registry.conclude_canary(conn, row["id"], "rolled_back", reason)
    if ended is None:
        raise registry.Conflict(
            f"canary {row['id']} of {name!r} has already ended ({row['status']}); "
            "start a new one with PUT /services/{name}/canary",
            field="service",
        )
    return await _tell(pool, notify, "canary_rolled_back", ended, reason)
