"""FastAPI dependencies: the process's pool and notifier, taken from ``app.state``."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from neurostream.models.artifacts import ArtifactPolicy
from neurostream.notify import Notifier
from queue_manager.settings import QueueManagerSettings


def _pool(request: Request) -> AsyncConnectionPool:
    return cast(AsyncConnectionPool, request.app.state.pool)


def _notifier(request: Request) -> Notifier:
    return cast(Notifier, request.app.state.notifier)


def _settings(request: Request) -> QueueManagerSettings:
    return cast(QueueManagerSettings, request.app.state.settings)


def _policy(request: Request) -> ArtifactPolicy:
    return cast(ArtifactPolicy, request.app.state.artifact_policy)


Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
Notify = Annotated[Notifier, Depends(_notifier)]
Settings = Annotated[QueueManagerSettings, Depends(_settings)]
# What an uploaded artifact may contain: the operator's NEUROSTREAM_TRUSTED_MODULES, limits
Policy = Annotated[ArtifactPolicy, Depends(_policy)]
