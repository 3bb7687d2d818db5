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

app = typer.Typer(
    help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
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


@app.command("data-api")
def data_api() -> None:
    """Run the ML data API (training/testing datasets, production data, ground-truth labels)."""
    from ml_data_api.__main__ import main

    main()


@app.command("monitoring-api")
def monitoring_api() -> None:
    """Run the monitoring API (drift, performance, data quality, alerts, dashboard)."""
    from monitoring_api.__main__ import main

    main()


@app.command("retraining-api")
def retraining_api() -> None:
    """Run the retraining API (retrain jobs, comparison, promotion, triggers)."""
    from retraining_api.__main__ import main

    main()


@app.command()
def worker(
    service: Annotated[str | None, typer.Option(help="Service to serve.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 = off).")] = None,
) -> None:
    """Run one worker replica (start several for horizontal scaling)."""
    from workers.__main__ import run
    from workers.settings import WorkerSettings

    _logging()
    overrides: dict[str, Any] = {}
    if service:
        overrides["service"] = service
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    run(CoreSettings(), WorkerSettings(**overrides))


@app.command()
def produce(
    board: Annotated[
        str | None, typer.Option(help="synthetic | playback | recording | BrainFlow board name/id")
    ] = None,
    service: Annotated[str | None, typer.Option()] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to stream.")] = None,
    file: Annotated[Path | None, typer.Option(help="Recording for the playback board.")] = None,
    session_id: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Stream a headset session (synthetic oddball by default) to the service's queue."""
    from producer.__main__ import serve as produce_session
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
    result = asyncio.run(produce_session(CoreSettings(), ProducerSettings(**overrides)))
    typer.echo(
        f"session {result.session_id}: {result.windows_confirmed} windows confirmed, "
        f"{result.epochs} epochs"
    )


@app.command()
def record(
    out: Annotated[Path, typer.Argument(help="BrainFlow file to write.")],
    seconds: Annotated[float, typer.Option(help="How long to record (real time).")] = 20.0,
    board: Annotated[str, typer.Option(help="Board name or id.")] = "synthetic",
) -> None:
    """Record a board into a BrainFlow file (for playback, recording replay and training)."""
    from producer.board import record as record_board

    data = record_board(board, seconds, out)
    typer.echo(f"wrote {data.shape[1]} samples x {data.shape[0]} rows to {out}")


@app.command()
def train(
    family: Annotated[str, typer.Option(help="sklearn-lda | torch-eegnet")] = "sklearn-lda",
    model_name: Annotated[str, typer.Option(help="Registry name.")] = "p300-lda",
    service: Annotated[str, typer.Option(help="Service to create/assign if unassigned.")] = "p300",
    seconds: Annotated[float, typer.Option(help="Seconds of simulated session.")] = 600.0,
    seed: Annotated[int, typer.Option(help="Paradigm seed of the training session.")] = 1,
    file: Annotated[
        Path | None, typer.Option(help="Recorded BrainFlow file instead of the synthetic board.")
    ] = None,
    alias: Annotated[str, typer.Option(help="Alias to point at the new version.")] = "champion",
    assign: Annotated[
        bool, typer.Option(help="Assign the service even if it has a model.")
    ] = False,
) -> None:
    """Train a model on a simulated oddball session and register it (first model of an install)."""
    from neurostream import bootstrap

    _logging()
    core = CoreSettings()
    trained = bootstrap.train_from_simulation(family, seconds=seconds, seed=seed, file=file)
    reg = asyncio.run(
        bootstrap.register(
            core, trained, model_name=model_name, service=service, alias=alias, assign=assign
        )
    )
    m = reg.metrics
    typer.echo(
        f"registered {reg.model_name} v{reg.version} (id {reg.version_id}) as {alias}: "
        f"validation ROC-AUC {m.get('roc_auc')}, balanced accuracy {m.get('balanced_accuracy')}"
    )


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds of live session.")] = 60.0,
    workers: Annotated[int, typer.Option(help="Worker replicas.")] = 2,
    swap_at: Annotated[
        float, typer.Option(help="Swap the model at this fraction of the session (<0: never).")
    ] = 0.5,
    keep: Annotated[bool, typer.Option(help="Keep the services running afterwards.")] = False,
    port: Annotated[
        int, typer.Option(help="Queue manager port (+1 data, +2 monitoring, +3 retraining).")
    ] = 8000,
    retrain: Annotated[
        bool, typer.Option(help="Then retrain on the grown labelled data and promote live.")
    ] = True,
) -> None:
    """Live demo: set up, train if needed, start queue manager + workers, stream a session."""
    from neurostream.demo import DemoOptions, run_demo

    _logging()
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    opts = DemoOptions(
        duration_s=duration,
        workers=workers,
        swap_at=swap_at if swap_at >= 0 else None,
        keep=keep,
        qm_port=port,
        retrain=retrain,
    )
    report = asyncio.run(run_demo(CoreSettings(), opts))
    reports = [report] + ([report.second] if report.second else [])
    ok = all(not r.missing and r.duplicated == 0 and r.predicted == r.confirmed for r in reports)
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
