"""``python -m workers``: one worker replica for ``NEUROSTREAM_WORKER_SERVICE``.

With ``NEUROSTREAM_WORKER_DECIDE`` (the default) the process runs a ``Decider`` beside the
worker: every replica has one, the decider queue's single active consumer lets exactly
one of them decide, and a stop (SIGTERM) or a failure of either ends both.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import start_http_server

from neurostream.settings import CoreSettings
from workers.decider import Decider
from workers.settings import WorkerSettings
from workers.worker import Worker


async def serve(core: CoreSettings, settings: WorkerSettings) -> Worker:
    """Run one worker (and its decider) until SIGTERM/SIGINT, finishing in-flight work."""
    worker = Worker(core, settings)
    worker.install_signal_handlers()
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    if not settings.decide:
        await worker.run()
        return worker
    decider = Decider(core, settings)
    runs = [
        asyncio.create_task(worker.run(), name="worker"),
        asyncio.create_task(decider.run(), name="decider"),
    ]
    # The signal stops the worker; whichever ends first (stopped or failed) ends the other.
    await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
    worker.request_stop()
    decider.request_stop()
    await asyncio.gather(*runs)  # re-raises a failure of either
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
