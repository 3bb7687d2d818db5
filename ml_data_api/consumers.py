"""The ml_data_api consumers (label collector, window archiver) on one AMQP connection.

The API's lifespan starts them when ``NEUROSTREAM_DATA_CONSUMERS`` is true; ``python -m
ml_data_api.consumers`` runs them alone (e.g. scaled apart from the HTTP API). Each
consumer has its own channel so their prefetch limits stay independent.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from psycopg_pool import AsyncConnectionPool

from ml_data_api.archiver import WindowArchiver
from ml_data_api.collector import LabelCollector
from ml_data_api.consumer import BatchConsumer
from ml_data_api.settings import DataApiSettings
from neurostream.db import open_pool
from neurostream.settings import CoreSettings

log = logging.getLogger(__name__)


async def connect(core: CoreSettings) -> AbstractRobustConnection:
    try:
        return await aio_pika.connect_robust(core.amqp_url, timeout=10)
    except Exception as exc:
        raise RuntimeError(
            f"cannot reach RabbitMQ at {core.amqp_url.split('@')[-1]}: {exc}. Start it "
            "with `rabbitmq-server -detached` or `neurostream infra up`."
        ) from exc


class Consumers:
    """Both consumers, started and closed together."""

    def __init__(
        self, pool: AsyncConnectionPool, core: CoreSettings, settings: DataApiSettings
    ) -> None:
        self.collector = LabelCollector(pool, prefetch=settings.collector_prefetch)
        self.archiver = WindowArchiver(
            pool, prefetch=settings.archiver_prefetch, max_bytes=core.max_window_bytes
        )
        self.all: list[BatchConsumer] = [self.collector, self.archiver]

    async def start(self, connection: AbstractRobustConnection) -> None:
        for consumer in self.all:
            await consumer.start(await connection.channel())

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.all))


async def run(core: CoreSettings, settings: DataApiSettings) -> None:
    """Consume until SIGINT/SIGTERM, then finish in-flight batches and exit."""
    pool = await open_pool(core.database_url, max_size=4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        connection = await connect(core)
        async with connection:
            consumers = Consumers(pool, core, settings)
            await consumers.start(connection)
            await stop.wait()
            await consumers.close()
    finally:
        await pool.close()


def main() -> None:
    settings = DataApiSettings()
    logging.basicConfig(level=settings.log_level.upper())
    asyncio.run(run(CoreSettings(), settings))


if __name__ == "__main__":
    main()
