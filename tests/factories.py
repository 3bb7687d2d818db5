"""Factories for test data: synthetic P300 epochs and trained models, and clients on apps."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

    from neurostream.contract import DecisionMessage
    from neurostream.settings import CoreSettings

FS = 250.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def synthetic_p300(
    n: int = 120, channels: int = 4, seed: int = 0, amplitude: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """Epochs [-0.1, 0.7) s at 250 Hz with a Gaussian bump at 300 ms on targets (y == 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.8 * FS)) / FS - 0.1
    y = (np.arange(n) % 3 == 0).astype(np.int64)
    x = rng.normal(0, 5, (n, channels, t.size)).astype(np.float32)
    x[y == 1] += (amplitude * np.exp(-((t - 0.3) ** 2) / (2 * 0.05**2))).astype(np.float32)
    return x, y


@asynccontextmanager
async def app_client(
    app: FastAPI,
    core: CoreSettings | None = None,
    *,
    base_url: str = "http://test",
    timeout: float = 60,
    headers: Mapping[str, str] | None = None,
    client: tuple[str, int] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on ``app`` with its lifespan entered, so the app runs as it does when served.

    With ``core`` the client sends its bearer token on every request; without it the
    client is unauthorised, for the tests that check what an anonymous caller gets.
    ``client`` is the peer address the app sees (``ASGITransport``'s default otherwise).
    """
    import httpx  # here, so that importing the factories stays light

    sent = dict(headers or {})
    if core is not None:
        assert core.api_token is not None
        sent["Authorization"] = f"Bearer {core.api_token.get_secret_value()}"
    transport = (
        httpx.ASGITransport(app=app)
        if client is None
        else httpx.ASGITransport(app=app, client=client)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=sent, timeout=timeout
        ) as http,
    ):
        yield http


@contextmanager
def served(app: Any, what: str) -> Iterator[str]:
    """``app`` under a real uvicorn in a thread on a free port, lifespan included: its base
    URL (``http://127.0.0.1:PORT``), for what talks to it over the network."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), f"the {what} failed to start"
        assert time.monotonic() < deadline, f"the {what} did not start in 60 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def decision_message(
    session_id: str, trial: int, rule: str = "fixed-10", **kw: Any
) -> DecisionMessage:
    """A ``DecisionMessage`` as the decider publishes it: symbol 8 ("I", row code 2, column
    code 9 of the default 6x6 grid) unless ``kw`` says otherwise; the last flash 0.8 s
    before the decision, its epoch's last sample 0.7 s after that flash."""
    from neurostream.contract import DecisionMessage

    event = kw.pop("last_event_t", 1_700_000_000.0 + 10.0 * trial)
    fields: dict[str, Any] = {
        "session_id": session_id,
        "service": "svc",
        "trial": trial,
        "rule": rule,
        "symbol_index": 8,
        "symbol": "I",
        "codes": [2, 9],
        "posterior": 0.97,
        "repetitions": 10,
        "epochs": 120,
        "model_version_ids": [3],
        "last_event_t": event,
        "last_sample_t": None if event is None else event + 0.7,
        "decided_at": (1_700_000_000.0 + 10.0 * trial if event is None else event) + 0.8,
        "evidence": {"2": 4.5, "9": 3.25, "1": -1.5},
    }
    return DecisionMessage(**(fields | kw))


class TcpProxy:
    """Forwards a local port to RabbitMQ; ``cut`` drops all connections and refuses new."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"
