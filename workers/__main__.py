"""``python -m workers``: one worker replica for ``NEUROSTREAM_WORKER_SERVICE``."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import start_http_server

from neurostream.settings import CoreSettings
from workers.settings import WorkerSettings
from workers.worker import Worker


async def serve(core: CoreSettings, settings: WorkerSettings) -> Worker:
    """Run one worker until SIGTERM/SIGINT, finishing in-flight windows first."""
    worker = Worker(core, settings)
    worker.install_signal_handlers()
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    await worker.run()
    return worker


def run(core: CoreSettings, settings: WorkerSettings) -> Worker:
    """Serve on the configured event loop (uvloop unless ``event_loop=asyncio``)."""
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.run(serve(core, settings))
    return asyncio.run(serve(core, settings))


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(CoreSettings(), WorkerSettings())


if __name__ == "__main__":
    main()
