"""Security faults: writes without a token, SQL injection in text fields, oversized uploads.

Every service runs with its lifespan against the scratch database. A write without (or
with a wrong) bearer token gets 401; a SQL-injection string in any path, query or body
text field is stored verbatim or refused with a 4xx, never executed (every table survives
and the string round-trips); an upload over the limit gets 413 before it is read whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest

from neurostream.settings import CoreSettings
from tests.factories import app_client, unique
from tests.faults.test_api_fuzz import _apps

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
SERVICES = ["queue_manager", "ml_data_api", "retraining_api", "monitoring_api"]
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
INJECTIONS = [
    "x'); DROP TABLE services; --",
    "1' OR '1'='1",
    "'; TRUNCATE predictions, model_versions CASCADE; --",
    '"; DELETE FROM workers; --',
    "$$; DROP TABLE labels; $$",
]
LIMIT = 256 * 1024


@asynccontextmanager
async def client(core: CoreSettings, name: str, **headers: str) -> AsyncIterator[Any]:
    try:
        app = _apps(core)[name]()
    except ImportError as exc:
        pytest.skip(f"{name} not importable: {exc}")
    async with app_client(app, base_url="http://svc", timeout=30, headers=headers) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


def auth(core: CoreSettings) -> dict[str, str]:
    assert core.api_token is not None
    return {"Authorization": f"Bearer {core.api_token.get_secret_value()}"}


def _fill_path(path: str, value: str = "sec-x") -> str:
    out, i = "", 0
    while (j := path.find("{", i)) >= 0:
        k = path.index("}", j)
        name = path[j + 1 : k]
        is_int = name in {"version", "job_id", "id", "seq", "dataset_id", "rule_id", "alert_id"}
        out += path[i:j] + ("1" if is_int or name.endswith("_id") else value)
        i = k + 1
    return out + path[i:]


@pytest.mark.parametrize("name", SERVICES)
async def test_writes_without_a_token_are_refused(core: CoreSettings, name: str) -> None:
    refused: list[str] = []
    async with client(core, name) as c:
        for route_path, ops in c.app.openapi()["paths"].items():
            for method in sorted(m.upper() for m in ops if m.upper() in WRITES):
                path = _fill_path(route_path)
                for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
                    r = await c.request(method, path, json={}, headers=headers)
                    assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                    assert "authorization" in r.json()["detail"]
                refused.append(f"{method} {route_path}")
    print(f"\nSECURITY {name}: {len(refused)} write operations refused without a valid token")
    assert refused


def _example(schema: dict[str, Any], spec: dict[str, Any], text: str, depth: int = 0) -> Any:
    """A body that puts ``text`` in every string field (first enum value where there is one)."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        return _example(spec["components"]["schemas"][ref], spec, text, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            return _example(options[0], spec, text, depth + 1) if options else None
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if depth > 6:
            return {}
        return {
            k: _example(v, spec, text, depth + 1) for k, v in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [_example(schema.get("items", {}), spec, text, depth + 1)]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1.0)) or 1.0
    if kind == "boolean":
        return True
    return text


async def _tables(core: CoreSettings) -> set[str]:
    async with await psycopg.AsyncConnection.connect(core.database_url) as conn:
        rows = await (
            await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("name", SERVICES)
async def test_sql_injection_strings_are_stored_or_refused_never_executed(
    core: CoreSettings, name: str
) -> None:
    statuses: dict[int, int] = {}
    async with client(core, name, **auth(core)) as c:
        tables = await _tables(core)
        assert {"services", "predictions", "model_versions", "workers"} <= tables
        spec = c.app.openapi()
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                for text in INJECTIONS:
                    params = {
                        p["name"]: text
                        for p in op.get("parameters", [])
                        if p["in"] == "query" and p.get("schema", {}).get("type") == "string"
                    }
                    body = op.get("requestBody", {}).get("content", {})
                    kw: dict[str, Any] = {}
                    if "application/json" in body:
                        kw["json"] = _example(body["application/json"]["schema"], spec, text)
                    r = await c.request(method.upper(), _fill_path(path, text), params=params, **kw)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    assert r.status_code < 500, (method, path, text, r.status_code, r.text)
        assert await _tables(core) == tables, "an injection string changed the schema"
    print(f"\nSECURITY {name}: injection requests by status {dict(sorted(statuses.items()))}")


async def test_injection_strings_round_trip_verbatim(core: CoreSettings) -> None:
    """Free text is stored as given: the service description holds every payload."""
    async with client(core, "queue_manager", **auth(core)) as c:
        for text in INJECTIONS:
            svc = unique("sec")
            r = await c.post("/services", json={"name": svc, "description": text})
            assert r.status_code == 201, r.text
            assert (await c.get(f"/services/{svc}")).json()["description"] == text
            r = await c.put(f"/services/{svc}", json={"description": text[::-1]})
            assert r.status_code == 200 and r.json()["description"] == text[::-1]
            refused = await c.post("/services", json={"name": text, "description": "x"})
            assert refused.status_code == 422 and "name" in refused.json()["detail"]
    async with await psycopg.AsyncConnection.connect(core.database_url) as conn:
        stored = await (
            await conn.execute(
                "SELECT count(*) FROM services WHERE description = ANY(%s)",
                [[t[::-1] for t in INJECTIONS]],
            )
        ).fetchone()
    assert stored is not None and stored[0] == len(INJECTIONS)


class Stream(httpx.AsyncByteStream):
    """A large body that records how much of it the server pulled."""

    def __init__(self, total: int, prefix: bytes = b"", chunk: int = 16 * 1024) -> None:
        self.total, self.prefix, self.chunk, self.sent = total, prefix, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.prefix:
            self.sent += len(self.prefix)
            yield self.prefix
        while self.sent < self.total:
            n = min(self.chunk, self.total - self.sent)
            self.sent += n
            yield b"\0" * n


@pytest.mark.parametrize(
    ("name", "path", "content_type"),
    [
        ("queue_manager", "/models/sec-big/versions", "multipart/form-data; boundary=xyz"),
        ("ml_data_api", "/datasets/upload/npz", "multipart/form-data; boundary=xyz"),
        ("ml_data_api", "/datasets/upload", "application/json"),
    ],
)
async def test_uploads_over_the_limit_are_refused_before_being_read_whole(
    core: CoreSettings, name: str, path: str, content_type: str
) -> None:
    total = 16 * LIMIT
    for length_known in (True, False):
        # A well-formed start (a file part, or a JSON object) so only the size is wrong.
        prefix = (
            b'--xyz\r\nContent-Disposition: form-data; name="artifact"; filename="a.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
            if content_type.startswith("multipart")
            else b'{"name": "big", "rows": ['
        )
        body = Stream(total, prefix)
        headers = {"Content-Type": content_type}
        if length_known:
            headers["Content-Length"] = str(total)
        async with client(core, name, **auth(core)) as c:
            r = await c.post(path, content=body, headers=headers)
        print(
            f"\nSECURITY upload {name} {path} ({'with' if length_known else 'without'} "
            f"Content-Length): {r.status_code} after reading {body.sent} of {total} bytes"
        )
        assert r.status_code == 413, r.text
        assert r.json()["detail"], (r.headers, r.text)
        assert body.sent <= 2 * LIMIT, f"read {body.sent} bytes of a {total}-byte upload"
