"""Micro-batching: take what has arrived up to a size, never wait for more."""

from __future__ import annotations

import asyncio

from neurostream.batching import drain, next_batch


async def test_a_batch_is_what_has_arrived_up_to_the_size() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(25):
        queue.put_nowait(i)
    assert await next_batch(queue, 10) == list(range(10))
    assert await next_batch(queue, 10) == list(range(10, 20))
    assert await next_batch(queue, 10) == list(range(20, 25))  # no wait for a full batch
    assert queue.empty()


async def test_a_batch_waits_for_its_first_item_only() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    batch = asyncio.create_task(next_batch(queue, 10))
    await asyncio.sleep(0.01)
    assert not batch.done()
    queue.put_nowait(7)
    assert await asyncio.wait_for(batch, 1) == [7]


def test_drain_takes_everything_queued_now() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    assert drain(queue) == []
    for item in "abc":
        queue.put_nowait(item)
    assert drain(queue) == ["a", "b", "c"] and queue.empty()
