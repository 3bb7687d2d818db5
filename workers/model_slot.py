"""The models a worker serves, swapped in memory without a restart.

The slot holds the serving model and an optional shadow model. ``sync`` loads what the
registry says the service should run; a version that fails to load (hash mismatch,
unknown feature pipeline, broken artifact) is refused and reported while the previous
model keeps serving. Swaps happen between batches: a batch reads ``current`` once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from neurostream import registry
from neurostream.features import UnknownPipeline
from neurostream.models.artifacts import DEFAULT_POLICY, ArtifactError, ArtifactPolicy
from neurostream.models.serving import ServingModel

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

    async def sync(self) -> bool:
        """Load the service's assigned models if they changed; True if a swap happened."""
        async with self._lock:
            async with self._pool.connection() as conn:
                wanted = await registry.resolve_service(conn, self._service)
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
        return keep

    def fail_current(self, reason: str) -> bool:
        """The serving model raised on predict: fall back to the previous one if any."""
        self.last_error = reason
        self.errors += 1
        bad = self.current.serving
        if bad is not None:
            self._refused.add(bad.version_id)
        if self.previous is not None and self.previous.serving is not None:
            log.error("%s; falling back to %s", reason, self.previous.serving.label)
            self.current, self.previous = self.previous, None
            return True
        return False
