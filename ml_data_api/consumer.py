"""The loop both ml_data_api consumers share: consume, batch, write durably, then ack.

A subclass declares its queue and writes one batch; the base drains what has arrived
(``workers.batcher.next_batch``), retries the write through a database outage and acks
only after it succeeded, so a crash redelivers instead of losing data. ``close()``
stops consuming and finishes what was already received.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import cast

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from psycopg_pool import AsyncConnectionPool

from workers.batcher import drain, next_batch

log = logging.getLogger(__name__)
_STOP = object()


class BatchConsumer(ABC):
    name = "consumer"

    def __init__(self, pool: AsyncConnectionPool, *, prefetch: int) -> None:
        self.pool = pool
        self.prefetch = prefetch
        self.written = 0
        self.skipped = 0
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._stopping = False

    @abstractmethod
    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        """Declare and bind the consumer's queue (idempotent)."""

    @abstractmethod
    async def write(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """Write the batch durably and settle malformed messages; the base acks the rest."""

    async def start(self, channel: AbstractChannel) -> None:
        await channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await self.declare(channel)
        self._task = asyncio.create_task(self._loop(), name=self.name)
        self._tag = await self._queue.consume(self._on_message)
        log.info("%s consuming %s", self.name, self._queue.name)

    async def close(self, wait_s: float = 30.0) -> None:
        """Stop consuming, finish the messages already received, then return."""
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:
                log.debug("%s: consumer cancel failed (channel closed)", self.name)
        if self._task is not None and not self._task.done():
            self._inbox.put_nowait(_STOP)
            try:
                await asyncio.wait_for(self._task, wait_s)
            except TimeoutError:
                log.error("%s: in-flight batch unfinished; it will be redelivered", self.name)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await self._inbox.put(message)

    async def _loop(self) -> None:
        while True:
            batch = await next_batch(self._inbox, self.prefetch)
            stop = _STOP in batch
            if stop:
                batch += drain(self._inbox)
            messages = [cast(AbstractIncomingMessage, m) for m in batch if m is not _STOP]
            if messages:
                await self._settle(messages)
            if stop:
                return

    async def _settle(self, batch: list[AbstractIncomingMessage]) -> None:
        delay = 0.2
        while True:
            try:
                await self.write(batch)
                break
            except Exception as exc:
                if self._stopping:
                    log.error("%s: write failed while stopping (%s); requeueing", self.name, exc)
                    for m in batch:
                        await m.nack(requeue=True)
                    return
                log.warning("%s: write failed (%s); retrying in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for m in batch:
            if not m.processed:
                await m.ack()
