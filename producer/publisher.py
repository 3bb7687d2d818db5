"""Publish windows and label events to RabbitMQ with confirms, surviving broker outages.

Messages go out in order through one pump with up to ``max_in_flight`` unconfirmed
publishes at once (serial confirms would cap throughput at one round trip per window).
A message leaves the buffer only when the broker confirms it. When the connection
drops, every unconfirmed message goes back to the front of the buffer in its original
order, the pump waits for ``connect_robust`` to restore the channel and resends them
with their original ``seq`` and ``message_id`` (duplicates are possible, gaps are not;
consumers deduplicate on ``session_id:seq``). The buffer is bounded: when full, the
producer blocks rather than dropping a window.

A ``record_only`` session publishes its windows with ``topology.record_key(service)``:
the ML data API's archive stores them, no service queue holds them for a worker. With
``store`` (record-only sessions and labelled recordings) the publisher also declares the
archive and label queues, so what it sends waits there if the data API is not up yet.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from neurostream import broker, contract, topology

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Item:
    order: int
    exchange: str
    routing_key: str
    message: aio_pika.Message
    seq: int | None  # a window's seq; None for a label or a trial's truth
    sent: int = 0  # publishes made of it (more than one: resent after a failed confirm)


class SeqSet:
    """A set of seqs kept as sorted disjoint ranges: what a session's broker confirmed.

    Confirms arrive nearly in order, so a session of millions of windows is a handful of
    ranges where a ``set[int]`` would hold every seq (the soak bench watches the RSS).
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []  # exclusive
        self._len = 0

    def add(self, seq: int) -> None:
        i = bisect.bisect_right(self._starts, seq)
        if i and self._ends[i - 1] > seq:
            return  # already in
        self._len += 1
        joins_left = i > 0 and self._ends[i - 1] == seq
        joins_right = i < len(self._starts) and self._starts[i] == seq + 1
        if joins_left and joins_right:
            self._ends[i - 1] = self._ends[i]
            del self._starts[i], self._ends[i]
        elif joins_left:
            self._ends[i - 1] = seq + 1
        elif joins_right:
            self._starts[i] = seq
        else:
            self._starts.insert(i, seq)
            self._ends.insert(i, seq + 1)

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        i = bisect.bisect_right(self._starts, seq)
        return bool(i) and self._ends[i - 1] > seq

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        for start, end in self.ranges:
            yield from range(start, end)

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """``(first, last + 1)`` of each run of consecutive seqs, in order."""
        return list(zip(self._starts, self._ends, strict=True))

    def __repr__(self) -> str:
        return f"SeqSet({len(self)} seqs in {len(self._starts)} ranges)"


class WindowPublisher:
    """Ordered, confirmed, buffered publishing for one producer session."""

    def __init__(
        self,
        amqp_url: str,
        service: str,
        *,
        buffer_max: int = 10_000,
        max_in_flight: int = 512,
        confirm_timeout_s: float = 10.0,
        record_only: bool = False,
        store: bool = False,
        name: str | None = None,
    ) -> None:
        self.amqp_url = amqp_url
        self.name = name  # the connection's name on the broker
        self.service = service
        self.record_only = record_only
        self.store = store or record_only
        self.routing_key = topology.record_key(service) if record_only else service
        self.buffer_max = buffer_max
        self.max_in_flight = max_in_flight
        self.confirm_timeout_s = confirm_timeout_s
        self.windows_published = 0
        self.windows_confirmed = 0
        self.labels_confirmed = 0
        self.windows_resent = 0  # window publishes sent again after a failed confirm
        self.confirmed = SeqSet()  # the seqs of the windows the broker confirmed
        self._queue: deque[_Item] = deque()
        self._in_flight: dict[int, _Item] = {}
        self._failed: list[_Item] = []
        self._order = 0
        self._outage = False
        self._nacked = False
        self._backoff = 0.1
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._pump_task: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        """Messages not yet confirmed (queued or in flight)."""
        return len(self._queue) + len(self._in_flight) + len(self._failed)

    @property
    def in_outage(self) -> bool:
        return self._outage

    async def start(self) -> None:
        self._connection = await broker.connect(self.amqp_url, name=self.name)
        await self._open_channel()
        self._pump_task = asyncio.create_task(self._pump(), name="producer-publisher")

    async def _open_channel(self) -> None:
        """A confirm channel with the session's topology declared on it, put in use only
        once all of it is declared (a failure leaves the channel in use as it was)."""
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=True)
        assert isinstance(channel, AbstractRobustChannel)
        try:
            if not self.record_only:
                await topology.declare_service(channel, self.service)
            if self.store:
                await topology.declare_archive(channel)
                await topology.declare_label_store(channel)
            exchanges = await topology.declare_exchanges(channel)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        self._channel, self._exchanges = channel, exchanges

    async def _renew_channel(self) -> None:
        """Replace a channel the broker nacks every publish on with a new one.

        Seen on a RabbitMQ 3.10 cluster (``tests/faults/test_cluster_failover.py``): after
        the node leading a quorum queue is killed, a channel reopened on another node while
        the queue elects its new leader nacks every publish to it for as long as it lives
        (25 s and more), while a new channel on the same node is confirmed at once. The
        old channel is closed only once the new one is in use: if the new one cannot be
        opened yet (the connection is reconnecting), the pump waits and tries again.
        """
        old = self._channel
        try:
            await self._open_channel()
        except Exception as exc:
            log.warning("could not open a new channel yet (%s)", exc)
            return
        self._nacked = False
        if old is not None:
            try:
                await old.close()
            except Exception:
                log.debug("closing the nacked channel failed", exc_info=True)
        log.warning("the broker nacked publishes; resending on a new channel")

    async def publish_window(self, window: contract.Window) -> None:
        """Queue a window; blocks while the buffer is full."""
        body, headers = contract.encode(window)
        message = aio_pika.Message(
            body,
            headers=headers,
            message_id=window.header.message_id,
            content_type=contract.CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._enqueue(
            topology.WINDOWS_EXCHANGE, self.routing_key, message, seq=window.header.seq
        )
        self.windows_published += 1

    async def publish_label(
        self, session_id: str, seq: int, label: int, *, source: str = "paradigm"
    ) -> None:
        """Ground truth (the paradigm's, or a recording's own events), keyed like its window."""
        body = json.dumps(
            {"session_id": session_id, "seq": seq, "label": label, "source": source}
        ).encode()
        message = aio_pika.Message(
            body,
            message_id=f"{contract.message_id(session_id, seq)}:label",
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
        )
        await self._enqueue(topology.LABELS_EXCHANGE, session_id, message)

    async def publish_trial(self, truth: contract.TrialTruth) -> None:
        """A trial's truth (a speller's target row and column codes) on ``eeg.labels``,
        keyed ``trial.<service>.<session_id>`` and marked by ``x-neurostream-kind: trial``
        so the label collector tells it from an epoch's label."""
        message = aio_pika.Message(
            truth.encode(),
            headers={contract.KIND_HEADER: contract.TRIAL_KIND},
            message_id=f"{truth.session_id}:trial:{truth.trial}",
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
        )
        key = contract.trial_key(self.service, truth.session_id)
        await self._enqueue(topology.LABELS_EXCHANGE, key, message)

    async def flush(self, wait_s: float | None = None) -> bool:
        """Wait until everything queued is confirmed; False if ``wait_s`` ran out."""
        self._check_pump()
        try:
            async with asyncio.timeout(wait_s):
                await self._idle.wait()
        except TimeoutError:
            log.error("flush timed out with %d messages unconfirmed", self.buffered)
            return False
        return True

    async def close(self, flush_s: float | None = None) -> bool:
        """Flush (up to ``flush_s``), stop the pump and close the connection."""
        flushed = True
        if self._pump_task is not None and not self._pump_task.done():
            flushed = await self.flush(flush_s)
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()
        return flushed

    async def _enqueue(
        self, exchange: str, routing_key: str, message: aio_pika.Message, *, seq: int | None = None
    ) -> None:
        self._check_pump()
        warned = False
        while self.buffered >= self.buffer_max:
            if self._outage and not warned:
                log.error(
                    "outage buffer full (%d windows); blocking the producer until the "
                    "broker is back",
                    self.buffered,
                )
                warned = True
            self._space.clear()
            await self._space.wait()
            self._check_pump()
        self._queue.append(_Item(self._order, exchange, routing_key, message, seq))
        self._order += 1
        self._idle.clear()
        self._wake.set()

    def _check_pump(self) -> None:
        if self._pump_task is None:
            raise RuntimeError("WindowPublisher.start() was not awaited")
        if self._pump_task.done() and not self._pump_task.cancelled():
            exc = self._pump_task.exception()
            if exc is not None:
                raise RuntimeError("the publisher pump died") from exc

    async def _pump(self) -> None:
        while True:
            self._wake.clear()
            if self._outage:
                if self._in_flight:
                    await self._wake.wait()
                    continue
                # Every publish has settled: put the failed ones back in order and resend.
                self._failed.sort(key=lambda it: it.order)
                self._queue.extendleft(reversed(self._failed))
                self._failed.clear()
                await self._await_broker()
                if self._nacked:
                    await self._renew_channel()
                    if self._nacked:
                        continue  # still no channel: wait and try again
                self._outage = False
                continue
            while self._queue and len(self._in_flight) < self.max_in_flight:
                self._launch(self._queue.popleft())
            if not self._queue and not self._in_flight:
                self._idle.set()
            await self._wake.wait()

    def _launch(self, item: _Item) -> None:
        exchange = self._exchanges[item.exchange]
        if item.sent and item.seq is not None:
            self.windows_resent += 1
        item.sent += 1
        task = asyncio.ensure_future(
            exchange.publish(
                item.message,
                item.routing_key,
                mandatory=False,
                timeout=self.confirm_timeout_s,
            )
        )
        self._in_flight[item.order] = item
        task.add_done_callback(functools.partial(self._settled, item))

    def _settled(self, item: _Item, task: asyncio.Future[object]) -> None:
        del self._in_flight[item.order]
        error = "cancelled" if task.cancelled() else task.exception()
        if error is not None:
            self._failed.append(item)
            if isinstance(error, aio_pika.exceptions.DeliveryError):
                self._nacked = True  # refused, not lost with a connection: see _renew_channel
            if not self._outage:
                self._outage = True
                log.warning(
                    "broker unavailable (%r); buffering, %d messages unconfirmed",
                    error,
                    self.buffered,
                )
                self._space.set()  # blocked producers re-check, and say the buffer is full
        else:
            self._backoff = 0.1
            if item.seq is not None:
                self.windows_confirmed += 1
                self.confirmed.add(item.seq)
            else:
                self.labels_confirmed += 1
            self._space.set()
        self._wake.set()

    async def _await_broker(self) -> None:
        """Wait for the robust channel to come back, reporting the buffer meanwhile."""
        assert self._channel is not None
        await asyncio.sleep(self._backoff)  # a timeout without a disconnect: do not spin
        self._backoff = min(self._backoff * 2, 2.0)
        while True:
            try:
                async with asyncio.timeout(5.0):
                    await self._channel.ready()
                break
            except TimeoutError:
                log.warning("broker still unavailable; %d messages buffered", self.buffered)
        log.warning("broker back; resending %d buffered messages in order", self.buffered)
