"""Domain errors of the ML data API; the app turns them into 404 / 422 naming the field."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from neurostream.api import FieldError, error_response


class DataApiError(Exception):
    status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


class NotFound(DataApiError):
    status = 404


class Invalid(DataApiError):
    status = 422


async def handle(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataApiError)
    error = FieldError(field=exc.field, message=exc.message, type=type(exc).__name__.lower())
    return error_response(exc.status, f"{exc.field}: {exc.message}", [error])
