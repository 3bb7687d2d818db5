"""Aliases: movable names (``champion``, ``challenger``) for a model's versions.

Moving an alias moves every service that follows it, so each of those services gets a
``models.events`` message once the change is committed. A move to a version that a
following service's declared input cannot meet is refused (409, the mismatch named).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from neurostream import registry
from neurostream.auth import Writer
from queue_manager.deps import Notify, Pool
from queue_manager.schemas import NAME_PATTERN, AliasOut, AliasSet, AliasSetOut

router = APIRouter(prefix="/models/{name}/aliases", tags=["aliases"])
ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="Model name")]
AliasName = Annotated[
    str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$", description="Alias, e.g. champion")
]


@router.get("", response_model=list[AliasOut], responses={404: {"description": "Unknown model"}})
async def list_aliases(name: ModelName, pool: Pool) -> list[AliasOut]:
    async with pool.connection() as conn:
        if await registry.get_model(conn, name) is None:
            raise registry.NotFound(f"model {name!r} not found", field="model_name")
        return [AliasOut(**r) for r in await registry.list_aliases(conn, name)]


@router.get("/{alias}", response_model=AliasOut, responses={404: {"description": "Unknown"}})
async def get_alias(name: ModelName, alias: AliasName, pool: Pool) -> AliasOut:
    async with pool.connection() as conn:
        row = await registry.get_alias(conn, name, alias)
    if row is None:
        raise registry.NotFound(f"model {name!r} has no alias {alias!r}", field="alias")
    return AliasOut(**row)


@router.put(
    "/{alias}",
    response_model=AliasSetOut,
    dependencies=[Writer],
    responses={
        404: {"description": "Unknown model or version"},
        409: {"description": "A service following the alias cannot serve that version"},
    },
)
async def set_alias(
    name: ModelName, alias: AliasName, body: AliasSet, pool: Pool, notify: Notify
) -> AliasSetOut:
    """Point the alias at a version; services following it swap models."""
    async with pool.connection() as conn:
        row = await registry.set_alias(conn, name, alias, version=body.version)
        following = await registry.services_following(conn, name, alias)
    published = await notify.services(following, "alias")
    return AliasSetOut(**row, services_notified=following, event_published=published)


@router.delete(
    "/{alias}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Writer],
    responses={404: {"description": "Unknown alias"}, 409: {"description": "Still followed"}},
)
async def delete_alias(name: ModelName, alias: AliasName, pool: Pool) -> Response:
    async with pool.connection() as conn:
        await registry.delete_alias(conn, name, alias)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
