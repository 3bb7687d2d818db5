"""FastAPI dependencies: the process's pool, settings and evaluator, and the parameter
groups several endpoints share (a service, a time range, a drift pair), each declared once
so every endpoint validates and documents it alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from psycopg_pool import AsyncConnectionPool

from monitoring_api.errors import MonitoringError
from monitoring_api.evaluator import Evaluator
from monitoring_api.schemas import NAME_PATTERN
from monitoring_api.settings import MonitoringSettings
from neurostream.api import Timestamp


def _pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def _settings(request: Request) -> MonitoringSettings:
    settings: MonitoringSettings = request.app.state.settings
    return settings


def _evaluator(request: Request) -> Evaluator:
    evaluator: Evaluator = request.app.state.evaluator
    return evaluator


Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
Settings = Annotated[MonitoringSettings, Depends(_settings)]
EvaluatorDep = Annotated[Evaluator, Depends(_evaluator)]

Service = Annotated[str, Query(pattern=NAME_PATTERN, description="Service name")]
ServicePath = Annotated[str, Path(pattern=NAME_PATTERN, description="Service name")]
ServiceFilter = Annotated[str | None, Query(pattern=NAME_PATTERN, description="Only this service")]
SESSION_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
SessionFilter = Annotated[
    str | None, Query(pattern=SESSION_PATTERN, description="Only this session")
]


@dataclass(frozen=True)
class Range:
    """``[start, end]`` in data time; either end may be open."""

    start: datetime | None
    end: datetime | None


def _time_range(
    start: Annotated[Timestamp | None, Query(description="From (inclusive)")] = None,
    end: Annotated[Timestamp | None, Query(description="To (inclusive)")] = None,
) -> Range:
    if start is not None and end is not None and end < start:
        raise MonitoringError("must not be before start", field="end")
    return Range(start, end)


TimeRange = Annotated[Range, Depends(_time_range)]


@dataclass(frozen=True)
class Pair:
    """Which windows a drift test compares; ``None`` sides take the service's defaults."""

    service: str
    reference_dataset_id: int | None
    reference_start: datetime | None
    reference_end: datetime | None
    current_start: datetime | None
    current_end: datetime | None


PAIR_DOC = """Reference: ``reference_dataset_id``, or ``reference_start`` + ``reference_end``,
or the service's configured/default reference. Current: ``current_start`` + ``current_end``,
or the latest ``current_window_s`` of archived windows."""


def _pair(
    service: Service,
    reference_dataset_id: Annotated[
        int | None, Query(ge=1, description="Reference: a dataset snapshot")
    ] = None,
    reference_start: Annotated[
        Timestamp | None, Query(description="Reference: archived windows from")
    ] = None,
    reference_end: Annotated[
        Timestamp | None, Query(description="Reference: archived windows to")
    ] = None,
    current_start: Annotated[
        Timestamp | None, Query(description="Current: archived windows from")
    ] = None,
    current_end: Annotated[
        Timestamp | None, Query(description="Current: archived windows to")
    ] = None,
) -> Pair:
    if reference_dataset_id is not None and (reference_start or reference_end):
        raise MonitoringError("give a dataset or a time range, not both", field="reference_start")
    if (reference_start is None) != (reference_end is None):
        raise MonitoringError("give both reference_start and reference_end", field="reference_end")
    if (current_start is None) != (current_end is None):
        raise MonitoringError("give both current_start and current_end", field="current_end")
    for lo, hi, field in (
        (reference_start, reference_end, "reference_end"),
        (current_start, current_end, "current_end"),
    ):
        if lo is not None and hi is not None and hi <= lo:
            raise MonitoringError("must be after the start", field=field)
    return Pair(
        service, reference_dataset_id, reference_start, reference_end, current_start, current_end
    )


DriftPair = Annotated[Pair, Depends(_pair)]
