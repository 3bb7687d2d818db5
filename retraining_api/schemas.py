"""Request and response models of the retraining API (its OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from retraining_api.families import ONNX_REFUSED

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$"
DATASET_REF_PATTERN = r"^([0-9]{1,9}|[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}(@[0-9]{1,9})?)$"
INT32 = 2**31 - 1
Metric = Literal["roc_auc", "balanced_accuracy", "f1", "mcc"]
# The families a job trains (``retraining_api.families``); an onnx network is not one.
Family = Literal["sklearn-lda", "torch-eegnet", "sklearn-pipeline"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
DatasetRef = str | int


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- jobs ----------------------------------------------------------------------------------


class TrainParams(_In):
    feature_pipeline: str | None = Field(
        None,
        description="Default erp@1; a sklearn-pipeline refit reads the champion's.",
        examples=["erp@1"],
    )
    feature_params: dict[str, Any] = Field(
        default_factory=dict,
        description="A sklearn-pipeline refit: these over the champion's.",
        examples=[{"h_freq": 15.0}],
    )
    model_params: dict[str, Any] = Field(
        default_factory=dict,
        description="A sklearn-pipeline refit takes only positive_class (its estimator keeps "
        "the champion's hyperparameters).",
        examples=[{"shrinkage": "auto"}],
    )


class SearchSpec(_In):
    """Optuna TPE search; each trial is scored on the training set's validation split."""

    trials: int = Field(ge=1, le=200, examples=[20])
    timeout_s: float | None = Field(None, gt=0, le=86400)


class PromoteRule(_In):
    """Promote the challenger when its test metric beats the champion's by this much."""

    metric: Metric = "roc_auc"
    min_improvement: float = Field(0.01, ge=-1, le=1)


class JobSpec(_In):
    """What a job trains on and how: the part a trigger stores as its template."""

    family: Family | None = Field(
        None,
        description="Default: the champion's. sklearn-pipeline refits a clone of the "
        "champion's fitted estimator (no search); an onnx champion is trained outside "
        "neurostream, so retraining it needs a family named here.",
        examples=["sklearn-lda"],
    )
    training_dataset: DatasetRef = Field(
        description="Dataset id, name (latest version) or name@version; kind 'training'.",
        examples=["p300-train@1"],
    )
    testing_dataset: DatasetRef = Field(
        description="Dataset id, name or name@version; kind 'testing'.", examples=["p300-test"]
    )
    params: TrainParams = Field(default_factory=lambda: TrainParams())
    search: SearchSpec | None = None
    promote: PromoteRule | None = Field(
        None, description="Promote automatically when the rule holds (or there is no champion)."
    )
    seed: int = Field(0, ge=0, le=INT32)
    validation_size: float = Field(0.2, ge=0.05, le=0.5)

    @field_validator("family", mode="before")
    @classmethod
    def _not_onnx(cls, value: Any) -> Any:
        if value == "onnx":  # said plainly, rather than as "not one of the literals"
            raise ValueError(ONNX_REFUSED)
        return value


class JobCreate(JobSpec):
    model_name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Defaults to the service's model.",
        examples=["p300-lda"],
    )
    service: str | None = Field(None, pattern=NAME_PATTERN, examples=["p300"])

    @model_validator(mode="after")
    def _named(self) -> JobCreate:
        if self.model_name is None and self.service is None:
            raise ValueError("give model_name or service (whose model is retrained)")
        return self


class JobAccepted(BaseModel):
    job_id: int
    status: JobStatus


class JobOut(BaseModel):
    id: int
    model_name: str
    service: str | None
    family: str
    status: JobStatus
    progress: float
    cancel_requested: bool
    spec: dict[str, Any]
    error: str | None
    result: dict[str, Any] | None = Field(
        None, description="Challenger vs champion metrics side by side, version, promotion."
    )
    runner_id: str | None
    trigger_id: int | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


class LogLine(BaseModel):
    at: datetime
    level: str
    message: str


class JobDetail(JobOut):
    logs: list[LogLine]


class TrialOut(BaseModel):
    job_id: int
    number: int
    state: str
    params: dict[str, Any]
    value: float | None = Field(description="Validation ROC-AUC")
    metrics: dict[str, Any]
    duration_s: float | None
    finished_at: datetime


# --- models --------------------------------------------------------------------------------


class PromoteIn(_In):
    from_alias: str = Field("challenger", pattern=ALIAS_PATTERN)
    to_alias: str = Field("champion", pattern=ALIAS_PATTERN)


class PromoteOut(BaseModel):
    model_name: str
    from_alias: str
    to_alias: str
    version: int
    version_id: int
    previous_version: int | None
    services_notified: list[str]
    event_published: bool


class ChannelImportance(BaseModel):
    channel: str
    importance: float = Field(description="Summed mean ROC-AUC drop of the channel's features")
    std: float


class FeatureImportance(BaseModel):
    feature: str = Field(description="Within-channel feature: a time (erp) or a band")
    importance: float = Field(description="Summed over channels")


class ImportanceOut(BaseModel):
    model_name: str
    version: int
    dataset_id: int
    dataset: str
    rows: int
    repeats: int
    baseline_roc_auc: float
    per_channel: list[ChannelImportance]
    per_feature: list[FeatureImportance]
    ranking: list[str] = Field(description="Channels, most important first")


# --- triggers ------------------------------------------------------------------------------


class TriggerJob(JobSpec):
    """A job template; a growth trigger builds its training dataset at each firing."""

    training_dataset: DatasetRef | None = Field(  # type: ignore[assignment]
        None,
        description="schedule: a dataset name (latest version at each firing) or name@version; "
        "growth: ignored, a fresh snapshot of the labelled sessions is used.",
    )


class TriggerCreate(_In):
    model_name: str = Field(pattern=NAME_PATTERN)
    service: str | None = Field(
        None, pattern=NAME_PATTERN, description="Growth counts labels of this service's sessions."
    )
    kind: Literal["schedule", "growth"]
    every_s: float | None = Field(None, ge=1, le=365 * 86400)
    min_new_labels: int | None = Field(None, ge=1, le=10**9)
    training_snapshot: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="growth: name of the fresh training snapshot built from the service's "
        "labelled sessions at each firing (default '<model_name>-train').",
    )
    job: TriggerJob
    enabled: bool = True

    @model_validator(mode="after")
    def _kind_fields(self) -> TriggerCreate:
        if self.kind == "schedule" and self.every_s is None:
            raise ValueError("every_s is required for a schedule trigger")
        if self.kind == "growth" and self.min_new_labels is None:
            raise ValueError("min_new_labels is required for a growth trigger")
        if self.kind == "schedule" and self.job.training_dataset is None:
            raise ValueError("job.training_dataset is required for a schedule trigger")
        return self


class TriggerOut(BaseModel):
    id: int
    model_name: str
    service: str | None
    kind: str
    every_s: float | None
    min_new_labels: int | None
    template: dict[str, Any]
    snapshot_name: str | None
    enabled: bool
    last_fired_at: datetime | None
    last_job_id: int | None
    last_error: str | None
    created_at: datetime
