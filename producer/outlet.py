"""Predictions back to the application as an LSL stream, stamped on the LSL clock.

worker -> ``eeg.predictions`` (key ``<service>.<session_id>``) -> ``PredictionOutlet`` ->
LSL outlet -> the experiment (PsychoPy, Unity, any ``StreamInlet``). The outlet binds an
exclusive auto-delete queue to the session's key before the session's first window is
published, so nothing is missed; a prediction is pushed the moment its message arrives.

The stream (type ``Predictions``, irregular rate, ``double64``, source id
``neurostream-<session_id>-predictions``) has one sample per prediction, pushed in ``seq``
order within a message, with six channels (labels in ``desc/channels``):

    seq, score, predicted, marker (NaN when none), model_version_id, latency_s

``latency_s`` is the wall time of the push minus the wall time of the window's last sample
(the delay from the data to the result). Each sample's timestamp is the time the prediction
is *about*, on the LSL clock, so a program matches it to its own timestamps:

- an epoch: its event, the sample the marker fell on (``t0 - round(tmin * fs) / fs``, the
  epoch's first sample less its offset; ``t0`` when the window carries no ``tmin``). A
  PsychoPy program finds its marker's ``local_clock()`` stamp within half a sample of it.
- a sliding window: its last sample (``t0 + (n_samples - 1) / fs``; ``t0`` from a worker
  that predates ``fs``/``n_samples``).

Both are ``PredictionItem.event_t`` of ``neurostream.contract``, the message's one schema,
which the live WebSocket sends as ``event_t``: the two doors name the same instant.

Windows carry wall-clock times (``t0``); ``lsl = wall - lsl_offset``, where ``lsl_offset``
is the producer's (``wall = lsl + lsl_offset``) when given, else measured once at start as
``time.time() - pylsl.local_clock()``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable

import aio_pika
import pylsl
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from neurostream import topology
from neurostream.contract import ContractError, PredictionItem, PredictionMessage
from neurostream.errors import BrokerUnavailable, ConfigError

log = logging.getLogger(__name__)

CHANNELS = ("seq", "score", "predicted", "marker", "model_version_id", "latency_s")
STREAM_TYPE = "Predictions"
# How long drain() waits for quiet once the session's last seq was pushed: replicas' earlier
# seqs arrive within a batch's time of it.
SETTLE_S = 0.2


def source_id(session_id: str) -> str:
    """The outlet's LSL source id: what a program resolves the session's predictions by."""
    return f"neurostream-{session_id}-predictions"


class PredictionOutlet:
    """Consumes one session's predictions from eeg.predictions and pushes them to an LSL outlet."""

    def __init__(
        self,
        amqp_url: str,
        service: str,
        session_id: str,
        *,
        name: str = "neurostream-predictions",
        lsl_offset: float | None = None,
        connection: AbstractRobustConnection | None = None,
    ) -> None:
        if not session_id or {"*", "#"} & set(session_id + service):
            # A wildcard here would bind other sessions' predictions to this outlet.
            raise ConfigError(
                f"service {service!r} / session {session_id!r} cannot name an outlet; "
                "use the session's own id (no '*' or '#')",
                field="session_id",
                session_id=session_id,
            )
        self.amqp_url = amqp_url
        self.service = service
        self.session_id = session_id
        self.name = name
        self.source_id = source_id(session_id)
        self.routing_key = f"{service}.{session_id}"
        self.lsl_offset: float | None = lsl_offset
        self.connection: AbstractRobustConnection | None = connection
        self.info: pylsl.StreamInfo | None = None
        self.outlet: pylsl.StreamOutlet | None = None
        self.pushed = 0
        self.last_seq: int | None = None
        self._owns_connection = connection is None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None

    async def start(self) -> None:
        """Open the LSL outlet, then bind the session's queue and consume it."""
        if self.lsl_offset is None:
            self.lsl_offset = time.time() - pylsl.local_clock()
        info = pylsl.StreamInfo(
            self.name,
            STREAM_TYPE,
            len(CHANNELS),
            pylsl.IRREGULAR_RATE,
            pylsl.cf_double64,
            self.source_id,
        )
        desc = info.desc()
        desc.append_child_value("session_id", self.session_id)
        desc.append_child_value("service", self.service)
        desc.append_child_value(
            "timestamps", "epoch: its event; sliding window: its last sample (LSL clock)"
        )
        chans = desc.append_child("channels")
        for label in CHANNELS:
            chans.append_child("channel").append_child_value("label", label)
        self.info = info
        self.outlet = pylsl.StreamOutlet(info)
        if self.connection is None:
            try:
                self.connection = await aio_pika.connect_robust(self.amqp_url, timeout=10)
            except Exception as exc:
                raise BrokerUnavailable.at(self.amqp_url, exc) from exc
        self._channel = await self.connection.channel()
        # Predictions are small and pushed at once; 64 in flight keeps the loop fed.
        await self._channel.set_qos(prefetch_count=64)
        ex = await topology.declare_exchanges(self._channel)
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(ex[topology.PREDICTIONS_EXCHANGE], routing_key=self.routing_key)
        self._consumer_tag = await self._queue.consume(self._on_message)

    async def close(self) -> None:
        """Stop consuming, drop the queue, close what was opened here and the LSL outlet."""
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception as exc:  # the channel may already be gone with the broker
                log.debug("cancelling the outlet's consumer: %s", exc)
        self._consumer_tag = None
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel, self._queue = None, None
        if self._owns_connection and self.connection is not None:
            await self.connection.close()
            self.connection = None
        self.outlet = None  # pylsl destroys the outlet when the object goes

    async def drain(self, last_seq: int | None, timeout_s: float, *, idle_s: float = 2.0) -> bool:
        """Wait, after the last window was confirmed, for the session's last predictions.

        True once the prediction for ``last_seq`` (or a later one) went out and nothing more
        came for ``SETTLE_S``: with worker replicas an earlier seq may still be in flight
        behind it. False when nothing more came for ``idle_s`` since the last push (the last
        epochs may have been gated: no prediction comes for them), or at ``timeout_s``
        without it. The idle clock starts at the first push after the call, not at the
        call: a worker slower than ``idle_s`` to score the last windows is waited for, up
        to ``timeout_s``.
        """
        if last_seq is None:
            return True
        loop = asyncio.get_running_loop()
        start = loop.time()
        seen, last_push = self.pushed, None
        while True:
            now = loop.time()
            if self.pushed != seen:
                seen, last_push = self.pushed, now
            reached = self.last_seq is not None and self.last_seq >= last_seq
            quiet = now - (start if last_push is None else last_push)
            if reached and quiet >= SETTLE_S:
                return True
            if now - start >= timeout_s:
                return reached
            if not reached and last_push is not None and quiet >= idle_s:
                return False
            await asyncio.sleep(0.02)

    def push(self, items: Iterable[PredictionItem]) -> int:
        """Push a message's predictions in seq order; returns how many were pushed."""
        assert self.outlet is not None and self.lsl_offset is not None
        n = 0
        for item in sorted(items, key=lambda i: i.seq):
            now = time.time()
            last = item.last_sample_t
            event = item.event_t
            sample = [
                float(item.seq),
                item.score,
                float(item.predicted),
                math.nan if item.marker is None else float(item.marker),
                float(item.model_version_id),
                math.nan if last is None else now - last,
            ]
            # An older worker's message lacks the geometry: its window's first sample.
            self.outlet.push_sample(sample, (item.t0 if event is None else event) - self.lsl_offset)
            self.last_seq = item.seq if self.last_seq is None else max(self.last_seq, item.seq)
            n += 1
        self.pushed += n
        return n

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            try:
                body = PredictionMessage.decode(message.body)
            except ContractError as exc:
                # A malformed message is dropped: the prediction is in PostgreSQL anyway.
                log.warning("session %s: unreadable prediction message: %s", self.session_id, exc)
                return
            if body.session_id == self.session_id:
                self.push(body.predictions)
