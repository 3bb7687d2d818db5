"""FastAPI dependencies: the process's pool and settings, taken from ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from monitoring_api.settings import MonitoringSettings


def _pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


def _settings(request: Request) -> MonitoringSettings:
    return request.app.state.settings


Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
Settings = Annotated[MonitoringSettings, Depends(_settings)]
