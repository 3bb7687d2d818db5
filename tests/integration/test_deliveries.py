"""The worker's raw receive path against the real RabbitMQ: multiple-ack, requeue, and a
consumer that comes back by itself after its channel is closed under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from neurostream.settings import CoreSettings
from tests.factories import unique
from workers import deliveries

pytestmark = pytest.mark.integration


@pytest.fixture
async def connection(core: CoreSettings) -> AsyncIterator[AbstractRobustConnection]:
    conn = await aio_pika.connect_robust(core.amqp_url)
    yield conn
    await conn.close()


async def _setup(
    conn: AbstractRobustConnection, n: int
) -> tuple[AbstractRobustChannel, str, asyncio.Queue[DeliveredMessage], deliveries.Consumer]:
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=100)
    queue = await channel.declare_queue(unique("deliv"), durable=True)
    for i in range(n):
        await channel.default_exchange.publish(
            aio_pika.Message(str(i).encode(), headers={"seq": i}, message_id=f"m{i}"), queue.name
        )
    inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()

    async def on_delivery(message: DeliveredMessage) -> None:
        inbox.put_nowait(message)

    consumer = deliveries.Consumer(channel, queue.name, on_delivery)
    await consumer.start()
    return channel, queue.name, inbox, consumer


async def _take(inbox: asyncio.Queue[DeliveredMessage], n: int) -> list[DeliveredMessage]:
    return [await asyncio.wait_for(inbox.get(), 10) for _ in range(n)]


async def _ready(conn: AbstractRobustConnection, name: str) -> tuple[int, int]:
    """Ready messages and consumers, asked on a channel of its own (a robust channel
    answers a repeated declare from what it recorded when it restored the queue)."""
    async with conn.channel() as channel:
        q = await channel.declare_queue(name, passive=True)
        return q.declaration_result.message_count or 0, q.declaration_result.consumer_count or 0


async def test_one_multiple_ack_settles_the_whole_batch(
    connection: AbstractRobustConnection,
) -> None:
    channel, name, inbox, consumer = await _setup(connection, 5)
    batch = await _take(inbox, 5)
    assert [int(m.body) for m in batch] == [0, 1, 2, 3, 4]
    assert [deliveries.headers(m)["seq"] for m in batch] == [0, 1, 2, 3, 4]
    assert batch[2].header.properties.message_id == "m2"
    await deliveries.ack_through(batch)
    await consumer.stop()
    await asyncio.sleep(0.2)
    assert await _ready(connection, name) == (0, 0)  # all five acked, consumer gone
    assert inbox.empty()


async def test_requeued_deliveries_come_back_redelivered(
    connection: AbstractRobustConnection,
) -> None:
    channel, name, inbox, consumer = await _setup(connection, 3)
    first = await _take(inbox, 3)
    await deliveries.requeue(first[1:])
    await deliveries.ack_through(first[:1])
    again = await _take(inbox, 2)
    assert sorted(int(m.body) for m in again) == [1, 2]
    assert all(m.delivery.redelivered for m in again)  # type: ignore[union-attr]
    await deliveries.ack_through(again)
    await consumer.stop()


async def test_consumer_resumes_after_its_channel_is_closed_under_it(
    connection: AbstractRobustConnection,
) -> None:
    channel, name, inbox, consumer = await _setup(connection, 2)
    before = await _take(inbox, 2)
    raw = await channel.get_underlay_channel()
    # A channel error (acking a tag never delivered) makes the broker close the channel;
    # the two unacked deliveries go back to the queue and the robust channel reopens.
    await raw.basic_ack(10_000)
    after = await _take(inbox, 2)
    assert sorted(int(m.body) for m in after) == [0, 1]
    assert all(m.delivery.redelivered for m in after)  # type: ignore[union-attr]
    assert after[0].channel is not before[0].channel
    await deliveries.ack_through(before)  # on the dead channel: logged, nothing raised
    assert consumer.active
    await deliveries.ack_through(after)
    await consumer.stop()
    await asyncio.sleep(0.2)
    assert await _ready(connection, name) == (0, 0)
