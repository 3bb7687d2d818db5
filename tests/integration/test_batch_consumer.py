"""The ML data consumers' shared loop on the real RabbitMQ: ack after the write, retry a
failed write, settle what was received on close and give back the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from ml_data_api.batch_consumer import BatchConsumer
from neurostream.settings import CoreSettings
from tests.factories import unique

pytestmark = pytest.mark.integration


class Recording(BatchConsumer):
    """Consumes its own queue; "writes" by recording bodies, failing the first few times."""

    name = "recording"

    def __init__(self, queue: str, *, failures: int = 0, write_s: float = 0.0, **kw: Any):
        super().__init__(**kw)
        self.queue_name = queue
        self.failures = failures
        self.write_s = write_s
        self.attempts = 0
        self.bodies: list[bytes] = []

    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        return await channel.declare_queue(self.queue_name, durable=True)

    async def write(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        self.attempts += 1
        await asyncio.sleep(self.write_s)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        self.bodies += [m.body for m in batch]
        self.written += len(batch)


@pytest.fixture
async def channel(core: CoreSettings) -> AsyncIterator[AbstractChannel]:
    async with await aio_pika.connect(core.amqp_url) as conn:
        yield await conn.channel()


async def ready(core: CoreSettings, queue: str) -> int:
    """Ready messages (not those a consumer holds unacked), seen from a fresh connection."""
    async with await aio_pika.connect(core.amqp_url) as conn:
        q = await (await conn.channel()).declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


async def fill(core: CoreSettings, queue: str, n: int) -> None:
    async with await aio_pika.connect(core.amqp_url) as conn:
        ch = await conn.channel()
        await ch.declare_queue(queue, durable=True)
        for i in range(n):
            await ch.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=queue)


async def until(check: Any, wait_s: float = 20.0) -> None:
    deadline = time.monotonic() + wait_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_close_settles_what_was_received_and_gives_back_the_rest(
    core: CoreSettings, pool: Any, channel: AbstractChannel
) -> None:
    n, queue = 500, unique("q")
    await fill(core, queue, n)
    consumer = Recording(queue, prefetch=50, write_s=0.02)
    await consumer.start(channel, pool)

    async def busy() -> bool:
        return consumer.written > 0

    await until(busy)
    await consumer.close()
    assert not consumer.running
    assert 0 < consumer.written < n and len(set(consumer.bodies)) == consumer.written
    # Checked while the consumer's channel is still open: nothing is held unacked (those
    # would not be ready), nothing written came back, nothing was lost.
    assert consumer.written + await ready(core, queue) == n
    assert not channel.is_closed


async def test_a_failed_write_is_retried_and_acked_only_after_it_succeeds(
    core: CoreSettings, pool: Any, channel: AbstractChannel
) -> None:
    queue = unique("q")
    await fill(core, queue, 1)
    consumer = Recording(queue, prefetch=10, failures=2)
    await consumer.start(channel, pool)

    async def written() -> bool:
        return consumer.written == 1

    await until(written)
    await consumer.close()
    assert consumer.attempts == 3 and consumer.bodies == [b"0"]
    assert await ready(core, queue) == 0


async def test_a_write_that_keeps_failing_is_given_back_on_close(
    core: CoreSettings, pool: Any, channel: AbstractChannel
) -> None:
    queue = unique("q")
    await fill(core, queue, 3)
    consumer = Recording(queue, prefetch=10, failures=10**6)
    await consumer.start(channel, pool)

    async def tried() -> bool:
        return consumer.attempts >= 2

    await until(tried)
    await consumer.close(wait_s=5)
    assert consumer.written == 0 and consumer.bodies == []
    assert await ready(core, queue) == 3  # requeued, not acked, not held


async def test_request_stop_settles_the_received_messages_and_ends_the_loop(
    core: CoreSettings, pool: Any, channel: AbstractChannel
) -> None:
    queue = unique("q")
    await fill(core, queue, 5)
    consumer = Recording(queue, prefetch=10)
    await consumer.start(channel, pool)

    async def all_in() -> bool:
        return consumer.written == 5

    await until(all_in)
    assert consumer.running
    consumer.request_stop()

    async def ended() -> bool:
        return not consumer.running

    await until(ended, 5)
    await consumer.close()
    assert sorted(consumer.bodies) == [b"%d" % i for i in range(5)]
    assert await ready(core, queue) == 0
