"""Request and response models of the monitoring API (its OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from monitoring_api.alerts import METRICS
from neurostream.api import Timestamp

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
Scope = Literal["feature", "channel", "overall"]
Metric = Literal[tuple(METRICS)]  # type: ignore[valid-type]
Comparison = Literal[">", ">=", "<", "<="]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- drift -------------------------------------------------------------------------------


class DriftPoint(BaseModel):
    time: datetime = Field(description="End of the current window (data time)")
    service: str
    session_id: str | None = Field(
        None, description="Session of the newest window evaluated (None on older rows)"
    )
    scope: Scope
    name: str = Field(description="'<channel>:<band>', a channel, or 'share' / 'mmd'")
    method: str
    statistic: float | None
    p_value: float | None = Field(description="Bonferroni-adjusted")
    drifted: bool
    share: float | None
    n_reference: int | None
    n_current: int | None


class ReferenceIn(_In):
    """A dataset snapshot, or a time range of the service's archived windows."""

    dataset_id: int | None = Field(None, ge=1)
    start: Timestamp | None = None
    end: Timestamp | None = None

    @model_validator(mode="after")
    def _one(self) -> ReferenceIn:
        has_range = self.start is not None or self.end is not None
        if (self.dataset_id is None) == (not has_range):
            raise ValueError("give either dataset_id or start and end")
        if has_range and (self.start is None or self.end is None or self.end <= self.start):
            raise ValueError("start and end must both be given, end after start")
        return self


class ReferenceOut(BaseModel):
    service: str
    kind: str = Field(description="'dataset', 'range' or 'session-start' (the default)")
    dataset_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None


class ChannelDrift(BaseModel):
    name: str
    statistic: float = Field(description="Largest KS D over the channel's bands")
    p_value: float = Field(description="Smallest Bonferroni-adjusted p over its bands")
    share: float
    drifted: bool


class FeatureDrift(BaseModel):
    name: str
    statistic: float
    p_value: float
    p_adjusted: float
    drifted: bool


class DriftOut(BaseModel):
    service: str
    reference: dict[str, Any]
    current: dict[str, Any]
    share: float = Field(description="Share of features drifted (Bonferroni over features)")
    mmd: float = Field(description="Unbiased MMD² (RBF kernel, median heuristic)")
    alpha: float
    n_reference: int
    n_current: int
    drifted_channels: list[str]
    channels: list[ChannelDrift]
    features: list[FeatureDrift]
    stored: bool = False


class EvidentlyOut(BaseModel):
    service: str
    reference: dict[str, Any]
    current: dict[str, Any]
    summary: dict[str, Any] = Field(description="drifted_count, drifted_share, columns")
    report: dict[str, Any] = Field(description="Evidently snapshot .dict()")


# --- predictions and performance ----------------------------------------------------------


class DistributionBucket(BaseModel):
    start: datetime
    model_version_id: int
    role: str
    n: int
    class_counts: dict[str, int]
    mean_score: float | None
    score_histogram: list[int] = Field(description="Counts of score in 10 bins over [0, 1]")


class PerformanceBucket(BaseModel):
    start: datetime
    model_version_id: int
    role: str
    estimated: bool = Field(description="True: a label-free estimate (CBPE-style), not measured")
    n: int
    roc_auc: float | None = Field(None, description="Measured; null with one class labelled")
    balanced_accuracy: float | None = Field(
        None, description="Measured mean recall over classes: what alerts and comparisons use"
    )
    accuracy: float | None = Field(None, description="Measured; read beside accuracy_chance")
    accuracy_chance: float | None = Field(
        None, description="Majority-class share of the labels: always guessing it scores this"
    )
    f1: float | None = None
    mcc: float | None = None
    expected_roc_auc: float | None = Field(None, description="Only for estimates")
    expected_balanced_accuracy: float | None = Field(None, description="Only for estimates")
    expected_accuracy: float | None = Field(None, description="Only for estimates")
    expected_accuracy_chance: float | None = Field(None, description="Only for estimates")
    calibrated: bool | None = Field(None, description="Estimate used an isotonic calibration")


class PerformanceOut(BaseModel):
    service: str
    start: datetime | None
    end: datetime | None
    bucket_s: float
    buckets: list[PerformanceBucket]
    per_version: list[PerformanceBucket] = Field(description="Whole range, per version")


# --- quality ------------------------------------------------------------------------------


class ChannelQuality(BaseModel):
    channel: str
    missing_share: float
    flat_share: float
    saturated_share: float
    out_of_range_share: float
    max_abs_uv: float
    mean_std_uv: float
    flags: list[str]


class SeqGap(BaseModel):
    start: int
    end: int = Field(description="inclusive")


class QualityOut(BaseModel):
    session_id: str
    service: str | None
    windows_analysed: int
    windows_seen: int
    expected_windows: int
    dropped: int
    gaps: list[SeqGap]
    channels: list[ChannelQuality]


# --- alerts -------------------------------------------------------------------------------


class RuleIn(_In):
    name: str = Field(pattern=NAME_PATTERN, examples=["p300-drift"])
    service: str = Field(pattern=NAME_PATTERN, examples=["p300"])
    metric: Metric = Field(examples=["drift_share"])  # type: ignore[valid-type]
    comparison: Comparison = ">"
    threshold: float = Field(allow_inf_nan=False, examples=[0.3])
    window_s: float = Field(60.0, gt=0, le=30 * 86400)
    webhook_url: AnyHttpUrl | None = Field(None, examples=["http://127.0.0.1:9000/hook"])
    enabled: bool = True


class RuleOut(BaseModel):
    id: int
    name: str
    service: str
    metric: str
    comparison: str
    threshold: float
    window_s: float
    webhook_url: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


class AlertOut(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    service: str
    metric: str
    comparison: str
    threshold: float
    value: float
    state: Literal["firing", "cleared"]
    fired_at: datetime
    cleared_at: datetime | None
    cleared_value: float | None
    webhook_status: str | None


# --- BCI decisions ------------------------------------------------------------------------


class BciMetrics(BaseModel):
    """What one stopping rule achieved over a set of decisions (a speller's symbols)."""

    rule: str = Field(description="The stopping rule, e.g. 'fixed-10', 'posterior-0.95-max10'")
    n_symbols: int = Field(description="Symbols on the speller's grid (Wolpaw's N)")
    chance: float = Field(description="1 / n_symbols: a random pick's accuracy")
    decisions: int
    with_truth: int = Field(description="Decisions whose trial has a stored truth")
    correct: int = Field(
        description="Decisions whose codes equal the trial's target codes (as a set), "
        "or whose symbol is the trial's symbol"
    )
    accuracy: float | None = Field(description="correct / with_truth; null without truth")
    mean_repetitions: float = Field(description="Repetitions the rule waited for, on average")
    seconds_per_selection: float | None = Field(
        description="What the bits/min divide by; ``timing`` says where it comes from"
    )
    timing: Literal["paradigm", "measured", "mixed"] | None = Field(
        description="'paradigm': mean_repetitions x codes x soa_s + trial_pause_s (what a "
        "speller stopping at this rule would take); 'measured': the span between the first "
        "and last decision / (decisions - 1); 'mixed' on an overall row over both"
    )
    bits_per_selection: float | None = Field(
        description="Wolpaw bits per selection at this accuracy over n_symbols (0 at chance)"
    )
    bits_per_min: float | None = Field(description="Wolpaw information transfer rate")


class BciSessionRule(BciMetrics):
    session_id: str
    service: str
    model_version_id: int | None = Field(
        description="The version that decided: per decision the most frequent id in its "
        "model_version_ids (ties: the one listed last); null when none is stored"
    )
    model_version: str | None = Field(description="'<model>:<version>' when registered")
    seconds_paradigm: float | None = Field(
        description="From the session's paradigm (null when it states no soa_s)"
    )
    seconds_measured: float | None = Field(description="Null with fewer than 2 decisions")
    first_decided_at: datetime
    last_decided_at: datetime


class BciRuleOverall(BciMetrics):
    sessions: int
    model_version_ids: list[int] = Field(description="Versions that decided, ascending")


class BciOut(BaseModel):
    service: str | None
    session_id: str | None
    timing: Literal["auto", "paradigm", "measured"] = Field(
        description="As asked; 'auto' takes the paradigm's time where the session states it"
    )
    rows: list[BciSessionRule] = Field(description="Per session, model version and rule")
    overall: list[BciRuleOverall] = Field(
        description="Per rule over the rows (and per n_symbols if sessions differ in it)"
    )
    notes: list[str] = Field(description="What was left out and why")


# --- canaries ----------------------------------------------------------------------------


class CanaryArmOut(BaseModel):
    """One arm of a canary since it started, over the sessions that started on it."""

    arm: Literal["canary", "champion"]
    version_id: int
    sessions: int
    windows: int = Field(description="Serving predictions of the arm's version")
    rejected: int = Field(description="Rejected windows of the arm's sessions")
    gated: int = Field(description="Epochs the arm's version's gate kept from being scored")
    errors: int = Field(description="Windows the version raised on (re-scored by the champion)")
    rejection_rate: float | None = Field(description="(rejected + gated) / seen")
    error_rate: float | None
    labels: int = Field(description="Predictions with a label")
    estimated_roc_auc: float | None = Field(description="Label-free (CBPE-style) estimate")
    estimated_balanced_accuracy: float | None
    estimated_accuracy: float | None
    measured_roc_auc: float | None = Field(None, description="Where labels arrived")
    measured_balanced_accuracy: float | None = None
    measured_accuracy: float | None = None
    drift_share: float | None = Field(
        description="Share of drifted features, newest evaluation of one of its sessions"
    )


class CanaryStatusOut(BaseModel):
    service: str
    canary_id: int
    model_name: str
    ref: str
    version: int
    version_id: int
    champion_version_id: int = Field(description="What served when the canary started")
    share: float
    status: Literal["running", "promoted", "rolled_back"]
    reason: str | None = Field(description="Why it ended")
    started_at: datetime
    ended_at: datetime | None
    rule: dict[str, Any]
    canary: CanaryArmOut
    champion: CanaryArmOut
    verdict: Literal["keep", "promote", "rollback"] = Field(
        description="The rule's answer on these figures now (a running canary is ended on it)"
    )
    verdict_reasons: list[str]
    switched_sessions: int = Field(description="Canary sessions a rollback moved back")
    failed_windows: int = Field(description="Windows the canary raised on")
