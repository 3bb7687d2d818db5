"""Factories for test data: synthetic P300 epochs and their windows, publishing them as a
producer does, in-process worker replicas, and clients on apps."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

    from neurostream.contract import DecisionMessage, Window
    from neurostream.models.training import TrainedModel
    from neurostream.settings import CoreSettings
    from workers.worker import Worker

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


def epoch_windows(
    x: np.ndarray,
    session_id: str,
    *,
    start: int = 0,
    period_s: float = 0.25,
    markers: Iterable[int] | None = None,
    **header: Any,
) -> list[Window]:
    """A window of kind ``epoch`` per row of ``x`` (channels c0, c1, ... at ``FS``): seqs
    from ``start``, onsets ``period_s`` apart from 1.7e9 s, marker 1 unless ``markers``
    gives each its own; ``header`` adds fields (``trial``)."""
    from neurostream.contract import make_window

    marks = [1] * len(x) if markers is None else list(markers)
    return [
        make_window(
            x[i],
            session_id=session_id,
            seq=start + i,
            t0=1.7e9 + (start + i) * period_s,
            fs=FS,
            channels=[f"c{j}" for j in range(x.shape[1])],
            kind="epoch",
            marker=marks[i],
            **header,
        )
        for i in range(len(x))
    ]


def p300_windows(session_id: str, start: int, n: int, channels: int = 4) -> list[Window]:
    """``n`` synthetic P300 epoch windows of a session from seq ``start``; the data is
    seeded by ``start``, so a session's later windows are not its earlier ones again."""
    x, _ = synthetic_p300(n=n, channels=channels, seed=start + 100)
    return epoch_windows(x, session_id, start=start)


async def publish_windows(
    channel: Any, service: str, items: Sequence[Window | tuple[bytes, dict[str, Any]]]
) -> None:
    """Publish on the windows exchange as a producer does (message id ``session:seq``),
    the service's queue declared first. An item is a window, or a (body, headers) pair a
    test encoded and tampered with."""
    import aio_pika

    from neurostream import topology
    from neurostream.contract import Window, encode

    await topology.declare_service(channel, service)
    ex = await channel.get_exchange(topology.WINDOWS_EXCHANGE)
    for item in items:
        body, headers = encode(item) if isinstance(item, Window) else item
        msg_id = f"{headers.get('session_id')}:{headers.get('seq')}"
        await ex.publish(aio_pika.Message(body, headers=headers, message_id=msg_id), service)


async def start_worker(
    core: CoreSettings, service: str, started: list[Worker], **settings: Any
) -> Worker:
    """An in-process worker replica of ``service`` (0.3 s heartbeats unless ``settings``
    say otherwise, so tests see its state soon), started and added to ``started``, which
    the ``workers`` fixture closes."""
    from workers.settings import WorkerSettings
    from workers.worker import Worker

    fields: dict[str, Any] = {"service": service, "heartbeat_s": 0.3} | settings
    w = Worker(core, WorkerSettings(**fields))
    await w.start()
    started.append(w)
    return w


def raising_artifact(trained: TrainedModel) -> bytes:
    """A valid, trusted sklearn artifact for ``trained``'s signature that passes the
    warm-up (so a worker loads it) but raises on predict on real EEG: a one-hot encoder
    that knows only the warm-up batch's feature values (``handle_unknown="error"``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from neurostream.features import get_pipeline
    from neurostream.models import artifacts
    from neurostream.models.serving import warm_up_batch

    x = warm_up_batch(trained.signature)
    features = get_pipeline(trained.feature_pipeline).transform(x, FS, trained.feature_params)
    clf = make_pipeline(OneHotEncoder(handle_unknown="error"), LogisticRegression())
    return artifacts.dump(clf.fit(features, [0, 1]), trained.family)


def queue_counts(core: CoreSettings, service: str) -> tuple[int, int]:
    """``svc.<service>``'s ready and unacknowledged messages, as the broker counts them
    (``rabbitmqctl list_queues``: exact, unlike the management API's sampled stats)."""
    import json
    import subprocess
    from urllib.parse import unquote, urlparse

    from neurostream import topology

    vhost = unquote(urlparse(core.amqp_url).path.lstrip("/")) or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_ready",
         "messages_unacknowledged", "--formatter", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for q in json.loads(out):
        if q["name"] == topology.service_queue(service):
            return int(q["messages_ready"]), int(q["messages_unacknowledged"])
    raise KeyError(f"queue {topology.service_queue(service)!r} not found")


async def settled(
    core: CoreSettings, service: str, workers: Sequence[Worker], seconds: float = 60
) -> None:
    """Wait until the service's queue has nothing ready or unacknowledged and the workers'
    processed counts stopped changing: whatever would be stored twice is stored by then."""
    deadline = time.monotonic() + seconds
    last: list[int] | None = None
    while True:
        counts = [w.counters.processed + w.counters.rejected for w in workers]
        ready, unacked = await asyncio.to_thread(queue_counts, core, service)
        if (ready, unacked) == (0, 0) and counts == last:
            return
        assert time.monotonic() < deadline, f"{ready} ready, {unacked} unacked after {seconds} s"
        last = counts
        await asyncio.sleep(0.2)


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
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"
