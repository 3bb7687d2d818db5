"""Request and response models of the queue manager API (its OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurostream.canary import CanaryRule

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
REF_PATTERN = r"^([0-9]{1,9}|[A-Za-z][A-Za-z0-9_.\-]{0,63})$"
INT32 = 2**31 - 1


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- services ----------------------------------------------------------------------------


class ServiceInput(_In):
    """What a service's producer streams; every key optional (one left out is unknown, and
    an assignment is never refused on an unknown key). Types here; the rules (unique
    names, tmin < tmax, n_samples agreeing with tmin..tmax at fs, a readable filter label)
    are ``neurostream.models.compat.ServiceInput``'s, answered as 422 on ``input.<key>``."""

    channels: list[str] | None = Field(
        None, min_length=1, max_length=1024, description="Channel names, each once."
    )
    fs: float | None = Field(None, gt=0, allow_inf_nan=False, description="Sampling rate, Hz.")
    n_samples: int | None = Field(None, ge=1, le=INT32, description="Samples per window.")
    kind: Literal["epoch", "sliding"] | None = None
    tmin: float | None = Field(None, allow_inf_nan=False, description="Epoch start, s.")
    tmax: float | None = Field(None, allow_inf_nan=False, description="Epoch end, s.")
    baseline: tuple[float, float] | None = Field(None, description="[start, end], s.")
    filtered: str | None = Field(
        None,
        max_length=64,
        description="The producer's stream filter label ('1-30@4'), or 'none' for an "
        "unfiltered stream.",
    )


_INPUT_EXAMPLE = {
    "channels": ["TP9", "AF7", "AF8", "TP10"],
    "fs": 256.0,
    "tmin": -0.1,
    "tmax": 0.7,
    "kind": "epoch",
    "filtered": "1-30@4",
}


class ServiceCreate(_In):
    name: str = Field(pattern=NAME_PATTERN, examples=["p300"])
    description: str = Field("", max_length=2000)
    input: ServiceInput | None = Field(
        None, description="The input the service streams.", examples=[_INPUT_EXAMPLE]
    )


class ServiceUpdate(_In):
    description: str = Field("", max_length=2000)
    input: ServiceInput | None = Field(
        None,
        description="The input the service streams from now on; null clears it, left out "
        "it stays. Refused (409) when a version the service serves cannot take it.",
        examples=[_INPUT_EXAMPLE],
    )


class Assignment(_In):
    model_name: str = Field(pattern=NAME_PATTERN, examples=["p300-lda"])
    ref: str = Field(pattern=REF_PATTERN, description="Version number or alias.", examples=["3"])
    shadow_ref: str | None = Field(
        None,
        pattern=REF_PATTERN,
        description="Optional ref run in shadow.",
        examples=["challenger"],
    )


class ServiceOut(BaseModel):
    name: str
    description: str
    model_name: str | None
    model_ref: str | None
    shadow_ref: str | None
    input: ServiceInput | None = Field(None, description="The declared input (null: none).")
    serving_version_id: int | None
    shadow_version_id: int | None
    created_at: datetime
    updated_at: datetime


class AssignmentOut(ServiceOut):
    event_published: bool = Field(description="Whether workers were told over models.events.")


# --- models, versions, aliases -----------------------------------------------------------


class VersionMetadata(_In):
    """The ``metadata`` form field of an upload, as JSON."""

    family: str = Field(examples=["sklearn-lda"])
    feature_pipeline: str = Field(examples=["erp@1"])
    feature_params: dict[str, Any] = {}
    model_params: dict[str, Any] = {}
    input_spec: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "The signature the model was trained on: fs, n_channels, n_samples (required), "
            "kind, channels (unique names in the model's order; count == n_channels), tmin, "
            "tmax (epoch geometry, s), units ('uV'). Windows are matched by channel name "
            "when channels is given, else by count."
        ),
        examples=[
            {
                "fs": 256,
                "n_channels": 4,
                "n_samples": 205,
                "kind": "epoch",
                "channels": ["TP9", "AF7", "AF8", "TP10"],
                "tmin": -0.1,
                "tmax": 0.7,
                "units": "uV",
            }
        ],
    )
    classes: list[int] = Field(default_factory=lambda: [0, 1])
    metrics: dict[str, Any] = {}
    dataset_hash: str | None = Field(None, max_length=128)
    code_version: str | None = Field(None, max_length=128)
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="If given, must match the uploaded bytes."
    )


class VersionOut(BaseModel):
    id: int
    model_name: str
    version: int
    family: str
    feature_pipeline: str
    feature_params: dict[str, Any]
    model_params: dict[str, Any]
    input_spec: dict[str, Any]
    classes: list[int]
    metrics: dict[str, Any]
    dataset_hash: str | None
    code_version: str | None
    sha256: str
    artifact_size: int
    created_at: datetime


class ModelOut(BaseModel):
    name: str
    family: str
    description: str
    created_at: datetime
    versions: int
    latest: int | None
    aliases: dict[str, int] = Field(description="alias -> version number")


class AliasSet(_In):
    version: int = Field(ge=1, le=INT32, description="Version number the alias points at.")


class AliasOut(BaseModel):
    model_name: str
    alias: str
    version: int
    version_id: int
    updated_at: datetime


class AliasSetOut(AliasOut):
    services_notified: list[str] = Field(description="Services following the alias.")
    event_published: bool = Field(description="Whether every models.events publish succeeded.")


# --- jobs, sessions, workers -------------------------------------------------------------

JobStatus = Literal["predicted", "rejected"]


class JobOut(BaseModel):
    status: JobStatus
    service: str
    session_id: str | None
    seq: int | None
    model_version_id: int | None = None
    role: str | None = None
    kind: str | None = None
    marker: int | None = None
    predicted: int | None = None
    score: float | None = None
    reason: str | None = None
    worker_id: str
    at: datetime = Field(description="predicted_at or rejected_at")
    sent_at: datetime | None = None
    latency_ms: float | None = Field(None, description="predicted_at - sent_at")


class JobsPage(BaseModel):
    items: list[JobOut]
    limit: int
    offset: int


class VersionSummary(BaseModel):
    model_version_id: int
    label: str | None = Field(description="'<model>:<version>' when the version still exists")
    role: str
    predictions: int
    mean_score: float | None
    positive_rate: float | None
    latency_ms_p50: float | None
    latency_ms_p95: float | None


class SeqGap(BaseModel):
    start: int
    end: int = Field(description="inclusive")


class SessionSummary(BaseModel):
    session_id: str
    service: str | None
    board: str | None
    fs: float | None
    started_at: datetime | None
    ended_at: datetime | None
    windows_confirmed: int | None
    windows_seen: int = Field(description="Distinct seqs predicted or rejected")
    predicted: int = Field(description="Distinct seqs with a serving prediction")
    rejected: int
    labels: int
    max_seq: int | None
    missing: int = Field(description="Seqs in [0, expected end] neither predicted nor rejected")
    gaps: list[SeqGap] = Field(description="First missing seq ranges (at most 100)")
    per_version: list[VersionSummary]


class WorkerOut(BaseModel):
    worker_id: str
    service: str
    host: str
    model_version_id: int | None
    shadow_version_id: int | None
    processed: int
    rejected: int
    gated: int = Field(description="Epochs the serving version's gate kept from being scored")
    duplicates: int = Field(
        description="Rows a write found already stored: redelivered or resent windows, "
        "not counted twice"
    )
    redelivered: int = Field(description="Deliveries the broker marked redelivered")
    write_retries: int = Field(description="Database writes retried (an outage)")
    errors: int
    last_error: str | None
    status: str = Field(description="As reported, or 'stale' after 3 missed heartbeats")
    reported_status: str
    started_at: datetime
    last_seen: datetime
    seconds_since_seen: float


# --- canaries ----------------------------------------------------------------------------


class CanaryStart(_In):
    """A canary: ``ref`` of the service's model (or ``model_name``'s) on ``share`` of its
    new sessions, promoted or rolled back by ``rule``."""

    ref: str = Field(pattern=REF_PATTERN, description="Version number or alias.", examples=["4"])
    model_name: str | None = Field(
        None, pattern=NAME_PATTERN, description="Default: the model the service serves."
    )
    share: float = Field(
        gt=0, lt=1, description="Share of new sessions the canary serves.", examples=[0.3]
    )
    rule: CanaryRule = Field(default_factory=CanaryRule)


class CanaryOut(BaseModel):
    id: int
    service: str
    model_name: str
    ref: str
    version: int
    version_id: int
    champion_version_id: int = Field(description="What the service served when it started")
    share: float
    rule: CanaryRule
    status: Literal["running", "promoted", "rolled_back"]
    reason: str | None = Field(description="Why it ended (the rule's verdict, a raise, a hand)")
    started_at: datetime
    ended_at: datetime | None
    sessions: dict[str, int] = Field(description="Sessions recorded per arm: canary, champion")
    switched_sessions: int = Field(description="Canary sessions a rollback moved back")
    failed_windows: int = Field(description="Windows the canary raised on, re-scored")


class CanaryChangeOut(CanaryOut):
    event_published: bool = Field(description="Whether workers were told over models.events.")
