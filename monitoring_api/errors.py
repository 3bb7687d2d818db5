"""Errors of the monitoring API: each names the field at fault and maps to a 4xx."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from neurostream.api import error_response


class MonitoringError(Exception):
    """Bad or unsatisfiable input; ``field`` names it, ``status`` is the HTTP code."""

    def __init__(self, message: str, *, field: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.status = field, status


class NotFound(MonitoringError):
    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message, field=field, status=404)


async def handle(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MonitoringError)
    return error_response(exc.status, f"{exc.field}: {exc}")
