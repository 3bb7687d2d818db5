"""The consumers' shared loop: ack after the write, retry a failed write, finish on close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ml_data_api.consumer import BatchConsumer


class FakeMessage:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.processed = False
        self.acked = False

    async def ack(self) -> None:
        self.processed = self.acked = True

    async def nack(self, requeue: bool = True) -> None:
        self.processed = True


class Recording(BatchConsumer):
    def __init__(self, failures: int = 0) -> None:
        super().__init__(pool=None, prefetch=10)  # type: ignore[arg-type]
        self.batches: list[list[bytes]] = []
        self.failures = failures

    async def declare(self, channel: Any) -> Any:
        raise NotImplementedError

    async def write(self, batch: Sequence[Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        assert not any(m.acked for m in batch), "acked before the write"
        self.batches.append([m.body for m in batch])


async def test_close_finishes_received_messages() -> None:
    consumer = Recording()
    consumer._task = asyncio.create_task(consumer._loop())
    messages = [FakeMessage(bytes([i])) for i in range(25)]
    for m in messages:
        await consumer._on_message(m)  # type: ignore[arg-type]
    await consumer.close(wait_s=10)
    assert consumer._task.done()
    assert sorted(b for batch in consumer.batches for b in batch) == [m.body for m in messages]
    assert all(len(batch) <= 10 or batch for batch in consumer.batches)
    assert all(m.acked for m in messages)


async def test_failed_write_is_retried_before_ack() -> None:
    consumer = Recording(failures=2)
    consumer._task = asyncio.create_task(consumer._loop())
    message = FakeMessage(b"x")
    await consumer._on_message(message)  # type: ignore[arg-type]
    for _ in range(100):
        if message.acked:
            break
        await asyncio.sleep(0.05)
    assert message.acked and consumer.batches == [[b"x"]] and consumer.failures == 0
    await consumer.close(wait_s=10)
