"""The models a worker serves, swapped in memory without a restart.

The slot holds the serving model and an optional shadow model. ``sync`` loads what the
registry says the service should run; a version that fails to load (hash mismatch,
unknown feature pipeline, broken artifact) is refused and reported while the previous
model keeps serving. Swaps happen between batches: a batch reads ``current`` once.

A service's canary (``neurostream.canary``) is held beside them in ``canary``: the canary
version while it runs, the old champion while a promoted canary pins the sessions that
started on it, and the arm of each session seen (a cache of ``canary_sessions``, so the
hot path asks the database once per session, never per window).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from neurostream import registry
from neurostream.features import UnknownPipeline
from neurostream.models.artifacts import DEFAULT_POLICY, ArtifactError, ArtifactPolicy
from neurostream.models.serving import ServingModel
from workers import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Served:
    serving: ServingModel | None
    shadow: ServingModel | None = None

    @property
    def ids(self) -> tuple[int | None, int | None]:
        return (
            self.serving.version_id if self.serving else None,
            self.shadow.version_id if self.shadow else None,
        )


@dataclass(slots=True)
class CanaryServing:
    """A service's latest canary as this replica serves it (see ``ModelSlot.canary``)."""

    row: dict[str, Any]  # registry.get_canary's row, ``status`` kept current here
    model: ServingModel | None = None  # the canary version, running or pinning
    pinned: ServingModel | None = None  # promoted: the old champion its sessions keep
    load_error: str | None = None  # why the canary version did not load (a rollback)
    arms: dict[str, str] = field(default_factory=dict)  # session_id -> canary | champion
    switched: dict[str, int] = field(default_factory=dict)  # least switch seq recorded

    @property
    def id(self) -> int:
        return int(self.row["id"])

    @property
    def status(self) -> str:
        return str(self.row["status"])

    @property
    def routing(self) -> bool:
        """Whether sessions must be looked up: running, pinning, or switching back."""
        return self.status != "promoted" or self.pinned is not None

    def model_for(self, arm: str | None, champion: ServingModel) -> ServingModel:
        """The version a session of ``arm`` is served by now (None: not recorded)."""
        if self.status == "running" and arm == "canary" and self.model is not None:
            return self.model
        if self.status == "promoted" and self.pinned is not None:
            # Not ``champion``: while a replica swaps to the promoted version, neither arm
            # may see the other's version.
            return self.pinned if arm == "champion" else self.model or champion
        return champion


class ModelSlot:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        service: str,
        *,
        policy: ArtifactPolicy = DEFAULT_POLICY,  # ArtifactPolicy.from_settings(core)
    ):
        self._pool = pool
        self._service = service
        self._policy = policy
        self.current = Served(None)
        self.previous: Served | None = None
        self.last_error: str | None = None
        self.errors = 0
        # Versions that failed to load: not retried until the assignment changes.
        self._refused: set[int] = set()
        self._last_target: tuple[int | None, int | None] = (None, None)
        self._lock = asyncio.Lock()
        self.canary: CanaryServing | None = None

    async def sync(self) -> bool:
        """Load the service's assigned models (and canary) if they changed; True if a swap
        happened."""
        async with self._lock:
            # One snapshot: a promotion changes the assignment and the canary together.
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                wanted = await registry.resolve_service(conn, self._service)
                canary = await registry.get_canary(conn, self._service)
            swapped = await self._sync_served(wanted)
            return await self._sync_canary(canary, wanted.serving) or swapped

    async def _sync_served(self, wanted: registry.ServiceModels) -> bool:
        target = (wanted.serving, wanted.shadow)
        if target != self._last_target:
            self._refused.clear()  # a new assignment gets a fresh chance to load
            self._last_target = target
        if target == self.current.ids:
            return False
        serving = await self._load(target[0], self.current.serving)
        shadow = await self._load(target[1], self.current.shadow)
        new = Served(serving, shadow)
        if new.ids == self.current.ids:
            return False
        self.previous, self.current = self.current, new
        log.info(
            "service %s now serves %s (shadow %s)",
            self._service,
            serving.label if serving else None,
            shadow.label if shadow else None,
        )
        return True

    async def _load(self, version_id: int | None, keep: ServingModel | None) -> ServingModel | None:
        if version_id is None:
            return None
        if keep is not None and keep.version_id == version_id:
            return keep
        if version_id in self._refused:
            return keep
        async with self._pool.connection() as conn:
            row = await registry.fetch_version(conn, version_id)
        if row is None:
            return self._refuse(version_id, f"model version {version_id} not found", keep)
        try:
            return await asyncio.to_thread(ServingModel.from_row, row, policy=self._policy)
        except (ArtifactError, UnknownPipeline) as exc:
            return self._refuse(version_id, f"refused model version {version_id}: {exc}", keep)
        except Exception as exc:  # a broken artifact must not kill the worker
            return self._refuse(
                version_id, f"model version {version_id} failed to load: {exc!r}", keep
            )

    def _refuse(
        self, version_id: int, reason: str, keep: ServingModel | None
    ) -> ServingModel | None:
        log.error("%s; keeping %s", reason, keep.label if keep else "no model")
        self._refused.add(version_id)
        self.last_error = reason
        self.errors += 1
        metrics.MODELS_REFUSED.labels(self._service, "load").inc()
        return keep

    def fail_current(self, reason: str) -> bool:
        """The serving model raised on predict: fall back to the previous one if any."""
        self.last_error = reason
        self.errors += 1
        bad = self.current.serving
        if bad is not None:
            self._refused.add(bad.version_id)
            metrics.MODELS_REFUSED.labels(self._service, "predict").inc()
        if self.previous is not None and self.previous.serving is not None:
            log.error("%s; falling back to %s", reason, self.previous.serving.label)
            self.current, self.previous = self.previous, None
            return True
        return False

    async def _sync_canary(self, row: dict[str, Any] | None, serving: int | None) -> bool:
        """Follow the service's latest canary; True when what it serves changed."""
        before = self.canary
        if row is None:
            self.canary = None
            return before is not None
        same = before is not None and before.id == int(row["id"])
        canary = before if same and before is not None else CanaryServing(row)
        old = (canary.model, canary.pinned)
        status = str(row["status"])
        # Load first, then change the state with no await between: a batch (which reads
        # ``canary`` between awaits) never sees a new status without its models.
        loaded = (canary.model, canary.pinned, self.current.serving, self.previous_serving)
        model = pinned = None
        if status == "running":
            model = await self._reuse(int(row["version_id"]), loaded)
        # A promoted canary pins the sessions that started on the champion to it while the
        # service still serves the promoted version; another assignment ends the pin.
        elif status == "promoted" and serving == int(row["version_id"]):
            model = await self._reuse(int(row["version_id"]), loaded)
            pinned = await self._reuse(int(row["champion_version_id"]), loaded)
        canary.row, canary.model, canary.pinned = row, model, pinned
        if status == "running" and model is None:
            canary.load_error = self.last_error
        self.canary = canary
        changed = not same or old != (canary.model, canary.pinned)
        if changed:
            log.info(
                "service %s canary %s %s (canary %s, pinned %s)",
                self._service,
                canary.id,
                canary.status,
                canary.model.label if canary.model else None,
                canary.pinned.label if canary.pinned else None,
            )
        return changed

    @property
    def previous_serving(self) -> ServingModel | None:
        return self.previous.serving if self.previous is not None else None

    async def _reuse(
        self, version_id: int, loaded: tuple[ServingModel | None, ...]
    ) -> ServingModel | None:
        """A model already in memory for ``version_id``, else loaded (or refused: None)."""
        for model in loaded:
            if model is not None and model.version_id == version_id:
                return model
        return await self._load(version_id, None)

    def canary_rolled_back(self, canary_id: int, reason: str) -> None:
        """This replica stops routing to canary ``canary_id`` now (the registry says so
        already); a newer canary the slot follows meanwhile is left alone."""
        if self.canary is None or self.canary.id != canary_id:
            return
        self.canary.row = {**self.canary.row, "status": "rolled_back", "reason": reason}
        self.canary.model = None
        self.last_error = reason
        self.errors += 1
