"""``python -m monitoring_api``: serve the monitoring API and dashboard with uvicorn."""

from __future__ import annotations

import uvicorn

from monitoring_api.app import create_app
from monitoring_api.settings import MonitoringSettings
from neurostream.settings import CoreSettings


def main() -> None:
    core, settings = CoreSettings(), MonitoringSettings()
    uvicorn.run(
        create_app(core, settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
