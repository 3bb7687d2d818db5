"""The worker loop: consume windows, predict in micro-batches, write, then ack.

start -> consume ``svc.<service>`` (prefetch) -> batch -> decode/validate (channels matched
to the model's signature by name) -> artifact gate (versions that record one: a rejected
epoch is stored in ``gated`` with its reason, not scored) -> featurize + classify (in a
thread, so the event loop keeps receiving) -> one idempotent INSERT -> dead-letter the
rejects with a reason -> ack -> publish results. Heartbeats go to the
``workers`` table and double as a check of the service's model assignment, so a missed
``models.events`` message still leads to the swap.

With a canary running (``neurostream.canary``), each session is served by the version of
the arm it started on (looked up once per session, ``registry.route_sessions``). A canary
that raises on predict is rolled back here: the failed windows are recorded and scored by
the champion in the same batch, the rollback is published on ``models.events``, and each
canary session records the seq where the champion took over. Replicas that have not yet
heard of a change keep to the same rule: a session this replica has not seen makes it ask
whether a canary runs (and sync first if it missed one), and canary-scored rows are
written only while the canary row, share-locked in the same transaction, still says
running (else the batch is re-scored by the champion).

Lifecycle (after arq's ``Worker``): ``run()`` = ``start()``, wait for ``request_stop()``
(what ``handle_signal`` calls on SIGTERM/SIGINT), ``close()``. ``close()`` stops consuming,
writes and acks the windows already received (bounded by ``drain_timeout_s``), and leaves
nothing acked that was not written; anything it could not settle is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import aio_pika
import numpy as np
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage
from psycopg_pool import AsyncConnectionPool

from neurostream import broker, registry, topology
from neurostream.batching import drain, next_batch
from neurostream.canary import CanaryEvent, EventName
from neurostream.contract import (
    PREDICTIONS_CONTENT_TYPE,
    ContractError,
    GatedItem,
    PredictionItem,
    PredictionMessage,
    Window,
    WindowKind,
    decode,
)
from neurostream.db import open_pool
from neurostream.events import publish_canary_event
from neurostream.geometry import EpochGeometry
from neurostream.lifecycle import Lifecycle, signal_name
from neurostream.models.artifacts import ArtifactPolicy
from neurostream.results import (
    GatedRow,
    PredictionRow,
    RejectionRow,
    write_gated,
    write_predictions,
    write_rejections,
)
from neurostream.settings import CoreSettings
from workers import deliveries, heartbeat, metrics
from workers.compute import limit_threads
from workers.model_slot import CanaryServing, ModelSlot, Served
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass
class Counters:
    processed: int = 0
    rejected: int = 0
    gated: int = 0  # epochs the serving version's gate kept from being scored
    duplicates: int = 0  # rows a write found already stored (no-op inserts)
    redelivered: int = 0  # deliveries marked redelivered by the broker
    batches: int = 0
    write_retries: int = 0
    by_version: dict[int, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(slots=True)
class _Reject:
    message: DeliveredMessage
    reason: str
    session_id: str | None
    seq: int | None


class Worker(Lifecycle):
    """One replica serving ``svc.<service>``: ``run()`` until ``request_stop()``, then ``close()``.

    ``pool`` and ``connection`` may be injected (tests, an embedding process); the worker
    then uses them and leaves them open. What it creates itself it closes. Its channels are
    always its own: closing them hands every unsettled delivery back to the queue.
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
        self.host: str = socket.gethostname()
        self.counters = Counters()
        self.pool: AsyncConnectionPool | None = pool
        self.connection: AbstractRobustConnection | None = connection
        self.slot: ModelSlot | None = None
        self._owns_pool = pool is None
        self._owns_connection = connection is None
        # Deliveries with the time they arrived (perf_counter), for the processing metric.
        self._inbox: asyncio.Queue[tuple[float, DeliveredMessage]] = asyncio.Queue()
        self._closing: asyncio.Task[None] | None = None
        self._process: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._channel: AbstractRobustChannel | None = None
        self._out_channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer: deliveries.Consumer | None = None
        self._dead: AbstractExchange | None = None
        self._predictions: AbstractExchange | None = None
        self._events: AbstractExchange | None = None  # models.events, for canary rollbacks
        # Sessions this replica checked for a canary it may have missed (bounded: forgetting
        # one costs one more lookup).
        self._seen: set[str] = set()
        # One thread featurizes and classifies (the loop keeps receiving meanwhile); its
        # native pools are capped like the loop's (workers/compute.py).
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (unless given a pool/connection), load the models, start consuming."""
        metrics.observe_gc_pauses()
        if self.pool is None:
            self.pool = await open_pool(self.core.database_url, max_size=4, autocommit=True)
        self.slot = ModelSlot(
            self.pool, self.service, policy=ArtifactPolicy.from_settings(self.core)
        )
        if self.connection is None:
            self.connection = await broker.connect(
                self.core.amqp_url, name=f"worker:{self.settings.worker_id}"
            )
        channel = await self.connection.channel(publisher_confirms=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        self._queue = await topology.declare_service(channel, self.service)
        self._consumer = deliveries.Consumer(channel, self._queue.name, self._on_message)
        self._dead = await channel.get_exchange(topology.DEAD_EXCHANGE)
        out = await self.connection.channel(publisher_confirms=False)
        self._out_channel = out
        self._predictions = await out.get_exchange(topology.PREDICTIONS_EXCHANGE)
        self._events = await out.get_exchange(topology.MODEL_EVENTS_EXCHANGE)
        if self.settings.model_events:
            events = await out.declare_queue(exclusive=True, auto_delete=True)
            await events.bind(topology.MODEL_EVENTS_EXCHANGE, routing_key=self.service)
            await events.consume(self._on_model_event, no_ack=True)
        self._process = asyncio.create_task(self._process_loop(), name="process")
        await self._sync_models()
        await heartbeat.beat(self.pool, self.snapshot("running"))
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        log.info("worker %s serving %s", self.settings.worker_id, self.service)

    def handle_signal(self, signum: int) -> None:
        """What SIGTERM/SIGINT do: stop after the windows already received."""
        log.info(
            "worker %s got %s; finishing in-flight windows",
            self.settings.worker_id,
            signal_name(signum),
        )
        self.request_stop()

    @property
    def pending(self) -> int:
        """Windows received and not yet taken into a batch."""
        return self._inbox.qsize()

    def snapshot(self, status: str) -> heartbeat.Snapshot:
        """The worker's row in the ``workers`` table."""
        serving, shadow = self.slot.current.ids if self.slot is not None else (None, None)
        return heartbeat.Snapshot(
            worker_id=self.settings.worker_id,
            service=self.service,
            host=self.host,
            serving=serving,
            shadow=shadow,
            processed=self.counters.processed,
            rejected=self.counters.rejected,
            gated=self.counters.gated,
            duplicates=self.counters.duplicates,
            redelivered=self.counters.redelivered,
            write_retries=self.counters.write_retries,
            errors=self.slot.errors if self.slot is not None else 0,
            last_error=self.slot.last_error if self.slot is not None else None,
            status=status,
        )

    async def close(self, wait_s: float | None = None) -> None:
        """Stop consuming, write and ack the windows already received, then close.

        Draining is bounded by ``wait_s`` (default ``settings.drain_timeout_s``); windows
        left over go back to the queue when the worker's channels close. Safe to call more
        than once and from several tasks: they all wait for the one shutdown.
        """
        if self._closing is None:
            bound = self.settings.drain_timeout_s if wait_s is None else wait_s
            self._closing = asyncio.create_task(self._close(bound), name="close")
        await asyncio.shield(self._closing)

    async def _close(self, wait_s: float) -> None:
        self._stopping.set()
        self._signals.remove()
        await self._stop_consuming()
        if self._process is not None and not self._process.done():
            # Finish the batch in flight plus everything already received.
            self._inbox.put_nowait(_STOP)  # type: ignore[arg-type]
            try:
                await asyncio.wait_for(self._process, timeout=wait_s)
            except TimeoutError:
                log.error(
                    "in-flight windows not settled in %.0f s; they will be redelivered", wait_s
                )
        tasks = [t for t in (self._process, self._heartbeat) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.pool is not None and self.slot is not None:
            try:
                await heartbeat.beat(self.pool, self.snapshot("stopped"))
            except Exception:  # the database may be the reason we stop
                log.warning("could not record the stopped status")
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
        self._compute.shutdown(wait=False)
        log.info(
            "worker %s stopped after %d windows", self.settings.worker_id, self.counters.processed
        )

    # -- consuming -----------------------------------------------------------------------
    async def _on_message(self, message: DeliveredMessage) -> None:
        if message.redelivered:
            self.counters.redelivered += 1
            metrics.REDELIVERED.labels(self.service).inc()
        self._inbox.put_nowait((time.perf_counter(), message))  # bounded by the prefetch

    async def _ensure_consuming(self) -> None:
        assert self._consumer is not None
        has_model = self.slot is not None and self.slot.current.serving is not None
        if has_model and not self._consumer.active and not self._stopping.is_set():
            await self._consumer.start()
        elif not has_model and self._consumer.active:
            log.warning("service %s has no model assigned; pausing consumption", self.service)
            await self._stop_consuming()

    async def _stop_consuming(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _on_model_event(self, message: AbstractIncomingMessage) -> None:
        try:
            event = json.loads(message.body)
            log.info("models.events: %s", event)
        except ValueError:
            log.warning("ignoring a malformed models.events message")
            return
        await self._sync_models()

    async def _sync_models(self) -> None:
        assert self.slot is not None
        try:
            if await self.slot.sync():
                await self._limit_threads()
        except Exception:
            log.exception("model assignment check failed; keeping the current model")
        canary = self.slot.canary
        if canary is not None and canary.status == "running" and canary.model is None:
            try:
                await self._roll_back_canary(
                    canary, [], f"canary did not load: {canary.load_error or 'unknown error'}"
                )
            except Exception:
                log.exception("could not roll back canary %s; retrying", canary.id)
        serving, shadow = self.slot.current.ids
        metrics.MODEL_VERSION.labels(self.service, "serving").set(serving or 0)
        metrics.MODEL_VERSION.labels(self.service, "shadow").set(shadow or 0)
        await self._ensure_consuming()

    async def _limit_threads(self) -> None:
        """Re-apply the native thread cap in both threads that predict (after a model load)."""
        n = self.settings.compute_threads
        limit_threads(n)
        await asyncio.get_running_loop().run_in_executor(self._compute, limit_threads, n)

    async def _heartbeat_loop(self) -> None:
        assert self.pool is not None
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.settings.heartbeat_s)
            except TimeoutError:
                pass
            if self._stopping.is_set():
                return
            # First: an outage of the store or the broker slows what follows, and is
            # alerted on by itself (write retries), not as a worker without heartbeats.
            metrics.beat(self.service)
            await self._sync_models()
            try:
                await heartbeat.beat(self.pool, self.snapshot("running"))
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sample_queue_depth(), self.settings.heartbeat_s)
            metrics.flush_gc_pauses()

    async def sample_queue_depth(self) -> int | None:
        """Set the queue-depth gauge to the ready messages in the service queue; the depth,
        or None when it could not be sampled (a passive declare changes nothing).

        ``robust=False``: a robust channel answers a repeated passive declare of a queue it
        recorded from that record, so the depth would stay at its first sample.
        """
        if self._out_channel is None or self._queue is None:
            return None
        try:
            queue = await self._out_channel.declare_queue(
                self._queue.name, passive=True, robust=False
            )
        except Exception as exc:  # a metric must never stop the worker
            log.debug("queue depth not sampled: %s", exc)
            return None
        depth = queue.declaration_result.message_count or 0
        metrics.QUEUE_DEPTH.labels(self.service).set(depth)
        return depth

    # -- processing ----------------------------------------------------------------------
    async def _process_loop(self) -> None:
        while True:
            items = await next_batch(self._inbox, self.settings.batch_max)
            stop = _STOP in items
            items = [m for m in items if m is not _STOP]
            if stop:
                items += [m for m in drain(self._inbox) if m is not _STOP]
            for i in range(0, len(items), self.settings.batch_max):
                chunk = items[i : i + self.settings.batch_max]
                received = [t for t, _ in chunk]
                part = [m for _, m in chunk]
                try:
                    await self.process_batch(part, received)
                except Exception:
                    # The loop must outlive any one batch (a channel lost mid-ack, a failed
                    # dead-letter publish): unacked windows come back and writes are idempotent.
                    log.exception("batch of %d windows failed; they will be redelivered", len(part))
                    await self._requeue(part)
            if stop:
                return

    async def process_batch(
        self, batch: Sequence[DeliveredMessage], received: Sequence[float] = ()
    ) -> None:
        """Predict, write, dead-letter and ack one micro-batch (``received``: when each
        delivery arrived, ``time.perf_counter()``)."""
        if not batch:
            return
        assert self.slot is not None
        served = self.slot.current
        champion = served.serving
        if champion is None:
            await self._requeue(batch)
            return
        canary = self.slot.canary if self.slot.canary and self.slot.canary.routing else None
        if canary is not None and canary.status == "running" and canary.model is None:
            why = f"canary did not load: {canary.load_error}"
            if not await self._roll_back_canary(canary, [], why):
                await self._requeue(batch)  # promoted meanwhile: routed as the registry says
                return
        started_running = canary is not None and canary.status == "running"
        decoded: list[tuple[DeliveredMessage, Window]] = []
        rejects: list[_Reject] = []
        for msg in batch:
            try:
                window = decode(
                    msg.body, msg.header.properties.headers, max_bytes=self.core.max_window_bytes
                )
                decoded.append((msg, window))
            except ContractError as exc:
                rejects.append(_Reject(msg, exc.reason, exc.session_id, exc.seq))
        if not started_running and await self._missed_canary([w for _, w in decoded]):
            # A canary runs that this replica had not heard of: route by it, or wait for it.
            if self.slot.canary is not None and self.slot.canary.status == "running":
                await self.process_batch(batch, received)
            else:
                await self._requeue(batch, delay=1.0)
            return
        arms = await self._arms(canary, [w for _, w in decoded]) if canary is not None else {}
        good: list[tuple[DeliveredMessage, Window]] = []
        for msg, window in decoded:
            h = window.header
            model = (
                champion if canary is None else canary.model_for(arms.get(h.session_id), champion)
            )
            # By channel name when the version records names (cached per channel tuple).
            reason = model.check_input(h.channels, h.n_samples, h.fs)
            # erp@2 versions take only epochs cut behind their stream filter.
            reason = reason or model.check_geometry(h.geometry)
            if reason:
                rejects.append(_Reject(msg, reason, h.session_id, h.seq))
            else:
                good.append((msg, window))
        rows: list[PredictionRow] = []
        gated: list[GatedRow] = []
        for part_served, windows in _split(served, canary, arms, [w for _, w in good]):
            try:
                part_rows, part_gated = await self._predict(part_served, windows)
            except Exception as exc:
                failing = part_served.serving
                assert failing is not None
                if canary is not None and canary.status == "running" and failing is canary.model:
                    if not await self._roll_back_canary(
                        canary,
                        windows,
                        f"canary {failing.label} raised on predict: {exc!r}",
                    ):
                        await self._requeue(batch)  # promoted meanwhile: routed anew
                        return
                    try:  # the windows it failed on, scored by the champion
                        part_rows, part_gated = await self._predict(served, windows)
                    except Exception as again:
                        exc, failing = again, champion  # the champion failed too
                    else:
                        rows += part_rows
                        gated += part_gated
                        continue
                if failing is champion and self.slot.fail_current(
                    f"model {failing.label} raised on predict: {exc!r}"
                ):
                    await self.process_batch(batch, received)  # retry on the previous model
                else:
                    await self._requeue(batch, delay=1.0)
                return
            rows += part_rows
            gated += part_gated
        if canary is not None and canary.status == "rolled_back":
            await self._record_switches(canary, arms, rows, gated)
        hold = None
        if canary is not None and started_running:
            version = int(canary.row["version_id"])
            scored = [(r.role, r.model_version_id) for r in rows]
            scored += [(g.role, g.model_version_id) for g in gated]
            if ("serving", version) in scored:
                hold = canary.id
        try:
            written = await self._write(rows, rejects, gated, hold_canary=hold)
        except _CanaryEnded:
            # Rolled back elsewhere after this batch was routed: follow the registry and
            # score the batch again (its canary sessions now by the champion).
            log.info("canary %s of %s ended elsewhere; re-scoring", hold, self.service)
            await self._sync_models()
            if canary is not None and self.slot.canary is canary and canary.status == "running":
                await self._requeue(batch, delay=1.0)  # the registry could not be read
            else:
                await self.process_batch(batch, received)
            return
        if not written:
            await self._requeue(batch)
            return
        await self._dead_letter(rejects)
        await deliveries.ack_through(batch)
        self._account(rows, rejects, good, received, gated)
        if self.settings.publish_predictions and (rows or gated):
            await self._publish(rows, gated)

    async def _predict(
        self, served: Served, windows: list[Window]
    ) -> tuple[list[PredictionRow], list[GatedRow]]:
        # A thread lets the loop keep receiving during a big batch; for a few windows the
        # hop costs more than the work.
        if len(windows) <= _INLINE_MAX:
            return _predict_rows(served, windows)
        return await asyncio.get_running_loop().run_in_executor(
            self._compute, _predict_rows, served, windows
        )

    # -- canary --------------------------------------------------------------------------
    async def _arms(self, canary: CanaryServing, windows: list[Window]) -> dict[str, str]:
        """Each session's arm: from the cache, else recorded and read back in one go
        (the first batch of a session is the only one that asks the database)."""
        missing = [
            s for s in dict.fromkeys(w.header.session_id for w in windows) if s not in canary.arms
        ]
        if missing:
            assert self.pool is not None
            async with self.pool.connection() as conn:
                found = await registry.route_sessions(conn, canary.row, missing)
            for session_id in missing:
                got = found.get(session_id)
                canary.arms[session_id] = str(got["arm"]) if got else "champion"
                if got and got["switch_seq"] is not None:
                    canary.switched[session_id] = int(got["switch_seq"])
        return canary.arms

    async def _missed_canary(self, windows: list[Window]) -> bool:
        """Whether a canary runs that this replica had not heard of (then it has synced).

        Asked only for sessions it has not seen, while it knows of no running canary: a
        replica that missed ``canary_started`` would otherwise start canary-arm sessions,
        recorded by a replica that heard it, on the champion."""
        new = [
            s for s in dict.fromkeys(w.header.session_id for w in windows) if s not in self._seen
        ]
        if not new:
            return False
        assert self.pool is not None and self.slot is not None
        async with self.pool.connection() as conn:
            running = await registry.running_canary_id(conn, self.service)
        known = self.slot.canary
        if running is None or (
            known is not None and known.id == running and known.status == "running"
        ):
            if len(self._seen) + len(new) > _SEEN_MAX:
                self._seen.clear()
            self._seen.update(new)
            return False
        log.info("canary %s of %s runs but was not heard of here; syncing", running, self.service)
        await self._sync_models()
        return True

    async def _roll_back_canary(
        self, canary: CanaryServing, failed: list[Window], reason: str
    ) -> bool:
        """End the canary (once, whichever replica is first) and record the failed windows;
        True when it is rolled back, so the caller re-scores them by the champion.

        When this call ended it, this replica stops routing to it and tells every replica
        over ``models.events``. When another replica, the judge or an operator ended it
        first, this replica follows the registry instead: rolled back, the same; promoted,
        the canary is now the champion (False: the caller routes the batch anew)."""
        assert self.pool is not None and self.slot is not None
        log.error("rolling back canary %s of %s: %s", canary.id, self.service, reason)
        async with self.pool.connection() as conn, conn.transaction():
            ended = await registry.conclude_canary(conn, canary.id, "rolled_back", reason)
            status = "rolled_back" if ended else await registry.hold_canary(conn, canary.id)
            if failed and status == "rolled_back":
                await registry.record_canary_failures(
                    conn,
                    canary.id,
                    self.settings.worker_id,
                    [(w.header.session_id, w.header.seq) for w in failed],
                    reason,
                )
        if ended is None:
            log.info(
                "canary %s of %s had ended (%s); following it", canary.id, self.service, status
            )
            await self.slot.sync()
        if status != "rolled_back":
            return False
        self.slot.canary_rolled_back(canary.id, reason)
        if ended is not None:
            await self.publish_canary_event("canary_rolled_back", canary, reason)
        return True

    async def publish_canary_event(
        self, event: EventName, canary: CanaryServing, reason: str
    ) -> bool:
        """Publish a canary's change on ``models.events``; False when it could not (the
        other replicas still see it at their next heartbeat)."""
        assert self._events is not None and self.slot is not None
        serving, shadow = self.slot.current.ids
        body = CanaryEvent(
            event=event,
            service=self.service,
            canary_id=canary.id,
            version_id=int(canary.row["version_id"]),
            serving_version_id=serving,
            shadow_version_id=shadow,
            reason=reason,
        )
        try:
            await publish_canary_event(self._events, body)
        except Exception as exc:
            log.warning("could not publish %s: %s", event, exc)
            return False
        return True

    async def _record_switches(
        self,
        canary: CanaryServing,
        arms: dict[str, str],
        rows: list[PredictionRow],
        gated: list[GatedRow],
    ) -> None:
        """Record, before the write, where each canary session went back to the champion
        (only when this batch holds an earlier seq than the one recorded). Only rows the
        champion scored count: a canary row of a batch the rollback landed in is not a
        switch (the write then finds the canary ended and the batch is scored again)."""
        canary_version = int(canary.row["version_id"])
        first: dict[str, int] = {}
        scored = [(r.role, r.model_version_id, r.session_id, r.seq) for r in rows]
        scored += [(g.role, g.model_version_id, g.session_id, g.seq) for g in gated]
        for role, version, session_id, seq in scored:
            if role == "serving" and version != canary_version and arms.get(session_id) == "canary":
                first[session_id] = min(seq, first.get(session_id, seq))
        earlier = {s: q for s, q in first.items() if q < canary.switched.get(s, q + 1)}
        if not earlier:
            return
        assert self.pool is not None
        async with self.pool.connection() as conn:
            await registry.record_switches(conn, canary.id, earlier)
        canary.switched.update(earlier)

    async def _write(
        self,
        rows: list[PredictionRow],
        rejects: list[_Reject],
        gated: list[GatedRow],
        *,
        hold_canary: int | None = None,
    ) -> bool:
        """Write durably, retrying through a database outage; False only when stopping.

        Predictions, gated epochs and rejections of a batch go in one transaction. With
        ``hold_canary`` (the batch holds rows the canary scored) that transaction first
        share-locks the canary's row and raises ``_CanaryEnded`` if it was rolled back."""
        assert self.pool is not None
        delay = 0.1
        rejection_rows = [
            RejectionRow(r.message.header.properties.message_id, r.session_id, r.seq, r.reason)
            for r in rejects
        ]
        while True:
            try:
                async with self.pool.connection() as conn:
                    if rejection_rows or gated or hold_canary is not None:
                        async with conn.transaction():
                            if hold_canary is not None and (
                                await registry.hold_canary(conn, hold_canary) == "rolled_back"
                            ):
                                raise _CanaryEnded(hold_canary)
                            new = await write_predictions(
                                conn, self.service, self.settings.worker_id, rows
                            )
                            await write_gated(conn, self.service, self.settings.worker_id, gated)
                            await write_rejections(
                                conn, self.service, self.settings.worker_id, rejection_rows
                            )
                    else:  # one autocommitted statement: one round trip
                        new = await write_predictions(
                            conn, self.service, self.settings.worker_id, rows
                        )
                self.counters.duplicates += len(rows) - new
                metrics.DUPLICATES.labels(self.service).inc(len(rows) - new)
                return True
            except _CanaryEnded:
                raise
            except Exception as exc:
                self.counters.write_retries += 1
                metrics.WRITE_FAILURES.labels(self.service).inc()
                if self._stopping.is_set() and delay >= self.settings.write_retry_max_s:
                    log.error("giving up the write on shutdown: %s", exc)
                    return False
                log.warning("write failed (%s); holding the batch, retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.write_retry_max_s)

    async def _dead_letter(self, rejects: list[_Reject]) -> None:
        if not rejects:
            return
        assert self._dead is not None
        for r in rejects:
            props = r.message.header.properties
            headers = deliveries.headers(r.message)
            headers[topology.REASON_HEADER] = r.reason
            headers["x-neurostream-worker"] = self.settings.worker_id
            await self._dead.publish(
                aio_pika.Message(
                    body=r.message.body,
                    headers=headers,
                    message_id=props.message_id,
                    content_type=props.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=self.service,
            )
            log.warning("dead-lettered %s: %s", props.message_id, r.reason)

    async def _requeue(self, batch: Sequence[DeliveredMessage], delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        await deliveries.requeue(batch)

    def _account(
        self,
        rows: list[PredictionRow],
        rejects: list[_Reject],
        good: list[tuple[DeliveredMessage, Window]],
        received: Sequence[float],
        gated: Sequence[GatedRow] = (),
    ) -> None:
        c = self.counters
        c.processed += len(good)
        c.rejected += len(rejects)
        n_gated = sum(1 for g in gated if g.role == "serving")
        c.gated += n_gated
        metrics.GATED.labels(self.service).inc(n_gated)
        c.batches += 1
        for r in rows:
            c.by_version[r.model_version_id] += 1
        metrics.WINDOWS.labels(self.service).inc(len(good) - n_gated)
        metrics.REJECTED.labels(self.service).inc(len(rejects))
        metrics.BATCH.labels(self.service).observe(len(good) + len(rejects))
        now, done = time.time(), time.perf_counter()
        latency = metrics.LATENCY.labels(self.service)
        for _, w in good:
            if w.header.sent_at:
                latency.observe(max(0.0, now - w.header.sent_at))
        processing = metrics.PROCESSING.labels(self.service)
        for t in received:
            processing.observe(done - t)

    async def _publish(self, rows: list[PredictionRow], gated: Sequence[GatedRow] = ()) -> None:
        """Each session's serving predictions as one ``PredictionMessage`` (closed loops),
        with the serving version's gated epochs (a decider counts them as seen flashes)."""
        by_session: dict[str, list[PredictionItem]] = defaultdict(list)
        gated_by_session: dict[str, list[GatedItem]] = defaultdict(list)
        for g in gated:
            if g.role == "serving":
                gated_by_session[g.session_id].append(
                    GatedItem(seq=g.seq, trial=g.trial, marker=g.marker, reason=g.reason)
                )
        for r in rows:
            if r.role == "serving":
                by_session[r.session_id].append(
                    PredictionItem(
                        seq=r.seq,
                        model_version_id=r.model_version_id,
                        predicted=r.predicted,
                        score=r.score,
                        marker=r.marker,
                        t0=r.t0,
                        kind=WindowKind(r.kind),
                        fs=r.fs,
                        n_samples=r.n_samples,
                        tmin=r.tmin,
                        trial=r.trial,
                    )
                )
        assert self._predictions is not None
        try:
            for session_id in dict.fromkeys([*by_session, *gated_by_session]):
                message = PredictionMessage(
                    session_id=session_id,
                    predictions=by_session.get(session_id, []),
                    gated=gated_by_session.get(session_id, []),
                )
                await self._predictions.publish(
                    aio_pika.Message(
                        body=message.encode(),
                        content_type=PREDICTIONS_CONTENT_TYPE,
                    ),
                    routing_key=f"{self.service}.{session_id}",
                    mandatory=False,  # no closed-loop listener is fine
                )
        except Exception as exc:  # results are already durable; the loop must go on
            log.warning("could not publish predictions: %s", exc)


_STOP = object()
_INLINE_MAX = 8
_SEEN_MAX = 100_000


class _CanaryEnded(Exception):
    """The canary whose rows a batch holds was rolled back before the write (internal)."""


def _split(
    served: Served, canary: CanaryServing | None, arms: dict[str, str], windows: list[Window]
) -> list[tuple[Served, list[Window]]]:
    """The batch's windows by the version each session is served by (the shadow, if any,
    scores them all); the champion's part first."""
    if not windows:
        return []
    assert served.serving is not None
    if canary is None:
        return [(served, windows)]
    parts: dict[int, tuple[Served, list[Window]]] = {}
    for w in windows:
        model = canary.model_for(arms.get(w.header.session_id), served.serving)
        part = parts.get(model.version_id)
        if part is None:
            part = parts[model.version_id] = (
                served if model is served.serving else Served(model, served.shadow),
                [],
            )
        part[1].append(w)
    return sorted(parts.values(), key=lambda p: p[0] is not served)


def _predict_rows(
    served: Served, windows: list[Window]
) -> tuple[list[PredictionRow], list[GatedRow]]:
    """Gate, featurize and classify a batch with the serving (and shadow) model: pure CPU.

    Windows are grouped by shape (channel names, length, fs): one stacked array per group,
    each model taking its own channels from it by name. A model whose version records a
    gate scores only the epochs it passes; the others become ``GatedRow``s with the reason."""
    groups: dict[tuple[tuple[str, ...], int, float, EpochGeometry | None], list[Window]] = (
        defaultdict(list)
    )
    for w in windows:
        h = w.header
        groups[(h.channels, h.n_samples, h.fs, h.geometry)].append(w)
    rows: list[PredictionRow] = []
    gated: list[GatedRow] = []
    for (channels, n_samples, fs, geometry), group in groups.items():
        data = np.stack([w.data for w in group])
        for role, model in (("serving", served.serving), ("shadow", served.shadow)):
            if model is None:
                continue
            if role == "shadow" and (
                model.check_input(channels, n_samples, fs) or model.check_geometry(geometry)
            ):
                continue
            scored, x = group, data
            verdict = model.check_gate(data, fs, channels=channels)
            if verdict is not None and verdict.rejected.any():
                rejected = verdict.rejected
                for i in np.flatnonzero(rejected).tolist():
                    h = group[i].header
                    gated.append(
                        GatedRow(
                            session_id=h.session_id,
                            seq=h.seq,
                            model_version_id=model.version_id,
                            t0=h.t0,
                            role=role,
                            kind=h.kind.value,
                            marker=h.marker,
                            reason=verdict.reason(i) or "",
                            channels=verdict.offenders(i),
                            trial=h.trial,
                        )
                    )
                keep = ~rejected
                scored = [w for w, k in zip(group, keep.tolist(), strict=True) if k]
                x = data[keep]
                if not scored:
                    continue
            pred = model.predict(x, fs, channels=channels, geometry=geometry)
            # tolist() once per array rather than numpy scalar indexing per row.
            for w, predicted, score, proba in zip(
                scored,
                pred.predicted.tolist(),
                pred.score.tolist(),
                pred.proba.tolist(),
                strict=True,
            ):
                h = w.header
                rows.append(
                    PredictionRow(
                        session_id=h.session_id,
                        seq=h.seq,
                        model_version_id=model.version_id,
                        t0=h.t0,
                        role=role,
                        kind=h.kind.value,
                        marker=h.marker,
                        predicted=predicted,
                        score=score,
                        proba=proba,
                        sent_at=h.sent_at,
                        fs=h.fs,
                        n_samples=h.n_samples,
                        tmin=h.tmin,
                        trial=h.trial,
                    )
                )
    return rows, gated
