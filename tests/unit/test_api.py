"""The one HTTP mapping of the error tree: any NeurostreamError is its status and message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from neurostream import errors, registry
from neurostream.api import service_app
from neurostream.settings import CoreSettings

RAISED: dict[str, errors.NeurostreamError] = {
    "missing": registry.NotFound("model 'm' not found", field="model_name"),
    "clash": errors.Conflict("alias 'champion' is still followed", field="alias"),
    "bad": errors.InvalidRequest("must be after the start", field="end"),
    "down": errors.DatabaseUnavailable.at("postgresql://u:pw@db/x", OSError("refused")),
    "teapot": errors.NeurostreamError("short and stout", status=418, hint="tip me over"),
}


@asynccontextmanager
async def _no_resources(_: FastAPI) -> AsyncIterator[None]:
    yield


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = service_app("errors_test", CoreSettings(), lifespan=_no_resources)

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise RAISED[name]

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        (
            "missing",
            404,
            {
                "detail": "model_name: model 'm' not found",
                "errors": [
                    {"field": "model_name", "message": "model 'm' not found", "type": "not_found"}
                ],
            },
        ),
        (
            "clash",
            409,
            {
                "detail": "alias: alias 'champion' is still followed",
                "errors": [
                    {
                        "field": "alias",
                        "message": "alias 'champion' is still followed",
                        "type": "conflict",
                    }
                ],
            },
        ),
        (
            "bad",
            422,
            {
                "detail": "end: must be after the start",
                "errors": [
                    {
                        "field": "end",
                        "message": "must be after the start",
                        "type": "invalid_request",
                    }
                ],
            },
        ),
        ("down", 503, {"detail": str(RAISED["down"]), "errors": []}),
        ("teapot", 418, {"detail": "short and stout", "errors": []}),
    ],
)
async def test_an_error_is_its_status_and_message(
    client: httpx.AsyncClient, name: str, status: int, body: dict[str, object]
) -> None:
    r = await client.get(f"/raise/{name}")
    assert (r.status_code, r.json()) == (status, body)


async def test_the_unavailable_detail_hides_the_password(client: httpx.AsyncClient) -> None:
    detail = (await client.get("/raise/down")).json()["detail"]
    assert detail.startswith("cannot reach PostgreSQL at postgresql://u:***@db/x: refused.")
    assert "pw" not in detail
