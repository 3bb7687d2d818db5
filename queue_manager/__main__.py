"""``python -m queue_manager``: serve the registry and queue API with uvicorn."""

from __future__ import annotations

import uvicorn

from neurostream.settings import CoreSettings
from queue_manager.app import create_app
from queue_manager.settings import QueueManagerSettings


def main() -> None:
    core, settings = CoreSettings(), QueueManagerSettings()
    uvicorn.run(
        create_app(core, settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
