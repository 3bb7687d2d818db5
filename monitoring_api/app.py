"""The monitoring app factory: drift, performance, BCI decisions, quality, alerts, dashboard.

The lifespan opens the process's PostgreSQL pool (migrating the schema), an HTTP client for
webhooks and the evaluator on both; its loop runs unless ``evaluator`` is off, and it
closes (a bounded drain) before the client and the pool do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from monitoring_api.canary_judge import CanaryJudge
from monitoring_api.evaluator import Evaluator
from monitoring_api.routers import alerts, bci, canary, drift, overview, performance, quality
from monitoring_api.settings import MonitoringSettings
from neurostream.api import service_app
from neurostream.db import open_pool
from neurostream.settings import CoreSettings


def create_app(core: CoreSettings, settings: MonitoringSettings) -> FastAPI:
    """Build the app; nothing connects until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(core.database_url, max_size=core.db_pool_max)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(pool.close)
            client = httpx.AsyncClient(timeout=settings.webhook_timeout_s)
            stack.push_async_callback(client.aclose)
            app.state.pool = pool

            async def check_db() -> None:
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")

            app.state.health_checks = {"database": check_db}
            # The on-demand drift endpoint evaluates through it even when the loop is off.
            evaluator = Evaluator(core, settings, pool=pool, client=client)
            app.state.evaluator = evaluator
            stack.push_async_callback(evaluator.close)
            if settings.evaluator:
                await evaluator.start()
            judge = CanaryJudge(core, settings, pool=pool)
            app.state.canary_judge = judge
            stack.push_async_callback(judge.close)
            if settings.canary_judge:
                await judge.start()
            yield

    app = service_app(
        "monitoring_api",
        core,
        lifespan=lifespan,
        description="Data drift (per feature / channel, MMD, Evidently reports), prediction "
        "drift, performance (measured and estimated), a speller's decision accuracy and "
        "ITR, data quality, alerts with webhooks and a "
        "live dashboard at /dashboard. Write endpoints need `Authorization: Bearer <token>`.",
    )
    app.state.settings = settings
    for module in (drift, performance, bci, quality, alerts, overview, canary):
        app.include_router(module.router)
    return app
