"""The ground-truth collector: ``eeg.labels`` -> ``labels``, idempotently.

The producer's paradigm (or any labelling tool) publishes ``{"session_id", "seq", "label",
"source"}`` keyed by session id. Labels are upserted on ``(session_id, seq)`` (a correction
replaces the label) and acked after the write; a malformed event is rejected without
requeue and lands in ``data.labels.dead`` for inspection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml_data_api.batch_consumer import BatchConsumer
from ml_data_api.errors import Invalid
from neurostream import topology

log = logging.getLogger(__name__)
QUEUE = topology.LABELS_QUEUE
DEAD_QUEUE = topology.LABELS_DEAD_QUEUE
INT32 = 2**31 - 1

UPSERT = """
INSERT INTO labels (session_id, seq, label, source)
SELECT * FROM unnest(%s::text[], %s::int[], %s::int[], %s::text[])
ON CONFLICT (session_id, seq) DO UPDATE
SET label = EXCLUDED.label, source = EXCLUDED.source, created_at = now()
"""


class LabelEvent(BaseModel):
    """One ``eeg.labels`` message body."""

    model_config = ConfigDict(extra="ignore", strict=True)

    session_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    seq: int = Field(ge=0, le=INT32)
    label: int = Field(ge=-INT32, le=INT32)
    source: str = Field("paradigm", min_length=1, max_length=64)


def parse_label(body: bytes) -> LabelEvent:
    """Validate a label event body; ``Invalid.field`` names what is wrong."""
    try:
        return LabelEvent.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise Invalid(first["msg"], field=field) from None


def dedupe(events: Sequence[LabelEvent]) -> list[LabelEvent]:
    """Last event wins per (session_id, seq): one upsert cannot touch a row twice."""
    return list({(e.session_id, e.seq): e for e in events}.values())


class LabelCollector(BatchConsumer):
    name = "label-collector"

    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        return await topology.declare_label_store(channel)

    async def write(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        events: list[LabelEvent] = []
        for message in batch:
            if message.processed:
                continue
            try:
                events.append(parse_label(message.body))
            except Invalid as exc:
                log.warning("rejecting label %s: %s: %s", message.message_id, exc.field, exc)
                self.skipped += 1
                await message.reject(requeue=False)
        rows = dedupe(events)
        if not rows:
            return
        async with self.pool.connection() as conn:
            await conn.execute(
                UPSERT,
                [
                    [e.session_id for e in rows],
                    [e.seq for e in rows],
                    [e.label for e in rows],
                    [e.source for e in rows],
                ],
            )
        self.written += len(rows)
