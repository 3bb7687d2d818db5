"""The worker's receive path: raw AMQP deliveries, without aio-pika's per-message wrapper.

aio-pika turns every delivery into an ``IncomingMessage`` and runs the consumer callback
in a task of its own, on top of the task its protocol layer (aiormq) already creates. At
thousands of windows/s that bookkeeping costs as much as featurizing and classifying: a
bare consume loop with one multiple-ack per 64 windows did 13.2k windows/s through
aio-pika and 17.8k/s on aiormq's deliveries (``bench.spine``'s ceilings, 2-core VM), and
one LDA worker went from 6.85k to 7.55k windows/s (alternating runs).
So the worker registers its consumer on the robust channel's underlying aiormq channel
and keeps aio-pika for everything else: connection recovery, topology, publishing.

aio-pika does not know about a consumer on the underlying channel and would not restore
it after a reconnect, so ``Consumer`` registers itself again from the robust channel's
``reopen_callbacks``. Deliveries still unacked on the old channel are requeued by the
broker when it closes; acking them fails harmlessly and the idempotent write absorbs the
redelivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage

log = logging.getLogger(__name__)

OnDelivery = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


class Consumer:
    """One consumer of ``queue`` that follows its robust channel across reconnects."""

    def __init__(self, channel: AbstractRobustChannel, queue: str, on_delivery: OnDelivery):
        self._channel = channel
        self._queue = queue
        self._on_delivery = on_delivery
        self._raw: RawChannel | None = None
        self._tag: str | None = None
        self._wanted = False
        channel.reopen_callbacks.add(self._on_reopen)

    @property
    def active(self) -> bool:
        return self._tag is not None

    async def start(self) -> None:
        self._wanted = True
        if self._tag is not None:
            return
        raw = await self._channel.get_underlay_channel()
        ok = await raw.basic_consume(self._queue, self._on_delivery)
        self._raw, self._tag = raw, ok.consumer_tag

    async def stop(self) -> None:
        self._wanted = False
        raw, tag, self._raw, self._tag = self._raw, self._tag, None, None
        if raw is not None and tag is not None and not raw.is_closed:
            try:
                await raw.basic_cancel(tag)
            except Exception:
                log.debug("consumer cancel failed (channel closed)", exc_info=True)

    async def _on_reopen(self, _sender: Any = None) -> None:
        self._raw = self._tag = None
        if self._wanted:
            await self.start()
            log.info("consuming %s again after the channel reopened", self._queue)


def headers(message: DeliveredMessage) -> dict[str, Any]:
    return dict(message.header.properties.headers or {})


async def ack_through(batch: Sequence[DeliveredMessage]) -> None:
    """One multiple-ack per channel for the last delivery of the batch on it.

    Deliveries arrive in delivery-tag order, so every earlier one on that channel was
    processed by this or an earlier batch.
    """
    last: dict[int, DeliveredMessage] = {}
    for message in batch:
        last[id(message.channel)] = message
    for message in last.values():
        try:
            await message.channel.basic_ack(_tag(message), multiple=True)
        except Exception as exc:  # channel lost: the broker redelivers, the write is idempotent
            log.warning("ack failed (%s); the broker will redeliver", exc)


async def requeue(batch: Sequence[DeliveredMessage]) -> None:
    """Give deliveries back to the queue (a closed channel has done so already)."""
    for message in batch:
        try:
            await message.channel.basic_nack(_tag(message), requeue=True)
        except Exception:
            log.debug("nack failed (channel closed): the broker requeues", exc_info=True)


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    if tag is None:
        raise ValueError("not a consumed delivery (no delivery tag)")
    return tag
