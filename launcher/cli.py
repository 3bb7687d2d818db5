"""``neurostream``: one CLI that lists and starts every part.

Each service is also ``python -m <service>``; this CLI maps flags onto the same
settings objects (flags override environment variables). A failure a person can act on
ends in ``error: <message>`` (and a ``hint:`` line) on stderr and a non-zero exit;
``--verbose`` shows the traceback and DEBUG logs instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from launcher.lsl_config import configure_liblsl
from launcher.lsl_replay import lsl_replay
from launcher.registry_cli import models_app, services_app
from neurostream.errors import ConfigError, NeurostreamError
from neurostream.settings import CoreSettings

if TYPE_CHECKING:
    from neurostream.gate import Gate, GateReport

# BrainFlow 5.23 imports pkg_resources (see pyproject.toml); its warning says nothing to a
# user of this command. Set before any command imports brainflow.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

DEMO_LOG = Path("var/log/demo.log")


class CommandFailed(NeurostreamError):
    """An error a person can act on, shown as ``error:`` and ``hint:`` lines: any error of
    the tree, or a library's (BrainFlow, pydantic, the OS) translated into one."""

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
        return CommandFailed(str(exc), hint=exc.hint)
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return CommandFailed(
            f"invalid {exc.title}: {problems}",
            hint="flags override NEUROSTREAM_* environment variables and .env; check both",
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
app.add_typer(models_app, name="models")
app.add_typer(services_app, name="services")
app.command("lsl-replay")(lsl_replay)


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


def _logging(*, task: bool = False) -> None:
    """Services log INFO on stderr (their logs are their output); a task (``train``,
    ``produce``, ...) tells its story on stdout and logs only warnings unless ``-v``."""
    quiet = logging.WARNING if task else logging.INFO
    logging.basicConfig(
        level=logging.DEBUG if _verbose() else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@models_app.callback()
@services_app.callback()
def _registry_options() -> None:
    _logging(task=True)  # the registry commands are tasks: their story on stdout


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

    _logging(task=True)
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


FilterOption = Annotated[
    str | None,
    typer.Option(
        "--filter",
        help="Causal filter run over the continuous stream before epochs are cut: LOW-HIGH "
        "Hz[@ORDER], e.g. 1-30 (the default, Butterworth order 4), 0.5-40@2, -30 (low-pass).",
    ),
]
NoFilterOption = Annotated[
    bool,
    typer.Option("--no-filter", help="Cut windows from the unfiltered stream (erp@2 refuses)."),
]
BaselineOption = Annotated[
    str | None,
    typer.Option(help="Epoch baseline: auto (tmin..0, the default) | none | START,END in s."),
]


def _stream_filter(text: str | None, off: bool) -> Any:
    """``--filter`` / ``--no-filter`` as a ``FilterSpec`` (None: off); the default when
    neither is given."""
    from neurostream.streamfilter import FilterSpec

    if off and text:
        raise CommandFailed("--filter and --no-filter contradict each other", hint="pick one")
    if off:
        return None
    if text is None:
        from launcher.bootstrap import DEFAULT_STREAM_FILTER

        return DEFAULT_STREAM_FILTER
    return FilterSpec.parse(text)


def _filter_settings(text: str | None, off: bool) -> dict[str, Any]:
    """``--filter`` / ``--no-filter`` as ``ProducerSettings`` fields (none when not given)."""
    if text is None and not off:
        return {}
    spec = _stream_filter(text, off)
    if spec is None:
        return {"filter_l_freq": None, "filter_h_freq": None}
    return {"filter_l_freq": spec.l_freq, "filter_h_freq": spec.h_freq, "filter_order": spec.order}


@app.command()
def produce(
    file: Annotated[
        Path | None,
        typer.Option(
            help="Recording to replay (CSV from muse-lsl / OpenBCI GUI, EDF/BDF, FIF, "
            "BrainVision .vhdr, EEGLAB .set, XDF, BrainFlow): the file source, with the "
            "file's own markers; no simulated paradigm."
        ),
    ] = None,
    board: Annotated[
        str | None,
        typer.Option(
            help="synthetic (default without --file) | lsl | a BrainFlow board name/id for a "
            "live headset | playback (BrainFlow's file board: only for files without markers)"
        ),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            "--layout",
            "--board-layout",
            help="Board whose row layout a BrainFlow file has (e.g. MUSE_2016_BOARD).",
        ),
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option("--format", help="The file's format when its extension does not say it."),
    ] = None,
    stream: Annotated[str | None, typer.Option(help="An XDF file's EEG stream.")] = None,
    speed: Annotated[
        float | None, typer.Option(help="File replay speed: 1 real time (default), 0 unthrottled.")
    ] = None,
    loop: Annotated[
        bool | None, typer.Option("--loop/--no-loop", help="Replay the file again and again.")
    ] = None,
    paradigm: Annotated[
        str | None,
        typer.Option(
            help="auto (default: simulated oddball on the synthetic board only) | oddball | "
            "speller (a simulated row/column P300 speller, synthetic board only) | none"
        ),
    ] = None,
    speller_rows: Annotated[int | None, typer.Option(help="The speller grid's rows (6).")] = None,
    speller_cols: Annotated[int | None, typer.Option(help="Its columns (6).")] = None,
    repetitions: Annotated[
        int | None, typer.Option(help="Speller: flashes of every row and column per trial (10).")
    ] = None,
    speller_text: Annotated[
        str | None, typer.Option(help="Speller: the symbols to spell, in order (default random).")
    ] = None,
    events: Annotated[
        str | None,
        typer.Option(
            help="Event codes to classes, e.g. target=2,nontarget=1 or 30hz=1,20hz=2: "
            "labelled epochs; other codes cut none (reported)."
        ),
    ] = None,
    tmin: Annotated[float | None, typer.Option(help="Epoch start after a marker, s.")] = None,
    tmax: Annotated[float | None, typer.Option(help="Epoch end after a marker, s.")] = None,
    baseline: BaselineOption = None,
    stream_filter: FilterOption = None,
    no_filter: NoFilterOption = False,
    channels: Annotated[
        str | None, typer.Option(help="Channels by name, in order: TP9,AF7,AF8,TP10.")
    ] = None,
    drop_channels: Annotated[
        str | None, typer.Option(help='Channels to leave out by name: "Right AUX".')
    ] = None,
    record_only: Annotated[
        bool | None,
        typer.Option(
            "--record-only/--serve",
            help="Store the session (windows and labels) without queueing it for workers.",
        ),
    ] = None,
    sliding: Annotated[
        bool | None,
        typer.Option("--sliding/--no-sliding", help="Also cut sliding windows."),
    ] = None,
    service: Annotated[str | None, typer.Option()] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds to stream.")] = None,
    session_id: Annotated[str | None, typer.Option()] = None,
    reject_uv: Annotated[
        float | None,
        typer.Option(
            help="Artifact gate the summary reports: epochs over this peak-to-peak (µV, "
            "default 100) would be rejected; the worker gates by its model's thresholds."
        ),
    ] = None,
    flat_uv: Annotated[
        float | None, typer.Option(help="The gate's flat channel: std below this (µV, 0.5).")
    ] = None,
    no_gate: Annotated[
        bool, typer.Option("--no-gate", help="No gate tally in the session summary.")
    ] = False,
    lsl_name: Annotated[
        str | None,
        typer.Option(help="A live LSL EEG stream by name (the lsl source; --board lsl)."),
    ] = None,
    lsl_type: Annotated[
        str | None, typer.Option(help="The LSL EEG stream's type (EEG when nothing else given).")
    ] = None,
    lsl_source_id: Annotated[str | None, typer.Option(help="The LSL stream's source id.")] = None,
    marker_name: Annotated[
        str | None,
        typer.Option(help="A separate LSL marker stream (the stimulus program's) by name."),
    ] = None,
    marker_type: Annotated[
        str | None, typer.Option(help="The marker stream by type, e.g. Markers.")
    ] = None,
    marker_source_id: Annotated[
        str | None, typer.Option(help="The marker stream by source id.")
    ] = None,
    marker_delay: Annotated[
        float | None,
        typer.Option(help="How late (s) a marker may arrive after its sample (default 0.25)."),
    ] = None,
    lost_after: Annotated[
        float | None, typer.Option(help="No LSL samples this long (s, 2): the stream is lost.")
    ] = None,
    give_up_after: Annotated[
        float | None,
        typer.Option(help="End the session when a lost stream stays away this long (s)."),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(help="Record the LSL streams to this XDF file while streaming."),
    ] = None,
    results_lsl: Annotated[
        bool | None,
        typer.Option(
            "--results-lsl/--no-results-lsl",
            help="Push the predictions on an LSL outlet for the stimulus program.",
        ),
    ] = None,
    serial_port: SerialPort = None,
    mac_address: MacAddress = None,
    ip_address: IpAddress = None,
    ip_port: IpPort = None,
    serial_number: SerialNumber = None,
    other_info: OtherInfo = None,
) -> None:
    """Stream a session to the service's queue: a recording (--file), a live LSL stream
    (--lsl-name/--lsl-type, with a stimulus program's --marker-type Markers), a headset,
    or the synthetic board with a simulated oddball (the default).

    A file is replayed once at real time (--speed, --loop), its markers cut epochs, and
    --events turns their codes into labels stored with the session. `neurostream boards`
    lists the boards and the connection flags each one needs.
    """
    from producer.__main__ import serve as produce_session
    from producer.settings import ProducerSettings

    _logging(task=True)
    _board_logging()
    configure_liblsl(verbose=_verbose(), lslapicfg=os.environ.get("LSLAPICFG"))
    settings = ProducerSettings(
        **_given(
            file=str(file) if file else None,
            board=board,
            layout=layout,
            format=file_format,
            stream=stream,
            speed=speed,
            loop=loop,
            paradigm=paradigm,
            speller_rows=speller_rows,
            speller_cols=speller_cols,
            speller_repetitions=repetitions,
            speller_text=speller_text,
            events=events,
            epoch_tmin=tmin,
            epoch_tmax=tmax,
            epoch_baseline=baseline,
            **_filter_settings(stream_filter, no_filter),
            channels=channels,
            drop_channels=drop_channels,
            record_only=record_only,
            sliding=sliding,
            service=service,
            duration_s=duration,
            session_id=session_id,
            reject_uv=reject_uv,
            flat_uv=flat_uv,
            lsl_name=lsl_name,
            lsl_type=lsl_type,
            lsl_source_id=lsl_source_id,
            marker_name=marker_name,
            marker_type=marker_type,
            marker_source_id=marker_source_id,
            marker_delay_s=marker_delay,
            lost_after_s=lost_after,
            give_up_after_s=give_up_after,
            record=str(record) if record else None,
            results_lsl=results_lsl,
            serial_port=serial_port,
            mac_address=mac_address,
            ip_address=ip_address,
            ip_port=ip_port,
            serial_number=serial_number,
            other_info=other_info,
        )
    )
    if no_gate:
        settings = settings.model_copy(update={"reject_uv": None, "flat_uv": None})
    # The session opens the source before the broker and the store: a wrong board fails first.
    result = asyncio.run(produce_session(CoreSettings(), settings))
    for line in result.summary():
        typer.echo(line)


@app.command()
def boards() -> None:
    """List the board names `--board` takes, with the connection flags each one needs."""
    from brainflow.board_shim import BoardIds

    from producer.board import CONNECTIONS

    typer.echo("synthetic            BrainFlow's SYNTHETIC_BOARD (the default)")
    typer.echo(
        "playback             PLAYBACK_FILE_BOARD (--file without markers; else --file alone)"
    )
    typer.echo("recording            the file source (as --file alone; any format)")
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


def _names(text: str | None) -> list[str] | None:
    """``"TP9,AF7"`` -> ``["TP9", "AF7"]`` (``--channels``, ``--drop-channels``)."""
    if text is None:
        return None
    return [n.strip() for n in text.split(",") if n.strip()]


def _json_option(text: str | None, option: str) -> dict[str, Any] | None:
    import json

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandFailed(
            f"{option} is not JSON: {exc}", hint=f"e.g. {option} '{{...}}'"
        ) from None
    if not isinstance(value, dict):
        raise CommandFailed(f"{option} must be a JSON object, got {text!r}")
    return value


def _gate(reject_uv: float, flat_uv: float) -> Gate:
    from neurostream.gate import Gate

    try:
        return Gate(peak_to_peak_uv=reject_uv, flat_uv=flat_uv)
    except ConfigError as exc:
        raise CommandFailed(
            exc.message.replace("gate.peak_to_peak_uv", "--reject-uv").replace(
                "gate.flat_uv", "--flat-uv"
            ),
            hint="or --no-gate",
        ) from None


def _mean_sd(cv: dict[str, Any], metric: str) -> str:
    mean, sd, pooled = cv.get(metric), cv.get(f"{metric}_sd"), cv["pooled"].get(metric)
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {sd:.3f} (pooled {pooled:.3f})" if pooled is not None else f"{mean:.3f}"


def _gated_text(report: GateReport | None) -> str:
    """``; gated 38 (TP10 37, TP9 12)``: a run's rejected epochs, per channel at fault."""
    if report is None or not report.rejected:
        return ""
    per = ", ".join(
        f"{k} {v}" for k, v in sorted(report.per_channel.items(), key=lambda kv: -kv[1]) if v
    )
    return f"; gated {report.rejected} ({per})"


def _train_story(validated: Any, reg: Any, alias: str, service: str) -> None:
    """What ``train`` did, for a person: epochs per file, the scores, what was registered."""
    from neurostream.models.validation import LEAVE_ONE_RUN_OUT

    m = validated.trained.metrics
    spec = validated.trained.input_spec
    if validated.runs:
        first = validated.runs[0]
        left = f" (left out: {', '.join(first.dropped)})" if first.dropped else ""
        typer.echo(
            f"{len(validated.runs)} recording(s), events {validated.mapping}, epochs "
            f"{spec['tmin']:+.2f}..{spec['tmax']:+.2f} s at {spec['fs']:g} Hz, channels "
            f"{', '.join(spec['channels'])}{left}"
        )
        for run in validated.runs:
            counts = "  ".join(f"{name} {n}" for name, n in run.counts.items())
            unmapped = ", ".join(f"{c} ({n})" for c, n in run.unmapped.items())
            extra = f"  (unmapped codes ignored: {unmapped})" if unmapped else ""
            typer.echo(f"  {run.file.name}: {counts}{extra}{_gated_text(run.gated)}")
            if run.gated is not None and (run.gated.bad or run.gated.most):
                typer.echo(f"    ! {run.gated.line()}")
        reports = [r.gated for r in validated.runs if r.gated is not None]
        if reports:
            gated = sum(g.rejected for g in reports)
            total = sum(g.epochs for g in reports)
            typer.echo(
                f"gate ({reports[0].gate.describe()}): {gated} of {total} epochs left out of "
                f"training ({gated / total if total else 0:.0%}); workers reject the same live"
            )
        elif validated.runs:
            typer.echo("gate off (--no-gate): every epoch trains and is scored live")
    else:
        lineage = m["lineage"]
        typer.echo(
            f"simulated oddball session: {lineage['seconds']:g} s, seed {lineage['seed']}, "
            f"{m['fitted_on']} epochs (synthetic board, simulated P300s)"
        )
    cv, kf = m["cv"], m["cv_kfold"]
    what = (
        f"leave-one-run-out ({cv['n_folds']} runs)"
        if cv["scheme"] == LEAVE_ONE_RUN_OUT
        else f"blocked {cv['n_folds']}-fold in time (one run: contiguous, unshuffled blocks)"
    )
    typer.echo(
        f"{what}: ROC-AUC {_mean_sd(cv, 'roc_auc')}, "
        f"balanced accuracy {_mean_sd(cv, 'balanced_accuracy')}"
    )
    typer.echo(
        f"stratified {kf['n_folds']}-fold (shuffled, seed {kf['seed']}; for comparison with "
        f"published figures, optimistic as epochs overlap): ROC-AUC {_mean_sd(kf, 'roc_auc')}, "
        f"balanced accuracy {_mean_sd(kf, 'balanced_accuracy')}"
    )
    follows = (
        f"; service {reg.assigned} now serves {reg.model_name}:{alias or reg.version}"
        if reg.assigned
        else f"; service {service} keeps its model (--assign to switch)"
        if service
        else ""
    )
    typer.echo(
        f"refitted on all {m['fitted_on']} epochs: registered {reg.model_name} v{reg.version} "
        f"(id {reg.version_id}){f' as {alias}' if alias else ''}{follows}"
    )


@app.command()
def train(
    file: Annotated[
        list[Path] | None,
        typer.Option(
            help="A recording (CSV, EDF/BDF, FIF, BrainVision, .set, XDF); repeat per run."
        ),
    ] = None,
    events: Annotated[
        str | None,
        typer.Option(help="Event codes to classes, e.g. target=2,nontarget=1 or 30hz=1,20hz=2."),
    ] = None,
    synthetic: Annotated[
        bool,
        typer.Option(help="Train on a simulated oddball session (the default without --file)."),
    ] = False,
    channels: Annotated[
        str | None, typer.Option(help="Channels to keep, by name, in this order (TP9,AF7,...).")
    ] = None,
    drop_channels: Annotated[
        str | None, typer.Option(help="Channels to leave out, by name (e.g. a bad electrode).")
    ] = None,
    tmin: Annotated[float, typer.Option(help="Epoch start around each event, seconds.")] = -0.1,
    tmax: Annotated[float, typer.Option(help="Epoch end around each event, seconds.")] = 0.7,
    baseline: BaselineOption = None,
    stream_filter: FilterOption = None,
    no_filter: NoFilterOption = False,
    pipeline: Annotated[
        str,
        typer.Option(
            help="Feature pipeline: erp@1 (P300, filters each epoch) | erp@2 (P300, epochs "
            "from the filtered stream) | bandpower@1 (SSVEP, alpha)."
        ),
    ] = "erp@1",
    feature_params: Annotated[
        str | None, typer.Option(help="Pipeline parameters as JSON, e.g. '{\"h_freq\": 15}'.")
    ] = None,
    family: Annotated[str, typer.Option(help="sklearn-lda | torch-eegnet")] = "sklearn-lda",
    model_name: Annotated[str, typer.Option(help="Registry name.")] = "p300-lda",
    service: Annotated[
        str, typer.Option(help="Service to create/assign if unassigned ('' for none).")
    ] = "p300",
    alias: Annotated[str, typer.Option(help="Alias to point at the new version.")] = "champion",
    assign: Annotated[
        bool, typer.Option(help="Assign the service even if it has a model.")
    ] = False,
    seconds: Annotated[float, typer.Option(help="Seconds of simulated session.")] = 600.0,
    seed: Annotated[int, typer.Option(help="Seed of the k-fold shuffle and the model.")] = 1,
    reject_uv: Annotated[
        float,
        typer.Option(
            help="Artifact gate (--file): leave out epochs over this peak-to-peak, µV, "
            "and reject them when serving."
        ),
    ] = 100.0,  # neurostream.gate's defaults (not imported: it loads numpy)
    flat_uv: Annotated[
        float,
        typer.Option(help="Artifact gate (--file): a channel with a std below this, µV, is flat."),
    ] = 0.5,
    no_gate: Annotated[
        bool, typer.Option("--no-gate", help="Train on every epoch and score every epoch live.")
    ] = False,
) -> None:
    """Train on recordings' own events (or a simulated session), validate, register, assign.

    With --file: epochs are cut around each file's events exactly as a live replay cuts
    them, labelled by --events. The headline score is leave-one-run-out cross-validation
    (each file held out in turn; with one file, contiguous blocks in time), stratified
    5-fold printed beside it; the model is then refitted on every epoch and registered
    with those scores, its channels and the files' sha256. Epochs the artifact gate
    rejects (--reject-uv, --flat-uv) are left out, counted per file and channel, and the
    gate is recorded with the version so workers reject the same epochs live. Without
    --file (or with --synthetic) a simulated oddball session on the synthetic board is used.
    """
    from launcher import bootstrap

    _logging(task=True)
    if synthetic and file:
        raise CommandFailed(
            "--synthetic simulates P300s on the synthetic board; it does not run on a recording",
            hint="drop --synthetic to train on the file's own events (with --events)",
        )
    if file:
        validated = bootstrap.train_from_recordings(
            family,
            file,
            events,
            tmin=tmin,
            tmax=tmax,
            channels=_names(channels),
            drop_channels=_names(drop_channels) or (),
            pipeline=pipeline,
            feature_params=_json_option(feature_params, "--feature-params"),
            seed=seed,
            gate=None if no_gate else _gate(reject_uv, flat_uv),
            stream_filter=_stream_filter(stream_filter, no_filter),
            baseline=baseline or "auto",
        )
    else:
        if stream_filter or no_filter or baseline:
            raise CommandFailed(
                "--filter, --no-filter and --baseline shape epochs cut from a recording: give "
                "--file",
                hint="a simulated session is cut as the demo's producer cuts it (1-30 Hz)",
            )
        if events or channels or drop_channels:
            raise CommandFailed(
                "--events, --channels and --drop-channels select from a recording: give --file",
                hint="without --file, train runs on a simulated session (--synthetic)",
            )
        validated = bootstrap.train_validated_simulation(family, seconds=seconds, seed=seed)
    reg = asyncio.run(
        bootstrap.register(
            CoreSettings(),
            validated.trained,
            model_name=model_name,
            service=service or None,
            alias=alias or None,
            assign=assign,
        )
    )
    _train_story(validated, reg, alias, service)


def _api_error(resp: Any) -> CommandFailed:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    return CommandFailed(
        f"{resp.request.method} {resp.request.url} answered {resp.status_code}: {detail}",
        hint="set NEUROSTREAM_API_TOKEN to the services' token"
        if resp.status_code in (401, 403)
        else None,
    )


@app.command()
def retrain(
    session: Annotated[
        list[str], typer.Option(help="A stored, labelled session to train on; repeat for more.")
    ],
    test_session: Annotated[
        list[str] | None,
        typer.Option(help="Session(s) to test on; default: the last --session is held out."),
    ] = None,
    testing_dataset: Annotated[
        str | None, typer.Option(help="An existing testing dataset (id, name or name@version).")
    ] = None,
    service: Annotated[
        str | None, typer.Option(help="Retrain the model this service serves.")
    ] = "p300",
    model_name: Annotated[
        str | None, typer.Option(help="Model to retrain (default: the service's model).")
    ] = None,
    family: Annotated[str, typer.Option(help="sklearn-lda | torch-eegnet")] = "sklearn-lda",
    pipeline: Annotated[str, typer.Option(help="Feature pipeline.")] = "erp@1",
    dataset: Annotated[
        str | None, typer.Option(help="Name of the dataset snapshots (default <model>-sessions).")
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Promote to champion if it beats the champion's test ROC-AUC.")
    ] = False,
    api: Annotated[
        str, typer.Option(help="The retraining API, which runs the job.")
    ] = "http://127.0.0.1:8003",
    follow: Annotated[bool, typer.Option(help="Wait for the job and print its result.")] = False,
) -> None:
    """Retrain on stored, labelled sessions: snapshot their epochs, queue a retrain job.

    The sessions' labelled epoch windows (streamed with --events, or labelled through the
    ML data API) are snapshotted in PostgreSQL as a training dataset (and the test
    sessions as a testing dataset); the job is then queued through the retraining API
    (--api, bearer token from NEUROSTREAM_API_TOKEN), whose runner trains the challenger,
    scores it against the champion on the testing dataset and registers it as
    `challenger`. Follow it with --follow, or `curl <api>/jobs/<id>`.
    """
    import httpx

    from neurostream import datasets
    from neurostream.db import open_pool

    _logging(task=True)
    core = CoreSettings()
    train_ids = list(dict.fromkeys(session))
    tests = list(dict.fromkeys(test_session or []))
    if testing_dataset is None and not tests:
        if len(train_ids) < 2:
            raise CommandFailed(
                "a retrain job scores the new model on held-out data, and one session is all "
                "there is to train on",
                hint="add --test-session S (or --testing-dataset REF), or give two --session "
                "values (the last is held out)",
            )
        tests = [train_ids.pop()]
    if not model_name and not service:
        raise CommandFailed("give --model-name or --service (whose model is retrained)")
    base = dataset or f"{model_name or service}-sessions"

    async def _snapshots() -> tuple[dict[str, Any], dict[str, Any] | None]:
        pool = await open_pool(core.database_url, max_size=1)
        try:
            async with pool.connection() as conn:
                train_row = await datasets.snapshot_from_sessions(
                    conn,
                    name=base,
                    kind="training",
                    session_ids=train_ids,
                    description=f"sessions {', '.join(train_ids)} (neurostream retrain)",
                )
                test_row = None
                if tests:
                    test_row = await datasets.snapshot_from_sessions(
                        conn,
                        name=f"{base}-test",
                        kind="testing",
                        session_ids=tests,
                        description=f"sessions {', '.join(tests)} (neurostream retrain)",
                    )
                return train_row, test_row
        finally:
            await pool.close()

    train_row, test_row = asyncio.run(_snapshots())
    typer.echo(
        f"training dataset {train_row['name']}@{train_row['version']} (id {train_row['id']}): "
        f"{train_row['n_rows']} epochs {train_row['label_counts']} from {', '.join(train_ids)}"
    )
    testing: str | int
    if test_row is not None:
        testing = int(test_row["id"])
        typer.echo(
            f"testing dataset {test_row['name']}@{test_row['version']} (id {test_row['id']}): "
            f"{test_row['n_rows']} epochs {test_row['label_counts']} from {', '.join(tests)}"
        )
    else:
        assert testing_dataset is not None
        testing = testing_dataset
    body: dict[str, Any] = {
        "family": family,
        "training_dataset": int(train_row["id"]),
        "testing_dataset": testing,
        "params": {"feature_pipeline": pipeline},
    }
    if model_name:
        body["model_name"] = model_name
    if service:
        body["service"] = service
    if promote:
        body["promote"] = {"metric": "roc_auc", "min_improvement": 0.0}
    token = core.api_token.get_secret_value() if core.api_token else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = api.rstrip("/")
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            resp = client.post("/jobs", json=body)
            if resp.status_code >= 400:
                raise _api_error(resp)
            job_id = resp.json()["job_id"]
            typer.echo(
                f"retrain job {job_id} queued at {url}; follow it with: curl {url}/jobs/{job_id}"
            )
            if follow:
                _follow(client, job_id)
    except httpx.TransportError as exc:
        raise CommandFailed(
            f"cannot reach the retraining API at {url}: {exc}",
            hint="start it with `neurostream retraining-api` (or pass --api); the datasets "
            "above are stored and can be reused",
        ) from None


def _follow(client: Any, job_id: int) -> None:
    import time

    seen = 0
    while True:
        resp = client.get(f"/jobs/{job_id}")
        if resp.status_code >= 400:
            raise _api_error(resp)
        job = resp.json()
        for line in job.get("logs", [])[seen:]:
            typer.echo(f"  {line['message']}")
        seen = len(job.get("logs", []))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1.0)
    if job["status"] != "succeeded":
        raise CommandFailed(f"retrain job {job_id} {job['status']}: {job.get('error')}")
    result = job.get("result") or {}
    typer.echo(
        f"job {job_id} succeeded: {result.get('model_name')} v{result.get('version')} is the "
        f"challenger{'; promoted to champion' if result.get('promoted') else ''} "
        f"({result.get('promotion_reason')})"
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
