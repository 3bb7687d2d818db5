"""Every write operation (POST/PUT/PATCH/DELETE) of every service refuses a request
without the bearer token with 401, found by walking each service's OpenAPI."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from fastapi.testclient import TestClient

from neurostream.settings import CoreSettings
from postman import services

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
TOKEN = "unit-test-token-0123456789"


@cache
def _spec(pkg: str) -> dict[str, Any]:
    return services.load(pkg).spec


def _writes() -> list[tuple[str, str, str]]:
    return [
        (pkg, method, path)
        for pkg in services.available()
        for method, path in services.operations(_spec(pkg))
        if method in WRITES
    ]


@pytest.fixture(scope="module")
def clients() -> dict[str, TestClient]:
    # No lifespan (no `with`): auth runs before any database dependency is needed.
    core = CoreSettings(api_token=TOKEN, _env_file=None)
    out = {}
    for pkg in services.available():
        app_module = __import__(f"{pkg}.app", fromlist=["create_app"])
        out[pkg] = TestClient(
            app_module.create_app(core, services.settings_class(pkg)()),
            raise_server_exceptions=False,
        )
    return out


def test_every_service_has_write_operations() -> None:
    by_service = {pkg for pkg, _, _ in _writes()}
    assert by_service == set(services.available())


@pytest.mark.parametrize(("pkg", "method", "path"), _writes())
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", "Basic abc"])
def test_write_without_the_token_is_401(
    clients: dict[str, TestClient], pkg: str, method: str, path: str, header: str | None
) -> None:
    url = re.sub(r"{(\w+)}", "1", path)
    headers = {"Authorization": header} if header else {}
    r = clients[pkg].request(method, url, headers=headers)
    assert r.status_code == 401, (pkg, method, path, r.status_code, r.text[:200])
    assert r.headers.get("www-authenticate") == "Bearer"
    assert "authorization" in r.json()["detail"]


@pytest.mark.parametrize(("pkg", "method", "path"), _writes())
def test_write_operations_declare_bearer_security(pkg: str, method: str, path: str) -> None:
    op = _spec(pkg)["paths"][path][method.lower()]
    assert op.get("security") == [{"HTTPBearer": []}], "documented in OpenAPI for clients"
