"""Alert rules (CRUD, writes need the token) and the alerts they fired and cleared."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from psycopg.rows import dict_row

from monitoring_api.deps import Pool, ServiceFilter, Settings
from monitoring_api.errors import NotFound
from monitoring_api.schemas import AlertOut, RuleIn, RuleOut
from neurostream.auth import Writer

router = APIRouter(prefix="/alerts", tags=["alerts"])
RuleId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Rule id")]
_COLUMNS = (
    "name",
    "service",
    "metric",
    "comparison",
    "threshold",
    "window_s",
    "webhook_url",
    "enabled",
)


def _values(body: RuleIn) -> dict[str, Any]:
    data = body.model_dump()
    data["webhook_url"] = str(body.webhook_url) if body.webhook_url else None
    return data


async def _one(pool: Pool, query: str, params: Any) -> dict[str, Any] | None:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


@router.get("/rules", response_model=list[RuleOut])
async def list_rules(pool: Pool) -> list[dict[str, Any]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM alert_rules ORDER BY id")
        return await cur.fetchall()


@router.post(
    "/rules",
    response_model=RuleOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Writer],
    responses={409: {"description": "Name taken"}},
)
async def create_rule(body: RuleIn, pool: Pool) -> dict[str, Any]:
    cols = ", ".join(_COLUMNS)
    row = await _one(
        pool,
        f"INSERT INTO alert_rules ({cols}) VALUES "
        f"({', '.join(f'%({c})s' for c in _COLUMNS)}) RETURNING *",
        _values(body),
    )
    assert row is not None
    return row


@router.get("/rules/{rule_id}", response_model=RuleOut)
async def get_rule(rule_id: RuleId, pool: Pool) -> dict[str, Any]:
    row = await _one(pool, "SELECT * FROM alert_rules WHERE id = %s", [rule_id])
    if row is None:
        raise NotFound(f"rule {rule_id} does not exist", field="rule_id")
    return row


@router.put("/rules/{rule_id}", response_model=RuleOut, dependencies=[Writer])
async def update_rule(rule_id: RuleId, body: RuleIn, pool: Pool) -> dict[str, Any]:
    sets = ", ".join(f"{c} = %({c})s" for c in _COLUMNS)
    row = await _one(
        pool,
        f"UPDATE alert_rules SET {sets}, updated_at = now() WHERE id = %(id)s RETURNING *",
        _values(body) | {"id": rule_id},
    )
    if row is None:
        raise NotFound(f"rule {rule_id} does not exist", field="rule_id")
    return row


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Writer])
async def delete_rule(rule_id: RuleId, pool: Pool) -> Response:
    """Delete the rule and its alert history."""
    row = await _one(pool, "DELETE FROM alert_rules WHERE id = %s RETURNING id", [rule_id])
    if row is None:
        raise NotFound(f"rule {rule_id} does not exist", field="rule_id")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("", response_model=list[AlertOut])
async def list_alerts(
    pool: Pool,
    settings: Settings,
    service: ServiceFilter = None,
    state: Annotated[
        Literal["firing", "cleared"] | None, Query(description="'firing': what fires now")
    ] = None,
    rule_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> list[dict[str, Any]]:
    """Newest first."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT * FROM alerts WHERE (%(service)s::text IS NULL OR service = %(service)s)
            AND (%(state)s::text IS NULL OR state = %(state)s)
            AND (%(rule)s::int IS NULL OR rule_id = %(rule)s)
            ORDER BY fired_at DESC, id DESC LIMIT %(limit)s""",
            {
                "service": service,
                "state": state,
                "rule": rule_id,
                "limit": min(limit, settings.page_max),
            },
        )
        return await cur.fetchall()
