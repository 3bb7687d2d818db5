"""``neurostream``: one CLI that lists and starts every part.

Each service is also ``python -m <service>``; this CLI maps flags onto the same
settings objects (flags override environment variables).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from neurostream.settings import CoreSettings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
infra_app = typer.Typer(help="Local PostgreSQL and RabbitMQ.", no_args_is_help=True)
app.add_typer(infra_app, name="infra")


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@infra_app.command("up")
def infra_up() -> None:
    """Start local PostgreSQL/RabbitMQ if down, create the database and vhost, migrate."""
    from neurostream import db, infra

    _logging()
    core = CoreSettings()
    infra.ensure_local(core.database_url, core.amqp_url)

    async def _migrate() -> bool:
        pool = await db.open_pool(core.database_url, max_size=1)
        try:
            return await db.migrate(pool)
        finally:
            await pool.close()

    hyper = asyncio.run(_migrate())
    typer.echo(
        f"PostgreSQL ready ({'TimescaleDB hypertables' if hyper else 'plain tables'}), "
        "RabbitMQ ready"
    )


@app.command("queue-manager")
def queue_manager() -> None:
    """Run the queue manager API (services, model registry, assignment, jobs, workers)."""
    from queue_manager.__main__ import main

    main()


@app.command()
def worker(
    service: Annotated[str | None, typer.Option(help="Service to serve.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 = off).")] = None,
) -> None:
    """Run one worker replica (start several for horizontal scaling)."""
    from workers.__main__ import serve
    from workers.settings import WorkerSettings

    _logging()
    overrides: dict[str, Any] = {}
    if service:
        overrides["service"] = service
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    asyncio.run(serve(CoreSettings(), WorkerSettings(**overrides)))


@app.command()
def produce(
    board: Annotated[str | None, typer.Option(help="synthetic | playback | BrainFlow board name/id")]
    = None,
    service: Annotated[str | None, typer.Option()] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to stream.")] = None,
    file: Annotated[Path | None, typer.Option(help="Recording for the playback board.")] = None,
    session_id: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Stream a headset session (synthetic oddball by default) to the service's queue."""
    from producer.__main__ import run
    from producer.settings import ProducerSettings

    _logging()
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "board": board,
            "service": service,
            "duration_s": duration,
            "file": str(file) if file else None,
            "session_id": session_id,
        }.items()
        if v is not None
    }
    run(CoreSettings(), ProducerSettings(**overrides))


if __name__ == "__main__":
    app()
