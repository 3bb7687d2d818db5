"""The background evaluator: every N seconds, drift per service, then the alert rules.

It runs inside the API process (``NEUROSTREAM_MON_EVALUATOR=false`` turns the loop off; the
on-demand ``POST /drift/evaluate/{service}`` still goes through it, so both share one
reference cache and one record of what was evaluated). A service is evaluated when its
archive has grown since the last pass: the latest ``current_window_s`` of windows against
its reference (``detector.py``), written to ``drift_metrics`` at the time of the newest
window. Any failure is logged and the next tick tries again.

Lifecycle, as the worker's: ``start()``, ``request_stop()`` (sync, for signal handlers),
``close()`` (the pass in progress finishes, or is cancelled after ``close_timeout_s``; then
the pool and client it created itself are closed, never injected ones).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from monitoring_api import alerts, store
from monitoring_api.detector import LatestDrift, ReferenceCache, evaluate_latest
from monitoring_api.settings import MonitoringSettings
from neurostream.db import open_pool
from neurostream.lifecycle import every, settle
from neurostream.settings import CoreSettings

log = logging.getLogger(__name__)


class Evaluator:
    """Drift and alert passes on a timer; resources are injected or created by ``start``."""

    def __init__(
        self,
        core: CoreSettings,
        settings: MonitoringSettings,
        *,
        pool: AsyncConnectionPool | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.core = core
        self.settings = settings
        self.pool: AsyncConnectionPool | None = pool
        self.client: httpx.AsyncClient | None = client
        self.cache = ReferenceCache()
        self.last: dict[str, datetime] = {}  # service -> newest window time evaluated
        self.ticks = 0
        self._owns_pool = pool is None
        self._owns_client = client is None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def open(self) -> None:
        """Create the pool and client not injected (``evaluate`` and ``tick`` need them)."""
        if self.pool is None:
            self.pool = await open_pool(self.core.database_url, max_size=2)
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s)

    async def start(self) -> None:
        """Open what is missing and run the loop in a task until ``request_stop``."""
        await self.open()
        self._stopping.clear()
        self._task = asyncio.create_task(
            every(self.settings.evaluate_every_s, self._stopping, self.tick, "evaluator tick"),
            name="monitoring-evaluator",
        )

    def request_stop(self) -> None:
        """Stop after the pass in progress (safe from a signal handler)."""
        self._stopping.set()

    async def close(self) -> None:
        """Stop the loop (bounded drain), then close the resources this object created."""
        self.request_stop()
        if self._task is not None:
            await settle(self._task, self.settings.close_timeout_s, "evaluator pass")
            self._task = None
        if self._owns_client and self.client is not None:
            await self.client.aclose()
            self.client = None
        if self._owns_pool and self.pool is not None:
            await self.pool.close()
            self.pool = None

    def _resources(self) -> tuple[AsyncConnectionPool, httpx.AsyncClient]:
        if self.pool is None or self.client is None:
            raise RuntimeError("the evaluator is not open: call start() or open() first")
        return self.pool, self.client

    async def tick(self) -> dict[str, Any]:
        """One pass: drift for every service with new windows, then every alert rule."""
        pool, client = self._resources()
        evaluated: list[str] = []
        async with pool.connection() as conn:
            latest = await store.latest_windows(conn)
        for service, ts, session_id in latest:
            if self.last.get(service) == ts:
                continue
            try:
                if await self.evaluate(service, (ts, session_id)):
                    evaluated.append(service)
                self.last[service] = ts
            except Exception:
                log.exception("drift evaluation of %s failed", service)
        transitions = await alerts.evaluate_rules(
            pool,
            client,
            retries=self.settings.webhook_retries,
            backoff_s=self.settings.webhook_backoff_s,
        )
        self.ticks += 1
        return {"evaluated": evaluated, "alerts": transitions}

    async def evaluate(
        self, service: str, latest: tuple[datetime, str] | None = None
    ) -> LatestDrift | None:
        """Evaluate and store one service's current window; None when not testable yet.

        Storing is idempotent (one row per test and window time), and the window is
        recorded as evaluated, so the loop does not evaluate it again.
        """
        pool, _ = self._resources()
        async with pool.connection() as conn:
            out = await evaluate_latest(conn, service, self.settings, self.cache, latest)
            if out is None:
                return None
            ev = out.evaluation
            rows = store.drift_rows(
                out.end, service, out.session_id, ev.result, ev.mmd, self.settings.drift_share
            )
            async with conn.transaction():
                await store.write_drift(conn, rows)
        self.last[service] = out.end
        return out
