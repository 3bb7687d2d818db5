"""``python -m ml_data_api``: serve the ML data API (and its consumers) with uvicorn."""

from __future__ import annotations

import uvicorn

from ml_data_api.app import create_app
from ml_data_api.settings import DataApiSettings
from neurostream.settings import CoreSettings


def main() -> None:
    core, settings = CoreSettings(), DataApiSettings()
    uvicorn.run(
        create_app(core, settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
