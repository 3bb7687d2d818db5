"""The drift detector: reference vs current windows -> KS per feature/channel + MMD.

One pass of the detector, not the loop that schedules it (that is ``evaluator.py``). Shared
by the background evaluator (sliding current window, every N seconds), the on-demand
endpoints (any pair) and the Evidently report, which reads the same feature frames. The CPU
work runs in a thread so the API's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from psycopg import AsyncConnection

from monitoring_api import store
from monitoring_api.settings import MonitoringSettings
from neurostream.drift import DriftResult, band_features, ks_drift, mmd_rbf


@dataclass(frozen=True)
class Features:
    x: np.ndarray  # [n, f]
    names: list[str]
    channel_of: np.ndarray
    channels: list[str]
    n_eff: float

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.x, columns=self.names)


def featurize(batch: store.Batch) -> Features:
    x, names, channel_of = band_features(batch.x, batch.fs, batch.channels)
    return Features(x, names, channel_of, batch.channels, batch.n_eff)


@dataclass(frozen=True)
class Evaluation:
    result: DriftResult
    mmd: float

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "share": r.share,
            "mmd": self.mmd,
            "alpha": r.alpha,
            "n_reference": r.n_reference,
            "n_current": r.n_current,
            "drifted_channels": r.drifted_channels,
            "channels": [
                {
                    "name": c,
                    "statistic": float(d),
                    "p_value": float(p),
                    "share": float(s),
                    "drifted": bool(dr),
                }
                for c, d, p, s, dr in zip(
                    r.channels,
                    r.channel_statistic,
                    r.channel_p_value,
                    r.channel_share,
                    r.channel_drifted,
                    strict=True,
                )
            ],
            "features": [
                {
                    "name": f,
                    "statistic": float(d),
                    "p_value": float(p),
                    "p_adjusted": float(pa),
                    "drifted": bool(dr),
                }
                for f, d, p, pa, dr in zip(
                    r.features, r.statistic, r.p_value, r.p_adjusted, r.drifted, strict=True
                )
            ],
        }


def compare(ref: Features, cur: Features, settings: MonitoringSettings) -> Evaluation:
    result = ks_drift(
        ref.x,
        cur.x,
        ref.names,
        ref.channel_of,
        ref.channels,
        alpha=settings.alpha,
        n_eff=(ref.n_eff, cur.n_eff),
    )
    return Evaluation(result, mmd_rbf(ref.x, cur.x, max_n=settings.mmd_max_n))


class ReferenceCache:
    """Reference features by reference key: a snapshot or past range does not change."""

    def __init__(self, size: int = 16) -> None:
        self._items: dict[tuple[str, str], Features] = {}
        self.size = size

    async def get(
        self, conn: AsyncConnection[Any], service: str, ref: store.Reference, limit: int
    ) -> Features | None:
        key = (service, ref.key)
        if key not in self._items:
            batch = await store.load_reference(conn, service, ref, limit=limit)
            if batch is None:
                return None
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[key] = await asyncio.to_thread(featurize, batch)
        return self._items[key]


@dataclass(frozen=True)
class LatestDrift:
    """The detector on a service's latest window: ``end`` is its time, the row key."""

    end: datetime
    session_id: str
    evaluation: Evaluation


async def evaluate_latest(
    conn: AsyncConnection[Any],
    service: str,
    settings: MonitoringSettings,
    cache: ReferenceCache,
    latest: tuple[datetime, str] | None = None,
) -> LatestDrift | None:
    """Drift of the service's latest ``current_window_s`` against its reference, if testable.

    With the default reference (the session's first seconds) evaluation waits until the
    current window lies wholly after it, so a stretch is never compared with itself.
    """
    latest = latest or await store.latest_window(conn, service)
    if latest is None:
        return None
    end, session_id = latest
    ref = await store.reference_for(conn, service, session_id, settings.reference_s)
    if ref is None:
        return None
    start = end - timedelta(seconds=settings.current_window_s)
    if ref.kind == "session-start" and ref.end is not None and start < ref.end:
        return None
    ref_features = await cache.get(conn, service, ref, settings.max_windows)
    cur_batch = await store.load_range(conn, service, start, end, limit=settings.max_windows)
    if ref_features is None or cur_batch is None:
        return None
    if min(ref_features.x.shape[0], cur_batch.x.shape[0]) < settings.min_windows:
        return None
    if len(ref_features.channels) != cur_batch.x.shape[1]:
        return None  # a montage change: the reference no longer applies
    cur = await asyncio.to_thread(featurize, cur_batch)
    evaluation = await asyncio.to_thread(compare, ref_features, cur, settings)
    return LatestDrift(end, session_id, evaluation)
