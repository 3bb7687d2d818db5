"""Windows in and drift metrics out: the SQL edge of drift monitoring.

Raw windows come from the archive (``windows``, written by ml_data_api's archiver) or from
a dataset snapshot; results go to the ``drift_metrics`` time series. A reference is a
snapshot, a time range, or by default the first seconds of a service's latest session.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from monitoring_api.errors import MonitoringError, NotFound
from neurostream import datasets, errors
from neurostream.drift import DriftResult, effective_n


@dataclass(frozen=True)
class Batch:
    """Windows of one shape: ``x`` float32 ``[n, c, s]``."""

    x: np.ndarray
    fs: float
    channels: list[str]
    start: datetime | None = None
    end: datetime | None = None
    spacing_s: float | None = None  # median time between windows (None: unknown)

    @property
    def n_eff(self) -> float:
        return effective_n(self.x.shape[0], self.x.shape[2] / self.fs, self.spacing_s)


@dataclass(frozen=True)
class Reference:
    kind: str  # 'dataset' | 'range' | 'session-start'
    dataset_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.dataset_id}:{self.start}:{self.end}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dataset_id": self.dataset_id,
            "start": self.start,
            "end": self.end,
        }


_WINDOWS = """
SELECT data, n_channels, n_samples, fs, channels, window_ts FROM windows
WHERE service = %(service)s AND window_ts >= %(start)s AND window_ts <= %(end)s
  AND (%(session)s::text IS NULL OR session_id = %(session)s)
ORDER BY window_ts DESC LIMIT %(limit)s
"""


def _stack(rows: list[tuple[Any, ...]]) -> Batch | None:
    """The rows of the most common (channels, samples, fs): mixed kinds are not comparable."""
    if not rows:
        return None
    shape, _ = Counter((r[1], r[2], float(r[3])) for r in rows).most_common(1)[0]
    keep = [r for r in rows if (r[1], r[2], float(r[3])) == shape]
    c, s, fs = shape
    x = np.frombuffer(b"".join(bytes(r[0]) for r in keep), dtype="<f4").reshape(-1, c, s)
    names = next((list(r[4]) for r in keep if r[4] and len(r[4]) == c), None)
    times = [r[5] for r in keep]
    steps = np.diff(sorted(t.timestamp() for t in times))
    steps = steps[steps > 0]
    spacing = float(np.median(steps)) if steps.size else None
    channels = names or [f"ch{i}" for i in range(c)]
    return Batch(x[::-1].copy(), fs, channels, min(times), max(times), spacing)


async def load_range(
    conn: AsyncConnection[Any],
    service: str,
    start: datetime,
    end: datetime,
    *,
    limit: int,
    session_id: str | None = None,
) -> Batch | None:
    """Archived windows of ``service`` in ``[start, end]`` (the latest ``limit``)."""
    params = {"service": service, "start": start, "end": end, "limit": limit, "session": session_id}
    cur = await conn.execute(_WINDOWS, params)
    return _stack(await cur.fetchall())


async def load_dataset(conn: AsyncConnection[Any], dataset_id: int) -> Batch:
    try:
        snap = await datasets.load_snapshot(conn, dataset_id)
    except errors.NotFound:
        raise NotFound(
            f"dataset {dataset_id} does not exist", field="reference_dataset_id"
        ) from None
    return Batch(snap.x, float(snap.meta["fs"]), list(snap.meta["channels"]))


async def latest_windows(conn: AsyncConnection[Any]) -> list[tuple[str, datetime, str]]:
    """(service, latest window_ts, that window's session) for every archived service."""
    cur = await conn.execute(
        """SELECT DISTINCT ON (service) service, window_ts, session_id FROM windows
        ORDER BY service, window_ts DESC"""
    )
    return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


async def latest_window(conn: AsyncConnection[Any], service: str) -> tuple[datetime, str] | None:
    cur = await conn.execute(
        "SELECT window_ts, session_id FROM windows WHERE service = %s "
        "ORDER BY window_ts DESC LIMIT 1",
        [service],
    )
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None


async def reference_for(
    conn: AsyncConnection[Any], service: str, session_id: str | None, reference_s: float
) -> Reference | None:
    """The service's configured reference, else the start of ``session_id``."""
    cur = await conn.execute(
        "SELECT dataset_id, range_start, range_end FROM drift_references WHERE service = %s",
        [service],
    )
    row = await cur.fetchone()
    if row is not None:
        if row[0] is not None:
            return Reference("dataset", dataset_id=row[0])
        return Reference("range", start=row[1], end=row[2])
    if session_id is None:
        return None
    cur = await conn.execute(
        "SELECT min(window_ts) FROM windows WHERE service = %s AND session_id = %s",
        [service, session_id],
    )
    first = (await cur.fetchone() or [None])[0]
    if first is None:
        return None
    return Reference("session-start", start=first, end=first + timedelta(seconds=reference_s))


async def load_reference(
    conn: AsyncConnection[Any], service: str, ref: Reference, *, limit: int
) -> Batch | None:
    if ref.dataset_id is not None:
        return await load_dataset(conn, ref.dataset_id)
    assert ref.start is not None and ref.end is not None
    return await load_range(conn, service, ref.start, ref.end, limit=limit)


def check_pair(ref: Batch, cur: Batch, min_windows: int) -> None:
    """Refuse a pair the tests cannot compare, naming the side at fault."""
    for field, b in (("reference", ref), ("current", cur)):
        if b.x.shape[0] < min_windows:
            raise MonitoringError(
                f"{b.x.shape[0]} windows, at least {min_windows} are needed", field=field
            )
    if ref.x.shape[1] != cur.x.shape[1] or ref.fs != cur.fs:
        raise MonitoringError(
            f"reference has {ref.x.shape[1]} channels at {ref.fs} Hz, current "
            f"{cur.x.shape[1]} at {cur.fs} Hz",
            field="reference",
        )


DRIFT_COLUMNS = (
    "time",
    "service",
    "session_id",
    "scope",
    "name",
    "method",
    "statistic",
    "p_value",
    "drifted",
    "share",
    "n_reference",
    "n_current",
)


def drift_rows(
    time: datetime,
    service: str,
    session_id: str | None,
    result: DriftResult,
    mmd: float | None,
    drift_share: float,
) -> list[tuple[Any, ...]]:
    """``drift_metrics`` rows of one evaluation (``DRIFT_COLUMNS``): features, channels,
    share and MMD."""
    n = (result.n_reference, result.n_current)
    key = (time, service, session_id)
    rows: list[tuple[Any, ...]] = [
        (*key, "feature", f, "ks", float(d), float(p), bool(dr), None, *n)
        for f, d, p, dr in zip(
            result.features, result.statistic, result.p_adjusted, result.drifted, strict=True
        )
    ]
    rows += [
        (*key, "channel", c, "ks", float(d), float(p), bool(dr), float(s), *n)
        for c, d, p, dr, s in zip(
            result.channels,
            result.channel_statistic,
            result.channel_p_value,
            result.channel_drifted,
            result.channel_share,
            strict=True,
        )
    ]
    share = result.share
    rows.append((*key, "overall", "share", "ks", share, None, share >= drift_share, share, *n))
    if mmd is not None:
        rows.append((*key, "overall", "mmd", "mmd-rbf", mmd, None, False, None, *n))
    return rows


# One statement per evaluation; the key makes a second write of the same evaluation an
# update (the newest verdict on that window, e.g. after the reference changed), not a copy.
_INSERT_DRIFT = """
INSERT INTO drift_metrics (time, service, session_id, scope, name, method, statistic, p_value,
    drifted, share, n_reference, n_current)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[],
    %s::text[], %s::float8[], %s::float8[], %s::bool[], %s::float8[], %s::int[], %s::int[])
ON CONFLICT (service, scope, name, method, time) DO UPDATE SET
    session_id = EXCLUDED.session_id, statistic = EXCLUDED.statistic,
    p_value = EXCLUDED.p_value, drifted = EXCLUDED.drifted, share = EXCLUDED.share,
    n_reference = EXCLUDED.n_reference, n_current = EXCLUDED.n_current, evaluated_at = now()
"""


async def write_drift(conn: AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> None:
    """Store one evaluation's rows; writing the same evaluation again stores it once."""
    if rows:
        await conn.execute(_INSERT_DRIFT, [list(col) for col in zip(*rows, strict=True)])


async def drift_series(
    conn: AsyncConnection[Any],
    *,
    service: str,
    scope: str | None,
    name: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    session_id: str | None = None,
) -> list[dict[str, Any]]:
    """The latest ``limit`` rows of the series, oldest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT * FROM (SELECT time, service, session_id, scope, name, method, statistic,
                p_value, drifted, share, n_reference, n_current FROM drift_metrics
            WHERE service = %(service)s
              AND (%(session)s::text IS NULL OR session_id = %(session)s)
              AND (%(scope)s::text IS NULL OR scope = %(scope)s)
              AND (%(name)s::text IS NULL OR name = %(name)s)
              AND (%(start)s::timestamptz IS NULL OR time >= %(start)s)
              AND (%(end)s::timestamptz IS NULL OR time <= %(end)s)
            ORDER BY time DESC, scope, name LIMIT %(limit)s) t ORDER BY time, scope, name""",
            {
                "service": service,
                "session": session_id,
                "scope": scope,
                "name": name,
                "start": start,
                "end": end,
                "limit": limit,
            },
        )
        return await cur.fetchall()
