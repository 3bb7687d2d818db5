"""Helpers for the monitoring tests: a live API server, a webhook receiver, direct inserts,
and headless Chromium driven through chromedriver (W3C WebDriver over plain HTTP).

Archived windows, predictions and labels are inserted with SQL, as the archiver and the
workers write them, so a session's worth of data lands in milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI

from producer.shift import ChannelShift

FS, N_S, STEP_S = 250.0, 200, 0.25
CHANNELS = ["Fz", "Cz", "Pz", "Oz", "C3", "C4", "P3", "P4"]
Ints = Sequence[int] | np.ndarray  # the factories take lists or NumPy columns alike
Floats = Sequence[float] | np.ndarray

INSERT_WINDOWS = """
INSERT INTO windows (session_id, seq, window_ts, service, kind, marker, fs, n_channels,
    n_samples, data, channels)
SELECT %(session)s, q, to_timestamp(t0), %(service)s, 'epoch', 2, %(fs)s, %(c)s, %(s)s, d,
    %(channels)s::jsonb
FROM unnest(%(q)s::int[], %(t0)s::float8[], %(d)s::bytea[]) AS u(q, t0, d)
ON CONFLICT DO NOTHING
"""
INSERT_PREDICTIONS = """
INSERT INTO predictions (session_id, seq, model_version_id, window_ts, service, role, kind,
    predicted, score, proba, sent_at, worker_id)
SELECT %(session)s, q, %(version)s, to_timestamp(t0), %(service)s, 'serving', 'epoch',
    (p >= 0.5)::int, greatest(p, 1 - p), ARRAY[1 - p, p]::real[],
    clock_timestamp() - make_interval(secs => 0.02), 'w-test'
FROM unnest(%(q)s::int[], %(t0)s::float8[], %(p)s::float8[]) AS u(q, t0, p)
ON CONFLICT DO NOTHING
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` (lifespan included) on a free local port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(300):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the monitoring API did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real local HTTP server that records the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def session_stream(
    seconds: float, *, shift_after_s: float, shift_channels: Sequence[str], gain: float, seed: int
) -> np.ndarray:
    """A continuous recording (white noise + 10 Hz alpha) passed through the producer's shift."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    t = np.arange(n) / FS
    x = rng.normal(0, 8, (len(CHANNELS), n)) + 6 * np.sin(2 * np.pi * 10 * t)
    shift = ChannelShift(
        FS, CHANNELS, after_s=shift_after_s, shift_channels=shift_channels, gain=gain, seed=seed
    )
    return shift.apply(x.astype(np.float32), 0)


def cut(stream: np.ndarray, first: int, count: int) -> np.ndarray:
    """Epochs every ``STEP_S`` of ``N_S`` samples: ``[count, channels, N_S]``."""
    step = int(STEP_S * FS)
    return np.stack(
        [stream[:, (first + k) * step : (first + k) * step + N_S] for k in range(count)]
    )


async def insert_windows(
    conn: Any,
    service: str,
    session: str,
    x: np.ndarray,
    seqs: Ints,
    t0: Floats,
    channels: Sequence[str] = CHANNELS,
) -> None:
    await conn.execute(
        INSERT_WINDOWS,
        {
            "session": session,
            "service": service,
            "fs": FS,
            "c": x.shape[1],
            "s": x.shape[2],
            "channels": json.dumps(list(channels)),
            "q": list(seqs),
            "t0": list(t0),
            "d": [np.ascontiguousarray(w, dtype="<f4").tobytes() for w in x],
        },
    )


async def insert_predictions(
    conn: Any,
    service: str,
    session: str,
    seqs: Ints,
    t0: Floats,
    p: Floats,
    version: int = 1,
) -> None:
    await conn.execute(
        INSERT_PREDICTIONS,
        {
            "session": session,
            "service": service,
            "version": version,
            "q": list(seqs),
            "t0": list(t0),
            "p": [float(v) for v in p],
        },
    )


async def insert_labels(conn: Any, session: str, seqs: Ints, labels: Ints) -> None:
    await conn.execute(
        """INSERT INTO labels (session_id, seq, label) SELECT %s, q, l
        FROM unnest(%s::int[], %s::int[]) AS u(q, l) ON CONFLICT DO NOTHING""",
        [session, list(seqs), [int(v) for v in labels]],
    )


# The flags every headless run uses: no network of its own, a fixed 1400x900 screen.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
]


class Browser:
    """One headless Chromium page driven by chromedriver: navigate, run a script, screenshot."""

    def __init__(self, client: httpx.AsyncClient, session: str) -> None:
        self.client, self.session = client, session

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = await self.client.request(method, f"/session/{self.session}{path}", json=body)
        r.raise_for_status()
        return r.json()["value"]

    async def cdp(self, command: str, params: dict[str, Any]) -> Any:
        """A DevTools command through chromedriver's ``goog/cdp/execute``."""
        return await self._call("POST", "/goog/cdp/execute", {"cmd": command, "params": params})

    async def open(self, url: str) -> None:
        await self._call("POST", "/url", {"url": url})

    async def run(self, script: str, *args: Any) -> Any:
        """``script`` is a function body; ``return`` hands a JSON value back."""
        return await self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def until(self, script: str, wait_s: float = 30) -> Any:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if out := await self.run(script):
                return out
            await asyncio.sleep(0.2)
        shown = await self.run("return document.body.innerText.slice(0, 600)")
        raise AssertionError(f"the page never satisfied: {script}\npage: {shown}")

    async def screenshot(self, path: str) -> None:
        png = base64.b64decode(await self._call("GET", "/screenshot"))
        await asyncio.to_thread(Path(path).write_bytes, png)


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise AssertionError("chromium/chromedriver missing: run scripts/setup")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        driver,
        f"--port={port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        with tempfile.TemporaryDirectory() as profile:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                for _ in range(100):
                    try:
                        if (await c.get("/status")).json()["value"]["ready"]:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                options = {
                    "binary": chromium,
                    "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"],
                }
                caps = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
                r = await c.post("/session", json={"capabilities": caps})
                r.raise_for_status()
                session = r.json()["value"]["sessionId"]
                page = Browser(c, session)
                try:
                    # The window's frame takes part of --window-size: pin the viewport itself.
                    metrics = {
                        "width": 1400,
                        "height": 900,
                        "deviceScaleFactor": 1,
                        "mobile": False,
                    }
                    await page.cdp("Emulation.setDeviceMetricsOverride", metrics)
                    yield page
                finally:
                    await c.delete(f"/session/{session}")
    finally:
        proc.terminate()
        await proc.wait()
