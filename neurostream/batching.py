"""Micro-batching: take what has arrived, never wait for more.

Shared by every loop that settles deliveries in batches (the workers, the ML data
consumers). Under light load a batch is one window (lowest latency); under load the queue fills
while the previous batch is processed and batches grow up to ``max_size`` (throughput).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def next_batch(queue: asyncio.Queue[T], max_size: int) -> list[T]:
    """Wait for one item, then drain whatever else is already queued, up to ``max_size``."""
    batch = [await queue.get()]
    while len(batch) < max_size:
        try:
            batch.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            break
    return batch


def drain(queue: asyncio.Queue[T]) -> list[T]:
    """Everything queued right now (used on shutdown)."""
    items: list[T] = []
    while True:
        try:
            items.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            return items
