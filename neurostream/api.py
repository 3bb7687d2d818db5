"""What every neurostream HTTP service shares: app factory base, /health, /metrics, errors.

``service_app`` builds the FastAPI app a service's ``create_app`` extends: it stores the
``CoreSettings`` where ``neurostream.auth`` finds them, counts requests for Prometheus,
serves ``/health`` (running the checks the service registers on ``app.state``) and
``/metrics``, and turns bad input into a 4xx whose JSON ``detail`` names the field, so a
client error is never a 500. Every ``NeurostreamError`` a route raises becomes its
``status`` with its message here, once: services add error subclasses, never handlers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neurostream import __version__
from neurostream.errors import NeurostreamError
from neurostream.settings import CoreSettings

HealthCheck = Callable[[], Awaitable[None]]  # raises when the dependency is unhealthy

REQUESTS = Counter(
    "neurostream_http_requests_total", "HTTP requests served.", ["app", "method", "route", "status"]
)
LATENCY = Histogram(
    "neurostream_http_request_seconds", "HTTP request latency.", ["app", "method", "route"]
)
_LOCATIONS = {"body", "query", "path", "header", "cookie", "form"}


def _bounded_utc(value: datetime) -> datetime:
    """Naive times are UTC (comparing naive with aware raises); years outside 1970-9998 are
    refused, so arithmetic on a bound (``end - 1 h``) cannot overflow into a 500."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not 1970 <= value.year <= 9998:
        raise ValueError("must be between 1970 and 9998")
    return value


# Every time an API takes (query or body): ISO 8601 or Unix seconds, as pydantic parses them.
Timestamp = Annotated[datetime, AfterValidator(_bounded_utc)]


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx body: ``detail`` is a sentence naming the field when there is one."""

    detail: str
    errors: list[FieldError] = []


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    checks: dict[str, str]


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "metadata", "family")`` -> ``"metadata.family"``."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or "body"


def error_response(
    status: int, detail: str, errors: list[FieldError] | None = None
) -> JSONResponse:
    return JSONResponse(
        ErrorOut(detail=detail, errors=errors or []).model_dump(), status_code=status
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(field=field_name(e.get("loc", ())), message=e.get("msg", ""), type=e["type"])
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "invalid request"
    return error_response(422, detail, errors)


def _error_type(exc: NeurostreamError) -> str:
    """``InvalidUpload`` -> ``"invalid_upload"`` (snake case, like pydantic's error types)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


async def _neurostream_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NeurostreamError)
    if exc.field is None:
        return error_response(exc.status, exc.message)
    error = FieldError(field=exc.field, message=exc.message, type=_error_type(exc))
    return error_response(exc.status, f"{exc.field}: {exc.message}", [error])


async def _data_error(_: Request, exc: Exception) -> JSONResponse:
    # The database refused a value (NUL byte in text, number out of range): bad input.
    return error_response(422, f"invalid value: {str(exc).splitlines()[0]}")


async def _integrity_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(409, f"conflicts with existing data: {str(exc).splitlines()[0]}")


class _MetricsMiddleware:
    """Counts requests per route template (bounded label cardinality)."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app, self.name = app, name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            REQUESTS.labels(self.name, method, route, str(status)).inc()
            LATENCY.labels(self.name, method, route).observe(time.perf_counter() - start)


TOO_LARGE = "body: request body too large for this endpoint's upload limit; send a smaller body"


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A body over the limit found while it is read (a chunked upload: no Content-Length
    to refuse it up front) says what the up-front refusal says; other errors as FastAPI's."""
    if exc.status_code == 413:
        return JSONResponse(status_code=413, content=ErrorOut(detail=TOO_LARGE).model_dump())
    return await http_exception_handler(request, exc)


class _JsonTooLarge:
    """Starlette's body limiter answers a plain-text 413 before any route runs (when the
    Content-Length is over the limit); give clients the JSON ``detail`` of every other 4xx."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the plain-text body we replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                if ctype.startswith(b"text/plain"):
                    replaced = True
                    body = json.dumps(ErrorOut(detail=TOO_LARGE).model_dump()).encode()
                    headers = [
                        (k, v)
                        for k, v in message.get("headers", [])
                        if k not in (b"content-type", b"content-length")
                    ]
                    headers += [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ]
                    await send({**message, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
            await send(message)

        await self.app(scope, receive, send_wrapper)


class _ServiceApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside FastAPI's own body limiter, which sits outside user middleware.
        return _JsonTooLarge(super().build_middleware_stack())


def ops_router() -> APIRouter:
    """``/health`` and ``/metrics``; checks come from ``app.state.health_checks``."""
    router = APIRouter(tags=["ops"])

    @router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    async def health(request: Request, response: Response) -> HealthOut:
        checks: dict[str, HealthCheck] = getattr(request.app.state, "health_checks", {})
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"error: {exc}"
        ok = all(v == "ok" for v in results.values())
        response.status_code = 200 if ok else 503
        return HealthOut(
            status="ok" if ok else "degraded",
            service=request.app.title,
            version=__version__,
            checks=results,
        )

    @router.get("/metrics", response_class=Response, summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def service_app(
    name: str,
    core: CoreSettings,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    description: str = "",
    max_body_size: int | None = None,
) -> FastAPI:
    """The base app of a neurostream service, before its resource routers are added."""
    app = _ServiceApp(
        title=name,
        version=__version__,
        description=description,
        lifespan=lifespan,
        max_body_size=max_body_size,
        responses={422: {"model": ErrorOut}},
    )
    app.state.core = core
    app.state.health_checks = {}
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(NeurostreamError, _neurostream_error)
    app.add_exception_handler(psycopg.DataError, _data_error)
    app.add_exception_handler(psycopg.IntegrityError, _integrity_error)
    app.add_middleware(_MetricsMiddleware, name=name)
    app.include_router(ops_router())
    return app
