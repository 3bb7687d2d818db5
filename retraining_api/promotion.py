"""Where a retrained model enters the registry and aliases move (challenger, champion).

Registration, the alias moves and the job's outcome commit in one transaction, so a job
is never 'failed' with a version registered, nor 'succeeded' without one. Services that
follow a moved alias hear about it on ``models.events`` after the commit (``Notifier``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

import neurostream
from neurostream import errors, registry
from neurostream.notify import Notifier
from retraining_api import store
from retraining_api.retrain import Outcome, compare, promote_decision

CHALLENGER, CHAMPION = "challenger", "champion"


class JobLost(errors.Conflict):
    """The job stopped being this runner's (interrupted or cancelled) before it committed."""


async def register_outcome(
    pool: AsyncConnectionPool,
    notifier: Notifier,
    job: dict[str, Any],
    runner_id: str,
    outcome: Outcome,
    *,
    champion: dict[str, Any] | None,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """Register the challenger (and champion when the rule holds); the job's result JSON."""
    spec, name = job["spec"], job["model_name"]
    promote, why = promote_decision(
        spec.get("promote"), outcome.test, outcome.champion_test, champion is not None
    )
    metrics = {
        "validation": outcome.validation,
        "test": outcome.test,
        "champion_test": outcome.champion_test,
        "champion_version": champion["version"] if champion else None,
        "lineage": lineage,
        "search": outcome.search,
        "job_id": job["id"],
    }
    trained = dataclasses.replace(
        outcome.trained, metrics=metrics, dataset_hash=lineage["training_content_hash"]
    )
    async with pool.connection() as conn, conn.transaction():
        row = await registry.register_trained(
            conn, name, trained, code_version=neurostream.__version__
        )
        moved = [CHALLENGER]
        await registry.set_alias(conn, name, CHALLENGER, version_id=row["id"])
        if promote:
            await registry.set_alias(conn, name, CHAMPION, version_id=row["id"])
            moved.append(CHAMPION)
        services = sorted(
            {s for a in moved for s in await registry.services_following(conn, name, a)}
        )
        result = {
            "model_name": name,
            "version": row["version"],
            "version_id": row["id"],
            "dataset_hash": row["dataset_hash"],
            "code_version": row["code_version"],
            "challenger": {"version": row["version"], "test": outcome.test},
            "champion": (
                {
                    "version": champion["version"],
                    "test": outcome.champion_test,
                    "note": outcome.champion_note,
                }
                if champion
                else None
            ),
            "comparison": compare(outcome.test, outcome.champion_test),
            "validation": outcome.validation,
            "search": outcome.search,
            "lineage": lineage,
            "promoted": promote,
            "promotion_reason": why,
            "aliases_moved": moved,
            "services_notified": services,
        }
        await store.add_logs(
            conn,
            job["id"],
            [
                ("info", f"registered {name}:{row['version']} as {' and '.join(moved)}"),
                ("info", f"promotion: {'yes' if promote else 'no'} ({why})"),
            ],
        )
        if not await store.finish(conn, job["id"], runner_id, "succeeded", result=result):
            raise JobLost(f"job {job['id']} is no longer running on {runner_id}", field="job_id")
    result["event_published"] = await notifier.services(services, "retrain")
    async with pool.connection() as conn:
        await store.annotate(conn, job["id"], {"event_published": result["event_published"]})
    return result


async def move_alias(
    conn: AsyncConnection[Any], name: str, from_alias: str, to_alias: str
) -> dict[str, Any]:
    """Point ``to_alias`` where ``from_alias`` points; the moved version and the previous."""
    if await registry.get_model(conn, name) is None:
        raise registry.NotFound(f"model {name!r} not found", field="model_name")
    source = await registry.get_alias(conn, name, from_alias)
    if source is None:
        raise registry.NotFound(f"model {name!r} has no alias {from_alias!r}", field="from_alias")
    previous = await registry.get_alias(conn, name, to_alias)
    await registry.set_alias(conn, name, to_alias, version_id=source["version_id"])
    return {
        "model_name": name,
        "from_alias": from_alias,
        "to_alias": to_alias,
        "version": source["version"],
        "version_id": source["version_id"],
        "previous_version": previous["version"] if previous else None,
        "services_notified": await registry.services_following(conn, name, to_alias),
    }
