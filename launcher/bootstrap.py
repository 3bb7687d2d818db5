"""Models from the command line: train on recordings or a simulated session, register, assign.

Used by ``neurostream train``, the demo and the e2e tests. On real recordings
(``train_from_recordings``) the epochs are cut from each file's own events by the
producer's offline path (``producer.offline.epochs_from_recording``, the windowing of a
live session), scored by leave-one-run-out cross-validation (``neurostream.models.
validation``) and then refitted on every epoch. Without a file, a simulated oddball
session on the synthetic board stands in (``train_from_simulation``). It drives the
registry directly, so it needs only PostgreSQL; workers hear about the new assignment
through ``models.events``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurostream import __version__, broker, registry, topology
from neurostream.db import open_pool
from neurostream.errors import ConfigError, SourceError
from neurostream.features import get_pipeline
from neurostream.gate import Gate, GateReport
from neurostream.geometry import EpochGeometry
from neurostream.labelling import EventMapping
from neurostream.models.training import TrainedModel, train_model
from neurostream.models.validation import Validation, validate_runs
from neurostream.notify import Notifier
from neurostream.recordings import Recording, read_recording
from neurostream.settings import CoreSettings
from neurostream.streamfilter import FilterSpec
from producer.board import RecordingSource
from producer.offline import (
    LabelledEpochs,
    epochs_from_recording,
    simulate_epochs,
    synthetic_recording,
)
from producer.settings import ProducerSettings

log = logging.getLogger(__name__)
DEFAULT_RECORDING = Path("var/recordings/synthetic-board.csv")
# The producer's default causal stream filter: what `neurostream produce` runs.
DEFAULT_STREAM_FILTER = FilterSpec(
    *(
        ProducerSettings.model_fields[f].default
        for f in ("filter_l_freq", "filter_h_freq", "filter_order")
    )
)


@dataclass(frozen=True)
class Registered:
    model_name: str
    version: int
    version_id: int
    metrics: dict[str, Any]
    dataset_hash: str
    assigned: str | None = None  # the service now following the new version, if any


def train_from_simulation(
    family: str,
    *,
    seconds: float = 600.0,
    seed: int = 1,
    recording: Path = DEFAULT_RECORDING,
    file: Path | None = None,
    model_params: dict[str, Any] | None = None,
) -> TrainedModel:
    """Train ``family`` on a simulated oddball session (synthetic board or a recorded file)."""
    settings = ProducerSettings(seed=seed, session_id=f"train-{seed}")
    source = (
        RecordingSource.from_file(file, speed=0, loop=True)
        if file
        else synthetic_recording(recording)
    )
    epochs = simulate_epochs(settings, source, seconds)
    log.info(
        "training %s on %d epochs (%d targets) from %.0f s of simulated session",
        family,
        len(epochs.y),
        int(epochs.y.sum()),
        seconds,
    )
    return train_model(
        family,
        epochs.x,
        epochs.y,
        epochs.fs,
        model_params=model_params,
        seed=seed,
        geometry=epochs.geometry,
    )


@dataclass(frozen=True)
class Run:
    """One recording's labelled epochs and what identifies the file."""

    file: Path
    sha256: str
    epochs: LabelledEpochs
    counts: dict[str, int]  # epochs per class name
    unmapped: dict[int, int]  # events whose code the mapping does not name: code -> count
    dropped: tuple[str, ...] = ()  # channels of the file left out (non-EEG, --drop-channels)
    gated: GateReport | None = None  # what the artifact gate rejects (None: no gate)
    clean: np.ndarray | None = None  # bool [n]: the epochs the gate passes (None: all)

    @property
    def kept(self) -> LabelledEpochs:
        """The epochs that train: those the gate passes."""
        if self.clean is None or self.clean.all():
            return self.epochs
        e, k = self.epochs, self.clean
        return dataclasses.replace(
            e, x=e.x[k], y=e.y[k], codes=e.codes[k], seqs=e.seqs[k], t0=e.t0[k]
        )

    def lineage(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.file.name,
            "sha256": self.sha256,
            "epochs": int(len(self.epochs.y)),
            "counts": self.counts,
            "unmapped": {str(c): n for c, n in self.unmapped.items()},
        }
        if self.gated is not None:
            out["gated"] = self.gated.describe()
        return out


@dataclass(frozen=True)
class Validated:
    """A model fitted on every epoch, the cross-validation that scores it, and its runs."""

    trained: TrainedModel
    validation: Validation
    runs: list[Run]
    mapping: EventMapping | None


def _codes_text(counts: Mapping[int, int]) -> str:
    return ", ".join(f"{c} ({n})" for c, n in counts.items()) or "none"


def _suggest(counts: Mapping[int, int]) -> str:
    """An --events value for a file's codes: the rarer of two codes as the oddball target."""
    codes = sorted(counts, key=lambda c: (counts[c], c))
    if len(codes) == 2:
        return f"--events target={codes[0]},nontarget={codes[1]}"
    return "--events " + ",".join(f"class{c}={c}" for c in sorted(counts))


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_runs(
    files: Sequence[Path],
    events: str | EventMapping | None,
    *,
    tmin: float,
    tmax: float,
    channels: Sequence[str] | None = None,
    drop_channels: Sequence[str] = (),
    gate: Gate | None = None,
    stream_filter: FilterSpec | None = DEFAULT_STREAM_FILTER,
    baseline: str = "auto",
) -> tuple[list[Run], EventMapping]:
    """Each file's epochs around its own events, labelled by ``events`` (``--events``).

    A file whose events the mapping does not name (or no mapping at all) is a
    ``ConfigError`` that lists the file's codes and what to pass; the epochs are cut as the
    live producer cuts them, behind the causal ``stream_filter`` (None: unfiltered, as
    ``neurostream produce --no-filter``) with the epoch ``baseline`` recorded in their
    geometry (``ProducerSettings.epoch_baseline``). With ``gate`` each run records what
    the artifact gate rejects (``Run.gated``, ``Run.clean``), as a worker serving the
    version will."""
    if not files:
        raise ConfigError("no recording given", field="file")
    twice = sorted(
        {str(f) for f in files if sum(Path(g).resolve() == Path(f).resolve() for g in files) > 1}
    )
    if twice:
        raise ConfigError(f"recording {', '.join(twice)} is given twice", field="file")
    recordings: list[Recording] = [
        read_recording(f, channels=channels, drop=drop_channels) for f in files
    ]
    if events is None:
        rec = recordings[0]
        counts = rec.event_counts()
        if not counts:
            raise SourceError(
                f"{rec.path} has no events (its marker column holds only 0): a classifier "
                "needs labelled epochs",
                field="file",
                hint="train on a recording with stimulus markers, or on a simulated session "
                "with --synthetic",
            )
        raise ConfigError(
            f"{rec.path} has events but no --events mapping says which class each code is; "
            f"codes in the file: {_codes_text(counts)}",
            field="events",
            hint=f"pass {_suggest(counts)} (NAME=CODE for each class)",
        )
    mapping = events if isinstance(events, EventMapping) else EventMapping.parse(events)
    if len(mapping.classes) < 2:
        raise ConfigError(
            f"--events {mapping} names one class; a classifier needs two or more",
            field="events",
            hint="name every class, e.g. --events target=2,nontarget=1",
        )
    cut = ProducerSettings(
        paradigm="none",
        epoch_baseline=baseline,
        filter_l_freq=stream_filter.l_freq if stream_filter else None,
        filter_h_freq=stream_filter.h_freq if stream_filter else None,
        filter_order=stream_filter.order if stream_filter else 4,
    )
    runs: list[Run] = []
    for rec in (mapping.bind(r) for r in recordings):
        counts = rec.event_counts()
        if not set(counts) & set(mapping.codes):
            raise ConfigError(
                f"{rec.path} holds none of the mapped events ({mapping}); codes in the file: "
                f"{_codes_text(counts)}",
                field="events",
                hint=f"pass {_suggest(counts)}" if counts else "is this the right file?",
            )
        epochs = epochs_from_recording(rec, cut, mapping, tmin=tmin, tmax=tmax)
        per_class = {name: int(np.sum(epochs.y == k)) for k, name in enumerate(mapping.classes)}
        report: GateReport | None = None
        clean: np.ndarray | None = None
        if gate is not None:
            verdict = gate.check(epochs.x, epochs.channels)
            report = GateReport.of(gate, epochs.channels, verdict.offending, verdict.std)
            clean = ~verdict.rejected
            if report.most or report.bad:
                log.warning("%s: %s", rec.path.name, report.line())
        runs.append(
            Run(
                rec.path,
                _sha256(rec.path),
                epochs,
                per_class,
                epochs.unmapped,
                rec.dropped,
                report,
                clean,
            )
        )
    montages = {(r.epochs.fs, tuple(r.epochs.channels)) for r in runs}
    if len(montages) > 1:
        raise ConfigError(
            "the recordings differ in sampling rate or channels: "
            + "; ".join(
                f"{r.file.name}: {r.epochs.fs:g} Hz {list(r.epochs.channels)}" for r in runs
            ),
            field="file",
            hint="train on recordings of one montage, or select common channels with --channels",
        )
    return runs, mapping


def _pipeline_params(
    pipeline: str, feature_params: Mapping[str, Any] | None, tmin: float
) -> dict[str, Any]:
    """``erp@1`` baseline-corrects over the pre-stimulus part given by its own ``tmin``
    parameter: the epoch's. (``erp@2`` reads the epochs' geometry instead.)"""
    params = dict(feature_params or {})
    if "tmin" in get_pipeline(pipeline).default_params():
        params.setdefault("tmin", tmin)
    return params


def fit_validated(
    family: str,
    x: np.ndarray,
    y: np.ndarray,
    fs: float,
    *,
    groups: Sequence[str] | None,
    channels: Sequence[str] | None,
    tmin: float | None,
    tmax: float | None,
    pipeline: str = "erp@1",
    feature_params: Mapping[str, Any] | None = None,
    model_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    lineage: Mapping[str, Any] | None = None,
    gate: Gate | None = None,
    geometry: EpochGeometry | None = None,
) -> tuple[TrainedModel, Validation]:
    """Cross-validate (leave-one-run-out over ``groups``, else blocked k-fold), then refit
    on 100 % of the epochs; the version's metrics are the cross-validation's, with
    ``lineage`` (and the dataset hash) beside them."""
    common: dict[str, Any] = {
        "pipeline": pipeline,
        "feature_params": feature_params,
        "model_params": model_params,
        "seed": seed,
        "geometry": geometry,
    }
    validation = validate_runs(family, x, y, fs, groups=groups, **common)
    trained = train_model(
        family, x, y, fs, test_size=0, channels=channels, tmin=tmin, tmax=tmax, gate=gate, **common
    )
    metrics = {
        **validation.metrics(),
        "fitted_on": int(len(y)),
        "lineage": {**dict(lineage or {}), "dataset_hash": trained.dataset_hash},
    }
    return dataclasses.replace(trained, metrics=metrics), validation


def train_from_recordings(
    family: str,
    files: Sequence[Path],
    events: str | EventMapping | None,
    *,
    tmin: float = -0.1,
    tmax: float = 0.7,
    channels: Sequence[str] | None = None,
    drop_channels: Sequence[str] = (),
    pipeline: str = "erp@1",
    feature_params: Mapping[str, Any] | None = None,
    model_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    gate: Gate | None = None,
    stream_filter: FilterSpec | None = DEFAULT_STREAM_FILTER,
    baseline: str = "auto",
) -> Validated:
    """Train ``family`` on the files' real events: cross-validated, refitted on everything,
    with the files (name, sha256), the mapping and the epoch counts as lineage.

    With ``gate`` the epochs it rejects are left out before cross-validation and refit,
    and the gate is recorded with the version, so workers reject what training left out."""
    runs, mapping = read_runs(
        files,
        events,
        tmin=tmin,
        tmax=tmax,
        channels=channels,
        drop_channels=drop_channels,
        gate=gate,
        stream_filter=stream_filter,
        baseline=baseline,
    )
    kept = [r.kept for r in runs]
    x = np.concatenate([k.x for k in kept])
    y = np.concatenate([k.y for k in kept])
    if gate is not None:
        _check_left(runs, mapping, y)
    names = [r.file.name for r in runs]
    if len(set(names)) < len(names):  # same name in two folders: the paths tell them apart
        names = [str(r.file) for r in runs]
    groups = [name for name, k in zip(names, kept, strict=True) for _ in range(len(k.y))]
    log.debug("training %s on %d epochs from %d recordings", family, len(y), len(runs))
    trained, validation = fit_validated(
        family,
        x,
        y,
        runs[0].epochs.fs,
        groups=groups,
        channels=list(runs[0].epochs.channels),
        tmin=tmin,
        tmax=tmax,
        pipeline=pipeline,
        feature_params=_pipeline_params(pipeline, feature_params, tmin),
        model_params=model_params,
        seed=seed,
        gate=gate,
        geometry=runs[0].epochs.geometry,
        lineage={
            "source": "recordings",
            "files": [r.lineage() for r in runs],
            **mapping.describe(),
            "tmin": tmin,
            "tmax": tmax,
            "baseline": baseline,
            "filter": stream_filter.label if stream_filter else None,
            "gate": gate.to_spec() if gate is not None else None,
        },
    )
    return Validated(trained, validation, runs, mapping)


def _check_left(runs: Sequence[Run], mapping: EventMapping, y: np.ndarray) -> None:
    """Refuse to train when the gate leaves fewer than two epochs of some class."""
    left = {name: int(np.sum(y == k)) for k, name in enumerate(mapping.classes)}
    if min(left.values()) >= 2:
        return
    bad = sorted({b.name for r in runs if r.gated is not None for b in r.gated.bad})
    worst = "; ".join(f"{r.file.name}: {r.gated.line()}" for r in runs if r.gated is not None)
    raise ConfigError(
        f"the artifact gate leaves too few epochs to train on ({_counts(left)}): {worst}",
        field="reject_uv",
        hint=f"drop the bad channel with --drop-channels {','.join(bad)}"
        if bad
        else "raise --reject-uv, or train without the gate with --no-gate",
    )


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def train_validated_simulation(
    family: str, *, seconds: float = 600.0, seed: int = 1, recording: Path = DEFAULT_RECORDING
) -> Validated:
    """A simulated oddball session (one run): blocked k-fold in time, refitted on all of it."""
    settings = ProducerSettings(seed=seed, session_id=f"train-{seed}")
    epochs = simulate_epochs(settings, synthetic_recording(recording), seconds)
    trained, validation = fit_validated(
        family,
        epochs.x,
        epochs.y,
        epochs.fs,
        groups=None,
        channels=list(epochs.channels),
        tmin=settings.epoch_tmin,
        tmax=settings.epoch_tmax,
        seed=seed,
        lineage={"source": "simulated oddball", "seconds": seconds, "seed": seed},
        geometry=epochs.geometry,
    )
    return Validated(trained, validation, [], None)


async def register(
    core: CoreSettings,
    trained: TrainedModel,
    *,
    model_name: str,
    service: str | None = None,
    alias: str | None = "champion",
    assign: bool = False,
) -> Registered:
    """Register a trained model; optionally alias it and assign the service to it."""
    pool = await open_pool(core.database_url, max_size=2)
    try:
        async with pool.connection() as conn:
            row = await registry.register_trained(
                conn, model_name, trained, code_version=__version__
            )
            ref = str(row["version"])
            if alias:
                await registry.set_alias(conn, model_name, alias, version=row["version"])
                ref = alias
            notify: list[str] = await registry.services_following(conn, model_name, ref)
            assigned: str | None = None
            if service:
                if await registry.get_service(conn, service) is None:
                    await registry.create_service(
                        conn, service, description="created by neurostream train"
                    )
                current = await registry.resolve_service(conn, service)
                if service in notify:  # it follows the moved alias: it serves the new version
                    assigned = service
                elif assign or current.serving is None:
                    await registry.assign(conn, service, model_name, ref)
                    notify.append(service)
                    assigned = service
        await _notify(core, pool, sorted(set(notify)))
    finally:
        await pool.close()
    return Registered(
        model_name, row["version"], row["id"], trained.metrics, trained.dataset_hash, assigned
    )


async def _notify(core: CoreSettings, pool: Any, services: list[str]) -> None:
    if not services:
        return
    try:
        connection = await broker.connect(core.amqp_url, name="bootstrap")
    except Exception as exc:  # workers still pick the change up at their next heartbeat
        log.warning("models.events not published (%s); workers re-check on heartbeat", exc)
        return
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = await topology.declare_exchanges(channel)
        await Notifier(pool, exchanges[topology.MODEL_EVENTS_EXCHANGE]).services(services, "train")
