"""``python -m retraining_api``: serve the retraining API (and its job runner) with uvicorn."""

from __future__ import annotations

import uvicorn

from neurostream.settings import CoreSettings
from retraining_api.app import create_app
from retraining_api.settings import RetrainingSettings


def main() -> None:
    core, settings = CoreSettings(), RetrainingSettings()
    uvicorn.run(
        create_app(core, settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
