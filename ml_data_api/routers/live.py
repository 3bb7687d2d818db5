"""One session's results, live over WebSockets, for web front ends.

``/sessions/{session_id}/predictions/live[?since_seq=N]``: on connect the route binds an
exclusive auto-delete queue to ``eeg.predictions`` with ``*.<session_id>`` (every service's
results for the session), *then* replays the stored serving predictions with ``seq > N``
from PostgreSQL in seq order, then relays the live ones. Binding first means nothing
published during the replay is missed; the replay's overlap with the queue is dropped by
sending only seqs above the last one sent, so the client sees each seq once, in order (a
live prediction that arrives after a later seq, replicas racing, is left to
``GET /predictions``). Without ``since_seq`` only live predictions are sent.

One JSON text message per prediction (``LivePrediction``), read from the worker's
``PredictionMessage`` (``neurostream.contract``). ``event_t`` is the instant the LSL outlet
stamps, on the wall clock: an epoch's event, a sliding window's last sample. A replayed row
has it from what the store keeps: an epoch's from the session row's ``fs`` and
``paradigm.epoch.tmin``, a sliding window's from its archived window's length (the window
archiver's ``windows`` row); null where those are missing.

``/sessions/{session_id}/decisions/live[?since_trial=N]``: the same for a trial-based
paradigm's decisions (``eeg.decisions``, the decider's ``DecisionMessage``): the stored
decisions of trials after ``N`` (table ``decisions``) in trial order, then live ones, one
JSON message per decision (``LiveDecision``), each (trial, rule) once. A trial has one
decision per stopping rule, so the order is by trial and, within one, by arrival; a
decision for a trial before the last one sent (a stale redelivery) is left to
``GET /sessions/{id}/decisions``.

Reads are open, as every GET of this API: no token. The socket is accepted first so that a
refusal carries its code and reason: 4404 for an unknown session, 1008 for a bad
``since_seq``/``since_trial`` or session id, 1011 when the broker cannot be reached
(retry). A client that goes away cancels the consumer and deletes its queue. The AMQP
connection is the app's (``app.state.amqp``, opened in the lifespan); each socket has its
own channel.

A socket's queue holds at most ``QUEUE_MAX`` messages (worker batches, decisions) for a
client that reads too slowly, then drops the oldest (``drop-head``: the publishers are
never nacked for a slow client); a watcher finds the queue at its limit and logs one
warning per socket. The client sees a gap and fills it from the store by reconnecting with
``since_seq`` (``since_trial``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from neurostream import topology
from neurostream.contract import ContractError, DecisionMessage, PredictionItem, PredictionMessage

log = logging.getLogger(__name__)
router = APIRouter(tags=["production data"])

UNKNOWN_SESSION = 4404  # the application range (4000-4999) mirror of HTTP 404
POLICY_VIOLATION = 1008  # what FastAPI closes a socket with on invalid input
INTERNAL_ERROR = 1011  # the server cannot serve the socket now
# A close reason is at most 123 bytes.
BROKER_DOWN = "the message broker (RabbitMQ) is unreachable; retry in a few seconds"
SUBSCRIBE_TIMEOUT_S = 10.0  # a broker that accepts the connection but does not answer
PREFETCH = 100  # unacked live messages per socket: a slow client backs up in the broker
QUEUE_MAX = 10_000  # a stalled client's queue keeps the newest messages only
WATCH_S = 1.0  # how often a socket's queue depth is read, to warn of a slow client
REPLAY_PAGE = 1000

_KNOWN = """
SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = %(s)s)
    OR EXISTS (SELECT 1 FROM windows WHERE session_id = %(s)s)
    OR EXISTS (SELECT 1 FROM predictions WHERE session_id = %(s)s)
    OR EXISTS (SELECT 1 FROM decisions WHERE session_id = %(s)s)
"""
# One serving prediction per seq (the first written, should a swap have scored it twice),
# with the window geometry the store has: fs from the archived window or the session row,
# n_samples from the archived window, an epoch's tmin from the session's paradigm.
_STORED = """
SELECT DISTINCT ON (p.seq) p.seq, p.model_version_id, p.predicted, p.score::float8 AS score,
    p.marker, extract(epoch FROM p.window_ts)::float8 AS t0, p.kind,
    coalesce(w.fs, s.fs) AS fs, w.n_samples,
    CASE WHEN p.kind = 'epoch' AND jsonb_typeof(s.paradigm #> '{epoch,tmin}') = 'number'
        THEN (s.paradigm #>> '{epoch,tmin}')::float8 END AS tmin
FROM predictions p
LEFT JOIN sessions s ON s.session_id = p.session_id
LEFT JOIN windows w
    ON w.session_id = p.session_id AND w.seq = p.seq AND w.window_ts = p.window_ts
WHERE p.session_id = %(s)s AND p.role = 'serving' AND p.seq > %(after)s
ORDER BY p.seq, p.predicted_at
LIMIT %(limit)s
"""
# The stored decisions after a (trial, rule) cursor, in the decider's message's shape. A
# cursor without a rule ends at its whole trial.
_STORED_DECISIONS = """
SELECT session_id, service, trial, rule, symbol_index, symbol, codes,
    posterior::float8 AS posterior, repetitions, epochs, model_version_ids, evidence,
    extract(epoch FROM last_event_at)::float8 AS last_event_t,
    extract(epoch FROM last_sample_at)::float8 AS last_sample_t,
    extract(epoch FROM decided_at)::float8 AS decided_at
FROM decisions
WHERE session_id = %(s)s
    AND (trial > %(after)s OR (trial = %(after)s AND %(rule)s::text IS NOT NULL
        AND rule > %(rule)s::text))
ORDER BY trial, rule
LIMIT %(limit)s
"""


class LivePrediction(BaseModel):
    """One prediction as the socket sends it (wall-clock times, Unix s)."""

    session_id: str
    seq: int
    score: float
    predicted: int
    marker: int | None
    model_version_id: int
    t0: float = Field(description="The window's first sample.")
    kind: str
    event_t: float | None = Field(
        description="What the prediction is about, the instant the LSL outlet stamps: an "
        "epoch's event, a sliding window's last sample; null when not known (a replayed row "
        "without the session's epoch tmin or the archived window, an older worker)."
    )

    @classmethod
    def of(cls, session_id: str, item: PredictionItem) -> LivePrediction:
        """The socket's view of one item of the worker's message (or of a stored row)."""
        return cls(
            session_id=session_id,
            seq=item.seq,
            score=item.score,
            predicted=item.predicted,
            marker=item.marker,
            model_version_id=item.model_version_id,
            t0=item.t0,
            kind=item.kind.value,
            event_t=item.event_t,
        )


Item = TypeVar("Item", bound=BaseModel)
# Where an item falls in a socket's order: (seq, "") for a prediction, (trial, rule) for a
# decision. A cursor's second part None: every item of its first part.
Key = tuple[int, str]
Cursor = tuple[int, str | None]


@dataclass(frozen=True)
class _Feed(Generic[Item]):
    """What one kind of live socket reads: its exchange, its store, its order."""

    what: str  # "prediction", "decision": for logs
    exchange: str
    since: str  # the query parameter naming where the replay starts
    queue_tag: str  # in the queue's name, after the session
    parse: Callable[[str, bytes], list[Item]]  # a message's items for the session, in order
    stored: Callable[[AsyncConnection[Any], str, Cursor], Awaitable[list[Item]]]
    key: Callable[[Item], Key]


def queue_name(session_id: str, tag: str = "") -> str:
    """A socket's queue: named for the session, so an operator sees whose it is."""
    return f"data.live.{session_id}.{tag}{uuid.uuid4().hex[:8]}"


def _since(raw: str | None) -> int | None:
    if raw is None:
        return None
    value = int(raw)  # ValueError on anything else
    if value < -1:
        raise ValueError(raw)
    return value


async def _stored(
    conn: AsyncConnection[Any], session_id: str, after: Cursor
) -> list[LivePrediction]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_STORED, {"s": session_id, "after": after[0], "limit": REPLAY_PAGE})
        rows = await cur.fetchall()
    return [LivePrediction.of(session_id, PredictionItem.model_validate(r)) for r in rows]


async def _stored_decisions(
    conn: AsyncConnection[Any], session_id: str, after: Cursor
) -> list[DecisionMessage]:
    params = {"s": session_id, "after": after[0], "rule": after[1], "limit": REPLAY_PAGE}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_STORED_DECISIONS, params)
        rows = await cur.fetchall()
    return [DecisionMessage.model_validate(r) for r in rows]


def _predictions(session_id: str, body: bytes) -> list[LivePrediction]:
    doc = PredictionMessage.decode(body)
    if doc.session_id != session_id:
        return []
    items = [LivePrediction.of(session_id, i) for i in doc.predictions]
    return sorted(items, key=lambda p: p.seq)


def _decisions(session_id: str, body: bytes) -> list[DecisionMessage]:
    doc = DecisionMessage.decode(body)
    return [doc] if doc.session_id == session_id else []


PREDICTIONS: _Feed[LivePrediction] = _Feed(
    "prediction",
    topology.PREDICTIONS_EXCHANGE,
    "since_seq",
    "",
    _predictions,
    _stored,
    lambda p: (p.seq, ""),
)
DECISIONS: _Feed[DecisionMessage] = _Feed(
    "decision",
    topology.DECISIONS_EXCHANGE,
    "since_trial",
    "decisions.",
    _decisions,
    _stored_decisions,
    lambda d: (d.trial, d.rule),
)


class _Subscription:
    """One socket's channel and exclusive queue bound to the session's results."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self.channel = channel
        self.queue = queue
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.tag: str | None = None

    @classmethod
    async def open(
        cls, amqp: AbstractRobustConnection, session_id: str, feed: _Feed[Any]
    ) -> _Subscription:
        """Bind and consume; raises (after closing what it opened) when the broker fails."""
        channel = await amqp.channel()
        try:
            await channel.set_qos(prefetch_count=PREFETCH)
            ex = await topology.declare_exchanges(channel)
            queue = await channel.declare_queue(
                queue_name(session_id, feed.queue_tag),
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": QUEUE_MAX, "x-overflow": "drop-head"},
            )
            await queue.bind(ex[feed.exchange], routing_key=f"*.{session_id}")
            sub = cls(channel, queue)
            sub.tag = await queue.consume(sub.inbox.put)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        return sub

    async def full(self) -> bool:
        """Whether the queue holds ``QUEUE_MAX`` ready messages: from here each new one
        drops the oldest. (Re-declaring with the same arguments reads the depth.)"""
        ok = await self.queue.declare()
        return (ok.message_count or 0) >= QUEUE_MAX

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.tag is not None:
                await self.queue.cancel(self.tag)
            await self.queue.delete(if_unused=False, if_empty=False)
        with contextlib.suppress(Exception):
            await self.channel.close()


@router.websocket("/sessions/{session_id}/predictions/live")
async def live_predictions(websocket: WebSocket, session_id: str) -> None:
    """Replay the stored predictions after ``since_seq``, then relay live ones, in seq order."""
    await _serve(websocket, session_id, PREDICTIONS)


@router.websocket("/sessions/{session_id}/decisions/live")
async def live_decisions(websocket: WebSocket, session_id: str) -> None:
    """Replay the stored decisions after ``since_trial``, then relay live ones, by trial."""
    await _serve(websocket, session_id, DECISIONS)


async def _serve(websocket: WebSocket, session_id: str, feed: _Feed[Any]) -> None:
    await websocket.accept()
    try:
        since = _since(websocket.query_params.get(feed.since))
    except ValueError:
        await websocket.close(POLICY_VIOLATION, f"{feed.since}: must be an integer >= -1")
        return
    if not 1 <= len(session_id) <= 128 or {"*", "#"} & set(session_id):
        await websocket.close(POLICY_VIOLATION, "session_id: not a session id")
        return
    pool = cast(AsyncConnectionPool, websocket.app.state.pool)
    async with pool.connection() as conn:
        known = (await (await conn.execute(_KNOWN, {"s": session_id})).fetchone() or (False,))[0]
    if not known:
        await websocket.close(UNKNOWN_SESSION, f"session_id: session {session_id!r} does not exist")
        return
    amqp = cast(AbstractRobustConnection, websocket.app.state.amqp)
    try:
        sub = await asyncio.wait_for(
            _Subscription.open(amqp, session_id, feed), SUBSCRIBE_TIMEOUT_S
        )
    except Exception as exc:  # closed or reconnecting connection, refused channel, timeout
        log.warning(
            "session %s: live socket refused, the broker is unreachable: %r", session_id, exc
        )
        await websocket.close(INTERNAL_ERROR, BROKER_DOWN)
        return
    try:
        relay = _Relay(websocket, session_id, feed, since)
        if since is not None:
            await relay.replay(pool)
        await relay.run(sub)
    except (WebSocketDisconnect, OSError):
        pass  # the client left (uvicorn's ClientDisconnected is an OSError)
    finally:
        await sub.close()


class _Relay(Generic[Item]):
    """Sends one socket's items, each once and in order of the feed's key."""

    def __init__(
        self, websocket: WebSocket, session_id: str, feed: _Feed[Item], since: int | None
    ) -> None:
        self.websocket = websocket
        self.session_id = session_id
        self.feed = feed
        self.last: int | None = since  # the key's first part last sent (or skipped as seen)
        self.seen: set[str] | None = None  # its second parts sent; None: all of it

    async def send(self, item: Item) -> None:
        first, second = self.feed.key(item)
        if self.last is not None and (
            first < self.last or (first == self.last and (self.seen is None or second in self.seen))
        ):
            return
        await self.websocket.send_text(item.model_dump_json())
        if first == self.last and self.seen is not None:
            self.seen.add(second)
        else:
            self.last, self.seen = first, {second}

    def cursor(self) -> Cursor:
        """Where the next replay page starts: after what was sent."""
        last = -1 if self.last is None else self.last
        return last, None if self.seen is None else max(self.seen)

    async def replay(self, pool: AsyncConnectionPool) -> None:
        """The stored items after ``since``, a page at a time."""
        while True:
            async with pool.connection() as conn:
                page = await self.feed.stored(conn, self.session_id, self.cursor())
            for item in page:
                await self.send(item)
            if len(page) < REPLAY_PAGE:
                return

    async def run(self, sub: _Subscription) -> None:
        """Relay live messages until the client goes away, watching the queue's depth."""
        sender = asyncio.create_task(self._relay(sub.inbox))
        receiver = asyncio.create_task(self._until_disconnect())
        watcher = asyncio.create_task(self._watch(sub))
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a send that failed on a gone client raises here
        finally:
            for task in (sender, receiver, watcher):
                task.cancel()
            await asyncio.gather(sender, receiver, watcher, return_exceptions=True)

    async def _until_disconnect(self) -> None:
        while (await self.websocket.receive())["type"] != "websocket.disconnect":
            pass  # the client has nothing to say; its messages are ignored

    async def _watch(self, sub: _Subscription) -> None:
        """Warn once when the queue reached its limit: the relay, blocked on a slow client's
        socket, cannot notice, and the broker drops the oldest messages without a word."""
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                full = await sub.full()
            except Exception as exc:  # the broker went away: the relay will notice too
                log.debug("session %s: reading a live queue's depth: %r", self.session_id, exc)
                return
            if full:
                log.warning(
                    "session %s: a live WebSocket client reads too slowly: its queue reached "
                    "%d messages and the oldest are dropped; it can fill the gap from the "
                    "store by reconnecting with %s",
                    self.session_id,
                    QUEUE_MAX,
                    self.feed.since,
                )
                return

    async def _relay(self, inbox: asyncio.Queue[AbstractIncomingMessage]) -> None:
        while True:
            message = await inbox.get()
            try:
                items = self.feed.parse(self.session_id, message.body)
            except ContractError as exc:
                log.warning(
                    "session %s: unreadable %s message: %s", self.session_id, self.feed.what, exc
                )
                items = []
            for item in items:
                await self.send(item)
            await message.ack()
