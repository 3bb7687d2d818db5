"""The ML data API's ingestion: the label collector and the window archiver, run together.

The API's lifespan runs one ``Ingest`` when ``NEUROSTREAM_DATA_CONSUMERS`` is true;
``python -m ml_data_api.ingest`` runs it alone (e.g. scaled apart from the HTTP API). Both
consumers share one robust AMQP connection, each on a channel of its own so their
prefetch limits stay independent.

Lifecycle as the worker's: ``run()`` = ``start()``, wait for ``request_stop()`` (what
``handle_signal`` calls on SIGTERM/SIGINT), ``close()``. ``close()`` settles the messages
already received (bounded by ``drain_timeout_s``) and closes what it opened; an injected
pool or connection is left open.
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from psycopg_pool import AsyncConnectionPool

from ml_data_api.archiver import WindowArchiver
from ml_data_api.batch_consumer import BatchConsumer
from ml_data_api.collector import LabelCollector
from ml_data_api.settings import DataApiSettings
from neurostream import broker
from neurostream.db import open_pool
from neurostream.lifecycle import Lifecycle, signal_name
from neurostream.settings import CoreSettings

log = logging.getLogger(__name__)


class Ingest(Lifecycle):
    """The label collector and the window archiver, started and closed together."""

    def __init__(
        self,
        core: CoreSettings,
        settings: DataApiSettings,
        *,
        pool: AsyncConnectionPool | None = None,
        connection: AbstractRobustConnection | None = None,
    ) -> None:
        super().__init__()
        self.core = core
        self.settings = settings
        self.pool: AsyncConnectionPool | None = pool
        self.connection: AbstractRobustConnection | None = connection
        self.collector = LabelCollector(
            prefetch=settings.collector_prefetch, drain_timeout_s=settings.drain_timeout_s
        )
        self.archiver = WindowArchiver(
            prefetch=settings.archiver_prefetch,
            max_bytes=core.max_window_bytes,
            drain_timeout_s=settings.drain_timeout_s,
        )
        self.consumers: tuple[BatchConsumer, ...] = (self.collector, self.archiver)
        self._owns_pool = pool is None
        self._owns_connection = connection is None
        self._channels: list[AbstractChannel] = []
        self._closing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect (unless given a pool/connection) and start both consumers."""
        if self.pool is None:
            self.pool = await open_pool(self.core.database_url, max_size=4)
        if self.connection is None:
            self.connection = await broker.connect(self.core.amqp_url, name="ml_data_api:ingest")
        for consumer in self.consumers:
            channel = await self.connection.channel()
            self._channels.append(channel)
            await consumer.start(channel, self.pool)

    def handle_signal(self, signum: int) -> None:
        """What SIGTERM/SIGINT do: stop after the messages already received."""
        log.info("ingest got %s; settling in-flight batches", signal_name(signum))
        self.request_stop()

    async def close(self, wait_s: float | None = None) -> None:
        """Settle what both consumers received (within ``wait_s``, default
        ``drain_timeout_s``), then close what ``start`` opened. Safe to call more than once."""
        if self._closing is None:
            bound = self.settings.drain_timeout_s if wait_s is None else wait_s
            self._closing = asyncio.create_task(self._close(bound), name="ingest-close")
        await asyncio.shield(self._closing)

    async def _close(self, wait_s: float) -> None:
        self._stopping.set()
        self._signals.remove()
        await asyncio.gather(*(c.close(wait_s) for c in self.consumers))
        for channel in self._channels:  # ours even on an injected connection
            if not channel.is_closed:
                try:
                    await channel.close()
                except Exception:
                    log.debug("channel close failed (connection lost)", exc_info=True)
        if self._owns_connection and self.connection is not None:
            await self.connection.close()
        if self._owns_pool and self.pool is not None:
            await self.pool.close()


async def serve(core: CoreSettings, settings: DataApiSettings) -> Ingest:
    """Consume until SIGINT/SIGTERM, then settle in-flight batches and return."""
    ingest = Ingest(core, settings)
    ingest.install_signal_handlers()
    await ingest.run()
    return ingest


def main() -> None:
    settings = DataApiSettings()
    logging.basicConfig(level=settings.log_level.upper())
    asyncio.run(serve(CoreSettings(), settings))


if __name__ == "__main__":
    main()
