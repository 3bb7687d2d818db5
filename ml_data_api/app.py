"""The ML data API app factory: datasets, production data, labels and sessions.

The lifespan opens the process's PostgreSQL pool (migrating the schema), the app's one
AMQP connection (``app.state.amqp``: a channel per live-predictions WebSocket) and, unless
``consumers`` is off, the ground-truth collector and window archiver (``ingest.Ingest``, on
that connection); they stop (settling in-flight batches) before the connection and the
pool close.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from ml_data_api.ingest import Ingest
from ml_data_api.routers import datasets, labels, live, production, sessions
from ml_data_api.settings import DataApiSettings
from neurostream import broker
from neurostream.api import service_app
from neurostream.db import open_pool
from neurostream.errors import BrokerUnavailable
from neurostream.settings import CoreSettings

log = logging.getLogger(__name__)


def create_app(core: CoreSettings, settings: DataApiSettings) -> FastAPI:
    """Build the app; nothing connects until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(core.database_url, max_size=core.db_pool_max)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(pool.close)
            app.state.pool = pool

            async def check_db() -> None:
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")

            app.state.health_checks = {"database": check_db}
            amqp = await broker.connect(core.amqp_url, name="ml_data_api")
            stack.push_async_callback(amqp.close)
            app.state.amqp = amqp

            async def check_amqp() -> None:
                if amqp.is_closed:
                    raise BrokerUnavailable.reconnecting(core.amqp_url)

            app.state.health_checks["broker"] = check_amqp
            if settings.consumers:
                # The pool and the connection stay the app's.
                ingest = Ingest(core, settings, pool=pool, connection=amqp)
                stack.push_async_callback(ingest.close)  # also after a failed start
                await ingest.start()
                app.state.consumers = ingest
            yield

    app = service_app(
        "ml_data_api",
        core,
        lifespan=lifespan,
        description="Training / testing datasets, production data (predictions, windows), "
        "ground-truth labels and sessions of neurostream. Write endpoints need "
        "`Authorization: Bearer <token>`.",
        max_body_size=settings.max_upload_bytes,  # uploads and label batches alike
    )
    app.state.settings = settings
    app.include_router(datasets.uploads)
    app.include_router(datasets.router)
    app.include_router(production.router)
    app.include_router(labels.router)
    app.include_router(sessions.router)
    app.include_router(live.router)
    return app
