"""The model registry and service assignments, as SQL over one psycopg 3 connection.

The queue manager writes here (versions, aliases, services); workers read here
(``resolve_service`` then ``fetch_version``) whenever a ``models.events`` message or a
heartbeat tells them to re-check. A service follows a *ref*: a version number ("3") or an
alias ("champion"), resolved to a ``model_versions.id`` on every read, so moving an alias
moves every service that follows it. Functions never commit; multi-statement writes run in
``conn.transaction()`` so they are atomic inside or outside the caller's transaction.

A service may declare the input its producer streams (``services.input``: channels, fs,
epoch geometry, stream filter; ``neurostream.models.compat``). Every write that changes
what such a service serves, or what it declares, is checked against the versions involved
(``assign`` for its refs, ``set_alias`` for the services following the alias,
``upsert_service`` for a new input): a version the input cannot meet is ``Incompatible``
(409), its message naming the mismatch, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from neurostream import errors
from neurostream.canary import CanaryEvent, EventName, arm_of, bucket, check_share

if TYPE_CHECKING:
    from neurostream.models.compat import ServiceInput

# Aliases may not look like version numbers, so a ref is never ambiguous.
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")

_VERSION_COLS = """v.id, v.model_name, v.version, v.family, v.feature_pipeline, v.feature_params,
    v.model_params, v.input_spec, v.classes, v.metrics, v.dataset_hash, v.code_version,
    v.sha256, v.artifact_size, v.created_at"""
_SERVICE_SELECT = """SELECT s.name, s.description, s.model_name, s.model_ref, s.shadow_ref,
    s.input, s.created_at, s.updated_at FROM services s"""


class RegistryError(errors.RequestError):
    """A registry request that cannot be honoured; ``field`` names the offending input.

    It sets no ``status`` of its own, so each subclass answers with its core parent's.
    """


class NotFound(RegistryError, errors.NotFound):
    """The named service, model, version or alias does not exist (404)."""


class Conflict(RegistryError, errors.Conflict):
    """The request clashes with what exists: duplicate name, alias still followed (409)."""


class BadRef(RegistryError, errors.InvalidRequest):
    """A ref that is neither an existing version number nor an existing alias (422)."""


class Incompatible(Conflict):
    """A service's declared input cannot meet a version's signature (409): both are valid
    on their own, together a worker would reject every window the service sends."""


@dataclass(frozen=True, slots=True)
class ServiceModels:
    """The version ids a service should serve now (None: nothing assigned/resolvable)."""

    serving: int | None
    shadow: int | None


def version_label(row: Mapping[str, Any]) -> str:
    """``model:version`` of a ``model_versions`` row, as messages name a version
    (``ServingModel.label`` for a loaded one)."""
    return f"{row.get('model_name')}:{row.get('version')}"


def json_column(value: Any) -> Any:
    """A JSON column as read: psycopg decodes jsonb, but a row may carry it as text."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _cursor(conn: AsyncConnection[Any]) -> AsyncCursor[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row)


async def _one(conn: AsyncConnection[Any], query: str, params: Any) -> dict[str, Any] | None:
    async with _cursor(conn) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _all(conn: AsyncConnection[Any], query: str, params: Any) -> list[dict[str, Any]]:
    async with _cursor(conn) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


# --- refs -------------------------------------------------------------------------------


async def resolve_ref(conn: AsyncConnection[Any], model_name: str, ref: str) -> int | None:
    """Version id a ref points at now: digits are a version number, else an alias."""
    if ref.isdigit():
        if int(ref) > 2**31 - 1:
            return None
        row = await _one(
            conn,
            "SELECT id FROM model_versions WHERE model_name = %s AND version = %s",
            [model_name, int(ref)],
        )
    else:
        row = await _one(
            conn,
            "SELECT version_id AS id FROM model_aliases WHERE model_name = %s AND alias = %s",
            [model_name, ref],
        )
    return int(row["id"]) if row else None


async def resolve_service(conn: AsyncConnection[Any], service: str) -> ServiceModels:
    """What ``service`` should serve; (None, None) if it is unknown or unassigned."""
    row = await _one(
        conn, "SELECT model_name, model_ref, shadow_ref FROM services WHERE name = %s", [service]
    )
    if row is None or row["model_name"] is None:
        return ServiceModels(None, None)
    name = row["model_name"]
    serving = await resolve_ref(conn, name, row["model_ref"]) if row["model_ref"] else None
    shadow = await resolve_ref(conn, name, row["shadow_ref"]) if row["shadow_ref"] else None
    return ServiceModels(serving, shadow)


# --- models and versions -----------------------------------------------------------------


async def register_version(
    conn: AsyncConnection[Any],
    *,
    model_name: str,
    family: str,
    feature_pipeline: str,
    feature_params: dict[str, Any],
    model_params: dict[str, Any],
    input_spec: dict[str, Any],
    classes: list[int],
    metrics: dict[str, Any],
    dataset_hash: str | None,
    code_version: str | None,
    artifact: bytes,
) -> dict[str, Any]:
    """Store a new version (next number for the model, creating the model); row sans bytes."""
    if not NAME_RE.match(model_name):
        raise RegistryError(f"invalid model name {model_name!r}", field="model_name")
    sha256 = hashlib.sha256(artifact).hexdigest()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO models (name, family) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            [model_name, family],
        )
        # Row lock: concurrent uploads of one model get consecutive version numbers.
        await conn.execute("SELECT 1 FROM models WHERE name = %s FOR UPDATE", [model_name])
        row = await _one(
            conn,
            f"""INSERT INTO model_versions AS v (model_name, version, family, feature_pipeline,
                feature_params, model_params, input_spec, classes, metrics, dataset_hash,
                code_version, sha256, artifact, artifact_size)
            VALUES (%(m)s, (SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions
                            WHERE model_name = %(m)s),
                %(family)s, %(fp)s, %(fparams)s, %(mparams)s, %(spec)s, %(classes)s, %(metrics)s,
                %(dh)s, %(cv)s, %(sha)s, %(art)s, %(size)s)
            RETURNING {_VERSION_COLS}""",
            {
                "m": model_name,
                "family": family,
                "fp": feature_pipeline,
                "fparams": Jsonb(feature_params),
                "mparams": Jsonb(model_params),
                "spec": Jsonb(input_spec),
                "classes": Jsonb(classes),
                "metrics": Jsonb(metrics),
                "dh": dataset_hash,
                "cv": code_version,
                "sha": sha256,
                "art": artifact,
                "size": len(artifact),
            },
        )
    assert row is not None
    return row


async def fetch_version(conn: AsyncConnection[Any], version_id: int) -> dict[str, Any] | None:
    """Full row of one version, artifact bytes included (what ``ServingModel.from_row`` takes)."""
    return await _one(
        conn,
        f"SELECT {_VERSION_COLS}, v.artifact FROM model_versions v WHERE v.id = %s",
        [version_id],
    )


async def get_version(
    conn: AsyncConnection[Any], model_name: str, version: int
) -> dict[str, Any] | None:
    """One version's metadata (no artifact bytes), by model name and version number."""
    return await _one(
        conn,
        f"SELECT {_VERSION_COLS} FROM model_versions v WHERE v.model_name = %s AND v.version = %s",
        [model_name, version],
    )


async def list_versions(conn: AsyncConnection[Any], model_name: str) -> list[dict[str, Any]]:
    """A model's versions, newest first, without artifact bytes."""
    return await _all(
        conn,
        f"SELECT {_VERSION_COLS} FROM model_versions v WHERE v.model_name = %s "
        "ORDER BY v.version DESC",
        [model_name],
    )


async def read_artifact_chunk(
    conn: AsyncConnection[Any], version_id: int, offset: int, size: int
) -> bytes:
    """A slice of an artifact, so large artifacts stream without being held whole."""
    row = await _one(
        conn,
        "SELECT substring(artifact FROM %s FOR %s) AS chunk FROM model_versions WHERE id = %s",
        [offset + 1, size, version_id],
    )
    return bytes(row["chunk"]) if row else b""


async def get_model(conn: AsyncConnection[Any], model_name: str) -> dict[str, Any] | None:
    """A model with its version count, latest version and aliases {alias: version}."""
    rows = await list_models(conn, model_name)
    return rows[0] if rows else None


async def list_models(
    conn: AsyncConnection[Any], model_name: str | None = None
) -> list[dict[str, Any]]:
    """Every model (or one) with version count, latest version number and aliases."""
    return await _all(
        conn,
        """SELECT m.name, m.family, m.description, m.created_at,
            (SELECT count(*) FROM model_versions v WHERE v.model_name = m.name) AS versions,
            (SELECT max(version) FROM model_versions v WHERE v.model_name = m.name) AS latest,
            COALESCE((SELECT jsonb_object_agg(a.alias, v.version) FROM model_aliases a
                JOIN model_versions v ON v.id = a.version_id WHERE a.model_name = m.name),
                '{}'::jsonb) AS aliases
        FROM models m WHERE %(n)s::text IS NULL OR m.name = %(n)s ORDER BY m.name""",
        {"n": model_name},
    )


# --- aliases -----------------------------------------------------------------------------


async def set_alias(
    conn: AsyncConnection[Any],
    model_name: str,
    alias: str,
    *,
    version: int | None = None,
    version_id: int | None = None,
) -> dict[str, Any]:
    """Point ``alias`` at a version (by number or id); returns the alias row."""
    if not ALIAS_RE.match(alias):
        raise BadRef(
            f"invalid alias {alias!r}: letters first, then letters, digits, '_', '-', '.'",
            field="alias",
        )
    if (version is None) == (version_id is None):
        raise ValueError("give exactly one of version or version_id")
    async with conn.transaction():
        # Alias moves and assignments of one model take turns (``assign`` holds the row
        # FOR SHARE), so no service starts following the alias between check and move.
        await conn.execute("SELECT 1 FROM models WHERE name = %s FOR NO KEY UPDATE", [model_name])
        if version is not None:
            target = await _one(
                conn,
                "SELECT id, version FROM model_versions WHERE model_name = %s AND version = %s",
                [model_name, version],
            )
        else:
            target = await _one(
                conn,
                "SELECT id, version FROM model_versions WHERE model_name = %s AND id = %s",
                [model_name, version_id],
            )
        if target is None:
            if await get_model(conn, model_name) is None:
                raise NotFound(f"model {model_name!r} not found", field="model_name")
            raise NotFound(f"model {model_name!r} has no such version", field="version")
        followers = await _all(
            conn,
            """SELECT name, input FROM services WHERE model_name = %(m)s
            AND (model_ref = %(a)s OR shadow_ref = %(a)s) ORDER BY name FOR UPDATE""",
            {"m": model_name, "a": alias},
        )
        for follower in followers:
            reason = await input_mismatch(
                conn, follower["name"], parse_input(follower["input"]), int(target["id"])
            )
            if reason:
                raise Incompatible(
                    f"alias {alias!r} cannot move to version {target['version']}, which a "
                    f"service following it cannot serve: {reason}",
                    field="version",
                )
        await conn.execute(
            """INSERT INTO model_aliases (model_name, alias, version_id) VALUES (%s, %s, %s)
            ON CONFLICT (model_name, alias)
            DO UPDATE SET version_id = EXCLUDED.version_id, updated_at = now()""",
            [model_name, alias, target["id"]],
        )
    row = await get_alias(conn, model_name, alias)
    assert row is not None
    return row


async def get_alias(
    conn: AsyncConnection[Any], model_name: str, alias: str
) -> dict[str, Any] | None:
    rows = await list_aliases(conn, model_name, alias)
    return rows[0] if rows else None


async def list_aliases(
    conn: AsyncConnection[Any], model_name: str, alias: str | None = None
) -> list[dict[str, Any]]:
    """A model's aliases with the version number and id each points at."""
    return await _all(
        conn,
        """SELECT a.model_name, a.alias, a.version_id, v.version, a.updated_at
        FROM model_aliases a JOIN model_versions v ON v.id = a.version_id
        WHERE a.model_name = %(m)s AND (%(a)s::text IS NULL OR a.alias = %(a)s)
        ORDER BY a.alias""",
        {"m": model_name, "a": alias},
    )


async def delete_alias(conn: AsyncConnection[Any], model_name: str, alias: str) -> None:
    """Remove an alias no service follows (a followed alias would leave it unresolved)."""
    users = await services_following(conn, model_name, alias)
    if users:
        raise Conflict(f"alias {alias!r} is followed by services {users}", field="alias")
    cur = await conn.execute(
        "DELETE FROM model_aliases WHERE model_name = %s AND alias = %s", [model_name, alias]
    )
    if cur.rowcount == 0:
        raise NotFound(f"model {model_name!r} has no alias {alias!r}", field="alias")


async def services_following(conn: AsyncConnection[Any], model_name: str, ref: str) -> list[str]:
    """Services whose serving or shadow ref is ``ref`` of ``model_name``."""
    rows = await _all(
        conn,
        """SELECT name FROM services WHERE model_name = %(m)s
        AND (model_ref = %(r)s OR shadow_ref = %(r)s) ORDER BY name""",
        {"m": model_name, "r": ref},
    )
    return [r["name"] for r in rows]


# --- declared input ----------------------------------------------------------------------


def parse_input(raw: Mapping[str, Any] | None) -> ServiceInput:
    """A service's declared input, validated (None: nothing declared); ``RegistryError``
    with ``field="input.<key>"`` (422) names what is wrong."""
    # Imported here, not at the top: compat pulls in the feature pipelines (NumPy, SciPy),
    # which the registry's other readers do not need.
    from neurostream.models.compat import ServiceInput

    try:
        return ServiceInput.from_mapping(raw)
    except errors.ConfigError as exc:
        raise RegistryError(exc.message, field=exc.field or "input", hint=exc.hint) from None


async def get_input(conn: AsyncConnection[Any], service: str) -> ServiceInput:
    """The input ``service`` declares (nothing declared: every key None); ``NotFound``."""
    row = await _one(conn, "SELECT input FROM services WHERE name = %s", [service])
    if row is None:
        raise NotFound(f"service {service!r} not found", field="service")
    return parse_input(row["input"])


async def input_mismatch(
    conn: AsyncConnection[Any], service: str, declared: ServiceInput, version_id: int
) -> str | None:
    """Why ``service``, streaming ``declared``, cannot serve version ``version_id`` (read
    from its ``input_spec``, ``feature_pipeline`` and ``feature_params``), or None."""
    from neurostream.models.compat import version_mismatch

    if not declared.declared:
        return None
    row = await _one(
        conn, f"SELECT {_VERSION_COLS} FROM model_versions v WHERE v.id = %s", [version_id]
    )
    return version_mismatch(row, declared, service=service) if row else None


# --- services ----------------------------------------------------------------------------


async def _with_resolved(conn: AsyncConnection[Any], row: dict[str, Any]) -> dict[str, Any]:
    resolved = await resolve_service(conn, row["name"])
    return {**row, "serving_version_id": resolved.serving, "shadow_version_id": resolved.shadow}


async def get_service(conn: AsyncConnection[Any], name: str) -> dict[str, Any] | None:
    """A service row plus the version ids its refs resolve to now."""
    row = await _one(conn, f"{_SERVICE_SELECT} WHERE s.name = %s", [name])
    return await _with_resolved(conn, row) if row else None


async def list_services(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    return [
        await _with_resolved(conn, r)
        for r in await _all(conn, f"{_SERVICE_SELECT} ORDER BY s.name", [])
    ]


def _input_json(declared: ServiceInput) -> Jsonb | None:
    return Jsonb(declared.to_json()) if declared.declared else None


async def create_service(
    conn: AsyncConnection[Any],
    name: str,
    *,
    description: str = "",
    service_input: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Create a service, with the input it declares; ``Conflict`` if the name is taken."""
    if not NAME_RE.match(name):
        raise RegistryError(f"invalid service name {name!r}", field="name")
    declared = parse_input(service_input)
    cur = await conn.execute(
        """INSERT INTO services (name, description, input) VALUES (%s, %s, %s)
        ON CONFLICT (name) DO NOTHING""",
        [name, description, _input_json(declared)],
    )
    if cur.rowcount == 0:
        raise Conflict(f"service {name!r} already exists", field="name")
    row = await get_service(conn, name)
    assert row is not None
    return row


async def upsert_service(
    conn: AsyncConnection[Any],
    name: str,
    *,
    description: str = "",
    service_input: Mapping[str, Any] | None | EllipsisType = ...,
) -> dict[str, Any]:
    """Create a service or update its description (idempotent, for CLIs and start-up).

    ``service_input``: the input it declares from now on (None: none); left out (``...``),
    the declared input stays. A new input the versions it serves cannot meet is
    ``Incompatible`` and changes nothing.
    """
    if not NAME_RE.match(name):
        raise RegistryError(f"invalid service name {name!r}", field="name")
    declared = None if service_input is ... else parse_input(service_input)
    async with conn.transaction():
        # The upsert locks the row: no assignment moves between the check and the write.
        await conn.execute(
            """INSERT INTO services (name, description) VALUES (%s, %s) ON CONFLICT (name)
            DO UPDATE SET description = EXCLUDED.description, updated_at = now()""",
            [name, description],
        )
        if declared is not None:
            serves = await resolve_service(conn, name)
            for version_id in (serves.serving, serves.shadow):
                if version_id is None:
                    continue
                reason = await input_mismatch(conn, name, declared, version_id)
                if reason:
                    raise Incompatible(
                        f"the new input does not meet a version the service serves: {reason}",
                        field="input",
                    )
            await conn.execute(
                "UPDATE services SET input = %s, updated_at = now() WHERE name = %s",
                [_input_json(declared), name],
            )
    row = await get_service(conn, name)
    assert row is not None
    return row


async def delete_service(conn: AsyncConnection[Any], name: str) -> bool:
    """Delete a service; False if it did not exist."""
    cur = await conn.execute("DELETE FROM services WHERE name = %s", [name])
    return cur.rowcount > 0


async def assign(
    conn: AsyncConnection[Any],
    service: str,
    model_name: str,
    ref: str,
    shadow_ref: str | None = None,
) -> ServiceModels:
    """Make ``service`` serve ``model_name`` at ``ref`` (and ``shadow_ref`` in shadow);
    ``Incompatible`` when the input the service declares cannot meet either version."""
    async with conn.transaction():
        # Model row first, then the service's, in the order ``set_alias`` takes them.
        model = await _one(conn, "SELECT 1 FROM models WHERE name = %s FOR SHARE", [model_name])
        found = await _one(conn, "SELECT input FROM services WHERE name = %s FOR UPDATE", [service])
        if found is None:
            raise NotFound(f"service {service!r} not found", field="service")
        if model is None:
            raise NotFound(f"model {model_name!r} not found", field="model_name")
        serving = await resolve_ref(conn, model_name, ref)
        if serving is None:
            raise BadRef(f"{ref!r} is not a version or alias of {model_name!r}", field="ref")
        shadow = None
        if shadow_ref is not None:
            shadow = await resolve_ref(conn, model_name, shadow_ref)
            if shadow is None:
                raise BadRef(
                    f"{shadow_ref!r} is not a version or alias of {model_name!r}",
                    field="shadow_ref",
                )
        declared = parse_input(found["input"])
        for field, at, version_id in (("ref", ref, serving), ("shadow_ref", shadow_ref, shadow)):
            if version_id is None:
                continue
            reason = await input_mismatch(conn, service, declared, version_id)
            if reason:
                raise Incompatible(
                    f"{model_name!r} at {at!r} does not meet the input the service declares: "
                    f"{reason}",
                    field=field,
                )
        await conn.execute(
            """UPDATE services SET model_name = %s, model_ref = %s, shadow_ref = %s,
            updated_at = now() WHERE name = %s""",
            [model_name, ref, shadow_ref, service],
        )
    return ServiceModels(serving, shadow)


async def register_trained(
    conn: AsyncConnection[Any], model_name: str, trained: Any, *, code_version: str | None = None
) -> dict[str, Any]:
    """Register a ``neurostream.models.TrainedModel`` (training CLI, retraining jobs, tests)."""
    return await register_version(
        conn,
        model_name=model_name,
        family=trained.family,
        feature_pipeline=trained.feature_pipeline,
        feature_params=trained.feature_params,
        model_params=trained.model_params,
        input_spec=trained.input_spec,
        classes=trained.classes,
        metrics=trained.metrics,
        dataset_hash=trained.dataset_hash,
        code_version=code_version,
        artifact=trained.artifact,
    )


# --- canaries ----------------------------------------------------------------------------
# A service's canary (``neurostream.canary``): a version serving a share of its sessions.
# ``start_canary`` checks it as ``assign`` checks a ref; workers record each session's arm
# (``route_sessions``); ``conclude_canary`` ends it once, whoever asks first. The APIs read
# it (``require_canary``, ``canary_counts``) and announce a change (``canary_event``).

_CANARY_SELECT = """SELECT c.id, c.service, c.model_name, c.ref, c.version_id, v.version,
    c.champion_version_id, c.share, c.rule, c.status, c.reason, c.started_at, c.ended_at
    FROM canaries c JOIN model_versions v ON v.id = c.version_id"""


async def start_canary(
    conn: AsyncConnection[Any],
    service: str,
    ref: str,
    share: float,
    rule: Mapping[str, Any],
    *,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Start a canary of ``ref`` (of ``model_name``, by default the service's model) on
    ``share`` of the service's new sessions; the canary's row.

    ``Conflict`` when one is running or ``ref`` is the champion, ``Incompatible`` when the
    service's declared input cannot meet it, ``BadRef``/``NotFound`` as ``assign``."""
    problem = check_share(share)
    if problem:
        raise RegistryError(problem, field="share")
    async with conn.transaction():
        found = await _one(
            conn, "SELECT model_name, input FROM services WHERE name = %s", [service]
        )
        if found is None:
            raise NotFound(f"service {service!r} not found", field="service")
        name = model_name or found["model_name"]
        if name is None:
            raise Conflict(
                f"service {service!r} serves no model: assign its champion first "
                "(PUT /services/{name}/assign)",
                field="service",
            )
        # Lock order as in ``assign``: the model row, then the service's.
        if await _one(conn, "SELECT 1 FROM models WHERE name = %s FOR SHARE", [name]) is None:
            raise NotFound(f"model {name!r} not found", field="model_name")
        await conn.execute("SELECT 1 FROM services WHERE name = %s FOR UPDATE", [service])
        running = await _one(
            conn, f"{_CANARY_SELECT} WHERE c.service = %s AND c.status = 'running'", [service]
        )
        if running is not None:
            raise Conflict(
                f"service {service!r} already runs canary {running['id']} "
                f"({running['model_name']}:{running['version']}); stop it first "
                "(DELETE /services/{name}/canary)",
                field="service",
            )
        version_id = await resolve_ref(conn, name, ref)
        if version_id is None:
            raise BadRef(f"{ref!r} is not a version or alias of {name!r}", field="ref")
        champion = (await resolve_service(conn, service)).serving
        if champion is None:
            raise Conflict(
                f"service {service!r} has no resolvable champion: assign one first",
                field="service",
            )
        if champion == version_id:
            raise Conflict(f"{name!r} at {ref!r} is already the champion", field="ref")
        reason = await input_mismatch(conn, service, parse_input(found["input"]), version_id)
        if reason:
            raise Incompatible(
                f"{name!r} at {ref!r} does not meet the input the service declares: {reason}",
                field="ref",
            )
        row = await _one(
            conn,
            """INSERT INTO canaries (service, model_name, ref, version_id, champion_version_id,
                share, rule) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            [service, name, ref, version_id, champion, share, Jsonb(dict(rule))],
        )
    assert row is not None
    out = await get_canary(conn, service, canary_id=int(row["id"]))
    assert out is not None
    return out


async def get_canary(
    conn: AsyncConnection[Any], service: str, *, canary_id: int | None = None
) -> dict[str, Any] | None:
    """The service's latest canary (or ``canary_id``), whatever its status; None if none."""
    return await _one(
        conn,
        f"""{_CANARY_SELECT} WHERE c.service = %(s)s AND (%(id)s::int IS NULL OR c.id = %(id)s)
        ORDER BY c.id DESC LIMIT 1""",
        {"s": service, "id": canary_id},
    )


async def require_canary(conn: AsyncConnection[Any], service: str) -> dict[str, Any]:
    """The service's latest canary; ``NotFound`` when it never ran one (one message for
    every API that reads it)."""
    row = await get_canary(conn, service)
    if row is None:
        raise NotFound(f"service {service!r} has no canary", field="service")
    return row


async def canary_counts(conn: AsyncConnection[Any], canary_id: int) -> dict[str, int]:
    """A canary's sessions per arm (``canary``, ``champion``), the canary sessions that
    went back to the champion mid-session (``switched``) and the windows it raised on
    (``failed``)."""
    row = await _one(
        conn,
        """SELECT
        (SELECT count(*) FROM canary_sessions WHERE canary_id = %(c)s AND arm = 'canary')
            AS canary,
        (SELECT count(*) FROM canary_sessions WHERE canary_id = %(c)s AND arm = 'champion')
            AS champion,
        (SELECT count(*) FROM canary_sessions WHERE canary_id = %(c)s
            AND switch_seq IS NOT NULL) AS switched,
        (SELECT count(*) FROM canary_failures WHERE canary_id = %(c)s) AS failed""",
        {"c": canary_id},
    )
    assert row is not None
    return {k: int(v) for k, v in row.items()}


async def canary_event(
    conn: AsyncConnection[Any], event: EventName, row: Mapping[str, Any], reason: str
) -> CanaryEvent:
    """The ``models.events`` body for a change of ``row``'s state, naming the versions the
    service serves after it (the queue manager and the judge publish the same body)."""
    serving = await resolve_service(conn, str(row["service"]))
    return CanaryEvent(
        event=event,
        service=str(row["service"]),
        canary_id=int(row["id"]),
        version_id=int(row["version_id"]),
        serving_version_id=serving.serving,
        shadow_version_id=serving.shadow,
        reason=reason,
    )


async def route_sessions(
    conn: AsyncConnection[Any], canary: Mapping[str, Any], session_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The arm of each session, recorded the first time any replica asks.

    While the canary runs, a new session takes its hash's arm (``canary.arm_of``); once
    promoted, the new champion's (``canary``). A session the service already served with
    another version started before: it stays on the champion. After a rollback nothing is
    recorded (an unrecorded session is the champion's). Returns ``{session_id: {"arm",
    "switch_seq"}}`` for the recorded ones."""
    cid, service = int(canary["id"]), str(canary["service"])
    if canary["status"] != "rolled_back":
        running = canary["status"] == "running"
        arms = [arm_of(s, float(canary["share"])) if running else "canary" for s in session_ids]
        await conn.execute(
            """INSERT INTO canary_sessions (canary_id, session_id, service, arm, bucket)
            SELECT %(c)s, s.sid, %(svc)s,
                CASE WHEN EXISTS (SELECT 1 FROM predictions p WHERE p.session_id = s.sid
                    AND p.service = %(svc)s AND p.role = 'serving'
                    AND p.model_version_id <> %(v)s) THEN 'champion' ELSE s.arm END, s.b
            FROM unnest(%(sids)s::text[], %(arms)s::text[], %(b)s::float8[]) AS s(sid, arm, b)
            ON CONFLICT (canary_id, session_id) DO NOTHING""",
            {
                "c": cid,
                "svc": service,
                "v": int(canary["version_id"]),
                "sids": session_ids,
                "arms": arms,
                "b": [bucket(s) for s in session_ids],
            },
        )
    rows = await _all(
        conn,
        """SELECT session_id, arm, switch_seq FROM canary_sessions
        WHERE canary_id = %s AND session_id = ANY(%s)""",
        [cid, session_ids],
    )
    return {r["session_id"]: r for r in rows}


async def conclude_canary(
    conn: AsyncConnection[Any], canary_id: int, status: str, reason: str
) -> dict[str, Any] | None:
    """End a running canary, promoted or rolled back; its row, or None when it had ended.

    One transition whoever asks (replicas, the monitoring API, an operator): the first
    ``UPDATE ... WHERE status = 'running'`` wins. Promotion assigns the canary's version
    number (the version judged, even if its alias moved) as the service's champion, with
    ``assign``'s checks, in the same transaction."""
    if status not in ("promoted", "rolled_back"):
        raise ValueError(f"a canary ends promoted or rolled_back, not {status!r}")
    async with conn.transaction():
        row = await _one(
            conn,
            """UPDATE canaries SET status = %s, reason = %s, ended_at = now()
            WHERE id = %s AND status = 'running' RETURNING service, model_name, version_id""",
            [status, reason, canary_id],
        )
        if row is None:
            return None
        if status == "promoted":
            svc = await _one(
                conn, "SELECT shadow_ref FROM services WHERE name = %s", [row["service"]]
            )
            version = await _one(
                conn, "SELECT version FROM model_versions WHERE id = %s", [row["version_id"]]
            )
            assert svc is not None and version is not None
            await assign(
                conn, row["service"], row["model_name"], str(version["version"]), svc["shadow_ref"]
            )
    return await get_canary(conn, row["service"], canary_id=canary_id)


async def running_canary_id(conn: AsyncConnection[Any], service: str) -> int | None:
    """The service's running canary, or None (one index lookup: workers ask it for the
    sessions they have not seen, so one that missed ``canary_started`` routes them too)."""
    row = await _one(
        conn, "SELECT id FROM canaries WHERE service = %s AND status = 'running'", [service]
    )
    return None if row is None else int(row["id"])


async def hold_canary(conn: AsyncConnection[Any], canary_id: int) -> str | None:
    """The canary's status, its row share-locked to the end of the caller's transaction.

    A worker writes canary-scored rows after this in the same transaction: the canary
    cannot end (``conclude_canary`` waits for the lock) between the check and the write,
    so no canary row lands after a rollback that another replica committed."""
    row = await _one(conn, "SELECT status FROM canaries WHERE id = %s FOR SHARE", [canary_id])
    return None if row is None else str(row["status"])


async def record_canary_failures(
    conn: AsyncConnection[Any],
    canary_id: int,
    worker_id: str,
    windows: list[tuple[str, int]],
    reason: str,
) -> None:
    """Record the windows (session_id, seq) the canary raised on (a redelivery: no-op)."""
    await conn.execute(
        """INSERT INTO canary_failures (canary_id, session_id, seq, reason, worker_id)
        SELECT %s, s.sid, s.seq, %s, %s FROM unnest(%s::text[], %s::int[]) AS s(sid, seq)
        ON CONFLICT DO NOTHING""",
        [canary_id, reason, worker_id, [w[0] for w in windows], [w[1] for w in windows]],
    )


async def record_switches(
    conn: AsyncConnection[Any], canary_id: int, first_seq: Mapping[str, int]
) -> None:
    """Record where each canary session went back to the champion: the least seq seen."""
    if not first_seq:
        return
    await conn.execute(
        """UPDATE canary_sessions c SET switch_seq = LEAST(COALESCE(c.switch_seq, s.seq), s.seq),
            switched_at = COALESCE(c.switched_at, now())
        FROM unnest(%s::text[], %s::int[]) AS s(sid, seq)
        WHERE c.canary_id = %s AND c.session_id = s.sid AND c.arm = 'canary'""",
        [list(first_seq), list(first_seq.values()), canary_id],
    )
