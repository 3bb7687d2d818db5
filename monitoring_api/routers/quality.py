"""Data quality of one session: bad channels and amplitudes, dropped windows."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path, Query

from monitoring_api.deps import SESSION_PATTERN, Pool
from monitoring_api.errors import NotFound
from monitoring_api.schemas import ChannelQuality, QualityOut, SeqGap
from neurostream import quality

router = APIRouter(prefix="/quality", tags=["quality"])
SessionId = Annotated[str, Path(pattern=SESSION_PATTERN, description="Session id")]
MAX_GAPS = 100

_SEQS = """
SELECT seq FROM windows WHERE session_id = %(s)s
UNION SELECT seq FROM predictions WHERE session_id = %(s)s
UNION SELECT seq FROM rejections WHERE session_id = %(s)s AND seq IS NOT NULL
UNION SELECT seq FROM gated WHERE session_id = %(s)s
"""
_WINDOWS = """
SELECT data, n_channels, n_samples, channels, service FROM windows WHERE session_id = %(s)s
ORDER BY seq DESC LIMIT %(limit)s
"""


@router.get("/sessions/{session_id}", response_model=QualityOut)
async def session_quality(
    session_id: SessionId,
    pool: Pool,
    flat_uv: Annotated[float, Query(gt=0)] = 0.5,
    range_uv: Annotated[float, Query(gt=0)] = 500.0,
    saturation_share: Annotated[float, Query(gt=0, le=1)] = 0.05,
    max_windows: Annotated[int, Query(ge=1, le=100_000)] = 2000,
) -> QualityOut:
    """Per-channel missing/flat/saturated/out-of-range shares (latest ``max_windows``
    archived windows) and gaps in ``seq`` over archived, predicted and rejected windows."""
    params = {"s": session_id, "limit": max_windows}
    async with pool.connection() as conn:
        seqs = [r[0] for r in await (await conn.execute(_SEQS, params)).fetchall()]
        info = await (
            await conn.execute(
                "SELECT service, windows_confirmed FROM sessions WHERE session_id = %(s)s", params
            )
        ).fetchone()
        rows = await (await conn.execute(_WINDOWS, params)).fetchall()
    if not seqs and info is None:
        raise NotFound(f"session {session_id!r} is unknown", field="session_id")
    confirmed = info[1] if info else None
    gaps = quality.seq_gaps(seqs, (confirmed - 1) if confirmed else None)
    expected = max(max(seqs, default=-1) + 1, confirmed or 0)
    channels: list[ChannelQuality] = []
    analysed = 0
    if rows:
        (c, s), _ = Counter((r[1], r[2]) for r in rows).most_common(1)[0]
        keep = [r for r in rows if (r[1], r[2]) == (c, s)]
        analysed = len(keep)
        x = np.frombuffer(b"".join(bytes(r[0]) for r in keep), dtype="<f4").reshape(-1, c, s)
        names = next((list(r[3]) for r in keep if r[3] and len(r[3]) == c), None)
        t = quality.Thresholds(flat_uv, range_uv, saturation_share)
        found = await asyncio.to_thread(
            quality.channel_quality, x, names or [f"ch{i}" for i in range(c)], t
        )
        channels = [ChannelQuality(**q) for q in found]
    return QualityOut(
        session_id=session_id,
        service=info[0] if info else (rows[0][4] if rows else None),
        windows_analysed=analysed,
        windows_seen=len(set(seqs)),
        expected_windows=expected,
        dropped=max(expected - len(set(seqs)), 0),
        gaps=[SeqGap(start=a, end=b) for a, b in gaps[:MAX_GAPS]],
        channels=channels,
    )
