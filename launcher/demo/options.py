"""What the demo runs and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LDA, CNN = "p300-lda", "p300-eegnet"


@dataclass
class VersionReport:
    model_version_id: int
    label: str
    windows: int
    first_seq: int
    last_seq: int
    roc_auc: float | None


@dataclass
class DemoReport:
    session_id: str
    confirmed: int
    predicted: int
    distinct_seq: int
    missing: list[int]
    duplicated: int
    rejected: int
    versions: list[VersionReport]
    roc_auc: float | None
    swap_requested_after_s: float | None
    swap_seen_after_s: float | None
    latency_ms: dict[str, float]
    urls: dict[str, str] = field(default_factory=dict)
    retrain_job: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    second: DemoReport | None = None


@dataclass(frozen=True)
class DemoOptions:
    service: str = "p300"
    workers: int = 2
    duration_s: float = 60.0
    swap_at: float | None = 0.5  # fraction of the session; None: no swap
    qm_port: int = 8000
    metrics_port: int = 9100
    train_seconds: float = 600.0
    session_seed: int = 7
    keep: bool = False
    retrain: bool = True
    second_s: float = 20.0
    shift_at: float | None = 0.5  # session 1: channels shifted from this fraction on
    shift_channels: tuple[str, ...] = ("F7", "F8")
    shift_gain: float = 3.0
    log_file: Path | None = None  # the services' and workers' output; None: this terminal
