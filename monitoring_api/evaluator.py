"""The background evaluator: every N seconds, drift per service, then the alert rules.

It runs inside the API process (``NEUROSTREAM_MON_EVALUATOR=false`` turns it off). A
service is evaluated when its archive has grown since the last pass: the latest
``current_window_s`` of windows against its reference, written to ``drift_metrics`` at the
time of the newest window. Any failure is logged and the next tick tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from monitoring_api import alerts, store
from monitoring_api.evaluation import ReferenceCache, evaluate_latest
from monitoring_api.settings import MonitoringSettings

log = logging.getLogger(__name__)


class Evaluator:
    def __init__(
        self, pool: AsyncConnectionPool, settings: MonitoringSettings, client: httpx.AsyncClient
    ) -> None:
        self.pool, self.settings, self.client = pool, settings, client
        self.cache = ReferenceCache()
        self.last: dict[str, datetime] = {}
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="monitoring-evaluator")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "evaluator tick failed; retrying in %ss", self.settings.evaluate_every_s
                )
            await asyncio.sleep(self.settings.evaluate_every_s)

    async def tick(self) -> dict[str, Any]:
        """One pass: drift for every service with new windows, then every alert rule."""
        evaluated: list[str] = []
        async with self.pool.connection() as conn:
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
            self.pool,
            self.client,
            retries=self.settings.webhook_retries,
            backoff_s=self.settings.webhook_backoff_s,
        )
        self.ticks += 1
        return {"evaluated": evaluated, "alerts": transitions}

    async def evaluate(self, service: str, latest: tuple[datetime, str] | None = None) -> bool:
        """Evaluate and store one service's current window; False when not testable yet."""
        async with self.pool.connection() as conn:
            out = await evaluate_latest(conn, service, self.settings, self.cache, latest)
            if out is None:
                return False
            end, ev = out
            rows = store.drift_rows(end, service, ev.result, ev.mmd, self.settings.drift_share)
            async with conn.transaction():
                await store.write_drift(conn, rows)
        return True
