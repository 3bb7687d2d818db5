"""Request and response models of the ML data API (its OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from neurostream.api import Timestamp

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
SESSION_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
INT32 = 2**31 - 1
Kind = Literal["training", "testing"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- datasets ------------------------------------------------------------------------------


class DatasetFromSessions(_In):
    name: str = Field(pattern=NAME_PATTERN, examples=["p300-train"])
    kind: Kind
    session_ids: list[str] = Field(min_length=1, max_length=1000)
    description: str = Field("", max_length=2000)
    base_dataset: int | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="Grow this dataset id: its rows first, then the sessions' new windows.",
    )


class UploadRow(_In):
    data: list[list[float]] = Field(description="[n_channels][n_samples] samples of one window.")
    label: StrictInt = Field(ge=-INT32, le=INT32)
    session_id: str | None = Field(None, pattern=SESSION_PATTERN)
    seq: StrictInt | None = Field(None, ge=0, le=INT32)


class DatasetUpload(_In):
    name: str = Field(pattern=NAME_PATTERN, examples=["p300-upload"])
    kind: Kind
    fs: float = Field(gt=0, le=100_000, allow_inf_nan=False)
    channels: list[str] = Field(min_length=1, max_length=1024)
    description: str = Field("", max_length=2000)
    rows: list[UploadRow] = Field(min_length=1)


class DatasetOut(BaseModel):
    id: int
    name: str
    version: int
    kind: str
    description: str
    source: dict[str, Any]
    n_rows: int
    fs: float
    n_channels: int
    n_samples: int
    channels: list[str]
    label_counts: dict[str, int]
    content_hash: str
    created_at: datetime


# --- production data -----------------------------------------------------------------------


class PredictionOut(BaseModel):
    session_id: str
    seq: int
    model_version_id: int
    window_ts: datetime
    service: str
    role: str
    kind: str
    marker: int | None
    predicted: int
    score: float
    proba: list[float]
    label: int | None = Field(description="Ground truth, when collected.")
    predicted_at: datetime
    worker_id: str


class WindowOut(BaseModel):
    session_id: str
    seq: int
    window_ts: datetime
    service: str
    kind: str
    marker: int | None
    fs: float
    n_channels: int
    n_samples: int
    channels: list[str] | None
    label: int | None
    stored_at: datetime
    data: list[list[float]] | None = Field(None, description="Only with include_data=true.")


class PredictionPage(BaseModel):
    items: list[PredictionOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")


class WindowPage(BaseModel):
    items: list[WindowOut]
    limit: int
    offset: int
    next_offset: int | None


# --- labels --------------------------------------------------------------------------------


class LabelBySeq(_In):
    session_id: str = Field(pattern=SESSION_PATTERN)
    seq: StrictInt = Field(ge=0, le=INT32)
    label: StrictInt = Field(ge=-INT32, le=INT32)
    source: str = Field("api", min_length=1, max_length=64)


class LabelByRange(_In):
    """Every archived window of the session whose ``window_ts`` is in [t_from, t_to]."""

    session_id: str = Field(pattern=SESSION_PATTERN)
    t_from: Timestamp = Field(description="ISO 8601 or Unix seconds (window t0).")
    t_to: Timestamp
    label: StrictInt = Field(ge=-INT32, le=INT32)
    kind: Literal["epoch", "sliding"] | None = Field(None, description="Only windows of a kind.")
    source: str = Field("api", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _ordered(self) -> LabelByRange:
        if self.t_to < self.t_from:
            raise ValueError("t_to must not be before t_from")
        return self


class LabelsStored(BaseModel):
    stored: int = Field(description="Labels written (a window labelled twice counts once).")


class LabelOut(BaseModel):
    session_id: str
    seq: int
    label: int
    source: str
    created_at: datetime


class LabelPage(BaseModel):
    items: list[LabelOut]
    limit: int
    offset: int
    next_offset: int | None


# --- sessions ------------------------------------------------------------------------------


class Interruption(BaseModel):
    """One loss of a live (LSL) stream: when it went, when it was noticed, when it came back."""

    model_config = ConfigDict(extra="allow")

    last_sample_at: float = Field(description="Wall time (Unix s) of the last sample before.")
    detected_at: float = Field(description="When the producer declared the stream lost.")
    resumed_at: float | None = Field(description="First sample after it; null: not back.")
    gap_s: float | None = Field(description="resumed_at - last_sample_at.")
    samples_before: int = Field(description="Samples streamed before the loss.")


class SessionOut(BaseModel):
    session_id: str
    service: str | None
    board: str | None
    fs: float | None
    channels: list[str] | None
    started_at: datetime | None
    ended_at: datetime | None
    windows: int = Field(description="Archived windows.")
    labelled: int = Field(description="Archived windows with a label.")
    labelled_share: float | None
    interrupted: bool = Field(
        False, description="The live stream was lost mid-session (its gaps in interruptions)."
    )
    interruptions: list[Interruption] = Field(default_factory=list)


_ROC_AUC = "ROC-AUC of the positive (larger) class; null with one class in the labels."
_BALANCED = "Mean recall over classes: what thresholds and comparisons use."
_ACCURACY = "Read only beside accuracy_chance: rare targets make it look good."
_CHANCE = "Majority-class share of the labels: the accuracy of always guessing it."


class ModelPerformance(BaseModel):
    model_version_id: int | None = Field(description="null: all serving predictions together.")
    roc_auc: float | None = Field(description=_ROC_AUC)
    balanced_accuracy: float | None = Field(description=_BALANCED)
    n: int
    accuracy: float | None = Field(description=_ACCURACY)
    accuracy_chance: float | None = Field(description=_CHANCE)


class SessionDetail(SessionOut):
    paradigm: dict[str, Any]
    epochs: int
    duration_s: float | None
    first_window_ts: datetime | None
    last_window_ts: datetime | None
    labels: int = Field(description="Labels collected (also for windows not archived).")
    predictions: int = Field(description="Serving predictions.")
    roc_auc: float | None = Field(description=_ROC_AUC)
    balanced_accuracy: float | None = Field(description=_BALANCED)
    accuracy: float | None = Field(description=_ACCURACY)
    accuracy_chance: float | None = Field(description=_CHANCE)
    by_model_version: list[ModelPerformance]


# --- decisions of trial-based paradigms ---------------------------------------------------


class TrialOut(BaseModel):
    session_id: str
    trial: int
    targets: list[int] = Field(description="Target stimulus codes (a speller's row and column).")
    symbol: str | None
    source: str
    created_at: datetime


class DecisionOut(BaseModel):
    session_id: str
    trial: int
    rule: str = Field(description="The stopping rule that made it: fixed-10, posterior-0.95-max10.")
    service: str
    symbol_index: int
    symbol: str
    codes: list[int] = Field(description="Stimulus codes of the chosen symbol (row, column).")
    posterior: float = Field(description="Posterior of the chosen symbol when it was decided.")
    repetitions: int = Field(description="Complete repetitions the decision used.")
    epochs: int = Field(description="Flashes the decision used, gated ones included.")
    model_version_ids: list[int]
    evidence: dict[str, float] = Field(
        description="Summed log-likelihood ratio of target per stimulus code."
    )
    last_event_at: datetime | None = Field(description="The last flash used (wall time).")
    last_sample_at: datetime | None = Field(description="Its epoch's last sample (wall time).")
    decided_at: datetime
    latency_s: float | None = Field(
        description="decided_at - last_sample_at: acquisition to decision, as stored."
    )
    targets: list[int] | None = Field(description="The trial's truth; null until collected.")
    true_symbol: str | None
    correct: bool | None = Field(
        description="Whether codes are the trial's targets; null without its truth."
    )
