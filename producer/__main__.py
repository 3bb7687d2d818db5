"""``python -m producer``: stream one session with settings from the environment.

SIGTERM/SIGINT stop reading; the session then waits for the broker to confirm what was
already cut and closes its row before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from neurostream.settings import CoreSettings
from producer.session import SessionResult, run_session
from producer.settings import ProducerSettings


async def serve(core: CoreSettings, settings: ProducerSettings) -> SessionResult:
    """Run a session that ends gracefully on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await run_session(core, settings, stop=stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    result = asyncio.run(serve(CoreSettings(), ProducerSettings()))
    logging.getLogger("producer").info("done:\n%s", "\n".join(result.summary()))


if __name__ == "__main__":
    main()
