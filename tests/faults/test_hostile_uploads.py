"""Hostile model uploads against the real queue manager: each is a 4xx, nothing runs.

The app runs as ``tests/integration/test_queue_manager.py`` runs it (lifespan entered,
``httpx.AsyncClient`` over ``ASGITransport``, real PostgreSQL and RabbitMQ), but with the
default ``QueueManagerSettings``, so the upload limit under test is the shipped one. The
artifacts are ``tests.hostile_artifacts``'s: a function reference (``builtins.eval``, a
constructor call to ``os.system``, ``numpy.log``), a class of an unlisted module, a
truncated file, and a 100 MB one. Each test prints one ``HOSTILE`` line with the status
and the message (``pytest -s``).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import skops.io as sio

from neurostream import registry
from neurostream.settings import CoreSettings
from queue_manager.app import create_app
from queue_manager.settings import QueueManagerSettings
from tests import hostile_artifacts as hostile
from tests.factories import app_client, unique

pytestmark = pytest.mark.faults
MiB = 1024 * 1024
BOUNDARY = "h0stile-b0undary"


@pytest.fixture(scope="module")
async def qm(core: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An authorised client on the queue manager with its default settings."""
    app = create_app(core, QueueManagerSettings())
    async with app_client(app, core, base_url="http://qm", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def metadata() -> str:
    """What a real ``sklearn-pipeline`` upload declares; only the artifact is hostile."""
    return json.dumps(hostile.xdawn_pipeline_artifact().metadata())


def _report(case: str, r: httpx.Response) -> str:
    detail = r.json()["detail"]
    print(f"HOSTILE {case}: {r.status_code} {detail}")
    return str(detail)


async def _nothing_stored(pool: Any, name: str) -> None:
    async with pool.connection() as conn:
        assert await registry.get_model(conn, name) is None


async def test_a_real_pipeline_is_accepted(qm: httpx.AsyncClient, pool, metadata: str) -> None:
    """The control: the same metadata with an honest artifact is stored."""
    name = unique("byom")
    r = await qm.post(
        f"/models/{name}/versions",
        files={"artifact": ("m.skops", hostile.xdawn_pipeline_artifact().artifact)},
        data={"metadata": metadata},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["family"], r.json()["feature_pipeline"]) == ("sklearn-pipeline", "raw@1")


@pytest.mark.parametrize(
    ("case", "make", "named"),
    [
        ("builtins.eval", hostile.eval_reference, "builtins.eval"),
        ("unlisted class", hostile.unlisted_class, "tests.hostile_artifacts.Smuggled"),
        ("FunctionTransformer(numpy.log)", hostile.allowed_function_param, "numpy.log"),
        ("truncated", hostile.truncated, "artifact"),
    ],
)
async def test_a_hostile_artifact_is_422_naming_what_was_refused(
    qm: httpx.AsyncClient, pool, metadata: str, case: str, make: Callable[[], bytes], named: str
) -> None:
    name = unique("hostile")
    r = await qm.post(
        f"/models/{name}/versions",
        files={"artifact": ("m.skops", make())},
        data={"metadata": metadata},
    )
    detail = _report(case, r)
    assert r.status_code == 422, r.text
    assert detail.startswith("artifact: ") and named in detail, detail
    assert r.json()["errors"][0]["field"] == "artifact"
    await _nothing_stored(pool, name)


async def test_an_os_system_reference_is_422_and_its_command_never_runs(
    qm: httpx.AsyncClient, pool, metadata: str, tmp_path: Path
) -> None:
    proof = tmp_path / "pwned"
    artifact = hostile.os_system_reference(f"touch {proof}")
    # The control: skops itself, told to trust what the file names, runs the command.
    sio.loads(artifact, trusted=sio.get_untrusted_types(data=artifact))
    assert proof.exists(), "the crafted artifact is not a working exploit"
    proof.unlink()

    name = unique("hostile")
    r = await qm.post(
        f"/models/{name}/versions",
        files={"artifact": ("m.skops", artifact)},
        data={"metadata": metadata},
    )
    detail = _report("os.system", r)
    assert r.status_code == 422, r.text
    assert detail.startswith("artifact: ") and f"{os.system.__module__}.system" in detail
    assert not proof.exists(), "the upload ran the artifact's command"
    await _nothing_stored(pool, name)


def _multipart(artifact: bytes, metadata: str) -> tuple[bytes, bytes]:
    """The head (metadata part, artifact part header) and tail of a multipart body."""
    b = BOUNDARY.encode()
    head = (
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        + metadata.encode()
        + b"\r\n--"
        + b
        + b'\r\nContent-Disposition: form-data; name="artifact"; filename="m.skops"\r\n'
        + b"Content-Type: application/octet-stream\r\n\r\n"
    )
    return head, b"\r\n--" + b + b"--\r\n"


@pytest.mark.parametrize("declared_length", [True, False], ids=["content-length", "chunked"])
async def test_a_100_mb_artifact_is_413_before_its_body_is_read(
    qm: httpx.AsyncClient, pool, metadata: str, declared_length: bool
) -> None:
    limit = QueueManagerSettings().max_upload_bytes
    artifact = hostile.oversized(100 * MiB)
    assert len(artifact) >= 100 * MiB > limit
    head, tail = _multipart(artifact, metadata)
    total = len(head) + len(artifact) + len(tail)
    sent = 0

    async def body() -> AsyncIterator[bytes]:  # counts what the server pulled
        nonlocal sent
        view = memoryview(head + artifact + tail)
        for offset in range(0, total, MiB):
            chunk = bytes(view[offset : offset + MiB])
            sent += len(chunk)
            yield chunk

    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if declared_length:
        headers["Content-Length"] = str(total)
    name = unique("huge")
    r = await qm.post(f"/models/{name}/versions", content=body(), headers=headers)
    detail = _report(f"100 MB ({'Content-Length' if declared_length else 'chunked'})", r)
    print(f"HOSTILE 100 MB: sent {sent} of {total} bytes when the answer came (limit {limit})")
    assert r.status_code == 413, r.text
    assert "too large" in detail.lower()
    # Refused on the header alone, or at the first chunk past the limit: never read whole.
    assert sent <= (MiB if declared_length else limit + MiB) < total
    await _nothing_stored(pool, name)


async def test_the_upload_limit_is_a_setting(
    core: CoreSettings, pool, metadata: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``NEUROSTREAM_QM_MAX_UPLOAD_BYTES`` moves the limit: a 3 MiB artifact, under the
    default, is 413 on an app built with a 2 MiB limit."""
    monkeypatch.setenv("NEUROSTREAM_QM_MAX_UPLOAD_BYTES", str(2 * MiB))
    settings = QueueManagerSettings()
    assert (
        settings.max_upload_bytes
        == 2 * MiB
        < QueueManagerSettings.model_fields["max_upload_bytes"].get_default()
    )
    app = create_app(core, settings)
    async with app_client(app, core, base_url="http://qm", timeout=60) as client:
        name = unique("limit")
        r = await client.post(
            f"/models/{name}/versions",
            files={"artifact": ("m.skops", hostile.oversized(3 * MiB))},
            data={"metadata": metadata},
        )
    _report("3 MiB under a 2 MiB setting", r)
    assert r.status_code == 413
    await _nothing_stored(pool, name)
