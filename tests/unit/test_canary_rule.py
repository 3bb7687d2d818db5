"""The pure parts of canaries (neurostream/canary.py): the sticky hash and the rule's verdicts."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from neurostream.canary import ArmFigures, CanaryEvent, CanaryRule, arm_of, bucket, check_share
from neurostream.events import parse_model_event


def test_bucket_is_the_first_eight_bytes_of_sha256_and_is_stable() -> None:
    digest = hashlib.sha256(b"session-42").digest()
    assert bucket("session-42") == int.from_bytes(digest[:8], "big") / 2**64
    assert bucket("session-42") == bucket("session-42")
    assert 0.0 <= bucket("") < 1.0


def test_arm_follows_the_share_and_a_larger_share_only_adds_sessions() -> None:
    ids = [f"s-{i}" for i in range(10_000)]
    at10 = {s for s in ids if arm_of(s, 0.1) == "canary"}
    at30 = {s for s in ids if arm_of(s, 0.3) == "canary"}
    assert at10 < at30  # a session on the canary at 10% is on it at 30% too
    assert abs(len(at30) / len(ids) - 0.3) < 0.02 and abs(len(at10) / len(ids) - 0.1) < 0.01
    assert all(arm_of(s, 0.3) == ("canary" if bucket(s) < 0.3 else "champion") for s in ids)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5])
def test_a_share_outside_the_open_unit_interval_is_refused(share: float) -> None:
    assert check_share(share) == f"share must be strictly between 0 and 1, got {share}"


def test_a_share_inside_is_accepted() -> None:
    assert check_share(0.3) is None


def figures(**kw: Any) -> ArmFigures:
    base: dict[str, Any] = {
        "sessions": 3,
        "windows": 100,
        "estimated": {"expected_balanced_accuracy": 0.8},
    }
    return ArmFigures(**(base | kw))


def judge(rule: CanaryRule, canary: ArmFigures, champion: ArmFigures | None = None):
    from neurostream.canary import judge as j

    return j(rule, canary, champion or figures())


def test_the_rule_keeps_a_canary_until_it_served_its_windows() -> None:
    v = judge(CanaryRule(windows=200), figures(windows=150))
    assert v.action == "keep" and v.reasons == ("150 of 200 canary windows served",)


def test_errors_roll_back_before_the_window_count() -> None:
    v = judge(CanaryRule(windows=200), figures(windows=10, errors=2))
    assert v.action == "rollback"
    assert v.reason == (
        "error rate 0.167: raised on predict on 2 windows (any raise rolls a canary back)"
    )
    assert judge(CanaryRule(windows=200), figures(windows=10, errors=0)).action == "keep"


def test_there_is_no_error_tolerance_and_an_old_stored_rule_still_reads() -> None:
    with pytest.raises(ValueError, match="extra"):
        CanaryRule.model_validate({"windows": 10, "max_error_rate": 0.2})
    stored = {"windows": 10, "max_error_rate": 0.0, "min_labels": 5}
    assert CanaryRule.from_stored(stored) == CanaryRule(windows=10, min_labels=5)
    assert CanaryRule.from_stored(None) == CanaryRule()


def test_promotes_when_every_bound_holds() -> None:
    rule = CanaryRule(windows=100, min_estimated_balanced_accuracy=0.7, max_drift_share=0.5)
    v = judge(rule, figures(rejected=5, drift_share=0.25), figures(rejected=4))
    assert v.action == "promote"
    assert v.reasons[0] == "100 canary windows served"
    assert "rejection rate 0.048 vs champion 0.038 (at most +0.050)" in v.reasons
    assert "estimated balanced accuracy 0.800 (at least 0.700)" in v.reasons


def test_rolls_back_on_an_estimate_below_the_bound_naming_it() -> None:
    rule = CanaryRule(windows=100, min_estimated_balanced_accuracy=0.9)
    v = judge(rule, figures())
    assert v.action == "rollback"
    assert v.reasons == ("estimated balanced accuracy 0.800 (at least 0.900)",)
    # No estimate at all (nothing scorable) does not pass a bound that is set.
    assert judge(rule, figures(estimated={})).reasons == (
        "estimated balanced accuracy n/a (at least 0.900)",
    )


def test_rejections_are_judged_against_the_champions() -> None:
    rule = CanaryRule(windows=100, max_rejection_rate_delta=0.05)
    # 20 of 120 rejected (0.167) vs the champion's 10 of 110 (0.091): +0.076 > 0.05.
    v = judge(rule, figures(rejected=10, gated=10), figures(rejected=10))
    assert v.action == "rollback"
    assert v.reasons == ("rejection rate 0.167 vs champion 0.091 (at most +0.050)",)
    assert judge(rule, figures(rejected=10), figures(rejected=10)).action == "promote"


def test_measured_bound_applies_only_with_enough_labels_and_drift_only_when_evaluated() -> None:
    rule = CanaryRule(windows=100, min_measured_balanced_accuracy=0.7, min_labels=20)
    few = figures(labels=5, measured={"balanced_accuracy": 0.5})
    enough = figures(labels=40, measured={"balanced_accuracy": 0.5})
    assert judge(rule, few).action == "promote"
    assert judge(rule, enough).reasons == (
        "measured balanced accuracy 0.500 on 40 labels (at least 0.700)",
    )
    drift = CanaryRule(windows=100, max_drift_share=0.3)
    assert judge(drift, figures(drift_share=None)).action == "promote"
    assert judge(drift, figures(drift_share=0.6)).reasons == ("drift share 0.600 (at most 0.300)",)


def test_a_canary_event_reads_as_a_model_event_too() -> None:
    event = CanaryEvent(
        event="canary_rolled_back",
        service="p300",
        canary_id=7,
        version_id=12,
        serving_version_id=11,
        reason="raised on predict",
    )
    parsed = parse_model_event(event.encode())
    assert (parsed.service, parsed.serving_version_id, parsed.reason) == (
        "p300",
        11,
        "raised on predict",
    )


def test_the_rule_refuses_unknown_keys_and_bad_bounds() -> None:
    with pytest.raises(ValueError, match="extra"):
        CanaryRule.model_validate({"windows": 10, "max_errors": 1})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        CanaryRule(windows=0)
