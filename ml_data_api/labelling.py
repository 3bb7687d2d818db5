"""Labels posted over HTTP: resolved to existing windows, then written all or nothing.

A label by ``seq`` needs a window the system has seen (archived or predicted); a label
over a time range applies to every archived window of the session in it. Everything is
checked before the single upsert, inside one transaction, so a bad item writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from ml_data_api import queries
from ml_data_api.collector import UPSERT
from ml_data_api.errors import Invalid, NotFound
from ml_data_api.schemas import LabelByRange, LabelBySeq

_MISSING = """
SELECT i FROM unnest(%(i)s::int[], %(s)s::text[], %(q)s::int[]) AS u(i, s, q)
WHERE NOT EXISTS (SELECT 1 FROM windows w WHERE w.session_id = u.s AND w.seq = u.q)
  AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.session_id = u.s AND p.seq = u.q)
ORDER BY i
"""

_IN_RANGE = """
SELECT DISTINCT seq FROM windows
WHERE session_id = %(s)s AND window_ts BETWEEN %(a)s AND %(b)s
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
ORDER BY seq
"""


async def store_labels(
    conn: AsyncConnection[Any], items: Sequence[LabelBySeq | LabelByRange]
) -> int:
    """Resolve and upsert every item, or raise NotFound / Invalid and write nothing."""
    async with conn.transaction():
        ids = sorted({item.session_id for item in items})
        known = await queries.known_sessions(conn, ids)
        for i, item in enumerate(items):
            if item.session_id not in known:
                raise NotFound(
                    f"session {item.session_id!r} does not exist", field=f"{i}.session_id"
                )
        rows: dict[tuple[str, int], tuple[int, str]] = {}
        by_seq = [(i, it) for i, it in enumerate(items) if isinstance(it, LabelBySeq)]
        if by_seq:
            cur = await conn.execute(
                _MISSING,
                {
                    "i": [i for i, _ in by_seq],
                    "s": [it.session_id for _, it in by_seq],
                    "q": [it.seq for _, it in by_seq],
                },
            )
            missing = await cur.fetchone()
            if missing is not None:
                bad = items[missing[0]]
                assert isinstance(bad, LabelBySeq)
                raise Invalid(
                    f"window {bad.seq} of session {bad.session_id!r} does not exist",
                    field=f"{missing[0]}.seq",
                )
        for i, item in enumerate(items):
            if isinstance(item, LabelBySeq):
                rows[(item.session_id, item.seq)] = (item.label, item.source)
                continue
            cur = await conn.execute(
                _IN_RANGE,
                {"s": item.session_id, "a": item.t_from, "b": item.t_to, "kind": item.kind},
            )
            seqs = [r[0] for r in await cur.fetchall()]
            if not seqs:
                raise Invalid(
                    f"no archived windows of session {item.session_id!r} between "
                    f"{item.t_from.isoformat()} and {item.t_to.isoformat()}",
                    field=f"{i}.t_from",
                )
            for seq in seqs:
                rows[(item.session_id, seq)] = (item.label, item.source)
        await conn.execute(
            UPSERT,
            [
                [k[0] for k in rows],
                [k[1] for k in rows],
                [v[0] for v in rows.values()],
                [v[1] for v in rows.values()],
            ],
        )
    return len(rows)
