"""Fail-over between broker addresses (``neurostream.broker``), through TCP proxies.

Two proxies in front of the one test broker stand for two nodes of a cluster: cutting
the one a connection uses must move it to the other, with its channel, its queue and its
consumer restored, as a killed cluster node must (the three-node test is in
``tests/faults/test_cluster_failover.py``). It also fails if a later aio-pika stops
passing through the point ``FailoverConnection`` moves the address at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest

from neurostream import broker, infra
from neurostream.errors import BrokerUnavailable
from neurostream.settings import CoreSettings
from tests.factories import TcpProxy, unique

pytestmark = pytest.mark.integration


@pytest.fixture
async def proxies() -> AsyncIterator[tuple[TcpProxy, TcpProxy]]:
    a, b = TcpProxy(), TcpProxy()
    await a.start()
    await b.start()
    yield a, b
    for p in (a, b):
        if p.serving:
            await p.cut()


def _cluster_url(*ports: int) -> str:
    return "amqp://guest:guest@" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/"


async def test_a_cut_node_moves_the_connection_to_the_next_with_its_consumer(
    core: CoreSettings, proxies: tuple[TcpProxy, TcpProxy]
) -> None:
    a, b = proxies
    connection = await broker.connect(_cluster_url(a.port, b.port), reconnect_s=0.2)
    try:
        assert broker.current_address(connection).endswith(f":{a.port}/")
        channel = await connection.channel()
        queue = await channel.declare_queue(unique("failover"), auto_delete=True)
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            await got.put(message.body)

        await queue.consume(on_message)
        await channel.default_exchange.publish(aio_pika.Message(b"before"), queue.name)
        assert await asyncio.wait_for(got.get(), 10) == b"before"

        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())
        await a.cut()  # the node goes away and stays away
        await asyncio.wait_for(reconnected.wait(), 15)
        assert broker.current_address(connection).endswith(f":{b.port}/")
        assert getattr(connection, "failovers", 0) == 1  # one move: b answered at once

        await channel.default_exchange.publish(aio_pika.Message(b"after"), queue.name)
        assert await asyncio.wait_for(got.get(), 10) == b"after"  # the consumer came back
    finally:
        await connection.close()


async def test_the_first_node_that_answers_is_taken(
    core: CoreSettings, proxies: tuple[TcpProxy, TcpProxy]
) -> None:
    a, b = proxies
    await a.cut()
    connection = await broker.connect(_cluster_url(a.port, b.port), name="neurostream-test")
    try:
        assert broker.current_address(connection).endswith(f":{b.port}/")
    finally:
        await connection.close()


async def test_no_node_answering_names_every_address() -> None:
    ports = []
    for _ in range(2):
        dead = TcpProxy()
        await dead.start()
        ports.append(dead.port)
        await dead.cut()
    url = f"amqp://guest:s3cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/"
    with pytest.raises(BrokerUnavailable) as err:
        await broker.connect(url, connect_timeout_s=2)
    message = str(err.value)
    for port in ports:  # each node's own error, after the list as configured
        assert message.count(f"amqp://guest:***@127.0.0.1:{port}/: ") == 1
    assert "s3cret" not in message and "rabbitmq-server -detached" in message


async def test_infra_checks_a_cluster_it_does_not_run(proxies: tuple[TcpProxy, TcpProxy]) -> None:
    a, b = proxies
    await a.cut()
    infra.ensure_rabbitmq(_cluster_url(a.port, b.port))  # one node answers: enough
    await b.cut()
    with pytest.raises(RuntimeError, match="no RabbitMQ node of .* is reachable"):
        infra.ensure_rabbitmq(_cluster_url(a.port, b.port))
