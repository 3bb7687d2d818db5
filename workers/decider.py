"""The decider: a trial-based paradigm's predictions become one decision per trial and rule.

eeg.predictions (key ``<service>.<session_id>``) -> quorum queue ``decide.<service>`` with a
single active consumer (every worker replica runs a decider; one decides, the others
stand by and take over when it goes) -> the session's ``SpellerLayout`` from
``sessions.paradigm`` (sessions of other paradigms are acked and ignored) -> per (session,
trial) a ``TrialEvidence``: each scored flash adds its score under its stimulus code, a
gated flash counts without evidence -> when a repetition completes, each stopping rule
not yet fired is asked -> a fired rule's decision is written to ``decisions`` (idempotent
on (session, trial, rule)), published on ``eeg.decisions``, and only then are the
predictions that made it acked. A message that cannot be read is dead-lettered to
``decide.<service>.dead`` with ``x-neurostream-reason``.

The state is in memory, but nothing is lost with it. The first time a decider meets a
trial, it replays what ``predictions`` and ``gated`` hold for that trial (the worker
writes them before it publishes), in seq order, up to the newest flash of the message at
hand; rules already stored in ``decisions`` count as fired. So a decider that takes over
mid-trial (a restart, the standby of the single active consumer) reaches the decision its
predecessor would have, and a stored decision is published again only when the message
that fired it comes back unacked (at least once; the decision's key says which it is).

Lifecycle as the worker's: ``run()`` = ``start()``, wait for ``request_stop()``,
``close()``; ``close()`` settles the messages already received within ``drain_timeout_s``
and gives back the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aio_pika
import numpy as np
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage
from psycopg_pool import AsyncConnectionPool

from neurostream import broker, topology
from neurostream.batching import drain, next_batch
from neurostream.contract import ContractError, DecisionMessage, PredictionMessage
from neurostream.db import open_pool
from neurostream.decisions import (
    Calibration,
    SpellerLayout,
    StoppingRule,
    TrialEvidence,
    parse_rules,
)
from neurostream.lifecycle import Lifecycle, signal_name
from neurostream.settings import CoreSettings
from workers import deliveries
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)

DECISIONS_CONTENT_TYPE = "application/json"
# Bounds of the in-memory state: a session or trial pushed out is rebuilt when met again.
MAX_SESSIONS = 4096
MAX_TRIALS = 4096
_T = TypeVar("_T")
_INT32 = 2**31 - 1


def decide_queue(service: str) -> str:
    return f"decide.{service}"


def decide_dead_queue(service: str) -> str:
    return f"decide.{service}.dead"


async def declare_decider(channel: AbstractChannel, service: str) -> AbstractQueue:
    """The decider's quorum queue (single active consumer) on the service's predictions.

    Bound with ``<service>.#`` because a session id may hold dots; a message of another
    service whose name extends this one (``p300.x``) is told apart by its routing key."""
    ex = await topology.declare_exchanges(channel)
    queue_name = decide_queue(service)
    dead = await channel.declare_queue(
        decide_dead_queue(service), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(ex[topology.DEAD_EXCHANGE], routing_key=queue_name)
    queue = await channel.declare_queue(
        queue_name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-single-active-consumer": True,
            "x-dead-letter-exchange": topology.DEAD_EXCHANGE,
            "x-dead-letter-routing-key": queue_name,
            "x-delivery-limit": topology.DELIVERY_LIMIT,
        },
    )
    await queue.bind(ex[topology.PREDICTIONS_EXCHANGE], routing_key=f"{service}.#")
    return queue


@dataclass
class DeciderCounters:
    messages: int = 0  # prediction messages settled
    ignored: int = 0  # of sessions without a speller paradigm (or another service's)
    rejected: int = 0  # dead-lettered
    decisions: int = 0  # decisions written (new rows)
    republished: int = 0  # stored decisions published again (their message came back)
    rebuilt: int = 0  # trials met for the first time: replayed from the tables
    write_retries: int = 0


@dataclass(slots=True)
class _Flash:
    seq: int
    code: int
    score: float | None  # None: gated (counted, no evidence)
    model_version_id: int | None
    event_t: float | None
    last_sample_t: float | None
    live: bool  # from the message at hand, not replayed from the tables


@dataclass(slots=True)
class _Trial:
    evidence: TrialEvidence  # counts each seq once
    fired: set[str] = field(default_factory=set)
    stored: set[str] = field(default_factory=set)  # in ``decisions`` when the trial was met
    versions: set[int] = field(default_factory=set)
    last: _Flash | None = None


@dataclass(slots=True)
class _Pending:
    decision: DecisionMessage
    worker_id: str


class _GiveUp(Exception):
    """A database call still failing while stopping: the batch goes back to the queue."""


class Decider(Lifecycle):
    """The decider of one service: ``run()`` until ``request_stop()``, then ``close()``.

    ``pool`` and ``connection`` may be injected (the worker process, tests); the decider
    then uses them and leaves them open. Its channels are its own: closing them hands every
    unsettled delivery back to the queue (and, being the active consumer, the queue to the
    next decider).
    """

    def __init__(
        self,
        core: CoreSettings,
        settings: WorkerSettings,
        *,
        pool: AsyncConnectionPool | None = None,
        connection: AbstractRobustConnection | None = None,
    ) -> None:
        super().__init__()
        self.core = core
        self.settings = settings
        self.service: str = settings.service
        self.rules: list[StoppingRule] = parse_rules(settings.decision_rules)
        self.counters = DeciderCounters()
        self.pool: AsyncConnectionPool | None = pool
        self.connection: AbstractRobustConnection | None = connection
        self._owns_pool = pool is None
        self._owns_connection = connection is None
        # Per session: its layout, or None when it is not a speller session.
        self._layouts: OrderedDict[str, SpellerLayout | None] = OrderedDict()
        # Each model version's Platt calibration (its metrics), None when it has none.
        self._calibrations: dict[int, Calibration | None] = {}
        self._trials: OrderedDict[tuple[str, int], _Trial] = OrderedDict()
        self._inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self._closing: asyncio.Task[None] | None = None
        self._process: asyncio.Task[None] | None = None
        self._channel: AbstractRobustChannel | None = None
        self._out_channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer: deliveries.Consumer | None = None
        self._dead: AbstractExchange | None = None
        self._decisions: AbstractExchange | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (unless given a pool/connection), declare the queue, start consuming."""
        if self.pool is None:
            self.pool = await open_pool(self.core.database_url, max_size=2, autocommit=True)
        if self.connection is None:
            self.connection = await broker.connect(
                self.core.amqp_url, name=f"decider:{self.settings.worker_id}"
            )
        channel = await self.connection.channel(publisher_confirms=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.settings.decide_prefetch)
        self._queue = await declare_decider(channel, self.service)
        self._dead = await channel.get_exchange(topology.DEAD_EXCHANGE)
        # Confirmed: a decision is acked upstream only once the broker has it.
        out = await self.connection.channel(publisher_confirms=True)
        self._out_channel = out
        self._decisions = await out.get_exchange(topology.DECISIONS_EXCHANGE)
        self._process = asyncio.create_task(self._process_loop(), name="decide")
        self._consumer = deliveries.Consumer(channel, self._queue.name, self._on_message)
        await self._consumer.start()
        log.info(
            "decider %s on %s (rules %s)",
            self.settings.worker_id,
            self._queue.name,
            ", ".join(r.name for r in self.rules),
        )

    def handle_signal(self, signum: int) -> None:
        """What SIGTERM/SIGINT do when the decider runs alone."""
        log.info("decider %s got %s; stopping", self.settings.worker_id, signal_name(signum))
        self.request_stop()

    @property
    def open_trials(self) -> int:
        """Trials held in memory (decided ones included, until pushed out)."""
        return len(self._trials)

    async def close(self, wait_s: float | None = None) -> None:
        """Stop consuming, settle what was received (within ``wait_s``), then close.

        ``wait_s`` defaults to ``settings.drain_timeout_s``; what is left goes back to the
        queue when the channels close. Safe to call more than once."""
        if self._closing is None:
            bound = self.settings.drain_timeout_s if wait_s is None else wait_s
            self._closing = asyncio.create_task(self._close(bound), name="decider-close")
        await asyncio.shield(self._closing)

    async def _close(self, wait_s: float) -> None:
        self._stopping.set()
        self._signals.remove()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._process is not None and not self._process.done():
            self._inbox.put_nowait(_STOP)  # type: ignore[arg-type]
            try:
                await asyncio.wait_for(self._process, timeout=wait_s)
            except TimeoutError:
                log.error("decider: in-flight predictions not settled; they will be redelivered")
        if self._process is not None:
            self._process.cancel()
            await asyncio.gather(self._process, return_exceptions=True)
        for channel in (self._channel, self._out_channel):
            if channel is not None and not channel.is_closed:
                try:
                    await channel.close()
                except Exception:
                    log.debug("channel close failed (connection lost)", exc_info=True)
        if self._owns_connection and self.connection is not None:
            await self.connection.close()
        if self._owns_pool and self.pool is not None:
            await self.pool.close()
        log.info(
            "decider %s stopped after %d decisions",
            self.settings.worker_id,
            self.counters.decisions,
        )

    # -- consuming -----------------------------------------------------------------------
    async def _on_message(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(message)  # bounded by the prefetch

    async def _process_loop(self) -> None:
        while True:
            items: list[Any] = await next_batch(self._inbox, self.settings.decide_prefetch)
            stop = _STOP in items
            batch: list[DeliveredMessage] = [m for m in items if m is not _STOP]
            if stop:
                batch += [m for m in drain(self._inbox) if m is not _STOP]
            if batch:
                try:
                    await self.process_batch(batch)
                except Exception:
                    # The loop outlives any one batch (a channel lost mid-ack): unacked
                    # messages come back, the state rebuilds, the writes are idempotent.
                    log.exception("decider batch of %d failed; redelivering", len(batch))
                    self._forget()
                    await deliveries.requeue(batch)
            if stop:
                return

    async def process_batch(self, batch: Sequence[DeliveredMessage]) -> None:
        """Apply, write decisions, publish them, dead-letter the unreadable, ack."""
        decisions: list[DecisionMessage] = []
        rejects: list[tuple[DeliveredMessage, str]] = []
        try:
            for delivery in batch:
                try:
                    message = self._read(delivery)
                except ContractError as exc:
                    rejects.append((delivery, exc.reason))
                    continue
                if message is None:
                    self.counters.ignored += 1
                    continue
                try:
                    decisions += await self._apply(message)
                except _GiveUp:
                    raise
                except Exception as exc:
                    # Never a dead decider: the message goes aside, its trials rebuild.
                    log.exception("decider failed on a message of %s", message.session_id)
                    self._forget(message.session_id)
                    rejects.append((delivery, f"decider failed on this message: {exc!r}"[:500]))
            await self._retrying(lambda: self._store(decisions))
        except _GiveUp:
            self._forget()
            await deliveries.requeue(batch)
            return
        await self._publish(decisions)
        await self._dead_letter(rejects)
        await deliveries.ack_through(batch)
        self.counters.messages += len(batch)
        self.counters.rejected += len(rejects)

    def _read(self, delivery: DeliveredMessage) -> PredictionMessage | None:
        """The message, None when it is another service's; ContractError when unreadable."""
        message = PredictionMessage.decode(delivery.body)
        if delivery.routing_key not in (None, f"{self.service}.{message.session_id}"):
            return None
        for item in message.predictions:
            if not math.isfinite(item.score):
                raise ContractError(
                    f"prediction seq {item.seq} has a non-finite score",
                    session_id=message.session_id,
                    seq=item.seq,
                )
        # Checked here: a value the tables cannot hold would fail its write on every retry.
        places = [(p.seq, p.trial) for p in message.predictions]
        places += [(g.seq, g.trial) for g in message.gated]
        for seq, trial in places:
            if seq > _INT32 or (trial is not None and not 0 <= trial <= _INT32):
                raise ContractError(
                    f"seq {seq} / trial {trial} outside 0..{_INT32}",
                    session_id=message.session_id,
                    seq=seq,
                )
        return message

    # -- deciding ------------------------------------------------------------------------
    async def _apply(self, message: PredictionMessage) -> list[DecisionMessage]:
        session = message.session_id
        layout = await self._layout(session)
        if layout is None:
            self.counters.ignored += 1
            return []
        codes = set(layout.codes)
        by_trial: dict[int, list[_Flash]] = defaultdict(list)
        for p in message.predictions:
            if p.trial is not None and p.marker in codes:
                # At the precision ``predictions.score`` stores (real), so a trial rebuilt
                # from the table adds up to exactly what the live flashes did.
                score = float(np.float32(p.score))
                flash = _Flash(
                    p.seq, p.marker, score, p.model_version_id, p.event_t, p.last_sample_t, True
                )
                by_trial[p.trial].append(flash)
        for g in message.gated:
            if g.trial is not None and g.marker in codes:
                by_trial[g.trial].append(_Flash(g.seq, g.marker, None, None, None, None, True))
        out: list[DecisionMessage] = []
        for trial, flashes in by_trial.items():
            key = (session, trial)
            state = self._trials.get(key)
            if state is None:
                state, flashes = await self._rebuild(session, trial, layout, flashes)
                self._remember(key, state)
            else:
                self._trials.move_to_end(key)
            versions = {f.model_version_id for f in flashes if f.model_version_id is not None}
            await self._load_calibrations(versions)
            for flash in sorted(flashes, key=lambda f: f.seq):
                out += self._feed(session, trial, layout, state, flash)
        return out

    async def _load_calibrations(self, versions: set[int]) -> None:
        """The calibrations of versions not met yet (one query; a version is immutable)."""
        missing = sorted(versions - self._calibrations.keys())
        if not missing:
            return

        async def load() -> list[tuple[int, Any]]:
            assert self.pool is not None
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT id, metrics FROM model_versions WHERE id = ANY(%s)", [missing]
                )
                return list(await cur.fetchall())

        found = dict(await self._retrying(load))
        for version in missing:
            self._calibrations[version] = Calibration.of(found.get(version))

    def _feed(
        self, session: str, trial: int, layout: SpellerLayout, state: _Trial, flash: _Flash
    ) -> list[DecisionMessage]:
        """Add one flash; the decisions of the rules that fire on it (at a full repetition)."""
        evidence = state.evidence
        before = evidence.repetitions
        calibration = (
            self._calibrations.get(flash.model_version_id)
            if flash.model_version_id is not None
            else None
        )
        if not evidence.add(flash.code, flash.score, seq=flash.seq, calibration=calibration):
            return []  # a redelivery, or replayed already
        if flash.model_version_id is not None:
            state.versions.add(flash.model_version_id)
        if state.last is None or flash.seq > state.last.seq:
            state.last = flash
        if evidence.repetitions == before:
            return []
        out: list[DecisionMessage] = []
        for rule in self.rules:
            if rule.name in state.fired or not rule.should_stop(evidence):
                continue
            state.fired.add(rule.name)
            if rule.name in state.stored and not flash.live:
                continue  # decided, published and acked by a predecessor
            index, posterior = evidence.best()
            last = state.last
            out.append(
                DecisionMessage(
                    session_id=session,
                    service=self.service,
                    trial=trial,
                    rule=rule.name,
                    symbol_index=index,
                    symbol=layout.symbols[index],
                    codes=list(layout.targets(index)),
                    posterior=min(1.0, max(0.0, float(posterior))),
                    repetitions=evidence.repetitions,
                    epochs=evidence.epochs,
                    model_version_ids=sorted(state.versions),
                    last_event_t=last.event_t,
                    last_sample_t=last.last_sample_t,
                    decided_at=time.time(),
                    evidence=evidence.evidence(),
                )
            )
        return out

    async def _rebuild(
        self, session: str, trial: int, layout: SpellerLayout, live: list[_Flash]
    ) -> tuple[_Trial, list[_Flash]]:
        """A trial met for the first time: its state from the tables, and the flashes to
        feed (the stored ones up to the message's newest, then the message's own)."""
        upto = max(f.seq for f in live)
        rows, gated, stored = await self._retrying(lambda: self._load(session, trial, upto))
        codes = set(layout.codes)
        merged: dict[int, _Flash] = {}
        for seq, marker in gated:
            if marker in codes:
                merged[seq] = _Flash(seq, marker, None, None, None, None, False)
        for seq, marker, score, version in rows:  # scored by one version beats gated by another
            if marker in codes:
                merged[seq] = _Flash(seq, marker, score, version, None, None, False)
        merged.update({f.seq: f for f in live})  # the message's own carry their times
        state = _Trial(TrialEvidence(layout, layout.target_prior), stored=stored)
        self.counters.rebuilt += 1
        if merged.keys() - {f.seq for f in live}:
            log.info(
                "decider: trial %d of %s rebuilt from %d stored flashes",
                trial,
                session,
                len(merged) - len(live),
            )
        return state, list(merged.values())

    async def _load(
        self, session: str, trial: int, upto: int
    ) -> tuple[list[tuple[int, int, float, int]], list[tuple[int, int]], set[str]]:
        assert self.pool is not None
        params = {"s": session, "t": trial, "upto": upto}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_REPLAY_PREDICTIONS, params)).fetchall()
            gated = await (await conn.execute(_REPLAY_GATED, params)).fetchall()
            stored = await (await conn.execute(_STORED, params)).fetchall()
        return (
            # A real comes back as its shortest decimal: back to the float32 it is.
            [(int(r[0]), int(r[1]), float(np.float32(r[2])), int(r[3])) for r in rows],
            [(int(r[0]), int(r[1])) for r in gated],
            {str(r[0]) for r in stored},
        )

    async def _layout(self, session: str) -> SpellerLayout | None:
        """The session's speller layout (cached); None for any other paradigm."""
        if session in self._layouts:
            self._layouts.move_to_end(session)
            return self._layouts[session]
        paradigm = await self._retrying(lambda: self._paradigm(session))
        layout: SpellerLayout | None = None
        if isinstance(paradigm, dict) and paradigm.get("kind") == "speller":
            try:
                layout = SpellerLayout.of(paradigm)
            except Exception as exc:  # a broken registration must not stop the decider
                log.warning("session %s: speller layout unreadable (%s); ignored", session, exc)
        self._layouts[session] = layout
        while len(self._layouts) > MAX_SESSIONS:
            self._layouts.popitem(last=False)
        return layout

    async def _paradigm(self, session: str) -> Any:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT paradigm FROM sessions WHERE session_id = %s", [session]
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return json.loads(row[0]) if isinstance(row[0], str) else row[0]

    def _remember(self, key: tuple[str, int], state: _Trial) -> None:
        self._trials[key] = state
        while len(self._trials) > MAX_TRIALS:
            self._trials.popitem(last=False)

    def _forget(self, session: str | None = None) -> None:
        """Drop in-memory state (a session's, or all) so it is rebuilt from the tables."""
        if session is None:
            self._trials.clear()
            return
        for key in [k for k in self._trials if k[0] == session]:
            del self._trials[key]

    # -- writing and publishing ----------------------------------------------------------
    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a database call through an outage; ``_GiveUp`` only when stopping."""
        delay = 0.1
        while True:
            try:
                return await call()
            except Exception as exc:
                self.counters.write_retries += 1
                if self._stopping.is_set() and delay >= self.settings.write_retry_max_s:
                    log.error("decider: giving up a database call on shutdown: %s", exc)
                    raise _GiveUp from exc
                log.warning("decider: database call failed (%s); retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.write_retry_max_s)

    async def _store(self, decisions: Sequence[DecisionMessage]) -> None:
        """One idempotent INSERT for the batch's decisions."""
        if not decisions:
            return
        assert self.pool is not None
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _INSERT_DECISIONS,
                {
                    "service": self.service,
                    "worker_id": self.settings.worker_id,
                    "session_id": [d.session_id for d in decisions],
                    "trial": [d.trial for d in decisions],
                    "rule": [d.rule for d in decisions],
                    "symbol_index": [d.symbol_index for d in decisions],
                    "symbol": [d.symbol for d in decisions],
                    "codes": [_int_array(d.codes) for d in decisions],
                    "posterior": [d.posterior for d in decisions],
                    "repetitions": [d.repetitions for d in decisions],
                    "epochs": [d.epochs for d in decisions],
                    "versions": [_int_array(d.model_version_ids) for d in decisions],
                    "evidence": [json.dumps(d.evidence) for d in decisions],
                    "last_event_t": [d.last_event_t for d in decisions],
                    "last_sample_t": [d.last_sample_t for d in decisions],
                    "decided_at": [d.decided_at for d in decisions],
                },
            )
        new = cur.rowcount
        self.counters.decisions += new
        self.counters.republished += len(decisions) - new

    async def _publish(self, decisions: Sequence[DecisionMessage]) -> None:
        """Each decision on ``eeg.decisions`` (key ``<service>.<session_id>``), confirmed."""
        if not decisions:
            return
        assert self._decisions is not None
        try:
            for d in decisions:
                await self._decisions.publish(
                    aio_pika.Message(
                        body=d.encode(),
                        content_type=DECISIONS_CONTENT_TYPE,
                        message_id=f"{d.session_id}:{d.trial}:{d.rule}",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=f"{self.service}.{d.session_id}",
                    mandatory=False,  # no listener is fine: the decision is stored
                )
        except Exception as exc:  # stored already; the loop must go on
            log.warning("could not publish decisions: %s", exc)

    async def _dead_letter(self, rejects: Sequence[tuple[DeliveredMessage, str]]) -> None:
        if not rejects:
            return
        assert self._dead is not None
        for delivery, reason in rejects:
            props = delivery.header.properties
            headers = deliveries.headers(delivery)
            headers[topology.REASON_HEADER] = reason
            headers["x-neurostream-worker"] = self.settings.worker_id
            await self._dead.publish(
                aio_pika.Message(
                    body=delivery.body,
                    headers=headers,
                    message_id=props.message_id,
                    content_type=props.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=decide_queue(self.service),
            )
            log.warning("decider dead-lettered a prediction message: %s", reason)


_STOP = object()


def _int_array(values: Sequence[int]) -> str:
    return "{" + ",".join(str(int(v)) for v in values) + "}"


# The serving predictions and gated flashes of one trial, once per seq (a window scored
# again after a model swap keeps its first row).
_REPLAY_PREDICTIONS = """
SELECT DISTINCT ON (seq) seq, marker, score, model_version_id FROM predictions
WHERE session_id = %(s)s AND trial = %(t)s AND role = 'serving' AND seq <= %(upto)s
  AND marker IS NOT NULL
ORDER BY seq, predicted_at
"""
# ``gated`` does not store the trial: a trial's gated flashes are those from its first
# scored flash on (its epochs are consecutive windows). A gated flash before the first
# scored one is missed: the rebuilt trial then completes that repetition one flash later.
_REPLAY_GATED = """
SELECT DISTINCT ON (seq) seq, marker FROM gated
WHERE session_id = %(s)s AND role = 'serving' AND seq <= %(upto)s AND marker IS NOT NULL
  AND seq >= (SELECT min(seq) FROM predictions
              WHERE session_id = %(s)s AND trial = %(t)s AND role = 'serving')
ORDER BY seq, gated_at
"""
_STORED = "SELECT rule FROM decisions WHERE session_id = %(s)s AND trial = %(t)s"
_INSERT_DECISIONS = """
INSERT INTO decisions (session_id, trial, rule, service, symbol_index, symbol, codes,
                       posterior, repetitions, epochs, model_version_ids, evidence,
                       last_event_at, last_sample_at, decided_at, worker_id)
SELECT s, t, r, %(service)s, si, sy, c::int[], p, rp, e, v::int[], ev::jsonb,
       to_timestamp(le), to_timestamp(ls), to_timestamp(da), %(worker_id)s
FROM unnest(%(session_id)s::text[], %(trial)s::int[], %(rule)s::text[],
            %(symbol_index)s::int[], %(symbol)s::text[], %(codes)s::text[],
            %(posterior)s::float8[], %(repetitions)s::int[], %(epochs)s::int[],
            %(versions)s::text[], %(evidence)s::text[], %(last_event_t)s::float8[],
            %(last_sample_t)s::float8[], %(decided_at)s::float8[])
     AS u(s, t, r, si, sy, c, p, rp, e, v, ev, le, ls, da)
ON CONFLICT DO NOTHING
"""
