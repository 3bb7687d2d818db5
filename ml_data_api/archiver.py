"""The window archiver: every window on ``eeg.windows`` -> the ``windows`` table.

Datasets are built from archived windows joined with labels, so the archiver keeps raw
windows of every session. Its quorum queue is bounded (``x-max-length`` with
``drop-head``: under a long outage the oldest windows go, while producers are never
nacked as ``reject-publish`` would). Windows that break the contract are acked and
skipped: the service's worker already dead-letters them with a reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from ml_data_api.batch_consumer import BatchConsumer
from neurostream import topology
from neurostream.contract import DEFAULT_MAX_BYTES, ContractError, Window, decode

log = logging.getLogger(__name__)
QUEUE = topology.ARCHIVE_QUEUE
MAX_LENGTH = topology.ARCHIVE_MAX_LENGTH

INSERT = """
INSERT INTO windows (session_id, seq, window_ts, service, kind, marker, fs, n_channels,
    n_samples, data, channels)
SELECT s, q, to_timestamp(t0), sv, k, mk, f, c, n, d, ch::jsonb
FROM unnest(%(s)s::text[], %(q)s::int[], %(t0)s::float8[], %(sv)s::text[], %(k)s::text[],
    %(mk)s::int[], %(f)s::float8[], %(c)s::int[], %(n)s::int[], %(d)s::bytea[], %(ch)s::text[])
    AS u(s, q, t0, sv, k, mk, f, c, n, d, ch)
ON CONFLICT DO NOTHING
"""


def window_params(items: Sequence[tuple[str, Window]]) -> dict[str, list[Any]]:
    """Column arrays for ``INSERT``, from (service, window) pairs."""
    return {
        "s": [w.header.session_id for _, w in items],
        "q": [w.header.seq for _, w in items],
        "t0": [w.header.t0 for _, w in items],
        "sv": [service for service, _ in items],
        "k": [w.header.kind.value for _, w in items],
        "mk": [w.header.marker for _, w in items],
        "f": [w.header.fs for _, w in items],
        "c": [w.data.shape[0] for _, w in items],
        "n": [w.data.shape[1] for _, w in items],
        "d": [w.data.tobytes() for _, w in items],
        "ch": [json.dumps(list(w.header.channels)) for _, w in items],
    }


class WindowArchiver(BatchConsumer):
    name = "window-archiver"

    def __init__(
        self, *, prefetch: int, max_bytes: int = DEFAULT_MAX_BYTES, drain_timeout_s: float = 30.0
    ) -> None:
        super().__init__(prefetch=prefetch, drain_timeout_s=drain_timeout_s)
        self.max_bytes = max_bytes

    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        return await topology.declare_archive(channel)

    async def write(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        good: list[tuple[str, Window]] = []
        for message in batch:
            if message.processed:
                continue
            try:
                window = decode(message.body, message.headers, max_bytes=self.max_bytes)
            except ContractError as exc:
                log.info("skipping invalid window %s: %s", message.message_id, exc.reason)
                self.skipped += 1
                await message.ack()
                continue
            good.append((topology.service_of(message.routing_key or ""), window))
        if not good:
            return
        async with self.pool.connection() as conn:
            await conn.execute(INSERT, window_params(good))
        self.written += len(good)
