"""FastAPI dependencies: the process's pool, notifier, runner and settings from ``app.state``."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from neurostream.notify import Notifier
from retraining_api.runner import Runner
from retraining_api.settings import RetrainingSettings


def _pool(request: Request) -> AsyncConnectionPool:
    return cast(AsyncConnectionPool, request.app.state.pool)


def _notifier(request: Request) -> Notifier:
    return cast(Notifier, request.app.state.notifier)


def _runner(request: Request) -> Runner | None:
    return cast("Runner | None", request.app.state.runner)


def _settings(request: Request) -> RetrainingSettings:
    return cast(RetrainingSettings, request.app.state.settings)


Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
Notify = Annotated[Notifier, Depends(_notifier)]
RunnerDep = Annotated[Runner | None, Depends(_runner)]
Settings = Annotated[RetrainingSettings, Depends(_settings)]
