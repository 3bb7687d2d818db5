"""Workers against the real RabbitMQ and PostgreSQL: predict, dead-letter, swap, scale, stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import aio_pika
import numpy as np
import pytest
from prometheus_client import REGISTRY

from neurostream import registry, topology
from neurostream.contract import GatedItem, PredictionMessage, Window, encode, make_window
from neurostream.db import open_pool
from neurostream.events import publish_model_event
from neurostream.gate import Gate
from neurostream.geometry import EpochGeometry
from neurostream.models.serving import ServingModel
from neurostream.models.training import TrainedModel, train_model
from neurostream.settings import CoreSettings
from tests.factories import (
    FS,
    epoch_windows,
    p300_windows,
    publish_windows,
    start_worker,
    synthetic_p300,
    unique,
)
from workers.settings import WorkerSettings
from workers.worker import Worker

pytestmark = pytest.mark.integration
CHANNELS = 4


@pytest.fixture(scope="module")
def models() -> tuple[TrainedModel, TrainedModel]:
    x, y = synthetic_p300(channels=CHANNELS, seed=1)
    x2, y2 = synthetic_p300(channels=CHANNELS, seed=2)
    return train_model("sklearn-lda", x, y, FS), train_model("sklearn-lda", x2, y2, FS)


@pytest.fixture
async def service(pool, models) -> dict[str, Any]:
    """A fresh service serving version 1 of a fresh model (version 2 registered too)."""
    name, model = unique("svc"), unique("lda")
    async with pool.connection() as conn:
        v1 = await registry.register_trained(conn, model, models[0], code_version="test")
        v2 = await registry.register_trained(conn, model, models[1], code_version="test")
        await registry.create_service(conn, name)
        await registry.assign(conn, name, model, "1")
    return {"name": name, "model": model, "v1": v1["id"], "v2": v2["id"]}


async def wait_for(
    pool, query: str, params: Sequence[Any], expected: int, timeout: float = 20
) -> int:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        async with pool.connection() as conn:
            n = (await (await conn.execute(query, params)).fetchone())[0]
        if n >= expected:
            return n
        await asyncio.sleep(0.1)
    return n


COUNT = "SELECT count(*) FROM predictions WHERE session_id = %s"


async def test_each_window_gets_one_prediction_and_redeliveries_are_not_counted_twice(
    core, pool, service, channel, workers
) -> None:
    w = await start_worker(core, service["name"], workers)
    session = unique("s")
    windows = p300_windows(session, 0, 200)
    await publish_windows(channel, service["name"], windows + windows[:20])  # 20 duplicates
    assert await wait_for(pool, COUNT, [session], 200) == 200
    await asyncio.sleep(0.5)
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT count(DISTINCT seq), min(seq), max(seq), count(*) FILTER "
                "(WHERE model_version_id = %s), count(*) FILTER (WHERE sent_at IS NULL), "
                "avg(score) FILTER (WHERE marker = 1) FROM predictions WHERE session_id = %s",
                [service["v1"], session],
            )
        ).fetchone()
    assert rows[:5] == (200, 0, 199, 200, 0)
    assert w.counters.processed == 220 and w.counters.duplicates == 20
    # The worker's own share of the latency is timed for every window it settled.
    labels = {"service": service["name"]}
    count = REGISTRY.get_sample_value("neurostream_worker_processing_seconds_count", labels)
    total = REGISTRY.get_sample_value("neurostream_worker_processing_seconds_sum", labels)
    assert count == 220 and total is not None and 0 < total < 220 * 5.0
    # The synthetic epochs alternate target/non-target: predictions must follow the truth.
    async with pool.connection() as conn:
        scores = dict(
            await (
                await conn.execute(
                    "SELECT seq, score FROM predictions WHERE session_id = %s", [session]
                )
            ).fetchall()
        )
    _, y = synthetic_p300(n=200, channels=CHANNELS, seed=100)
    s = np.array([scores[i] for i in range(200)])
    assert s[y == 1].mean() > s[y == 0].mean() + 0.5


async def test_malformed_windows_are_dead_lettered_with_a_reason(
    core, pool, service, channel, workers
) -> None:
    w = await start_worker(core, service["name"], workers)
    session = unique("s")
    good = p300_windows(session, 0, 3)
    body, headers = encode(good[0])
    nan = good[1].data.copy()
    nan[0, 5] = np.nan
    bad: list[tuple[bytes, dict]] = [
        (body[:-8], {**headers, "seq": 10}),
        (np.full_like(nan, 0).tobytes()[:-4] + b"\x00\x00\xc0\x7f", {**headers, "seq": 11}),
        (body, {**headers, "seq": 12, "schema": 42}),
        encode(
            make_window(
                np.zeros((8, 200)),
                session_id=session,
                seq=13,
                t0=0,
                fs=FS,
                channels=[f"x{i}" for i in range(8)],
            )
        ),
        (body, {**headers, "seq": 14, "fs": 500.0}),
    ]
    await publish_windows(channel, service["name"], [good[0], *bad, good[1], good[2]])
    assert await wait_for(pool, COUNT, [session], 3) == 3
    dead = await channel.declare_queue(
        topology.dead_queue(service["name"]), durable=True, arguments={"x-queue-type": "quorum"}
    )
    reasons: dict[int, str] = {}
    for _ in range(50):
        msg = await dead.get(no_ack=True, fail=False)
        if msg is None:
            if len(reasons) == 5:
                break
            await asyncio.sleep(0.1)
            continue
        reasons[int(msg.headers["seq"])] = str(msg.headers[topology.REASON_HEADER])
    assert set(reasons) == {10, 11, 12, 13, 14}
    assert "needs" in reasons[10] and "NaN or Inf" in reasons[11]
    assert "unknown schema version 42" in reasons[12]
    assert "8 channels" in reasons[13] and "fs 500.0" in reasons[14]
    async with pool.connection() as conn:
        stored = await (
            await conn.execute(
                "SELECT seq, reason FROM rejections WHERE session_id = %s ORDER BY seq", [session]
            )
        ).fetchall()
    assert [s for s, _ in stored] == [10, 11, 12, 13, 14]
    assert w.counters.rejected == 5 and w.counters.processed == 3


async def test_model_swap_mid_stream_without_restart_or_loss(
    core, pool, service, channel, workers
) -> None:
    w = await start_worker(core, service["name"], workers)
    session = unique("s")
    await publish_windows(channel, service["name"], p300_windows(session, 0, 100))
    assert await wait_for(pool, COUNT, [session], 100) == 100
    async with pool.connection() as conn:
        await registry.assign(conn, service["name"], service["model"], "2")
    t0 = time.monotonic()
    await publish_model_event(channel, service["name"], service["v2"], None, "test")
    slot = w.slot
    assert slot is not None
    while slot.current.ids[0] != service["v2"] and time.monotonic() - t0 < 5:
        await asyncio.sleep(0.02)
    swap_s = time.monotonic() - t0
    assert slot.current.ids == (service["v2"], None), "no swap within 5 s"
    await publish_windows(channel, service["name"], p300_windows(session, 100, 100))
    assert await wait_for(pool, COUNT, [session], 200) == 200
    async with pool.connection() as conn:
        by_version = dict(
            await (
                await conn.execute(
                    "SELECT model_version_id, count(*) FROM predictions WHERE session_id = %s "
                    "GROUP BY 1",
                    [session],
                )
            ).fetchall()
        )
        late = await (
            await conn.execute(
                "SELECT DISTINCT model_version_id FROM predictions WHERE session_id = %s "
                "AND seq >= 100",
                [session],
            )
        ).fetchall()
    assert by_version == {service["v1"]: 100, service["v2"]: 100}
    assert late == [(service["v2"],)]
    assert swap_s < 5


async def test_a_model_that_cannot_load_is_refused_and_the_previous_keeps_serving(
    core, pool, service, channel, models, workers
) -> None:
    w = await start_worker(core, service["name"], workers)
    async with pool.connection() as conn:
        bad = await registry.register_trained(conn, service["model"], models[1])
        await conn.execute(
            "UPDATE model_versions SET feature_pipeline = 'erp@99' WHERE id = %s", [bad["id"]]
        )
        await registry.assign(conn, service["name"], service["model"], str(bad["version"]))
    await publish_model_event(channel, service["name"], bad["id"], None, "test")
    deadline = time.monotonic() + 5
    slot = w.slot
    assert slot is not None
    while slot.last_error is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert slot.last_error and "erp@99" in slot.last_error
    assert slot.current.ids == (service["v1"], None)
    session = unique("s")
    await publish_windows(channel, service["name"], p300_windows(session, 0, 10))
    assert await wait_for(pool, COUNT, [session], 10) == 10
    await asyncio.sleep(0.7)  # a heartbeat reports the refusal
    async with pool.connection() as conn:
        hb = await (
            await conn.execute(
                "SELECT model_version_id, errors, last_error FROM workers WHERE worker_id = %s",
                [w.settings.worker_id],
            )
        ).fetchone()
    assert hb[0] == service["v1"] and hb[1] >= 1 and "erp@99" in hb[2]


async def test_two_replicas_share_the_queue_and_sigterm_finishes_in_flight_work(
    core, pool, service, channel, workers
) -> None:
    a = await start_worker(core, service["name"], workers, prefetch=32, batch_max=8)
    b = await start_worker(core, service["name"], workers, prefetch=32, batch_max=8)
    session = unique("s")
    await publish_windows(channel, service["name"], p300_windows(session, 0, 600))
    while a.counters.processed + b.counters.processed < 100:
        await asyncio.sleep(0.01)
    await a.close()  # graceful stop mid-stream: unacked windows go back to the queue
    assert await wait_for(pool, COUNT, [session], 600, timeout=30) == 600
    async with pool.connection() as conn:
        distinct = (
            await (
                await conn.execute(
                    "SELECT count(DISTINCT seq) FROM predictions WHERE session_id = %s", [session]
                )
            ).fetchone()
        )[0]
        status = (
            await (
                await conn.execute(
                    "SELECT status FROM workers WHERE worker_id = %s", [a.settings.worker_id]
                )
            ).fetchone()
        )[0]
    assert distinct == 600 and status == "stopped"
    assert a.counters.processed > 0 and b.counters.processed > 0
    assert a.counters.processed + b.counters.processed - b.counters.duplicates >= 600


async def test_predictions_are_published_for_closed_loops(
    core, pool, service, channel, workers
) -> None:
    q = await channel.declare_queue(exclusive=True)
    await q.bind(topology.PREDICTIONS_EXCHANGE, routing_key=f"{service['name']}.#")
    await start_worker(core, service["name"], workers)
    session = unique("s")
    await publish_windows(channel, service["name"], p300_windows(session, 0, 5))
    seen: list[int] = []
    deadline = time.monotonic() + 10
    while len(seen) < 5 and time.monotonic() < deadline:
        msg = await q.get(no_ack=True, fail=False)
        if msg is None:
            await asyncio.sleep(0.05)
            continue
        body = json.loads(msg.body)
        assert body["session_id"] == session
        seen += [p["seq"] for p in body["predictions"]]
    assert sorted(seen) == [0, 1, 2, 3, 4]


async def test_queue_depth_metric_follows_the_queue(
    core: CoreSettings, pool, channel, workers
) -> None:
    name = unique("idle")  # a service with no model: its worker does not consume
    async with pool.connection() as conn:
        await registry.create_service(conn, name)
    w = await start_worker(core, name, workers)
    session = unique("s")

    async def sampled() -> float:
        await asyncio.sleep(0.2)
        depth = await w.sample_queue_depth()
        gauge = REGISTRY.get_sample_value("neurostream_worker_queue_depth", {"service": name})
        assert gauge is not None and gauge == depth
        return gauge

    await publish_windows(channel, name, p300_windows(session, 0, 3))
    assert await sampled() == 3
    await publish_windows(channel, name, p300_windows(session, 3, 5))
    assert await sampled() == 8  # not the first sample again


async def ready_in(core: CoreSettings, service: str) -> int:
    """Ready messages in the service queue (unacked ones are not counted).

    A plain connection: a robust channel that declared the queue answers a passive declare
    from its own record.
    """
    async with await aio_pika.connect(core.amqp_url) as conn:
        ch = await conn.channel()
        q = await ch.declare_queue(topology.service_queue(service), passive=True)
        return int(q.declaration_result.message_count or 0)


async def test_close_writes_and_acks_the_windows_in_flight_and_loses_none(
    core, pool, service, channel
) -> None:
    n = 2000
    session = unique("s")
    # queued before the worker starts
    await publish_windows(channel, service["name"], p300_windows(session, 0, n))
    w = Worker(core, WorkerSettings(service=service["name"], prefetch=256, batch_max=16))
    await w.start()
    deadline = time.monotonic() + 20
    while not (w.counters.processed and w.pending):
        assert time.monotonic() < deadline, "the worker never held windows in flight"
        await asyncio.sleep(0.005)
    processed, in_flight = w.counters.processed, w.pending
    await w.close()
    assert w.counters.processed >= processed + in_flight  # what it held was settled
    written = await wait_for(pool, COUNT, [session], 1)
    assert written == w.counters.processed < n  # it stopped mid-stream
    # Every written window was acked (none comes back) and every other one is queued again.
    deadline = time.monotonic() + 10
    while written + await ready_in(core, service["name"]) != n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert written + await ready_in(core, service["name"]) == n
    assert w.connection is not None and w.connection.is_closed  # its own: closed
    async with pool.connection() as conn:
        status = await (
            await conn.execute(
                "SELECT status, processed FROM workers WHERE worker_id = %s",
                [w.settings.worker_id],
            )
        ).fetchone()
    assert status == ("stopped", written)


@pytest.mark.parametrize("how", ["request_stop", "handle_signal", "SIGTERM"])
async def test_a_stop_request_ends_run_after_a_clean_close(
    core, pool, service, channel, how: str
) -> None:
    w = Worker(core, WorkerSettings(service=service["name"], heartbeat_s=0.3))
    if how == "SIGTERM":
        assert w.install_signal_handlers()  # pytest runs the loop in the main thread
        assert w.install_signal_handlers()  # the second call installs nothing more
    run = asyncio.create_task(w.run())
    query = "SELECT count(*) FROM workers WHERE worker_id = %s AND status = %s"
    assert await wait_for(pool, query, [w.settings.worker_id, "running"], 1) == 1
    session = unique("s")
    await publish_windows(channel, service["name"], p300_windows(session, 0, 10))
    assert await wait_for(pool, COUNT, [session], 10) == 10
    assert not run.done()
    if how == "request_stop":
        w.request_stop()
    elif how == "handle_signal":
        w.handle_signal(signal.SIGTERM)
    else:
        os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(run, 30)
    assert w.stopping and w.connection is not None and w.connection.is_closed
    assert await wait_for(pool, query, [w.settings.worker_id, "stopped"], 1) == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers given back
    assert await ready_in(core, service["name"]) == 0


async def test_an_injected_pool_and_connection_are_used_and_left_open(
    core, service, channel
) -> None:
    own_pool = await open_pool(core.database_url, max_size=2, autocommit=True)
    own_conn = await aio_pika.connect_robust(core.amqp_url)
    try:
        w = Worker(
            core,
            WorkerSettings(service=service["name"], heartbeat_s=0.3),
            pool=own_pool,
            connection=own_conn,
        )
        await w.start()
        session = unique("s")
        await publish_windows(channel, service["name"], p300_windows(session, 0, 20))
        assert await wait_for(own_pool, COUNT, [session], 20) == 20
        await w.close()
        await w.close()  # a second close waits for the same shutdown, then returns
        assert w.pool is own_pool and w.connection is own_conn
        assert not own_conn.is_closed and not own_pool.closed
        async with own_pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT status, processed FROM workers WHERE worker_id = %s",
                    [w.settings.worker_id],
                )
            ).fetchone()
        assert row == ("stopped", 20)
        # The worker's channels are closed (so nothing stays unacked on them); the caller's
        # connection still opens new ones.
        probe = await own_conn.channel()
        assert not probe.is_closed
        await probe.close()
        assert await ready_in(core, service["name"]) == 0
    finally:
        await own_conn.close()
        await own_pool.close()


# -- channels by name ---------------------------------------------------------------------
NAMES = [f"c{j}" for j in range(CHANNELS)]  # what p300_windows() names its channels


@pytest.fixture(scope="module")
def named_model() -> TrainedModel:
    x, y = synthetic_p300(channels=CHANNELS, seed=1)
    return train_model("sklearn-lda", x, y, FS, channels=NAMES, tmin=-0.1, tmax=0.7)


@pytest.fixture
async def named_service(pool, named_model) -> dict[str, Any]:
    """A fresh service serving a model version that records its channel names."""
    name, model = unique("svc"), unique("lda")
    async with pool.connection() as conn:
        v1 = await registry.register_trained(conn, model, named_model, code_version="test")
        await registry.create_service(conn, name)
        await registry.assign(conn, name, model, "1")
    return {"name": name, "model": model, "v1": v1["id"]}


def renamed(windows: Sequence[Window], order: Sequence[int], extra: int = 0) -> list[Window]:
    """The same windows with their rows (and names) in ``order``, after ``extra`` AUX rows."""
    rng = np.random.default_rng(7)
    out = []
    for w in windows:
        h = w.header
        aux = rng.normal(0, 100, (extra, h.n_samples))
        out.append(
            make_window(
                np.concatenate([aux, w.data[list(order)]]),
                session_id=h.session_id,
                seq=h.seq,
                t0=h.t0,
                fs=h.fs,
                channels=[f"AUX{k}" for k in range(extra)] + [h.channels[i] for i in order],
                kind=h.kind,
                marker=h.marker,
            )
        )
    return out


async def scores(pool, session: str) -> dict[int, tuple[float, list[float]]]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT seq, score, proba FROM predictions WHERE session_id = %s", [session]
            )
        ).fetchall()
    return {seq: (score, list(proba)) for seq, score, proba in rows}


async def dead_reasons(channel: Any, service: str, n: int) -> dict[int, str]:
    dead = await channel.declare_queue(
        topology.dead_queue(service), durable=True, arguments={"x-queue-type": "quorum"}
    )
    reasons: dict[int, str] = {}
    deadline = time.monotonic() + 10
    while len(reasons) < n and time.monotonic() < deadline:
        msg = await dead.get(no_ack=True, fail=False)
        if msg is None:
            await asyncio.sleep(0.05)
            continue
        reasons[int(msg.headers["seq"])] = str(msg.headers[topology.REASON_HEADER])
    return reasons


async def test_windows_are_matched_by_channel_name_reordered_or_with_extra_channels(
    core, pool, named_service, named_model, channel, workers
) -> None:
    w = await start_worker(core, named_service["name"], workers)
    ordered, reordered, extra = unique("s"), unique("s"), unique("s")
    base = p300_windows(ordered, 0, 40)
    await publish_windows(channel, named_service["name"], base)
    await publish_windows(
        channel, named_service["name"], renamed(p300_windows(reordered, 0, 40), [2, 0, 3, 1])
    )
    # An AUX column the model never saw is dropped at serving time, whatever its position.
    await publish_windows(
        channel, named_service["name"], renamed(p300_windows(extra, 0, 40), [3, 2, 1, 0], extra=2)
    )
    for session in (ordered, reordered, extra):
        assert await wait_for(pool, COUNT, [session], 40) == 40
    a, b, c = [await scores(pool, s) for s in (ordered, reordered, extra)]
    assert sorted(a) == sorted(b) == sorted(c) == list(range(40))
    for seq in range(40):
        assert b[seq][0] == pytest.approx(a[seq][0], abs=1e-6)
        assert c[seq][0] == pytest.approx(a[seq][0], abs=1e-6)
        np.testing.assert_allclose(b[seq][1], a[seq][1], atol=1e-6)
        np.testing.assert_allclose(c[seq][1], a[seq][1], atol=1e-6)
    assert w.counters.rejected == 0 and w.counters.processed == 120
    serving = w.slot.current.serving if w.slot is not None else None
    assert serving is not None and serving.version_id == named_service["v1"]
    assert serving.signature.channels == tuple(NAMES) and serving.signature.tmin == -0.1
    # The same scores the training code gives offline on the windows in order.
    x, _ = synthetic_p300(n=40, channels=CHANNELS, seed=100)
    offline = ServingModel.from_row(named_model.to_row(model_name="offline")).predict(x, FS)
    np.testing.assert_allclose([a[s][0] for s in range(40)], offline.score, atol=1e-6)


async def test_a_missing_channel_wrong_fs_or_length_is_dead_lettered_with_expected_and_got(
    core, pool, named_service, channel, workers
) -> None:
    w = await start_worker(core, named_service["name"], workers)
    session = unique("s")
    good = p300_windows(session, 0, 5)
    x = good[0].data
    bad = [
        make_window(
            x[[0, 2, 3]], session_id=session, seq=10, t0=0, fs=FS, channels=["c0", "c2", "c3"]
        ),
        make_window(
            np.vstack([x[[0, 3]], x[[0, 3]]]),
            session_id=session,
            seq=11,
            t0=0,
            fs=FS,
            channels=["c0", "c3", "AUX", "Fz"],
        ),
        make_window(x, session_id=session, seq=12, t0=0, fs=500.0, channels=NAMES),
        make_window(x[:, :100], session_id=session, seq=13, t0=0, fs=FS, channels=NAMES),
    ]
    await publish_windows(channel, named_service["name"], [*good[:2], *bad, *good[2:]])
    assert await wait_for(pool, COUNT, [session], 5) == 5
    reasons = await dead_reasons(channel, named_service["name"], 4)
    label = f"{named_service['model']}:1"
    assert reasons == {
        10: f"window lacks channel c1 that model {label} needs (window has c0, c2, c3)",
        11: f"window lacks channels c1, c2 that model {label} needs (window has c0, c3, AUX, Fz)",
        12: f"window fs 500.0 Hz, expected 250.0 Hz (model {label})",
        13: f"window has 100 samples, expected 200 (model {label})",
    }
    async with pool.connection() as conn:
        stored = await (
            await conn.execute(
                "SELECT seq, reason FROM rejections WHERE session_id = %s ORDER BY seq", [session]
            )
        ).fetchall()
    assert dict(stored) == reasons
    assert w.counters.rejected == 4 and w.counters.processed == 5


async def test_a_version_without_channel_names_is_matched_by_count(
    core, pool, service, channel, workers, models
) -> None:
    assert models[0].input_spec["channels"] is None
    await start_worker(core, service["name"], workers)
    session = unique("s")
    windows = p300_windows(session, 0, 3)
    # Names are not read: other names in the same order score the same.
    other = [
        make_window(
            w.data, session_id=session, seq=w.header.seq + 10, t0=0, fs=FS, channels=list("WXYZ")
        )
        for w in windows
    ]
    five = make_window(
        np.vstack([windows[0].data, windows[0].data[:1]]),
        session_id=session,
        seq=20,
        t0=0,
        fs=FS,
        channels=[*NAMES, "AUX"],
    )
    await publish_windows(channel, service["name"], [*windows, *other, five])
    assert await wait_for(pool, COUNT, [session], 6) == 6
    got = await scores(pool, session)
    for seq in range(3):
        assert got[seq + 10][0] == pytest.approx(got[seq][0], abs=1e-9)
    reasons = await dead_reasons(channel, service["name"], 1)
    assert reasons == {20: f"window has 5 channels, expected 4 (model {service['model']}:1)"}


async def test_gated_epochs_are_stored_with_their_reason_and_not_scored_once_each(
    core, pool, channel, workers
) -> None:
    """A version that records a gate: an epoch over 100 µV peak-to-peak (or flat) is stored
    in ``gated`` with its reason and channels, no prediction; the others are scored; a
    redelivery stores it once; the worker counts it (counters, heartbeat, metric)."""
    x, y = synthetic_p300(channels=CHANNELS, seed=1)
    trained = train_model("sklearn-lda", x, y, FS, gate=Gate())
    name, model = unique("svc"), unique("gated")
    async with pool.connection() as conn:
        v = await registry.register_trained(conn, model, trained, code_version="test")
        await registry.create_service(conn, name)
        await registry.assign(conn, name, model, "1")
    w = await start_worker(core, name, workers)
    session = unique("s")
    windows = p300_windows(session, 0, 40)
    blink, flat, both = windows[5].data.copy(), windows[17].data.copy(), windows[30].data.copy()
    blink[2, 50:70] += 300.0
    flat[0] = 0.1 * np.sign(np.sin(np.arange(flat.shape[1])))  # std ~0.1 µV on c0
    both[1, 10] = 500.0
    both[3, 11] = -200.0
    for i, data in ((5, blink), (17, flat), (30, both)):
        h = windows[i].header
        windows[i] = make_window(
            data,
            session_id=session,
            seq=h.seq,
            t0=h.t0,
            fs=FS,
            channels=list(h.channels),
            kind="epoch",
            marker=1,
        )
    await publish_windows(channel, name, windows + windows[:10] + [windows[17]])  # redeliveries
    gated_count = "SELECT count(*) FROM gated WHERE session_id = %s"
    assert await wait_for(pool, COUNT, [session], 37) == 37
    assert await wait_for(pool, gated_count, [session], 3) == 3
    for _ in range(50):  # every delivery settled (the redeliveries too)
        if w.counters.processed == 51:
            break
        await asyncio.sleep(0.1)
    async with pool.connection() as conn:
        gated = await (
            await conn.execute(
                "SELECT seq, model_version_id, role, reason, channels, marker, service, "
                "extract(epoch FROM window_ts)::float8 FROM gated WHERE session_id = %s "
                "ORDER BY seq",
                [session],
            )
        ).fetchall()
        scored = await (
            await conn.execute(
                "SELECT array_agg(seq ORDER BY seq) FROM predictions WHERE session_id = %s",
                [session],
            )
        ).fetchone()
    assert [g[0] for g in gated] == [5, 17, 30]
    assert {(g[1], g[2], g[5], g[6]) for g in gated} == {(v["id"], "serving", 1, name)}
    assert gated[0][3].startswith("peak-to-peak ") and gated[0][3].endswith(" µV on c2 > 100 µV")
    assert gated[0][4] == ["c2"]
    assert gated[1][3].startswith("flat c0 (std 0.") and gated[1][4] == ["c0"]
    assert " µV on c1, " in gated[2][3] and " µV on c3 > 100 µV" in gated[2][3]
    assert gated[2][4] == ["c1", "c3"]
    assert abs(gated[2][7] - windows[30].header.t0) < 1e-3
    assert scored[0] == [i for i in range(40) if i not in (5, 17, 30)]  # no prediction row
    assert w.counters.gated == 5  # two of them delivered twice: counted as handled, stored once
    assert w.counters.processed == 51 and w.counters.rejected == 0
    metric = REGISTRY.get_sample_value("neurostream_worker_gated_total", {"service": name})
    assert metric == 5
    await asyncio.sleep(0.5)  # a heartbeat
    async with pool.connection() as conn:
        (beat,) = await (
            await conn.execute(
                "SELECT gated FROM workers WHERE worker_id = %s", [w.settings.worker_id]
            )
        ).fetchone()
    assert beat == 5


async def test_trials_and_gated_epochs_are_published_and_the_trial_stored(
    core, pool, channel, workers
) -> None:
    """A speller's epochs carry their trial: the worker stores it with each prediction and
    publishes it, and publishes the serving version's gated epochs (seq, trial, marker,
    reason) in the same message, so a decider counts every flash of a repetition."""
    x, y = synthetic_p300(channels=CHANNELS, seed=1)
    trained = train_model("sklearn-lda", x, y, FS, gate=Gate())
    name, model = unique("svc"), unique("trials")
    async with pool.connection() as conn:
        await registry.register_trained(conn, model, trained, code_version="test")
        await registry.create_service(conn, name)
        await registry.assign(conn, name, model, "1")
    q = await channel.declare_queue(exclusive=True)
    await q.bind(topology.PREDICTIONS_EXCHANGE, routing_key=f"{name}.#")
    await start_worker(core, name, workers)
    session = unique("s")
    # one repetition of a 6x6 speller's 12 codes in trial 2, the flash of code 5 blinked
    data, _ = synthetic_p300(n=12, channels=CHANNELS, seed=7)
    data[4, 1, 40:60] += 300.0
    windows = epoch_windows(data, session, period_s=0.175, markers=range(1, 13), trial=2)
    await publish_windows(channel, name, windows)
    predicted: dict[int, tuple[int | None, int | None]] = {}
    gated: list[GatedItem] = []
    deadline = time.monotonic() + 10
    while len(predicted) + len(gated) < 12 and time.monotonic() < deadline:
        msg = await q.get(no_ack=True, fail=False)
        if msg is None:
            await asyncio.sleep(0.05)
            continue
        message = PredictionMessage.decode(msg.body)
        assert message.session_id == session
        predicted |= {p.seq: (p.trial, p.marker) for p in message.predictions}
        gated += message.gated
    assert predicted == {i: (2, i + 1) for i in range(12) if i != 4}
    assert [(g.seq, g.trial, g.marker) for g in gated] == [(4, 2, 5)]
    assert gated[0].reason.startswith("peak-to-peak ") and gated[0].reason.endswith(
        "on c1 > 100 µV"
    )
    assert await wait_for(pool, COUNT, [session], 11) == 11
    async with pool.connection() as conn:
        trials = await (
            await conn.execute(
                "SELECT array_agg(DISTINCT trial) FROM predictions WHERE session_id = %s",
                [session],
            )
        ).fetchone()
    assert trials[0] == [2]


# -- erp@2: epochs from the filtered stream only -------------------------------------------
STREAM = EpochGeometry(-0.1, 0.7, (-0.1, 0.0), "1-30@4")


async def test_an_erp2_version_scores_filtered_epochs_and_dead_letters_the_others(
    core, pool, channel, workers
) -> None:
    x, y = synthetic_p300(channels=CHANNELS, seed=2)
    trained = train_model(
        "sklearn-lda", x, y, FS, pipeline="erp@2", channels=NAMES, geometry=STREAM
    )
    assert trained.feature_params == {"target_fs": 64.0, "stream_filter": "1-30@4"}
    assert trained.input_spec["baseline"] == [-0.1, 0.0]
    name, model = unique("svc"), unique("erp2")
    async with pool.connection() as conn:
        await registry.register_trained(conn, model, trained, code_version="test")
        await registry.create_service(conn, name)
        await registry.assign(conn, name, model, "1")
    w = await start_worker(core, name, workers)
    session = unique("s")
    data, _ = synthetic_p300(n=6, channels=CHANNELS, seed=3)

    def window(seq: int, geometry: EpochGeometry | None) -> Window:
        return make_window(
            data[seq], session_id=session, seq=seq, t0=1.7e9 + seq, fs=FS, channels=NAMES,
            kind="epoch", marker=1, geometry=geometry,
        )  # fmt: skip

    other = EpochGeometry(-0.1, None, (-0.1, 0.0), "0.1-40@2")
    shifted = EpochGeometry(-0.2, None, (-0.2, 0.0), "1-30@4")
    sent = [window(0, STREAM), window(1, None), window(2, other), window(3, shifted)]
    sent += [window(4, STREAM), window(5, STREAM)]
    await publish_windows(channel, name, sent)
    assert await wait_for(pool, COUNT, [session], 3) == 3
    reasons = await dead_reasons(channel, name, 3)
    assert sorted(reasons) == [1, 2, 3]
    assert reasons[1].startswith("erp@2 expects epochs cut from a stream filtered 1-30@4, ")
    assert "came unfiltered: run the producer with --filter 1-30@4" in reasons[1]
    assert "came filtered 0.1-40@2" in reasons[2]
    assert "starts at -0.2 s" in reasons[3] and "from -0.1 s" in reasons[3]
    got = await scores(pool, session)
    expected = ServingModel.from_row(trained.to_row(model_name=model)).predict(
        data[[0, 4, 5]], FS, channels=NAMES, geometry=STREAM
    )
    assert sorted(got) == [0, 4, 5]
    for seq, score in zip([0, 4, 5], expected.score.tolist(), strict=True):
        assert got[seq][0] == pytest.approx(score, abs=1e-6)
    assert w.counters.rejected == 3
