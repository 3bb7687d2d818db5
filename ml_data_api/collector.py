"""The ground-truth collector: ``eeg.labels`` -> ``labels`` and ``trials``, idempotently.

The producer's paradigm (or any labelling tool) publishes ``{"session_id", "seq", "label",
"source"}`` keyed by session id. Labels are upserted on ``(session_id, seq)`` (a correction
replaces the label) and acked after the write; a malformed event is rejected without
requeue and lands in ``data.labels.dead`` for inspection.

A trial-based paradigm also publishes each trial's truth (``contract.TrialTruth``: the
target stimulus codes and the symbol) with the header ``x-neurostream-kind: trial``; it
is upserted into ``trials`` on ``(session_id, trial)`` in the same transaction, so the ML
data API can say whether each decision was right.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml_data_api.batch_consumer import BatchConsumer
from ml_data_api.errors import Invalid
from neurostream import topology
from neurostream.contract import KIND_HEADER, TRIAL_KIND, ContractError, TrialTruth

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
UPSERT_TRIALS = """
INSERT INTO trials (session_id, trial, targets, symbol, source)
SELECT s, t, tg::int[], sy, src
FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::text[]) AS u(s, t, tg, sy, src)
ON CONFLICT (session_id, trial) DO UPDATE
SET targets = EXCLUDED.targets, symbol = EXCLUDED.symbol, source = EXCLUDED.source,
    created_at = now()
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


def parse_trial(body: bytes) -> TrialTruth:
    """Validate a trial truth body; values PostgreSQL's integers cannot hold are refused
    here (a write that always fails would hold the queue up)."""
    truth = TrialTruth.decode(body)
    if truth.trial > INT32:
        raise Invalid(f"must be at most {INT32}", field="trial")
    if any(not -INT32 <= c <= INT32 for c in truth.targets):
        raise Invalid(f"must lie within +-{INT32}", field="targets")
    return truth


def is_trial(message: AbstractIncomingMessage) -> bool:
    """Whether a message is a trial's truth (its kind header), not an epoch's label."""
    return (message.headers or {}).get(KIND_HEADER) == TRIAL_KIND


def dedupe_trials(truths: Sequence[TrialTruth]) -> list[TrialTruth]:
    """Last truth wins per (session_id, trial)."""
    return list({(t.session_id, t.trial): t for t in truths}.values())


class LabelCollector(BatchConsumer):
    name = "label-collector"

    def __init__(self, *, prefetch: int, drain_timeout_s: float = 30.0) -> None:
        super().__init__(prefetch=prefetch, drain_timeout_s=drain_timeout_s)
        self.trials_written = 0  # trial truths upserted (``written`` counts epoch labels)

    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        return await topology.declare_label_store(channel)

    async def write(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        events: list[LabelEvent] = []
        truths: list[TrialTruth] = []
        for message in batch:
            if message.processed:
                continue
            try:
                if is_trial(message):
                    truths.append(parse_trial(message.body))
                else:
                    events.append(parse_label(message.body))
            except (Invalid, ContractError) as exc:
                log.warning("rejecting label %s: %s: %s", message.message_id, exc.field, exc)
                self.skipped += 1
                await message.reject(requeue=False)
        rows, trials = dedupe(events), dedupe_trials(truths)
        if not rows and not trials:
            return
        async with self.pool.connection() as conn, conn.transaction():
            if rows:
                await conn.execute(
                    UPSERT,
                    [
                        [e.session_id for e in rows],
                        [e.seq for e in rows],
                        [e.label for e in rows],
                        [e.source for e in rows],
                    ],
                )
            if trials:
                await conn.execute(
                    UPSERT_TRIALS,
                    [
                        [t.session_id for t in trials],
                        [t.trial for t in trials],
                        ["{" + ",".join(str(c) for c in t.targets) + "}" for t in trials],
                        [t.symbol for t in trials],
                        [t.source for t in trials],
                    ],
                )
        self.written += len(rows)
        self.trials_written += len(trials)
