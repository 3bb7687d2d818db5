"""The live WebSockets of the ML data API (predictions, decisions), served by uvicorn,
against the real RabbitMQ and PostgreSQL; one real worker feeding the predictions socket
and the LSL outlet together, and decisions reaching the decisions socket and outlet.

Stored predictions are written as a worker writes them (``write_predictions``); live ones
are published on ``eeg.predictions`` with the worker's body shape. Decisions are stored in
``decisions`` and published on ``eeg.decisions`` as the decider does. The client is the
``websockets`` library, as a Python front end would use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import time
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlparse

import aio_pika
import numpy as np
import pylsl
import pytest
from psycopg.types.json import Jsonb
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ml_data_api.archiver import INSERT as ARCHIVE
from ml_data_api.archiver import window_params
from ml_data_api.routers import live as live_router
from neurostream import infra, registry, topology
from neurostream.contract import (
    DecisionMessage,
    PredictionItem,
    PredictionMessage,
    WindowKind,
    encode,
    make_window,
)
from neurostream.geometry import EpochGeometry
from neurostream.models.training import train_model
from neurostream.results import PredictionRow, write_predictions
from neurostream.settings import CoreSettings
from producer.outlet import DecisionOutlet, PredictionOutlet, decision_source_id, source_id
from tests.factories import FS, decision_message, served, synthetic_p300, unique
from workers.settings import WorkerSettings
from workers.worker import Worker

pytestmark = pytest.mark.integration
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def ws_base(data_api: str) -> str:
    """The ML data API's WebSocket base URL: ``ws://...``."""
    return data_api.replace("http://", "ws://", 1)


@pytest.fixture
async def exchange(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractExchange:
    return await channel.get_exchange(topology.PREDICTIONS_EXCHANGE)


async def register(pool: Any, session: str, service: str) -> None:
    """The session's row, as the producer writes it when a session starts."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO sessions (session_id, service, board, fs, channels) "
            "VALUES (%s, %s, 'synthetic', 250, '[\"c0\"]')",
            [session, service],
        )


def row(session: str, seq: int, *, role: str = "serving", version: int = 3) -> PredictionRow:
    score = 0.2 + seq / 50
    return PredictionRow(
        session_id=session,
        seq=seq,
        model_version_id=version,
        t0=T0 + seq * 0.5,
        role=role,
        kind="epoch",
        marker=1 + seq % 2,
        predicted=int(score > 0.25),
        score=score,
        proba=[1 - score, score],
        sent_at=None,
    )


def live(seq: int, score: float) -> dict[str, Any]:
    """A prediction item as the worker publishes it."""
    return {
        "seq": seq,
        "model_version_id": 3,
        "predicted": 1,
        "score": score,
        "marker": None,
        "t0": T0 + seq * 0.5,
        "kind": "sliding",
        "fs": 250.0,
        "n_samples": 125,
        "tmin": None,
    }


async def publish(ex: Any, service: str, session: str, items: list[dict[str, Any]]) -> None:
    body = json.dumps({"session_id": session, "predictions": items}).encode()
    await ex.publish(aio_pika.Message(body), f"{service}.{session}")


async def receive(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in range(n)]


def live_queues(core: CoreSettings, session: str) -> list[str]:
    """The broker's queues of ``session``'s sockets, asked of ``rabbitmqctl``."""
    vhost = unquote(urlparse(core.amqp_url).path[1:])
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return [q for q in out if q.startswith(f"data.live.{session}.")]


async def until_queues(core: CoreSettings, session: str, n: int) -> None:
    for _ in range(60):
        if len(await asyncio.to_thread(live_queues, core, session)) == n:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"session {session} never had {n} live queue(s)")


async def test_stored_predictions_are_replayed_from_since_seq_then_live_ones_follow(
    core: CoreSettings, pool, ws_base: str, exchange
) -> None:
    service, session, other = unique("svc"), unique("s"), unique("s")
    await register(pool, session, service)
    await register(pool, other, service)
    async with pool.connection() as conn:
        stored = [row(session, s) for s in range(5)] + [row(session, 2, role="shadow", version=9)]
        await write_predictions(conn, service, "w-1", stored)
    async with connect(f"{ws_base}/sessions/{session}/predictions/live?since_seq=1") as ws:
        replayed = await receive(ws, 3)
        # The socket's queue was bound before the replay: these all arrive.
        await publish(exchange, service, session, [live(4, 0.5), live(5, 0.55), live(6, 0.6)])
        await publish(exchange, service, other, [live(7, 0.9)])  # another session's
        await publish(exchange, unique("svc"), session, [live(8, 0.7), live(7, 0.65)])
        followed = await receive(ws, 4)
    assert [m["seq"] for m in replayed] == [2, 3, 4]
    assert [m["model_version_id"] for m in replayed] == [3, 3, 3]  # serving only
    assert [m["score"] for m in replayed] == pytest.approx([0.24, 0.26, 0.28], abs=1e-6)
    assert replayed[0] == {
        "session_id": session,
        "seq": 2,
        "score": pytest.approx(0.24, abs=1e-6),
        "predicted": 0,
        "marker": 1,
        "model_version_id": 3,
        "t0": pytest.approx(T0 + 1.0, abs=1e-6),
        "kind": "epoch",
        "event_t": None,  # the session row records no epoch tmin: the event is not known
    }
    # seq 4 was stored and sent: its live copy is not sent again.
    assert [m["seq"] for m in followed] == [5, 6, 7, 8]
    assert [m["score"] for m in followed] == [0.55, 0.6, 0.65, 0.7]  # 7 is this session's
    assert {m["session_id"] for m in followed} == {session}
    assert followed[0]["marker"] is None and followed[0]["kind"] == "sliding"
    # A live sliding window's event_t: its last sample (125 samples at 250 Hz).
    assert [m["event_t"] for m in followed] == pytest.approx(
        [T0 + s * 0.5 + 124 / 250 for s in (5, 6, 7, 8)], abs=1e-6
    )


async def test_without_since_seq_only_live_predictions_come_and_leaving_drops_the_queue(
    core: CoreSettings, pool, ws_base: str, exchange
) -> None:
    service, session = unique("svc"), unique("s")
    await register(pool, session, service)
    async with pool.connection() as conn:
        await write_predictions(conn, service, "w-1", [row(session, s) for s in range(3)])
    async with connect(f"{ws_base}/sessions/{session}/predictions/live") as ws:
        await until_queues(core, session, 1)
        await publish(exchange, service, session, [live(4, 0.4), live(3, 0.3)])
        got = await receive(ws, 2)
    assert [(m["seq"], m["score"]) for m in got] == [(3, 0.3), (4, 0.4)]
    await until_queues(core, session, 0)


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("/sessions/{missing}/predictions/live", 4404, "does not exist"),
        ("/sessions/{known}/predictions/live?since_seq=x", 1008, "since_seq"),
        ("/sessions/{known}/predictions/live?since_seq=-2", 1008, "since_seq"),
        ("/sessions/{missing}/decisions/live", 4404, "does not exist"),
        ("/sessions/{known}/decisions/live?since_trial=x", 1008, "since_trial"),
        ("/sessions/{known}/decisions/live?since_trial=-2", 1008, "since_trial"),
    ],
)
async def test_a_socket_is_refused_with_a_code_and_a_reason(
    pool, ws_base: str, path: str, code: int, reason: str
) -> None:
    known, missing = unique("s"), unique("s")
    await register(pool, known, "svc")
    async with connect(ws_base + path.format(known=known, missing=missing)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 20)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code and reason in closed.value.rcvd.reason


async def test_a_real_workers_predictions_reach_the_lsl_outlet_and_the_socket(
    core: CoreSettings, pool, ws_base: str
) -> None:
    x, y = synthetic_p300(channels=4, seed=1)
    service, model, session = unique("svc"), unique("lda"), unique("s")
    async with pool.connection() as conn:
        await registry.register_trained(
            conn, model, train_model("sklearn-lda", x, y, FS), code_version="test"
        )
        await registry.create_service(conn, service)
        await registry.assign(conn, service, model, "1")
    await register(pool, session, service)
    offset = time.time() - pylsl.local_clock()
    outlet = PredictionOutlet(core.amqp_url, service, session, lsl_offset=offset)
    await outlet.start()
    worker = Worker(core, WorkerSettings(service=service, heartbeat_s=0.3))
    conn = await aio_pika.connect_robust(core.amqp_url)
    try:
        inlet = pylsl.StreamInlet(
            (await asyncio.to_thread(pylsl.resolve_byprop, "source_id", source_id(session), 1, 10))[
                0
            ],
            processing_flags=0,
        )
        await asyncio.to_thread(inlet.open_stream, 10)
        async with connect(f"{ws_base}/sessions/{session}/predictions/live?since_seq=-1") as ws:
            await until_queues(core, session, 1)
            await worker.start()
            ch = await conn.channel(publisher_confirms=True)
            await topology.declare_service(ch, service)
            windows_ex = await ch.get_exchange(topology.WINDOWS_EXCHANGE)
            now, n = time.time(), 12
            geometry = EpochGeometry.cut(-0.1, 0.7)
            events = [now - 5 + i * 0.3 for i in range(n)]
            xe, _ = synthetic_p300(n=n, channels=4, seed=7)
            published: list[float] = []
            for i in range(n):
                w = make_window(
                    xe[i],
                    session_id=session,
                    seq=i,
                    t0=events[i] - 0.1,  # 25 samples before the event at 250 Hz
                    fs=FS,
                    channels=[f"c{j}" for j in range(4)],
                    kind="epoch",
                    marker=1,
                    geometry=geometry,
                )
                body, headers = encode(w)
                published.append(time.time())
                await windows_ex.publish(
                    aio_pika.Message(body, headers=headers, message_id=f"{session}:{i}"), service
                )
            over_ws = await receive(ws, n)
            over_lsl = []
            for _ in range(n):
                sample, ts = await asyncio.to_thread(inlet.pull_sample, 20)
                assert sample is not None
                over_lsl.append((sample, ts, time.time()))
    finally:
        await worker.close()
        await outlet.close()
        await conn.close()
    async with pool.connection() as db:
        scores = dict(
            await (
                await db.execute(
                    "SELECT seq, score::float8 FROM predictions WHERE session_id = %s", [session]
                )
            ).fetchall()
        )
    assert [m["seq"] for m in over_ws] == list(range(n))
    assert [int(s[0]) for s, _, _ in over_lsl] == list(range(n))
    assert [m["score"] for m in over_ws] == [s[1] for s, _, _ in over_lsl]  # the same message
    assert [m["score"] for m in over_ws] == pytest.approx([scores[i] for i in range(n)], abs=1e-6)
    assert [ts for _, ts, _ in over_lsl] == pytest.approx([e - offset for e in events], abs=1e-6)
    assert {m["kind"] for m in over_ws} == {"epoch"}
    assert [m["t0"] for m in over_ws] == pytest.approx([e - 0.1 for e in events], abs=1e-6)
    # The socket's event_t is the instant the outlet stamps, on the wall clock.
    assert [m["event_t"] for m in over_ws] == pytest.approx(
        [ts + offset for _, ts, _ in over_lsl], abs=1e-6
    )
    assert [m["event_t"] for m in over_ws] == pytest.approx(events, abs=1e-6)
    delay = sorted(got - sent for (_, _, got), sent in zip(over_lsl, published, strict=True))
    print(
        f"\nwindow published -> prediction at the LSL inlet, through a worker: median "
        f"{1e3 * delay[n // 2]:.1f} ms, max {1e3 * delay[-1]:.1f} ms ({n} epochs, one burst)"
    )


async def test_replayed_rows_carry_event_t_from_the_session_row_and_the_archived_windows(
    pool, ws_base: str, exchange
) -> None:
    """An epoch's event from the session's fs and ``paradigm.epoch.tmin``; a sliding
    window's last sample from its archived window; null for a window never archived."""
    service, session = unique("svc"), unique("s")
    paradigm = {"kind": "none", "epoch": EpochGeometry.cut(-0.1, 0.7).describe()}
    event0, t1, t2 = T0 + 10.0, T0 + 11.0, T0 + 12.0
    rows = [
        # 256 Hz from -0.1 s: round(-25.6) = -26 samples before the event.
        replace(row(session, 0), t0=event0 - 26 / 256, kind="epoch"),
        replace(row(session, 1), t0=t1, kind="sliding", marker=None),
        replace(row(session, 2), t0=t2, kind="sliding", marker=None),
    ]
    archived = make_window(
        np.zeros((1, 256)), session_id=session, seq=1, t0=t1, fs=256.0, channels=["c0"]
    )
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO sessions (session_id, service, board, fs, channels, paradigm) "
            "VALUES (%s, %s, 'lsl', 256, '[\"c0\"]', %s)",
            [session, service, Jsonb(paradigm)],
        )
        await write_predictions(conn, service, "w-1", rows)
        await conn.execute(ARCHIVE, window_params([(service, archived)]))
    async with connect(f"{ws_base}/sessions/{session}/predictions/live?since_seq=-1") as ws:
        replayed = await receive(ws, 3)
        # The same epoch live, as the worker publishes it: the same event_t.
        msg = PredictionMessage(
            session_id=session,
            predictions=[
                PredictionItem(
                    seq=3,
                    model_version_id=3,
                    predicted=1,
                    score=0.9,
                    marker=2,
                    t0=event0 + 1.0 - 26 / 256,
                    kind=WindowKind.EPOCH,
                    fs=256.0,
                    n_samples=205,
                    tmin=-0.1,
                )
            ],
        )
        await exchange.publish(aio_pika.Message(msg.encode()), f"{service}.{session}")
        (followed,) = await receive(ws, 1)
    assert [m["seq"] for m in replayed] == [0, 1, 2]
    assert [m["event_t"] for m in replayed[:2]] == pytest.approx([event0, t1 + 255 / 256], abs=1e-6)
    assert replayed[2]["event_t"] is None
    assert followed["event_t"] == pytest.approx(event0 + 1.0, abs=1e-6)
    assert followed["t0"] == pytest.approx(event0 + 1.0 - 26 / 256, abs=1e-6)


async def test_a_socket_is_closed_with_a_reason_when_the_broker_is_unreachable(
    core: CoreSettings, pool
) -> None:
    """The API's own vhost is deleted under it: its robust connection cannot come back."""
    from ml_data_api.app import create_app
    from ml_data_api.settings import DataApiSettings

    vhost = f"ns_test_live_{unique('v')}"
    await asyncio.to_thread(infra.ensure_vhost, vhost)
    url = core.amqp_url.rsplit("/", 1)[0] + "/" + vhost
    session = unique("s")
    await register(pool, session, "svc")
    app = create_app(core.model_copy(update={"amqp_url": url}), DataApiSettings(consumers=False))
    try:
        with served(app, "ML data API on its own vhost") as base:
            path = base.replace("http://", "ws://", 1) + f"/sessions/{session}/predictions/live"
            async with connect(path) as ws:  # the broker is there: the socket stays open
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)
            await asyncio.to_thread(infra.delete_vhost, vhost)
            closed: ConnectionClosed | None = None
            for _ in range(40):  # until the API has seen its connection go
                async with connect(path) as ws:
                    try:
                        await asyncio.wait_for(ws.recv(), 0.5)
                    except ConnectionClosed as exc:
                        closed = exc
                        break
                    except TimeoutError:
                        continue
    finally:
        with contextlib.suppress(Exception):  # deleted above unless the test failed first
            await asyncio.to_thread(infra.delete_vhost, vhost)
    assert closed is not None, "the socket never noticed the broker had gone"
    frame = closed.rcvd  # None: dropped without a close frame (no code, no reason)
    assert frame is not None and frame.code == 1011
    assert "broker" in frame.reason and "unreachable" in frame.reason and "retry" in frame.reason


async def test_a_slow_client_whose_queue_overflows_is_logged_once(
    core: CoreSettings, pool, ws_base: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that stops reading (with a small receive buffer, so that a few MB fill the
    socket): the API's sends block, the queue reaches its ``QUEUE_MAX`` messages, the
    broker drops the oldest, and the API says so once."""
    caplog.set_level(logging.WARNING, logger=live_router.__name__)
    service, session = unique("svc"), unique("s")
    await register(pool, session, service)
    conn = await aio_pika.connect_robust(core.amqp_url)
    try:
        ch = await conn.channel(publisher_confirms=False)  # a flood, not a check of each
        ex = (await topology.declare_exchanges(ch))[topology.PREDICTIONS_EXCHANGE]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # no autotuning to MBs
        where = urlparse(ws_base)
        sock.connect((where.hostname, where.port))
        sock.setblocking(False)
        async with connect(
            f"{ws_base}/sessions/{session}/predictions/live",
            sock=sock,
            compression=None,  # deflate would shrink the repetitive JSON 10-fold
            max_queue=1,
            close_timeout=1,
        ) as ws:
            await until_queues(core, session, 1)
            # 40 bodies of 1000 predictions (~10 MB of socket messages) block the sends ...
            seq = 0
            for _ in range(40):
                await publish(ex, service, session, [live(seq + i, 0.5) for i in range(1000)])
                seq += 1000
            # ... then more single-prediction bodies than the prefetch and the queue hold.
            for _ in range(live_router.PREFETCH + live_router.QUEUE_MAX + 200):
                await publish(ex, service, session, [live(seq, 0.5)])
                seq += 1
            for _ in range(200):
                if any("reads too slowly" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(3 * live_router.WATCH_S)  # it does not repeat itself
            assert await ws.recv() is not None  # the socket still works for the client
    finally:
        await conn.close()
    warned = [r.getMessage() for r in caplog.records if "reads too slowly" in r.getMessage()]
    assert len(warned) == 1, warned
    assert session in warned[0] and str(live_router.QUEUE_MAX) in warned[0]
    assert "since_seq" in warned[0]


# --- decisions -----------------------------------------------------------------------------


async def store_decisions(pool: Any, decisions: list[DecisionMessage]) -> None:
    """Rows of ``decisions`` as the decider writes them before it publishes."""
    async with pool.connection() as conn:
        for d in decisions:
            await conn.execute(
                "INSERT INTO decisions (session_id, trial, rule, service, symbol_index, symbol, "
                "codes, posterior, repetitions, epochs, model_version_ids, evidence, "
                "last_event_at, last_sample_at, decided_at, worker_id) VALUES (%s, %s, %s, %s, "
                "%s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), "
                "to_timestamp(%s), 'decider-1')",
                [
                    d.session_id,
                    d.trial,
                    d.rule,
                    d.service,
                    d.symbol_index,
                    d.symbol,
                    d.codes,
                    d.posterior,
                    d.repetitions,
                    d.epochs,
                    d.model_version_ids,
                    Jsonb(d.evidence),
                    d.last_event_t,
                    d.last_sample_t,
                    d.decided_at,
                ],
            )


async def decisions_exchange(core: CoreSettings) -> tuple[Any, Any]:
    conn = await aio_pika.connect_robust(core.amqp_url)
    ch = await conn.channel(publisher_confirms=True)
    return conn, (await topology.declare_exchanges(ch))[topology.DECISIONS_EXCHANGE]


async def publish_decision(ex: Any, service: str, d: DecisionMessage) -> None:
    await ex.publish(aio_pika.Message(d.encode()), f"{service}.{d.session_id}")


async def test_stored_decisions_are_replayed_after_since_trial_then_live_ones_follow(
    core: CoreSettings, pool, ws_base: str
) -> None:
    service, session, other = unique("svc"), unique("s"), unique("s")
    await register(pool, session, service)
    posterior = "posterior-0.95-max10"
    stored = [
        decision_message(session, 0, service=service),
        decision_message(session, 1, service=service),
        decision_message(session, 2, posterior, service=service, repetitions=4, posterior=0.96),
        decision_message(session, 2, service=service, symbol_index=35, symbol="_", codes=[6, 12]),
    ]
    await store_decisions(pool, stored)
    conn, ex = await decisions_exchange(core)
    try:
        async with connect(f"{ws_base}/sessions/{session}/decisions/live?since_trial=0") as ws:
            replayed = await receive(ws, 3)
            # Bound before the replay: these all arrive; what was replayed is not sent again.
            await publish_decision(ex, service, stored[3])
            await publish_decision(ex, service, decision_message(other, 3))  # another session's
            await publish_decision(ex, service, decision_message(session, 1, posterior))  # stale
            await ex.publish(aio_pika.Message(b"{not json"), f"{service}.{session}")
            await publish_decision(ex, service, decision_message(session, 3, posterior))
            await publish_decision(ex, unique("svc"), decision_message(session, 3))
            await publish_decision(ex, service, decision_message(session, 3))  # redelivered
            await publish_decision(ex, service, decision_message(session, 4))
            followed = await receive(ws, 3)
    finally:
        await conn.close()
    assert [(m["trial"], m["rule"]) for m in replayed] == [
        (1, "fixed-10"),
        (2, "fixed-10"),
        (2, posterior),
    ]
    # A stored row is the decider's message again (its real posterior, read as float8).
    assert replayed[0] == json.loads(stored[1].encode()) | {"posterior": pytest.approx(0.97)}
    assert replayed[1]["symbol"] == "_" and replayed[1]["codes"] == [6, 12]
    assert replayed[2]["repetitions"] == 4
    assert replayed[2]["last_event_t"] == pytest.approx(stored[2].last_event_t, abs=1e-5)
    assert replayed[2]["last_sample_t"] == pytest.approx(stored[2].last_sample_t, abs=1e-5)
    assert replayed[2]["evidence"] == {"2": 4.5, "9": 3.25, "1": -1.5}
    assert [(m["trial"], m["rule"]) for m in followed] == [
        (3, posterior),
        (3, "fixed-10"),
        (4, "fixed-10"),
    ]
    assert {m["session_id"] for m in followed} == {session}


async def test_without_since_trial_only_live_decisions_come(
    core: CoreSettings, pool, ws_base: str
) -> None:
    service, session = unique("svc"), unique("s")
    await register(pool, session, service)
    await store_decisions(pool, [decision_message(session, 0, service=service)])
    conn, ex = await decisions_exchange(core)
    try:
        async with connect(f"{ws_base}/sessions/{session}/decisions/live") as ws:
            await until_queues(core, session, 1)
            assert any(".decisions." in q for q in live_queues(core, session))
            await publish_decision(ex, service, decision_message(session, 1))
            (got,) = await receive(ws, 1)
    finally:
        await conn.close()
    assert (got["trial"], got["symbol"]) == (1, "I")
    await until_queues(core, session, 0)


async def test_a_deciders_decisions_reach_the_lsl_outlet_and_the_socket_in_order(
    core: CoreSettings, pool, ws_base: str
) -> None:
    """Ten trials of a speller, two rules each, published as the decider publishes them (the
    dynamic rule first, after fewer repetitions): the same ten pairs, in trial order, reach
    a pylsl inlet and a WebSocket, each stamped at its last flash."""
    service, session = unique("svc"), unique("s")
    await register(pool, session, service)
    offset = time.time() - pylsl.local_clock()
    outlet = DecisionOutlet(core.amqp_url, service, session, lsl_offset=offset)
    await outlet.start()
    conn, ex = await decisions_exchange(core)
    now = time.time()
    sent = []
    for trial in range(10):
        dynamic = 2 + trial % 5
        for rule, reps in (("posterior-0.95-max10", dynamic), ("fixed-10", 10)):
            sent.append(
                decision_message(
                    session,
                    trial,
                    rule,
                    service=service,
                    symbol_index=trial,
                    symbol="ABCDEFGHIJ"[trial],
                    codes=[1 + trial // 6, 7 + trial % 6],
                    repetitions=reps,
                    last_event_t=now - 30 + trial * 2.5 + reps * 0.2,
                )
            )
    try:
        found = await asyncio.to_thread(
            pylsl.resolve_byprop, "source_id", decision_source_id(session), 1, 10
        )
        inlet = pylsl.StreamInlet(found[0], processing_flags=0)
        await asyncio.to_thread(inlet.open_stream, 10)
        async with connect(f"{ws_base}/sessions/{session}/decisions/live") as ws:
            await until_queues(core, session, 1)
            for d in sent:
                await store_decisions(pool, [d])  # stored, then published, as the decider
                await publish_decision(ex, service, d)
            over_ws = await receive(ws, len(sent))
        over_lsl = [await asyncio.to_thread(inlet.pull_sample, 10) for _ in sent]
    finally:
        await outlet.close()
        await conn.close()
    want = [(d.trial, d.repetitions) for d in sent]
    assert [(m["trial"], m["repetitions"]) for m in over_ws] == want
    assert [(int(s[0]), int(s[5])) for s, _ in over_lsl] == want
    assert [s[1:4] for s, _ in over_lsl] == [
        [float(d.symbol_index), *map(float, d.codes)] for d in sent
    ]
    assert [m["codes"] for m in over_ws] == [d.codes for d in sent]
    assert [ts for _, ts in over_lsl] == pytest.approx(
        [d.last_event_t - offset for d in sent if d.last_event_t is not None], abs=1e-6
    )
    assert [m["last_event_t"] for m in over_ws] == pytest.approx(
        [ts + offset for _, ts in over_lsl], abs=1e-6
    )
    # Reconnecting after trial 7 replays what the store holds of trials 8 and 9.
    async with connect(f"{ws_base}/sessions/{session}/decisions/live?since_trial=7") as ws:
        again = await receive(ws, 4)
    assert [(m["trial"], m["rule"]) for m in again] == [
        (8, "fixed-10"),
        (8, "posterior-0.95-max10"),
        (9, "fixed-10"),
        (9, "posterior-0.95-max10"),
    ]
