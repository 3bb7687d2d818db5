"""The LSL prediction outlet against the real RabbitMQ and a real pylsl inlet.

Prediction messages are published on ``eeg.predictions`` as JSON with the keys the worker
writes (``neurostream.contract.PredictionMessage``, whose wire format is checked here too);
an inlet resolved by the outlet's source id receives them as an experiment would.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import aio_pika
import pylsl
import pytest

from neurostream import topology
from neurostream.contract import ContractError, PredictionItem, PredictionMessage
from neurostream.settings import CoreSettings
from producer.outlet import CHANNELS, PredictionOutlet, source_id
from tests.factories import unique
from tests.lsl_support import channel_labels, open_inlet

pytestmark = pytest.mark.integration


@pytest.fixture
async def exchange(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractExchange:
    return await channel.get_exchange(topology.PREDICTIONS_EXCHANGE)


async def publish(ex: Any, service: str, session: str, items: list[dict[str, Any]]) -> None:
    """One message as ``workers.worker.Worker._publish`` sends it."""
    body = json.dumps({"session_id": session, "predictions": items}).encode()
    await ex.publish(
        aio_pika.Message(body, content_type="application/json"), f"{service}.{session}"
    )


def item(seq: int, t0: float, kind: str, fs: float, n: int, tmin: float | None, **kw: Any):
    marker = kw.pop("marker", 2 if kind == "epoch" else None)
    return {
        "seq": seq,
        "model_version_id": kw.pop("model_version_id", 7),
        "predicted": kw.pop("predicted", seq % 2),
        "score": kw.pop("score", 0.1 + seq / 100),
        "marker": marker,
        "t0": t0,
        "kind": kind,
        "fs": fs,
        "n_samples": n,
        "tmin": tmin,
    }


def epoch(seq: int, t0: float) -> dict[str, Any]:
    """An epoch's item at 250 Hz, 200 samples from -0.1 s, as most tests publish."""
    return item(seq, t0, "epoch", 250.0, 200, -0.1)


def pull(inlet: pylsl.StreamInlet, n: int) -> list[tuple[list[float], float, float]]:
    """``n`` samples with their LSL timestamps and the wall time each arrived."""
    out: list[tuple[list[float], float, float]] = []
    for _ in range(n):
        sample, ts = inlet.pull_sample(timeout=10)
        assert sample is not None, f"only {len(out)} of {n} samples arrived"
        out.append((sample, ts, time.time()))
    return out


async def test_the_outlet_pushes_a_sessions_predictions_in_order_on_the_lsl_clock(
    core: CoreSettings, exchange
) -> None:
    service, session, other = unique("svc"), unique("s"), unique("s")
    offset = time.time() - pylsl.local_clock() + 0.25  # a producer's offset, given
    outlet = PredictionOutlet(core.amqp_url, service, session, lsl_offset=offset)
    await outlet.start()
    try:
        inlet = await asyncio.to_thread(open_inlet, source_id(session))
        info = inlet.info()
        assert channel_labels(info) == list(CHANNELS)
        assert (info.type(), info.channel_count(), info.nominal_srate()) == ("Predictions", 6, 0)
        assert info.desc().child_value("session_id") == session

        now = time.time()
        # Epochs at 250 Hz from -0.1 s: event = t0 + 25 samples. Published out of order.
        events = {0: now - 3.0, 1: now - 2.5, 2: now - 2.0}
        first = [epoch(s, events[s] - 0.1) for s in (2, 0, 1)]
        # Sliding windows at 256 Hz (stamp: last sample), and an epoch at 256 Hz from
        # -0.1 s: round(-25.6) = -26 samples before the event.
        slide_t0 = {3: now - 1.5, 4: now - 1.0}
        event5 = now - 0.8
        second = [
            item(3, slide_t0[3], "sliding", 256.0, 256, None),
            item(4, slide_t0[4], "sliding", 256.0, 256, None),
            item(5, event5 - 26 / 256, "epoch", 256.0, 205, -0.1, marker=1),
        ]
        await publish(exchange, service, session, first)
        await publish(exchange, service, other, [epoch(99, now)])
        await publish(exchange, unique("svc"), session, [epoch(98, now)])
        sent = time.time()
        await publish(exchange, service, session, second)
        got = await asyncio.to_thread(pull, inlet, 6)

        assert [int(s[0]) for s, _, _ in got] == [0, 1, 2, 3, 4, 5]
        assert [s[1] for s, _, _ in got] == pytest.approx([0.1, 0.11, 0.12, 0.13, 0.14, 0.15])
        assert [s[2] for s, _, _ in got] == [0, 1, 0, 1, 0, 1]
        assert [s[3] for s, _, _ in got[:3]] == [2, 2, 2] and got[5][0][3] == 1
        assert math.isnan(got[3][0][3]) and math.isnan(got[4][0][3])
        assert {s[4] for s, _, _ in got} == {7}
        expected = [
            events[0] - offset,
            events[1] - offset,
            events[2] - offset,
            slide_t0[3] + 255 / 256 - offset,
            slide_t0[4] + 255 / 256 - offset,
            event5 - offset,
        ]
        assert [ts for _, ts, _ in got] == pytest.approx(expected, abs=1e-6)
        assert outlet.pushed == 6 and outlet.last_seq == 5
        # latency_s: the push's wall time less the window's last sample's.
        last5 = second[2]["t0"] + 204 / 256
        assert 0 < got[5][0][5] < got[5][2] - last5 + 1e-3
        print(
            f"\noutlet: publish -> inlet {1e3 * (got[5][2] - sent):.2f} ms "
            f"(3 samples of one message); latency_s of seq 5 {got[5][0][5]:.4f} s"
        )
    finally:
        await outlet.close()
    assert outlet.outlet is None and outlet.connection is None


async def test_without_an_offset_the_outlet_measures_the_lsl_clocks(core: CoreSettings) -> None:
    outlet = PredictionOutlet(core.amqp_url, unique("svc"), unique("s"), name="p")
    before = time.time() - pylsl.local_clock()
    await outlet.start()
    after = time.time() - pylsl.local_clock()
    try:
        assert outlet.lsl_offset is not None
        assert min(before, after) - 1e-3 <= outlet.lsl_offset <= max(before, after) + 1e-3
        assert outlet.info is not None and outlet.info.name() == "p"
    finally:
        await outlet.close()


def test_a_wildcard_session_cannot_name_an_outlet() -> None:
    from neurostream.errors import ConfigError

    with pytest.raises(ConfigError, match="no '\\*' or '#'"):
        PredictionOutlet("amqp://x", "svc", "#")


def test_the_message_model_keeps_the_workers_wire_format_and_times_the_event() -> None:
    """``PredictionMessage.encode`` writes the keys the worker's hand-built body had; the
    times it derives are the outlet's stamps (epoch: event; sliding: last sample)."""
    epoch = item(0, 1_700_000_000.0, "epoch", 256.0, 205, -0.1)
    slide = item(1, 1_700_000_001.0, "sliding", 256.0, 256, None)
    msg = PredictionMessage(
        session_id="s1", predictions=[PredictionItem.model_validate(i) for i in (epoch, slide)]
    )
    body = json.loads(msg.encode())
    # the worker's keys, then what trial-based paradigms added (gated flashes, trials)
    assert list(body) == ["session_id", "predictions", "gated"] and body["gated"] == []
    assert [list(p) for p in body["predictions"]] == [[*epoch, "trial"], [*slide, "trial"]]
    assert body["predictions"] == [epoch | {"trial": None}, slide | {"trial": None}]
    back = PredictionMessage.decode(msg.encode())
    assert back == msg
    e, s = back.predictions
    assert e.event_t == 1_700_000_000.0 + 26 / 256  # round(-25.6) = -26 samples before
    assert e.last_sample_t == 1_700_000_000.0 + 204 / 256
    assert s.event_t == s.last_sample_t == 1_700_000_001.0 + 255 / 256
    # An older worker's body has no fs, n_samples, tmin: it decodes, its times unknown.
    legacy = {k: v for k, v in epoch.items() if k not in {"fs", "n_samples", "tmin"}}
    old = PredictionMessage.decode(json.dumps({"session_id": "s1", "predictions": [legacy]}))
    assert old.predictions[0].event_t is None and old.predictions[0].last_sample_t is None
    with pytest.raises(ContractError, match="predictions.0.seq"):
        PredictionMessage.decode(json.dumps({"session_id": "s1", "predictions": [{}]}))


async def test_an_older_workers_message_is_stamped_at_t0_with_no_latency(
    core: CoreSettings, exchange
) -> None:
    service, session = unique("svc"), unique("s")
    offset = time.time() - pylsl.local_clock()
    outlet = PredictionOutlet(core.amqp_url, service, session, lsl_offset=offset)
    await outlet.start()
    try:
        inlet = await asyncio.to_thread(open_inlet, source_id(session))
        t0 = time.time() - 1.0
        new = epoch(3, t0)
        legacy = {k: v for k, v in new.items() if k not in {"fs", "n_samples", "tmin"}}
        await publish(exchange, service, session, [legacy])
        await exchange.publish(aio_pika.Message(b"{not json"), f"{service}.{session}")
        await publish(exchange, service, session, [item(4, t0, "sliding", 250.0, 250, None)])
        got = await asyncio.to_thread(pull, inlet, 2)
    finally:
        await outlet.close()
    assert [int(s[0]) for s, _, _ in got] == [3, 4]  # the unreadable body between: dropped
    assert got[0][1] == pytest.approx(t0 - offset, abs=1e-6)
    assert math.isnan(got[0][0][5])
    assert got[1][1] == pytest.approx(t0 + 249 / 250 - offset, abs=1e-6)


async def started(core: CoreSettings) -> tuple[PredictionOutlet, str, str]:
    service, session = unique("svc"), unique("s")
    outlet = PredictionOutlet(core.amqp_url, service, session)
    await outlet.start()
    return outlet, service, session


async def until_pushed(outlet: PredictionOutlet, n: int) -> None:
    for _ in range(500):
        if outlet.pushed >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {outlet.pushed} of {n} predictions were pushed")


async def drained(outlet: PredictionOutlet, *args: Any, **kw: Any) -> tuple[bool, int]:
    """``drain``'s answer and how many predictions had been pushed when it returned."""
    done = await outlet.drain(*args, **kw)
    return done, outlet.pushed


async def test_drain_waits_for_a_replicas_earlier_seq_behind_the_last_one(
    core: CoreSettings, exchange
) -> None:
    outlet, service, session = await started(core)
    try:
        now = time.time()
        task = asyncio.create_task(drained(outlet, 5, 10.0))
        # Replica A scores the last window first; replica B's seq 4 comes 0.1 s later.
        await publish(exchange, service, session, [item(5, now, "sliding", 250.0, 250, None)])
        await until_pushed(outlet, 1)
        await asyncio.sleep(0.1)
        await publish(exchange, service, session, [item(4, now, "sliding", 250.0, 250, None)])
        done, pushed = await task
    finally:
        await outlet.close()
    assert (done, pushed, outlet.last_seq) == (True, 2, 5)


async def test_drain_gives_a_slow_worker_time_before_its_first_push(
    core: CoreSettings, exchange
) -> None:
    outlet, service, session = await started(core)
    try:
        task = asyncio.create_task(drained(outlet, 3, 10.0, idle_s=0.3))
        await asyncio.sleep(0.8)  # the worker takes longer than idle_s for the last windows
        await publish(exchange, service, session, [epoch(3, time.time())])
        done, pushed = await task
    finally:
        await outlet.close()
    assert (done, pushed) == (True, 1)


async def test_drain_ends_idle_after_the_last_push_when_the_last_epochs_were_gated(
    core: CoreSettings, exchange
) -> None:
    outlet, service, session = await started(core)
    try:
        task = asyncio.create_task(drained(outlet, 9, 30.0, idle_s=0.3))
        # seq 8 and 9 were gated: their predictions never come.
        await publish(exchange, service, session, [epoch(7, time.time())])
        done, pushed = await task
        assert (done, pushed, outlet.last_seq) == (False, 1, 7)
        # Nothing pushed and nothing expected (no window was published): done at once.
        assert await outlet.drain(None, 30.0) is True
    finally:
        await outlet.close()
