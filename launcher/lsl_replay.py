"""``neurostream lsl-replay FILE``: a recording streamed as live LSL outlets, no headset needed.

It tests a setup end to end (the producer's LSL source, a viewer, LabRecorder) with a
real recording, and it is what the LSL tests stream: the file is read with
``neurostream.recordings.read_recording`` (any format it knows), then streamed as an EEG
outlet (float32, ``nominal_srate`` = the file's rate, ``desc/channels`` with each
channel's label, unit ``microvolts`` and type ``EEG``, as muse-lsl lays it out) and a
marker outlet (type ``Markers``, irregular; int32 codes, or text with
``--marker-names 2=target,1=standard``), either or both (``--only``).

Timing is the file's, on the outlet's own LSL clock: ``--start-at`` is a wall time
(``time.time()``), which each process turns into its own LSL clock
(``start_at - producer.lsl.lsl_offset()``), so two processes replaying the EEG and the
markers of one file separately agree on when sample 0 is, even when their LSL clocks
differ (under ``unshare --time --monotonic N --fork`` a process's LSL clock is N s off the
host's, while CLOCK_REALTIME is shared). Sample ``i`` is stamped ``t_start + i / fs``, a
marker on sample ``s`` ``t_start + s / fs``, and each is pushed at about that time, in
chunks of ``chunk_s``.

What it prints is a short story (what streams, when, how much was sent); library logs go
to ``--log-file`` or, with ``--verbose``, to stderr.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import numpy as np
import typer

from launcher.lsl_config import configure_liblsl
from neurostream.errors import ConfigError
from neurostream.recordings import Recording, read_recording

__all__ = ["ReplayOptions", "ReplayReport", "lsl_replay", "parse_marker_names", "replay"]

log = logging.getLogger(__name__)

Only = Literal["eeg", "markers", "both"]
LINGER_S = 0.5  # outlets stay open after the last push, so inlets receive it


def parse_marker_names(text: str) -> dict[int, str]:
    """``2=target,1=standard`` -> ``{2: 'target', 1: 'standard'}``: what each code is sent as."""
    names: dict[int, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        code, sep, name = (s.strip() for s in item.partition("="))
        if not sep or not name or not code.lstrip("-").isdigit():
            raise ConfigError(
                f"--marker-names takes CODE=NAME pairs separated by commas, not {item!r}",
                field="marker_names",
                hint="e.g. --marker-names 2=target,1=standard",
            )
        names[int(code)] = name
    return names


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What is streamed and when; empty names and ids are derived from ``name`` and the file."""

    name: str = "neurostream-replay"
    type: str = "EEG"
    source_id: str = ""
    marker_name: str = ""
    marker_source_id: str = ""
    only: Only = "both"
    marker_names: dict[int, str] = field(default_factory=dict)
    start_at: float | None = None  # wall time of sample 0; None: 1 s after the outlets open
    duration_s: float | None = None  # the first seconds only (and their markers)
    wait_consumers_s: float = 0.0  # wait this long for an inlet before starting
    chunk_s: float = 0.02


@dataclass(slots=True)
class ReplayReport:
    samples: int = 0
    markers: int = 0
    start_at: float = 0.0  # wall time of sample 0
    late_s: float = 0.0  # how far past start_at it began (start-up, waiting for consumers)


@dataclass(slots=True)
class _Plan:
    data: np.ndarray  # float32 [n, channels]: the span streamed
    events: np.ndarray  # int64 [m, 2]: (sample, code) within it
    eeg: Any  # pylsl.StreamOutlet | None
    markers: Any
    names: dict[int, str]


def _outlets(rec: Recording, opts: ReplayOptions) -> _Plan:
    import pylsl

    n = rec.n_samples
    if opts.duration_s is not None:
        if not opts.duration_s > 0:
            raise ConfigError(
                f"--duration must be positive, not {opts.duration_s}", field="duration"
            )
        n = min(n, round(opts.duration_s * rec.fs))
    data = np.ascontiguousarray(rec.data[:, :n].T, dtype=np.float32)
    events = rec.events[rec.events[:, 0] < n]
    source_id = opts.source_id or f"neurostream-replay-{rec.path.stem}"
    eeg = markers = None
    if opts.only in ("eeg", "both"):
        info = pylsl.StreamInfo(
            opts.name, opts.type, len(rec.channels), rec.fs, "float32", source_id
        )
        desc = info.desc()
        desc.append_child_value("manufacturer", "neurostream lsl-replay")
        desc.append_child_value("file", str(rec.path))
        channels = desc.append_child("channels")
        for label in rec.channels:
            channel = channels.append_child("channel")
            channel.append_child_value("label", label)
            channel.append_child_value("unit", "microvolts")
            channel.append_child_value("type", "EEG")
        eeg = pylsl.StreamOutlet(info)
    if opts.only in ("markers", "both"):
        fmt = "string" if opts.marker_names else "int32"
        info = pylsl.StreamInfo(
            opts.marker_name or f"{opts.name}-markers",
            "Markers",
            1,
            pylsl.IRREGULAR_RATE,
            fmt,
            opts.marker_source_id or f"{source_id}-markers",
        )
        markers = pylsl.StreamOutlet(info)
    return _Plan(data, events, eeg, markers, opts.marker_names)


def replay(
    rec: Recording,
    opts: ReplayOptions,
    *,
    stop: threading.Event | None = None,
    ready: Any = None,  # called with the plan's line for a person once the outlets exist
) -> ReplayReport:
    """Stream ``rec`` as ``opts`` says until its span ends (or ``stop`` is set)."""
    import pylsl

    from producer.lsl import lsl_offset

    stop = stop or threading.Event()
    plan = _outlets(rec, opts)
    outlets = [o for o in (plan.eeg, plan.markers) if o is not None]
    n, fs = plan.data.shape[0], rec.fs
    start_at = opts.start_at if opts.start_at is not None else time.time() + 1.0
    if ready is not None:
        ready(_story(rec, opts, plan, start_at))
    deadline = time.monotonic() + opts.wait_consumers_s
    for outlet in outlets:
        left = deadline - time.monotonic()
        if left > 0 and not outlet.wait_for_consumers(left):
            log.warning("no consumer after %g s: starting anyway", opts.wait_consumers_s)
    t0 = start_at - lsl_offset()  # sample 0 on this process's LSL clock
    report = ReplayReport(start_at=start_at, late_s=max(0.0, time.time() - start_at))
    end = t0 + n / fs
    events = plan.events if plan.markers is not None else plan.events[:0]
    try:
        while not stop.is_set():
            now = pylsl.local_clock()
            due = 0 if now < t0 else min(n, int((now - t0) * fs) + 1)
            if plan.eeg is not None and due > report.samples:
                plan.eeg.push_chunk(plan.data[report.samples : due], t0 + (due - 1) / fs)
                report.samples = due
            while report.markers < len(events):
                sample, code = (int(v) for v in events[report.markers])
                stamp = t0 + sample / fs
                if stamp > now:
                    break
                value = plan.names.get(code, str(code)) if plan.names else code
                plan.markers.push_sample([value], stamp)
                report.markers += 1
            if now >= end and report.markers >= len(events):
                break
            stop.wait(min(opts.chunk_s, max(t0 - now, 0.001)) if now < t0 else opts.chunk_s)
        stop.wait(LINGER_S)
    finally:
        del outlets
        plan.eeg = plan.markers = None
    return report


def _story(rec: Recording, opts: ReplayOptions, plan: _Plan, start_at: float) -> str:
    parts = []
    if plan.eeg is not None:
        info = plan.eeg.get_info()
        parts.append(
            f"EEG {info.name()!r} ({len(rec.channels)} channels, {rec.fs:g} Hz, "
            f"source_id {info.source_id()!r})"
        )
    if plan.markers is not None:
        info = plan.markers.get_info()
        kind = "text" if plan.names else "int32"
        parts.append(f"markers {info.name()!r} ({len(plan.events)} {kind})")
    when = datetime.fromtimestamp(start_at).strftime("%H:%M:%S.%f")[:-3]
    span = plan.data.shape[0] / rec.fs
    return f"streaming {rec.path} as LSL {' and '.join(parts)}: {span:.1f} s from {when}"


def _logging(verbose: bool, log_file: Path | None) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: logging.Handler
    if log_file is not None and not verbose:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(fmt)
    level = logging.DEBUG if verbose else logging.INFO if log_file else logging.WARNING
    logging.basicConfig(level=level, handlers=[handler], force=True)


def lsl_replay(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A recording (any format `produce --file` reads).")],
    name: Annotated[str, typer.Option(help="The EEG stream's name.")] = "neurostream-replay",
    type: Annotated[str, typer.Option("--type", help="The EEG stream's type.")] = "EEG",
    source_id: Annotated[
        str, typer.Option(help="The EEG stream's source_id (default from the file name).")
    ] = "",
    marker_name: Annotated[
        str, typer.Option(help="The marker stream's name (default NAME-markers).")
    ] = "",
    marker_source_id: Annotated[
        str, typer.Option(help="The marker stream's source_id (default SOURCE_ID-markers).")
    ] = "",
    only: Annotated[
        str, typer.Option(help="Stream eeg, markers or both (two processes: one each).")
    ] = "both",
    marker_names: Annotated[
        str, typer.Option(help="Send markers as text: CODE=NAME pairs, e.g. 2=target,1=standard.")
    ] = "",
    start_at: Annotated[
        float | None,
        typer.Option(help="Wall time (time.time()) of sample 0; default 1 s from now."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Replay only the first seconds (and their markers).")
    ] = None,
    wait_consumers: Annotated[
        float, typer.Option(help="Wait up to this many seconds for an inlet before starting.")
    ] = 0.0,
    log_file: Annotated[
        Path | None, typer.Option(help="Where library logs go (unless --verbose).")
    ] = None,
) -> None:
    """Stream a recording as LSL outlets (EEG and markers) in real time, for testing a setup."""
    verbose = bool(ctx.find_root().params.get("verbose"))
    _logging(verbose, log_file)
    configure_liblsl(verbose=verbose, lslapicfg=os.environ.get("LSLAPICFG"))
    if only not in ("eeg", "markers", "both"):
        raise ConfigError(f"--only takes eeg, markers or both, not {only!r}", field="only")
    rec = read_recording(file)
    opts = ReplayOptions(
        name=name,
        type=type,
        source_id=source_id,
        marker_name=marker_name,
        marker_source_id=marker_source_id,
        only=cast(Only, only),
        marker_names=parse_marker_names(marker_names),
        start_at=start_at,
        duration_s=duration,
        wait_consumers_s=wait_consumers,
    )

    def ready(line: str) -> None:
        typer.echo(line)

    try:
        report = replay(rec, opts, ready=ready)
    except KeyboardInterrupt:
        typer.echo("stopped")
        return
    late = report.late_s > 0.05
    typer.echo(
        f"done: {report.samples} samples and {report.markers} marker(s) sent"
        + (
            f"; began {report.late_s:.1f} s after the start time (those due went at once)"
            if late
            else ""
        )
    )
