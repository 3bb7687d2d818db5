"""Results back to the application as LSL streams, stamped on the LSL clock.

worker -> ``eeg.predictions`` -> ``PredictionOutlet`` -> LSL outlet -> the experiment
(PsychoPy, Unity, any ``StreamInlet``); decider -> ``eeg.decisions`` -> ``DecisionOutlet``
-> a second LSL outlet. Both (``ResultOutlet``) bind an exclusive auto-delete queue to the
session's key ``<service>.<session_id>`` before the session's first window is published,
so nothing is missed, and push a result the moment its message arrives.

Predictions (type ``Predictions``, irregular rate, ``double64``, source id
``neurostream-<session_id>-predictions``): one sample per prediction, pushed in ``seq``
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

Decisions (type ``Decisions``, irregular rate, ``double64``, source id
``neurostream-<session_id>-decisions``): one sample per ``DecisionMessage`` (a trial's
symbol under one stopping rule; with several rules a trial has one sample per rule, or
give ``rule`` to push only one rule's), each (trial, rule) once, with six channels:

    trial, symbol_index, row_code, col_code, posterior, repetitions

``row_code``/``col_code`` are the chosen symbol's stimulus codes (``codes``; NaN when the
decision names fewer), ``symbol_index`` indexes the speller's row-major symbols. The
timestamp is the decision's last flash (``last_event_t``: the event of the last epoch it
used), on the LSL clock, so the stimulus program matches the decision to the flash it
pushed; the epoch's last sample when the event is not known, else the decision's time.

Results carry wall-clock times; ``lsl = wall - lsl_offset``, where ``lsl_offset`` is the
producer's (``wall = lsl + lsl_offset``) when given, else measured once at start as
``time.time() - pylsl.local_clock()``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

import pylsl
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from neurostream import broker, topology
from neurostream.contract import (
    ContractError,
    DecisionMessage,
    PredictionItem,
    PredictionMessage,
)
from neurostream.errors import ConfigError

log = logging.getLogger(__name__)

CHANNELS = ("seq", "score", "predicted", "marker", "model_version_id", "latency_s")
STREAM_TYPE = "Predictions"
DECISION_CHANNELS = ("trial", "symbol_index", "row_code", "col_code", "posterior", "repetitions")
DECISION_STREAM_TYPE = "Decisions"
# How long drain() waits for quiet once the session's last seq (trial) was pushed: replicas'
# earlier seqs, and a trial's decisions under the other rules, arrive within a batch's time.
SETTLE_S = 0.2


def source_id(session_id: str) -> str:
    """The predictions outlet's LSL source id: what a program resolves them by."""
    return f"neurostream-{session_id}-predictions"


def decision_source_id(session_id: str) -> str:
    """The decisions outlet's LSL source id."""
    return f"neurostream-{session_id}-decisions"


class ResultOutlet(ABC):
    """One session's results from a topic exchange to an LSL outlet: the lifecycle both
    outlets share (``start``, ``drain``, ``close``); a subclass reads and pushes its kind."""

    exchange: ClassVar[str]
    stream_type: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    timestamps: ClassVar[str]  # what a sample's timestamp is, for the stream's desc

    def __init__(
        self,
        amqp_url: str,
        service: str,
        session_id: str,
        *,
        name: str,
        source: str,
        lsl_offset: float | None = None,
        connection: AbstractRobustConnection | None = None,
    ) -> None:
        if not session_id or {"*", "#"} & set(session_id + service):
            # A wildcard here would bind other sessions' results to this outlet.
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
        self.source_id = source
        self.routing_key = f"{service}.{session_id}"
        self.lsl_offset: float | None = lsl_offset
        self.connection: AbstractRobustConnection | None = connection
        self.info: pylsl.StreamInfo | None = None
        self.outlet: pylsl.StreamOutlet | None = None
        self.pushed = 0
        self.last: int | None = None  # the highest seq (trial) pushed: what drain waits for
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
            self.stream_type,
            len(self.channels),
            pylsl.IRREGULAR_RATE,
            pylsl.cf_double64,
            self.source_id,
        )
        desc = info.desc()
        desc.append_child_value("session_id", self.session_id)
        desc.append_child_value("service", self.service)
        desc.append_child_value("timestamps", self.timestamps)
        for key, value in self._extras().items():
            desc.append_child_value(key, value)
        chans = desc.append_child("channels")
        for label in self.channels:
            chans.append_child("channel").append_child_value("label", label)
        self.info = info
        self.outlet = pylsl.StreamOutlet(info)
        if self.connection is None:
            self.connection = await broker.connect(self.amqp_url, name=f"outlet:{info.name()}")
        self._channel = await self.connection.channel()
        # Results are small and pushed at once; 64 in flight keeps the loop fed.
        await self._channel.set_qos(prefetch_count=64)
        ex = await topology.declare_exchanges(self._channel)
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(ex[self.exchange], routing_key=self.routing_key)
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

    async def drain(self, last: int | None, timeout_s: float, *, idle_s: float = 2.0) -> bool:
        """Wait, after the last window was confirmed, for the session's last results.

        True once the result for ``last`` (a seq, a trial; or a later one) went out and
        nothing more came for ``SETTLE_S``: with worker replicas an earlier seq may still
        be in flight behind it, and a trial's other rules decide within the same message's
        time. False when nothing more came for ``idle_s`` since the last push (the last
        epochs may have been gated, a last trial left incomplete: nothing comes for
        them), or at ``timeout_s`` without it. The idle clock starts at the first push
        after the call, not at the call: a worker slower than ``idle_s`` to score the last
        windows is waited for, up to ``timeout_s``.
        """
        if last is None:
            return True
        loop = asyncio.get_running_loop()
        start = loop.time()
        seen, last_push = self.pushed, None
        while True:
            now = loop.time()
            if self.pushed != seen:
                seen, last_push = self.pushed, now
            reached = self.last is not None and self.last >= last
            quiet = now - (start if last_push is None else last_push)
            if reached and quiet >= SETTLE_S:
                return True
            if now - start >= timeout_s:
                return reached
            if not reached and last_push is not None and quiet >= idle_s:
                return False
            await asyncio.sleep(0.02)

    def _extras(self) -> dict[str, str]:
        """More of the stream's description, before its channels."""
        return {}

    def _pushed(self, key: int) -> None:
        self.last = key if self.last is None else max(self.last, key)
        self.pushed += 1

    @abstractmethod
    def _receive(self, body: bytes) -> None:
        """Decode one message and push what is this session's; ``ContractError`` if unreadable."""

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            try:
                self._receive(message.body)
            except ContractError as exc:
                # A malformed message is dropped: the result is in PostgreSQL anyway.
                log.warning(
                    "session %s: unreadable %s message: %s",
                    self.session_id,
                    self.stream_type.lower(),
                    exc,
                )


class PredictionOutlet(ResultOutlet):
    """Consumes one session's predictions from eeg.predictions and pushes them to an LSL outlet."""

    exchange = topology.PREDICTIONS_EXCHANGE
    stream_type = STREAM_TYPE
    channels = CHANNELS
    timestamps = "epoch: its event; sliding window: its last sample (LSL clock)"

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
        super().__init__(
            amqp_url,
            service,
            session_id,
            name=name,
            source=source_id(session_id),
            lsl_offset=lsl_offset,
            connection=connection,
        )

    @property
    def last_seq(self) -> int | None:
        """The highest seq pushed."""
        return self.last

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
            self._pushed(item.seq)
            n += 1
        return n

    def _receive(self, body: bytes) -> None:
        message = PredictionMessage.decode(body)
        if message.session_id == self.session_id:
            self.push(message.predictions)


class DecisionOutlet(ResultOutlet):
    """Consumes one session's decisions from eeg.decisions and pushes them to an LSL outlet.

    ``rule`` (a stopping rule's name, ``fixed-10``) pushes only that rule's decisions, for
    a stimulus program that acts on one; None pushes every rule's."""

    exchange = topology.DECISIONS_EXCHANGE
    stream_type = DECISION_STREAM_TYPE
    channels = DECISION_CHANNELS
    timestamps = "the decision's last flash: the event of the last epoch it used (LSL clock)"

    def __init__(
        self,
        amqp_url: str,
        service: str,
        session_id: str,
        *,
        name: str = "neurostream-decisions",
        rule: str | None = None,
        lsl_offset: float | None = None,
        connection: AbstractRobustConnection | None = None,
    ) -> None:
        super().__init__(
            amqp_url,
            service,
            session_id,
            name=name,
            source=decision_source_id(session_id),
            lsl_offset=lsl_offset,
            connection=connection,
        )
        self.rule = rule
        self.sent: set[tuple[int, str]] = set()  # (trial, rule) pushed: a redelivery is not

    @property
    def last_trial(self) -> int | None:
        """The highest trial a decision was pushed for."""
        return self.last

    def push(self, decision: DecisionMessage) -> bool:
        """Push one decision; False when it is another rule's or was already pushed."""
        assert self.outlet is not None and self.lsl_offset is not None
        if self.rule is not None and decision.rule != self.rule:
            return False
        if (decision.trial, decision.rule) in self.sent:
            return False
        codes = [float(c) for c in decision.codes[:2]]
        codes += [math.nan] * (2 - len(codes))
        sample = [
            float(decision.trial),
            float(decision.symbol_index),
            *codes,
            decision.posterior,
            float(decision.repetitions),
        ]
        at = decision.last_event_t
        if at is None:
            at = decision.decided_at if decision.last_sample_t is None else decision.last_sample_t
        self.outlet.push_sample(sample, at - self.lsl_offset)
        self.sent.add((decision.trial, decision.rule))
        self._pushed(decision.trial)
        return True

    def _extras(self) -> dict[str, str]:
        return {"rule": self.rule or "every rule: one sample per rule"}

    def _receive(self, body: bytes) -> None:
        decision = DecisionMessage.decode(body)
        if decision.session_id == self.session_id:
            self.push(decision)
