"""Services: the named streams (queue ``svc.<name>``) and the model each one serves.

A service may declare its ``input`` (channels, fs, epoch geometry, stream filter); an
assignment, or a new input, that would pair it with a version whose signature that input
cannot meet is refused with 409 and the mismatch named (``registry.Incompatible``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from neurostream import registry
from neurostream.auth import Writer
from queue_manager.deps import Notify, Pool
from queue_manager.schemas import (
    NAME_PATTERN,
    Assignment,
    AssignmentOut,
    ServiceCreate,
    ServiceInput,
    ServiceOut,
    ServiceUpdate,
)

router = APIRouter(prefix="/services", tags=["services"])
ServiceName = Annotated[str, Path(pattern=NAME_PATTERN, description="Service name")]
_404: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown service"}}


async def _get(pool: Pool, name: str) -> ServiceOut:
    async with pool.connection() as conn:
        row = await registry.get_service(conn, name)
    if row is None:
        raise registry.NotFound(f"service {name!r} not found", field="service")
    return ServiceOut(**row)


@router.get("", response_model=list[ServiceOut])
async def list_services(pool: Pool) -> list[ServiceOut]:
    async with pool.connection() as conn:
        return [ServiceOut(**r) for r in await registry.list_services(conn)]


@router.post(
    "",
    response_model=ServiceOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Writer],
    responses={409: {"description": "Name taken"}},
)
async def create_service(body: ServiceCreate, pool: Pool) -> ServiceOut:
    async with pool.connection() as conn:
        row = await registry.create_service(
            conn, body.name, description=body.description, service_input=_declared(body.input)
        )
    return ServiceOut(**row)


def _declared(body: ServiceInput | None) -> dict[str, Any] | None:
    return body.model_dump(exclude_none=True) if body is not None else None


@router.get("/{name}", response_model=ServiceOut, responses=_404)
async def get_service(name: ServiceName, pool: Pool) -> ServiceOut:
    return await _get(pool, name)


@router.put(
    "/{name}",
    response_model=ServiceOut,
    dependencies=[Writer],
    responses={409: {"description": "The new input does not meet a version it serves"}},
)
async def upsert_service(name: ServiceName, body: ServiceUpdate, pool: Pool) -> ServiceOut:
    """Create the service or update its description and, when given, its input (idempotent)."""
    given = "input" in body.model_fields_set
    async with pool.connection() as conn:
        row = await registry.upsert_service(
            conn,
            name,
            description=body.description,
            service_input=_declared(body.input) if given else ...,
        )
    return ServiceOut(**row)


@router.delete(
    "/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Writer], responses=_404
)
async def delete_service(name: ServiceName, pool: Pool, notify: Notify) -> Response:
    async with pool.connection() as conn:
        if not await registry.delete_service(conn, name):
            raise registry.NotFound(f"service {name!r} not found", field="service")
    await notify.services([name], "service-deleted")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _assign(name: str, body: Assignment, pool: Pool, notify: Notify) -> AssignmentOut:
    async with pool.connection() as conn:
        await registry.assign(conn, name, body.model_name, body.ref, body.shadow_ref)
    published = await notify.services([name], "assign")
    service = await _get(pool, name)
    return AssignmentOut(**service.model_dump(), event_published=published)


_ASSIGN = {
    "response_model": AssignmentOut,
    "dependencies": [Writer],
    "responses": {
        404: {"description": "Unknown service or model"},
        409: {"description": "The service's declared input cannot meet the version"},
        422: {"description": "ref/shadow_ref resolve to nothing"},
    },
}


@router.put("/{name}/assign", **_ASSIGN)  # type: ignore[arg-type]
async def assign(name: ServiceName, body: Assignment, pool: Pool, notify: Notify) -> AssignmentOut:
    """Serve ``model_name`` at ``ref`` (version or alias); workers swap on the event."""
    return await _assign(name, body, pool, notify)


@router.post("/{name}/assign", **_ASSIGN)  # type: ignore[arg-type]
async def assign_post(
    name: ServiceName, body: Assignment, pool: Pool, notify: Notify
) -> AssignmentOut:
    """Same as ``PUT /services/{name}/assign``."""
    return await _assign(name, body, pool, notify)
