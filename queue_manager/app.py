"""The queue manager app factory: services, model registry, assignments, jobs, workers.

The lifespan opens the process's PostgreSQL pool (migrating the schema) and a robust AMQP
connection whose confirmed channel publishes ``models.events``; routers are per resource.
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
from queue_manager.routers import aliases, canary, jobs, models, services, workers
from queue_manager.settings import QueueManagerSettings

log = logging.getLogger(__name__)


def create_app(core: CoreSettings, settings: QueueManagerSettings) -> FastAPI:
    """Build the app; nothing connects until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(core.database_url, max_size=core.db_pool_max)
        try:
            connection = await broker.connect(core.amqp_url, name="queue_manager")
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchanges = await topology.declare_exchanges(channel)
                app.state.pool = pool
                app.state.notifier = Notifier(pool, exchanges[topology.MODEL_EVENTS_EXCHANGE])

                async def check_db() -> None:
                    async with pool.connection() as conn:
                        await conn.execute("SELECT 1")

                async def check_amqp() -> None:
                    if connection.is_closed or channel.is_closed:
                        raise BrokerUnavailable.reconnecting(core.amqp_url)

                app.state.health_checks = {"database": check_db, "broker": check_amqp}
                yield
        finally:
            await pool.close()

    app = service_app(
        "queue_manager",
        core,
        lifespan=lifespan,
        description="Services, the model registry (versions, aliases), assignments, jobs and "
        "workers of neurostream. Write endpoints need `Authorization: Bearer <token>`.",
    )
    app.state.settings = settings
    app.state.artifact_policy = ArtifactPolicy.from_settings(core)
    app.include_router(services.router)
    app.include_router(canary.router)
    app.include_router(models.router, max_body_size=settings.max_upload_bytes)
    app.include_router(aliases.router)
    app.include_router(jobs.router)
    app.include_router(workers.router)
    return app
