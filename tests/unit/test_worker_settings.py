"""Worker settings that shape performance: the event loop and the native thread cap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvloop
from pydantic import ValidationError

from workers.settings import WorkerSettings


def test_uvloop_by_default_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEUROSTREAM_WORKER_EVENT_LOOP", raising=False)
    assert WorkerSettings().event_loop == "uvloop"
    monkeypatch.setenv("NEUROSTREAM_WORKER_EVENT_LOOP", "asyncio")
    assert WorkerSettings().event_loop == "asyncio"
    monkeypatch.setenv("NEUROSTREAM_WORKER_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="event_loop"):
        WorkerSettings()


@pytest.mark.parametrize("loop, expected", [("uvloop", uvloop.Loop), ("asyncio", None)])
def test_run_serves_on_the_configured_loop(
    monkeypatch: pytest.MonkeyPatch, loop: str, expected: type | None
) -> None:
    from workers import __main__ as entry

    async def fake_serve(core: object, settings: WorkerSettings) -> type:
        return type(asyncio.get_running_loop())

    monkeypatch.setattr(entry, "serve", fake_serve)
    got: Any = entry.run(None, WorkerSettings(event_loop=loop))  # type: ignore[arg-type]
    if expected is None:
        assert got is not uvloop.Loop and issubclass(got, asyncio.AbstractEventLoop)
    else:
        assert got is expected


def test_one_native_thread_per_worker_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEUROSTREAM_WORKER_COMPUTE_THREADS", raising=False)
    assert WorkerSettings().compute_threads == 1
    monkeypatch.setenv("NEUROSTREAM_WORKER_COMPUTE_THREADS", "-1")
    with pytest.raises(ValidationError, match="compute_threads"):
        WorkerSettings()
