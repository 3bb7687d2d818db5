"""The loop both ml_data_api consumers share: consume, batch, write durably, then ack.

A subclass declares its queue and writes one batch; the base drains what has arrived
(``neurostream.batching.next_batch``), retries the write through a database outage and
acks only after it succeeded, so a crash redelivers instead of losing data.

Lifecycle: ``start(channel, pool)`` takes the caller's channel and pool (``ingest.Ingest``
owns them and closes them); ``request_stop()`` (sync, signal-safe) lets the loop finish
the messages already received and return; ``close()`` cancels the consumer, settles what
was received within ``drain_timeout_s`` and gives back (nack, requeue) whatever it could
not, so nothing stays unacked and nothing is acked unwritten.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, ConsumerTag
from psycopg_pool import AsyncConnectionPool

from neurostream.batching import drain, next_batch

log = logging.getLogger(__name__)
_STOP = object()


class BatchConsumer(ABC):
    name: ClassVar[str] = "consumer"

    def __init__(self, *, prefetch: int, drain_timeout_s: float = 30.0) -> None:
        self.prefetch = prefetch
        self.drain_timeout_s = drain_timeout_s
        self.written = 0
        self.skipped = 0
        self._pool: AsyncConnectionPool | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._queue: AbstractQueue | None = None
        self._tag: ConsumerTag | None = None
        self._stopping = False
        self._closing: asyncio.Task[None] | None = None

    @abstractmethod
    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        """Declare and bind the consumer's queue (idempotent)."""

    @abstractmethod
    async def write(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """Write the batch durably and settle malformed messages; the base acks the rest."""

    @property
    def pool(self) -> AsyncConnectionPool:
        """The pool ``start`` was given (writes use it)."""
        if self._pool is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._pool

    @property
    def queue(self) -> AbstractQueue | None:
        """The queue it consumes, once started."""
        return self._queue

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, channel: AbstractChannel, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        await channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await self.declare(channel)
        self._task = asyncio.create_task(self._loop(), name=self.name)
        self._tag = await self._queue.consume(self._on_message)
        log.info("%s consuming %s", self.name, self._queue.name)

    def request_stop(self) -> None:
        """Settle the messages already received, then stop (sync: safe from a signal)."""
        if not self._stopping:
            self._stopping = True
            self._inbox.put_nowait(_STOP)

    async def close(self, wait_s: float | None = None) -> None:
        """Stop consuming, settle what was received (within ``wait_s``), give back the rest.

        ``wait_s`` defaults to ``drain_timeout_s``; safe to call more than once.
        """
        if self._closing is None:
            bound = self.drain_timeout_s if wait_s is None else wait_s
            self._closing = asyncio.create_task(self._close(bound), name=f"{self.name}-close")
        await asyncio.shield(self._closing)

    async def _close(self, wait_s: float) -> None:
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:
                log.debug("%s: consumer cancel failed (channel closed)", self.name)
            await asyncio.sleep(0)  # deliveries already dispatched reach the inbox first
        self.request_stop()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._task, wait_s)
            except TimeoutError:
                log.error("%s: in-flight batch unfinished; it will be redelivered", self.name)
        left = [m for m in drain(self._inbox) if isinstance(m, AbstractIncomingMessage)]
        for message in left:  # arrived after the stop: back to the queue, unwritten
            try:
                await message.nack(requeue=True)
            except Exception:
                log.debug("%s: nack failed (channel closed): the broker requeues", self.name)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await self._inbox.put(message)

    async def _loop(self) -> None:
        while True:
            batch = await next_batch(self._inbox, self.prefetch)
            stop = _STOP in batch
            if stop:  # what was received before the stop request is settled too
                batch = [m for m in batch if m is not _STOP]
                batch += [m for m in drain(self._inbox) if m is not _STOP]
            messages = [m for m in batch if isinstance(m, AbstractIncomingMessage)]
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
                        if not m.processed:
                            await m.nack(requeue=True)
                    return
                log.warning("%s: write failed (%s); retrying in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for m in batch:
            if not m.processed:
                await m.ack()
