"""One session's predictions, live over a WebSocket, for web front ends.

``/sessions/{session_id}/predictions/live[?since_seq=N]``: on connect the route binds an
exclusive auto-delete queue to ``eeg.predictions`` with ``*.<session_id>`` (every service's
results for the session), *then* replays the stored serving predictions with ``seq > N``
from PostgreSQL in seq order, then relays the live ones. Binding first means nothing
published during the replay is missed; the replay's overlap with the queue is dropped by
sending only seqs above the last one sent, so the client sees each seq once, in order (a
live prediction that arrives after a later seq, replicas racing, is left to
``GET /predictions``). Without ``since_seq`` only live predictions are sent.

One JSON text message per prediction (``LivePrediction``). Reads are open, as every GET of
this API: no token. The socket is accepted first so that a refusal carries its code and
reason: 4404 for an unknown session, 1008 for a bad ``since_seq`` or session id. A client
that goes away cancels the consumer and deletes its queue. The AMQP connection is the
app's (``app.state.amqp``, opened in the lifespan); each socket has its own channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError

from neurostream import topology

log = logging.getLogger(__name__)
router = APIRouter(tags=["production data"])

UNKNOWN_SESSION = 4404  # the application range (4000-4999) mirror of HTTP 404
POLICY_VIOLATION = 1008  # what FastAPI closes a socket with on invalid input
PREFETCH = 100  # unacked live messages per socket: a slow client backs up in the broker
QUEUE_MAX = 10_000  # a stalled client's queue keeps the newest predictions only
REPLAY_PAGE = 1000

_KNOWN = """
SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = %(s)s)
    OR EXISTS (SELECT 1 FROM windows WHERE session_id = %(s)s)
    OR EXISTS (SELECT 1 FROM predictions WHERE session_id = %(s)s)
"""
# One serving prediction per seq (the first written, should a swap have scored it twice).
_STORED = """
SELECT DISTINCT ON (seq) session_id, seq, model_version_id, predicted, score::float8 AS score,
    marker, extract(epoch FROM window_ts)::float8 AS t0, kind
FROM predictions
WHERE session_id = %(s)s AND role = 'serving' AND seq > %(after)s
ORDER BY seq, predicted_at
LIMIT %(limit)s
"""


class LivePrediction(BaseModel):
    """One prediction as the socket sends it; ``t0``: wall time of the window's first sample."""

    session_id: str
    seq: int
    score: float
    predicted: int
    marker: int | None
    model_version_id: int
    t0: float
    kind: str


def queue_name(session_id: str) -> str:
    """A socket's queue: named for the session, so an operator sees whose it is."""
    return f"data.live.{session_id}.{uuid.uuid4().hex[:8]}"


def _since_seq(raw: str | None) -> int | None:
    if raw is None:
        return None
    value = int(raw)  # ValueError on anything else
    if value < -1:
        raise ValueError(raw)
    return value


async def _stored(conn: AsyncConnection[Any], session_id: str, after: int) -> list[LivePrediction]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_STORED, {"s": session_id, "after": after, "limit": REPLAY_PAGE})
        return [LivePrediction(**r) for r in await cur.fetchall()]


@router.websocket("/sessions/{session_id}/predictions/live")
async def live_predictions(websocket: WebSocket, session_id: str) -> None:
    """Replay the stored predictions after ``since_seq``, then relay live ones, in seq order."""
    await websocket.accept()
    try:
        since = _since_seq(websocket.query_params.get("since_seq"))
    except ValueError:
        await websocket.close(POLICY_VIOLATION, "since_seq: must be an integer >= -1")
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
    channel = await amqp.channel()
    queue: AbstractQueue | None = None
    tag: str | None = None
    try:
        await channel.set_qos(prefetch_count=PREFETCH)
        ex = await topology.declare_exchanges(channel)
        queue = await channel.declare_queue(
            queue_name(session_id),
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": QUEUE_MAX, "x-overflow": "drop-head"},
        )
        await queue.bind(ex[topology.PREDICTIONS_EXCHANGE], routing_key=f"*.{session_id}")
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def on_message(message: AbstractIncomingMessage) -> None:
            await inbox.put(message)

        tag = await queue.consume(on_message)
        relay = _Relay(websocket, session_id, since)
        if since is not None:
            await relay.replay(pool)
        await relay.run(inbox)
    except (WebSocketDisconnect, OSError):
        pass  # the client left (uvicorn's ClientDisconnected is an OSError)
    finally:
        if queue is not None:
            with contextlib.suppress(Exception):
                if tag is not None:
                    await queue.cancel(tag)
                await queue.delete(if_unused=False, if_empty=False)
        with contextlib.suppress(Exception):
            await channel.close()


class _Relay:
    """Sends one socket's predictions, each seq once and in order."""

    def __init__(self, websocket: WebSocket, session_id: str, since: int | None) -> None:
        self.websocket = websocket
        self.session_id = session_id
        self.last: int | None = since  # the last seq sent (or skipped as already seen)

    async def send(self, p: LivePrediction) -> None:
        if self.last is not None and p.seq <= self.last:
            return
        await self.websocket.send_text(p.model_dump_json())
        self.last = p.seq

    async def replay(self, pool: AsyncConnectionPool) -> None:
        """The stored serving predictions after ``since_seq``, a page at a time."""
        while True:
            async with pool.connection() as conn:
                page = await _stored(conn, self.session_id, -1 if self.last is None else self.last)
            for p in page:
                await self.send(p)
            if len(page) < REPLAY_PAGE:
                return

    async def run(self, inbox: asyncio.Queue[AbstractIncomingMessage]) -> None:
        """Relay live messages until the client goes away."""
        sender = asyncio.create_task(self._relay(inbox))
        receiver = asyncio.create_task(self._until_disconnect())
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a send that failed on a gone client raises here
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    async def _until_disconnect(self) -> None:
        while (await self.websocket.receive())["type"] != "websocket.disconnect":
            pass  # the client has nothing to say; its messages are ignored

    async def _relay(self, inbox: asyncio.Queue[AbstractIncomingMessage]) -> None:
        while True:
            message = await inbox.get()
            for p in self._parse(message.body):
                await self.send(p)
            await message.ack()

    def _parse(self, body: bytes) -> list[LivePrediction]:
        try:
            doc = json.loads(body)
            if doc.get("session_id") != self.session_id:
                return []
            items = [
                LivePrediction(session_id=self.session_id, **_fields(i)) for i in doc["predictions"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            log.warning("session %s: unreadable prediction message: %s", self.session_id, exc)
            return []
        return sorted(items, key=lambda p: p.seq)


def _fields(item: dict[str, Any]) -> dict[str, Any]:
    """The message fields a live prediction carries (the worker also sends fs, tmin, ...)."""
    keys = LivePrediction.model_fields.keys() - {"session_id"}
    return {k: item.get(k) for k in keys}
