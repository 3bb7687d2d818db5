"""FastAPI dependencies: the process's pool and settings, taken from ``app.state``."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from ml_data_api.settings import DataApiSettings


def _pool(request: Request) -> AsyncConnectionPool:
    return cast(AsyncConnectionPool, request.app.state.pool)


def _settings(request: Request) -> DataApiSettings:
    return cast(DataApiSettings, request.app.state.settings)


Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
Settings = Annotated[DataApiSettings, Depends(_settings)]
