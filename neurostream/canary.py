"""Per-session canaries: which sessions a canary serves, and when it is promoted or rolled back.

A service may run one canary beside its champion: a version that serves a share of the
service's *sessions* (sticky by ``session_id``), while the champion serves the rest. This
module holds the pure parts the queue manager, the workers and the monitoring API share:
the hash that puts a session in the canary's arm (``bucket``/``arm_of``; every replica
computes the same), the rule an operator sets (``CanaryRule``), the figures of each arm
(``ArmFigures``), the rule's verdict (``judge``) and the ``models.events`` body a change of
canary state publishes (``CanaryEvent``). Assignment records, state transitions and the
figures' SQL live in ``neurostream.registry`` and the monitoring API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Arm = Literal["canary", "champion"]
Status = Literal["running", "promoted", "rolled_back"]
Action = Literal["keep", "promote", "rollback"]
EventName = Literal["canary_started", "canary_promoted", "canary_rolled_back"]


def bucket(session_id: str) -> float:
    """Where ``session_id`` falls in [0, 1): the first 8 bytes of its SHA-256.

    Not Python's ``hash``, which is salted per process: replicas must agree."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def arm_of(session_id: str, share: float) -> Arm:
    """The arm a new session starts on while a canary with ``share`` runs."""
    return "canary" if bucket(session_id) < share else "champion"


def check_share(share: float) -> str | None:
    """Why ``share`` cannot be a canary's share of sessions, or None."""
    if not 0.0 < share < 1.0:
        return f"share must be strictly between 0 and 1, got {share}"
    return None


class CanaryRule(BaseModel):
    """When a canary is promoted and when it is rolled back.

    The canary is judged once it has served ``windows`` windows: every bound that is set
    must hold, then it is promoted, else rolled back. A raise on predict rolls it back at
    once, before that count, with no tolerance to set: the worker that saw it ends the
    canary there and then (a version that raises cannot be left serving sessions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: int = Field(
        200, ge=1, le=10_000_000, description="Canary windows served before the verdict."
    )
    max_rejection_rate_delta: float = Field(
        0.05,
        ge=0,
        le=1,
        description="How much the canary's share of rejected or gated windows may exceed the "
        "champion's over the same span.",
    )
    min_estimated_balanced_accuracy: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Lowest label-free expected balanced accuracy (neurostream.estimation).",
    )
    min_measured_balanced_accuracy: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Lowest measured balanced accuracy where labels arrived (checked once "
        "min_labels canary windows have a label).",
    )
    min_labels: int = Field(20, ge=1, description="Labelled canary windows a measured bound needs.")
    max_drift_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Largest share of drifted features in the newest drift evaluation of a "
        "canary session (drift is not judged when none was evaluated).",
    )

    @classmethod
    def from_stored(cls, raw: Mapping[str, Any] | None) -> CanaryRule:
        """The rule a ``canaries.rule`` column holds; keys of fields since dropped (a
        stored ``max_error_rate``) are ignored, so an old canary still reads."""
        return cls.model_validate({k: v for k, v in (raw or {}).items() if k in cls.model_fields})


@dataclass(frozen=True, slots=True)
class ArmFigures:
    """What one arm did since the canary started, over the sessions of that arm."""

    sessions: int = 0
    windows: int = 0  # serving predictions
    rejected: int = 0  # rejected windows (contract, input) of the arm's sessions
    gated: int = 0  # epochs the arm's version's gate kept from being scored
    errors: int = 0  # windows the version raised on (the canary's, re-scored)
    estimated: dict[str, float | None] = field(default_factory=dict)
    measured: dict[str, float | None] = field(default_factory=dict)
    labels: int = 0
    drift_share: float | None = None

    @property
    def seen(self) -> int:
        return self.windows + self.rejected + self.gated + self.errors

    @property
    def rejection_rate(self) -> float | None:
        return (self.rejected + self.gated) / self.seen if self.seen else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.seen if self.seen else None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The rule's answer now, with why (one line per bound, failed or held)."""

    action: Action
    reasons: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def judge(rule: CanaryRule, canary: ArmFigures, champion: ArmFigures) -> Verdict:
    """Keep, promote or roll back, from the two arms' figures (pure)."""
    if canary.errors:  # workers roll back on the first raise; this covers a missed one
        return Verdict(
            "rollback",
            (
                f"error rate {canary.error_rate or 0.0:.3f}: raised on predict on "
                f"{canary.errors} windows (any raise rolls a canary back)",
            ),
        )
    if canary.windows < rule.windows:
        return Verdict("keep", (f"{canary.windows} of {rule.windows} canary windows served",))
    failed: list[str] = []
    held: list[str] = []

    def bound(ok: bool, text: str) -> None:
        (held if ok else failed).append(text)

    mine, theirs = canary.rejection_rate or 0.0, champion.rejection_rate or 0.0
    bound(
        mine - theirs <= rule.max_rejection_rate_delta,
        f"rejection rate {mine:.3f} vs champion {theirs:.3f} "
        f"(at most +{rule.max_rejection_rate_delta:.3f})",
    )
    if rule.min_estimated_balanced_accuracy is not None:
        est = canary.estimated.get("expected_balanced_accuracy")
        bound(
            est is not None and est >= rule.min_estimated_balanced_accuracy,
            f"estimated balanced accuracy {_fmt(est)} "
            f"(at least {rule.min_estimated_balanced_accuracy:.3f})",
        )
    if rule.min_measured_balanced_accuracy is not None and canary.labels >= rule.min_labels:
        got = canary.measured.get("balanced_accuracy")
        bound(
            got is not None and got >= rule.min_measured_balanced_accuracy,
            f"measured balanced accuracy {_fmt(got)} on {canary.labels} labels "
            f"(at least {rule.min_measured_balanced_accuracy:.3f})",
        )
    if rule.max_drift_share is not None and canary.drift_share is not None:
        bound(
            canary.drift_share <= rule.max_drift_share,
            f"drift share {canary.drift_share:.3f} (at most {rule.max_drift_share:.3f})",
        )
    if failed:
        return Verdict("rollback", tuple(failed))
    return Verdict("promote", (f"{canary.windows} canary windows served", *held))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


class CanaryEvent(BaseModel):
    """A ``models.events`` body for a change of canary state (routing key: the service).

    It carries the fields of ``neurostream.events.ModelEvent`` too, so a listener that
    parses every event as a ``ModelEvent`` still reads it; workers re-read the registry
    on any event."""

    model_config = ConfigDict(frozen=True)

    event: EventName
    service: str
    canary_id: int
    version_id: int = Field(description="The canary's version.")
    serving_version_id: int | None = Field(description="The champion after the change.")
    shadow_version_id: int | None = None
    reason: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def encode(self) -> bytes:
        return self.model_dump_json().encode()
