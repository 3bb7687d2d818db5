"""Checks a demo session in the database and prints what landed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from launcher.demo.options import DemoReport, VersionReport
from neurostream import scoring
from neurostream.db import open_pool
from neurostream.settings import CoreSettings

_REPORT_SQL = """
SELECT p.seq, p.model_version_id, p.score,
       (extract(epoch FROM p.predicted_at) - extract(epoch FROM p.sent_at))::float8,
       extract(epoch FROM p.predicted_at)::float8, v.model_name || ':' || v.version
FROM predictions p JOIN model_versions v ON v.id = p.model_version_id
WHERE p.session_id = %s AND p.role = 'serving' ORDER BY p.seq
"""


async def session_report(
    core: CoreSettings,
    session_id: str,
    confirmed: int,
    truth: dict[int, int],
    t_start: float,
    swap_requested: float | None,
) -> DemoReport:
    pool = await open_pool(core.database_url, max_size=1)
    try:
        rows: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with pool.connection() as conn:
                rows = await (
                    await conn.execute(
                        _REPORT_SQL,
                        [session_id],
                    )
                ).fetchall()
                rejected = (
                    await (
                        await conn.execute(
                            "SELECT count(*) FROM rejections WHERE session_id = %s", [session_id]
                        )
                    ).fetchone()
                )[0]  # type: ignore[index]
            if len({r[0] for r in rows}) + rejected >= confirmed:
                break
            await asyncio.sleep(0.5)
    finally:
        await pool.close()
    seqs = [r[0] for r in rows]
    missing = sorted(set(range(confirmed)) - set(seqs))
    versions: list[VersionReport] = []
    for vid in dict.fromkeys(r[1] for r in rows):
        mine = [r for r in rows if r[1] == vid]
        versions.append(
            VersionReport(
                vid,
                mine[0][5],
                len(mine),
                mine[0][0],
                mine[-1][0],
                _auc([(r[0], r[2]) for r in mine], truth),
            )
        )
    lat = np.array([r[3] for r in rows if r[3] is not None]) * 1000
    swap_seen = None
    if swap_requested is not None and len(versions) > 1:
        swap_seen = (
            min(r[4] for r in rows if r[1] == versions[-1].model_version_id) - swap_requested
        )
    return DemoReport(
        session_id=session_id,
        confirmed=confirmed,
        predicted=len(rows),
        distinct_seq=len(set(seqs)),
        missing=missing,
        duplicated=len(seqs) - len(set(seqs)),
        rejected=int(rejected),
        versions=versions,
        roc_auc=_auc([(r[0], r[2]) for r in rows], truth),
        swap_requested_after_s=None if swap_requested is None else swap_requested - t_start,
        swap_seen_after_s=swap_seen,
        latency_ms={q: float(np.percentile(lat, int(q[1:]))) for q in ("p50", "p95", "p99")}
        if lat.size
        else {},
    )


def _auc(scored: list[tuple[int, float]], truth: dict[int, int]) -> float | None:
    pairs = [(truth[s], sc) for s, sc in scored if s in truth]
    return scoring.roc_auc([p[0] for p in pairs], [p[1] for p in pairs], [0, 1])


def print_report(r: DemoReport) -> None:
    print(f"\nsession {r.session_id}")
    print(f"  windows confirmed by the broker : {r.confirmed}")
    print(
        f"  serving predictions stored      : {r.predicted} "
        f"(distinct seq {r.distinct_seq}, missing {len(r.missing)}, duplicated {r.duplicated},"
        f" dead-lettered {r.rejected})"
    )
    for v in r.versions:
        auc = "n/a" if v.roc_auc is None else f"{v.roc_auc:.3f}"
        print(
            f"  {v.label:<18} id {v.model_version_id:<4} windows {v.windows:<5} "
            f"seq {v.first_seq}..{v.last_seq}  ROC-AUC vs ground truth {auc}"
        )
    if r.roc_auc is not None:
        print(f"  held-out ROC-AUC (whole live session): {r.roc_auc:.3f}")
    if r.swap_seen_after_s is not None:
        print(
            f"  model swap: requested at {r.swap_requested_after_s:.1f} s, first prediction "
            f"by the new version {r.swap_seen_after_s:.2f} s later"
        )
    if r.latency_ms:
        print(
            "  latency publish -> prediction row: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in r.latency_ms.items())
        )
