"""The LSL decisions outlet against the real RabbitMQ and a real pylsl inlet.

Decisions are published on ``eeg.decisions`` as the decider publishes them
(``neurostream.contract.DecisionMessage``, key ``<service>.<session_id>``); an inlet
resolved by the outlet's source id receives them as a speller's stimulus program would.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aio_pika
import pylsl
import pytest

from neurostream import topology
from neurostream.contract import DecisionMessage
from neurostream.settings import CoreSettings
from producer.outlet import (
    DECISION_CHANNELS,
    DecisionOutlet,
    PredictionOutlet,
    ResultOutlet,
    decision_source_id,
)
from tests.factories import decision_message, unique
from tests.lsl_support import channel_labels, open_inlet

pytestmark = pytest.mark.integration


@pytest.fixture
async def exchange(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractExchange:
    return await channel.get_exchange(topology.DECISIONS_EXCHANGE)


async def publish(ex: Any, service: str, decision: DecisionMessage) -> None:
    """One decision as ``workers.decider.Decider`` publishes it."""
    await ex.publish(
        aio_pika.Message(decision.encode(), content_type="application/json"),
        f"{service}.{decision.session_id}",
    )


def pull(inlet: pylsl.StreamInlet, n: int) -> list[tuple[list[float], float]]:
    out: list[tuple[list[float], float]] = []
    for _ in range(n):
        sample, ts = inlet.pull_sample(timeout=10)
        assert sample is not None, f"only {len(out)} of {n} decisions arrived"
        out.append((sample, ts))
    return out


async def test_decisions_reach_an_inlet_once_each_in_order_at_their_last_flash(
    core: CoreSettings, exchange
) -> None:
    service, session, other = unique("svc"), unique("s"), unique("s")
    offset = time.time() - pylsl.local_clock() + 0.25  # a producer's offset, given
    outlet = DecisionOutlet(core.amqp_url, service, session, lsl_offset=offset)
    await outlet.start()
    try:
        inlet = await asyncio.to_thread(open_inlet, decision_source_id(session))
        info = inlet.info()
        assert channel_labels(info) == list(DECISION_CHANNELS)
        assert (info.type(), info.channel_count(), info.nominal_srate()) == ("Decisions", 6, 0)
        assert info.desc().child_value("session_id") == session
        assert info.desc().child_value("rule") == "every rule: one sample per rule"

        now = time.time()
        first = decision_message(
            session, 0, "posterior-0.95-max10", last_event_t=now - 9.0, repetitions=4
        )
        # trial 0 under the fixed rule; symbol 35 ("_"): row code 6, column code 12.
        second = decision_message(
            session, 0, last_event_t=now - 6.0, symbol_index=35, symbol="_", codes=[6, 12]
        )
        no_event = decision_message(session, 1, last_event_t=None, posterior=0.5)
        one_code = decision_message(session, 2, last_event_t=now - 1.0, codes=[7])
        await publish(exchange, service, first)
        await publish(exchange, service, decision_message(other, 0))  # another session's
        await publish(exchange, unique("svc"), decision_message(session, 9))  # another service
        await publish(exchange, service, second)
        await publish(exchange, service, first)  # redelivered: pushed once
        await exchange.publish(aio_pika.Message(b"{not json"), f"{service}.{session}")
        await publish(exchange, service, no_event)
        await publish(exchange, service, one_code)
        got = await asyncio.to_thread(pull, inlet, 4)
        stray, _ = await asyncio.to_thread(inlet.pull_sample, 0.5)
    finally:
        await outlet.close()
    assert stray is None  # nothing after the four: not the duplicate, not the others
    assert [s for s, _ in got[:2]] == [
        [0.0, 8.0, 2.0, 9.0, pytest.approx(0.97), 4.0],
        [0.0, 35.0, 6.0, 12.0, pytest.approx(0.97), 10.0],
    ]
    assert got[2][0] == [1.0, 8.0, 2.0, 9.0, 0.5, 10.0]
    assert got[3][0][:3] == [2.0, 8.0, 7.0] and math.isnan(got[3][0][3])
    # Stamped at the last flash on the LSL clock; without it the last epoch's last sample.
    assert no_event.last_sample_t is None and no_event.decided_at is not None
    assert [ts for _, ts in got] == pytest.approx(
        [now - 9.0 - offset, now - 6.0 - offset, no_event.decided_at - offset, now - 1.0 - offset],
        abs=1e-6,
    )
    assert (outlet.pushed, outlet.last_trial, outlet.sent) == (
        4,
        2,
        {(0, "posterior-0.95-max10"), (0, "fixed-10"), (1, "fixed-10"), (2, "fixed-10")},
    )
    assert outlet.outlet is None and outlet.connection is None


async def test_a_rule_given_pushes_only_that_rules_decisions(core: CoreSettings, exchange) -> None:
    service, session = unique("svc"), unique("s")
    offset = time.time() - pylsl.local_clock()
    outlet = DecisionOutlet(core.amqp_url, service, session, rule="fixed-10", lsl_offset=offset)
    await outlet.start()
    try:
        inlet = await asyncio.to_thread(open_inlet, decision_source_id(session))
        assert inlet.info().desc().child_value("rule") == "fixed-10"
        for trial in range(3):
            await publish(exchange, service, decision_message(session, trial, "posterior-0.9"))
            await publish(exchange, service, decision_message(session, trial, "fixed-10"))
        got = await asyncio.to_thread(pull, inlet, 3)
        stray, _ = await asyncio.to_thread(inlet.pull_sample, 0.5)
    finally:
        await outlet.close()
    assert [int(s[0]) for s, _ in got] == [0, 1, 2] and stray is None
    assert [s[5] for s, _ in got] == [10.0, 10.0, 10.0]
    assert {r for _, r in outlet.sent} == {"fixed-10"}


async def test_drain_waits_for_the_last_trials_other_rule_and_ends_idle_without_it(
    core: CoreSettings, exchange
) -> None:
    service, session = unique("svc"), unique("s")
    outlet = DecisionOutlet(core.amqp_url, service, session)
    await outlet.start()
    try:
        pushed_then = asyncio.create_task(_drained(outlet, 4, 10.0))
        await publish(exchange, service, decision_message(session, 4, "posterior-0.9"))
        await asyncio.sleep(0.1)  # within SETTLE_S: the fixed rule's decision is waited for
        await publish(exchange, service, decision_message(session, 4))
        assert await pushed_then == (True, 2)
        # The last trial (5) never completes: no decision comes, drain ends idle.
        idle = asyncio.create_task(_drained(outlet, 5, 30.0, idle_s=0.3))
        await publish(exchange, service, decision_message(session, 3))  # a late one, earlier
        assert await idle == (False, 3)
    finally:
        await outlet.close()


async def _drained(outlet: ResultOutlet, *args: Any, **kw: Any) -> tuple[bool, int]:
    done = await outlet.drain(*args, **kw)
    return done, outlet.pushed


def test_both_outlets_share_one_lifecycle_and_name_their_streams_apart() -> None:
    from neurostream.errors import ConfigError

    p = PredictionOutlet("amqp://x", "svc", "s1")
    d = DecisionOutlet("amqp://x", "svc", "s1")
    assert isinstance(p, ResultOutlet) and isinstance(d, ResultOutlet)
    assert (p.source_id, d.source_id) == ("neurostream-s1-predictions", "neurostream-s1-decisions")
    assert (p.name, d.name) == ("neurostream-predictions", "neurostream-decisions")
    assert p.routing_key == d.routing_key == "svc.s1"
    assert (p.exchange, d.exchange) == (topology.PREDICTIONS_EXCHANGE, topology.DECISIONS_EXCHANGE)
    with pytest.raises(ConfigError, match="no '\\*' or '#'"):
        DecisionOutlet("amqp://x", "svc", "*")
