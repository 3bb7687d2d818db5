"""``neurostream``: one CLI that lists and starts every part.

Each service is also ``python -m <service>``; this CLI maps flags onto the same
settings objects (flags override environment variables). A failure a person can act on
ends in ``error: <message>`` (and a ``hint:`` line) on stderr and a non-zero exit;
``--verbose`` shows the traceback and DEBUG logs instead.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from neurostream.errors import NeurostreamError
from neurostream.settings import CoreSettings

# BrainFlow 5.23 imports pkg_resources (see pyproject.toml); its warning says nothing to a
# user of this command. Set before any command imports brainflow.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

DEMO_LOG = Path("var/log/demo.log")


class CommandFailed(Exception):
    """An error a person can act on, shown as ``error:`` and ``hint:`` lines."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def show(self) -> None:
        typer.echo(f"error: {self.message}", err=True)
        if self.hint:
            typer.echo(f"hint: {self.hint}", err=True)


def _is_brainflow_error(exc: BaseException) -> bool:
    board_shim = sys.modules.get("brainflow.board_shim")  # not imported: not its error
    return board_shim is not None and isinstance(exc, board_shim.BrainFlowError)


def as_command_failure(exc: BaseException) -> CommandFailed | None:
    """The one-line form of an error a person can act on; None for a bug (keep the trace)."""
    if isinstance(exc, CommandFailed):
        return exc
    if isinstance(exc, NeurostreamError):
        return CommandFailed(str(exc), exc.hint)
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return CommandFailed(
            f"invalid {exc.title}: {problems}",
            "flags override NEUROSTREAM_* environment variables and .env; check both",
        )
    if _is_brainflow_error(exc):
        return CommandFailed(f"BrainFlow: {exc}")
    if isinstance(exc, OSError):
        return CommandFailed(str(exc))
    return None


class _Group(TyperGroup):
    """Turns the errors a person can act on into a clear line and exit code 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except Exception as exc:
            failure = as_command_failure(exc)
            if failure is None or _verbose():
                raise
            failure.show()
            raise typer.Exit(1) from exc


HELP = (
    "One CLI that lists and starts every part of neurostream.\n\n"
    "Each service is also `python -m <service>`; flags override NEUROSTREAM_* environment "
    "variables. A failure prints `error:` and `hint:` lines; --verbose shows the traceback "
    "and DEBUG logs."
)
app = typer.Typer(
    cls=_Group,
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
infra_app = typer.Typer(help="Local PostgreSQL and RabbitMQ.", no_args_is_help=True)
app.add_typer(infra_app, name="infra")


_VERBOSE: list[bool] = [False]  # set by the app callback for the command that follows


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and DEBUG logs.")
    ] = False,
) -> None:
    _VERBOSE[0] = verbose


def main() -> None:
    """``python -m launcher``."""
    app(prog_name="neurostream")


def _verbose() -> bool:
    return _VERBOSE[0]


def _logging() -> None:
    logging.basicConfig(
        level=logging.DEBUG if _verbose() else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _board_logging() -> None:
    """BrainFlow's own logger: its warnings and errors (a port it cannot open); all with -v."""
    from brainflow.board_shim import BoardShim, LogLevels

    if _verbose():
        BoardShim.enable_dev_board_logger()
    else:
        BoardShim.set_log_level(LogLevels.LEVEL_WARN.value)


class _StartupFailure(logging.Filter):
    """Catches the traceback uvicorn logs when an app's start-up fails (and hides it)."""

    def __init__(self, hide: bool) -> None:
        super().__init__()
        self.hide = hide
        self.error: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("Traceback"):
            last = text.strip().splitlines()[-1]
            name, _, message = last.partition(": ")
            self.error = message or name
            return not self.hide
        return True


@contextmanager
def _service_startup(what: str) -> Iterator[None]:
    """Uvicorn logs a failed start-up and exits 3; say why in one line instead."""
    failure = _StartupFailure(hide=not _verbose())
    logger = logging.getLogger("uvicorn.error")
    logger.addFilter(failure)
    try:
        yield
    except SystemExit as exc:
        if exc.code in (0, None) or failure.error is None or failure.hide is False:
            raise
        raise CommandFailed(f"the {what} did not start: {failure.error}") from exc
    finally:
        logger.removeFilter(failure)


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

    with _service_startup("queue manager"):
        main()


@app.command("data-api")
def data_api() -> None:
    """Run the ML data API (training/testing datasets, production data, ground-truth labels)."""
    from ml_data_api.__main__ import main

    with _service_startup("ML data API"):
        main()


@app.command("monitoring-api")
def monitoring_api() -> None:
    """Run the monitoring API (drift, performance, data quality, alerts, dashboard)."""
    from monitoring_api.__main__ import main

    with _service_startup("monitoring API"):
        main()


@app.command("retraining-api")
def retraining_api() -> None:
    """Run the retraining API (retrain jobs, comparison, promotion, triggers)."""
    from retraining_api.__main__ import main

    with _service_startup("retraining API"):
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


# A board's connection parameters (BrainFlowInputParams), shared by `produce` and `record`.
SerialPort = Annotated[
    str | None, typer.Option(help="Serial port (Cyton, Ganglion and Muse BLED dongles).")
]
MacAddress = Annotated[str | None, typer.Option(help="Bluetooth MAC address.")]
IpAddress = Annotated[str | None, typer.Option(help="IP address (WiFi Shield boards).")]
IpPort = Annotated[int | None, typer.Option(help="Free local IP port (WiFi Shield boards).")]
SerialNumber = Annotated[
    str | None, typer.Option(help="Serial number or device name (Crown, Unicorn, Muse).")
]
OtherInfo = Annotated[str | None, typer.Option(help="BrainFlow's other_info parameter.")]


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command()
def produce(
    board: Annotated[
        str | None, typer.Option(help="synthetic | playback | recording | BrainFlow board name/id")
    ] = None,
    service: Annotated[str | None, typer.Option()] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to stream.")] = None,
    file: Annotated[
        Path | None, typer.Option(help="Recording for the playback and recording boards.")
    ] = None,
    session_id: Annotated[str | None, typer.Option()] = None,
    serial_port: SerialPort = None,
    mac_address: MacAddress = None,
    ip_address: IpAddress = None,
    ip_port: IpPort = None,
    serial_number: SerialNumber = None,
    other_info: OtherInfo = None,
) -> None:
    """Stream a headset session (synthetic oddball by default) to the service's queue.

    `neurostream boards` lists the boards and the connection flags each one needs.
    """
    from producer.__main__ import serve as produce_session
    from producer.settings import ProducerSettings

    _logging()
    _board_logging()
    settings = ProducerSettings(
        **_given(
            board=board,
            service=service,
            duration_s=duration,
            file=str(file) if file else None,
            session_id=session_id,
            serial_port=serial_port,
            mac_address=mac_address,
            ip_address=ip_address,
            ip_port=ip_port,
            serial_number=serial_number,
            other_info=other_info,
        )
    )
    # The session opens the source before the broker and the store: a wrong board fails first.
    result = asyncio.run(produce_session(CoreSettings(), settings))
    typer.echo(
        f"session {result.session_id}: {result.windows_confirmed} windows confirmed, "
        f"{result.epochs} epochs"
    )


@app.command()
def boards() -> None:
    """List the board names `--board` takes, with the connection flags each one needs."""
    from brainflow.board_shim import BoardIds

    from producer.board import CONNECTIONS

    typer.echo("synthetic            BrainFlow's SYNTHETIC_BOARD (the default)")
    typer.echo("playback             a BrainFlow file through PLAYBACK_FILE_BOARD (--file)")
    typer.echo("recording            a BrainFlow file replayed at any speed (--file)")
    for b in BoardIds:
        if b.value < -1:
            continue
        conn = CONNECTIONS.get(b.value)
        needs = conn.describe() if conn else "see BrainFlow's Supported Boards page"
        typer.echo(f"{b.name:<34} {b.value:>3}  {needs}")


@app.command()
def record(
    out: Annotated[Path, typer.Argument(help="BrainFlow file to write.")],
    seconds: Annotated[float, typer.Option(help="How long to record (real time).")] = 20.0,
    board: Annotated[str, typer.Option(help="Board name or id.")] = "synthetic",
    serial_port: SerialPort = None,
    mac_address: MacAddress = None,
    ip_address: IpAddress = None,
    ip_port: IpPort = None,
    serial_number: SerialNumber = None,
    other_info: OtherInfo = None,
) -> None:
    """Record a board into a BrainFlow file (for playback, recording replay and training)."""
    from brainflow.board_shim import BrainFlowInputParams

    from producer.board import record as record_board

    _board_logging()
    params = BrainFlowInputParams()
    for name, value in _given(
        serial_port=serial_port,
        mac_address=mac_address,
        ip_address=ip_address,
        ip_port=ip_port,
        serial_number=serial_number,
        other_info=other_info,
    ).items():
        setattr(params, name, value)
    data = record_board(board, seconds, out, params)
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
    from launcher import bootstrap

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


def _demo_logging(log_file: Path | None) -> None:
    """Library and service logs to ``log_file`` (BrainFlow's too); stderr with --verbose."""
    from brainflow.board_shim import BoardShim

    if log_file is None:
        _logging()
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_bytes(b"")  # this run's logs only; then everyone appends (O_APPEND)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    BoardShim.set_log_file(str(log_file))


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds of live session.")] = 60.0,
    workers: Annotated[int, typer.Option(help="Worker replicas.")] = 2,
    swap_at: Annotated[
        float, typer.Option(help="Swap the model at this fraction of the session (<0: never).")
    ] = 0.5,
    keep: Annotated[
        bool, typer.Option(help="Keep the services running afterwards and print where to look.")
    ] = False,
    port: Annotated[
        int, typer.Option(help="Queue manager port (+1 data, +2 monitoring, +3 retraining).")
    ] = 8000,
    metrics_port: Annotated[
        int, typer.Option(help="First worker's Prometheus port (+1 for the next).")
    ] = 9100,
    retrain: Annotated[
        bool, typer.Option(help="Then retrain on the grown labelled data and promote live.")
    ] = True,
    train_seconds: Annotated[
        float, typer.Option(help="Simulated session the first models train on (first run).")
    ] = 600.0,
    log_file: Annotated[
        Path, typer.Option(help="Where service and library logs go (unless --verbose).")
    ] = DEMO_LOG,
) -> None:
    """Live demo: set up, train if needed, start every service + workers, stream sessions."""
    from launcher.demo import DemoOptions, run_demo

    log_to = None if _verbose() else log_file
    _demo_logging(log_to)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    opts = DemoOptions(
        duration_s=duration,
        workers=workers,
        swap_at=swap_at if swap_at >= 0 else None,
        keep=keep,
        qm_port=port,
        metrics_port=metrics_port,
        retrain=retrain,
        train_seconds=train_seconds,
        log_file=log_to,
    )
    report = asyncio.run(run_demo(CoreSettings(), opts))
    reports = [report] + ([report.second] if report.second else [])
    ok = all(not r.missing and r.duplicated == 0 and r.predicted == r.confirmed for r in reports)
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    main()
