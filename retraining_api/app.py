"""The retraining API app factory: retrain jobs, promotion, importance, triggers.

The lifespan opens the process's PostgreSQL pool (migrating the schema), a robust AMQP
connection whose confirmed channel publishes ``models.events``, and the job runner
(unless ``runner_enabled`` is false): jobs run in this process but outside any request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from neurostream import broker, topology
from neurostream.api import service_app
from neurostream.db import open_pool
from neurostream.errors import BrokerUnavailable
from neurostream.models.artifacts import ArtifactPolicy
from neurostream.notify import Notifier
from neurostream.settings import CoreSettings
from retraining_api.routers import jobs, models, triggers
from retraining_api.runner import Runner
from retraining_api.settings import RetrainingSettings

log = logging.getLogger(__name__)


def create_app(core: CoreSettings, settings: RetrainingSettings) -> FastAPI:
    """Build the app; nothing connects until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(core.database_url, max_size=core.db_pool_max)
        try:
            connection = await broker.connect(core.amqp_url, name="retraining_api")
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchanges = await topology.declare_exchanges(channel)
                notifier = Notifier(pool, exchanges[topology.MODEL_EVENTS_EXCHANGE])
                runner = (
                    Runner(pool, notifier, settings, policy=ArtifactPolicy.from_settings(core))
                    if settings.runner_enabled
                    else None
                )
                app.state.pool, app.state.notifier, app.state.runner = pool, notifier, runner

                async def check_db() -> None:
                    async with pool.connection() as conn:
                        await conn.execute("SELECT 1")

                async def check_amqp() -> None:
                    if connection.is_closed or channel.is_closed:
                        raise BrokerUnavailable.reconnecting(core.amqp_url)

                app.state.health_checks = {"database": check_db, "broker": check_amqp}
                if runner is not None:
                    await runner.start()
                try:
                    yield
                finally:
                    if runner is not None:
                        await runner.close()
        finally:
            await pool.close()

    app = service_app(
        "retraining_api",
        core,
        lifespan=lifespan,
        description="Retrain jobs that run outside the request (progress, logs, Optuna "
        "trials), challenger vs champion comparison and promotion, permutation importance and "
        "retraining triggers. Write endpoints need `Authorization: Bearer <token>`.",
    )
    app.state.settings = settings
    app.state.runner = None
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(triggers.router)
    return app
