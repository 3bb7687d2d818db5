"""A live session through every part: BrainFlow synthetic board -> producer -> RabbitMQ ->
2 worker processes -> PostgreSQL, with the queue manager swapping the model mid-session."""

from __future__ import annotations

import socket

import pytest

from launcher.demo import CNN, LDA, DemoOptions, run_demo

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_live_oddball_session_with_two_workers_and_a_mid_session_swap(core) -> None:
    opts = DemoOptions(
        service="p300",
        workers=2,
        duration_s=30,
        swap_at=0.5,
        qm_port=free_port(),
        metrics_port=free_port(),
        train_seconds=400,
        second_s=15,
    )
    report = await run_demo(core, opts)
    # ~4 epochs/s for 30 s, less the first 0.5 s and the last epoch's tail
    assert report.confirmed >= 100
    assert report.predicted == report.confirmed == report.distinct_seq
    assert report.missing == [] and report.duplicated == 0 and report.rejected == 0
    labels = [v.label.split(":")[0] for v in report.versions]
    assert labels == [CNN, LDA]
    first_new = report.versions[1].first_seq
    assert report.versions[0].first_seq == 0
    # Two replicas swap independently: at most a few windows overlap the boundary.
    assert report.versions[0].last_seq < first_new + 10
    assert report.versions[1].last_seq == report.confirmed - 1
    assert report.swap_seen_after_s is not None and report.swap_seen_after_s < 5
    # Held-out: trained on a simulated session with another seed, scored on this live one
    # (the first half, before the producer shifts F7/F8).
    assert report.versions[0].roc_auc is not None and report.versions[0].roc_auc > 0.75
    assert report.roc_auc is not None and report.roc_auc > 0.65
    # The monitor flags the shifted channels and the drift rule fires.
    assert report.drift is not None
    # A 30 s session leaves ~35 windows per side, so a stray channel may cross the line;
    # the shifted ones must be flagged and drift the most.
    drift = report.drift["drift"]
    assert {"F7", "F8"} <= set(drift["drifted_channels"])
    ranked = sorted(drift["channels"], key=lambda c: c["statistic"], reverse=True)
    assert {c["name"] for c in ranked[:2]} == {"F7", "F8"}
    assert ranked[1]["statistic"] > 2 * sorted(c["statistic"] for c in ranked)[len(ranked) // 2]
    assert [a["state"] for a in report.drift["alerts"]][:1] == ["firing"]
    assert report.latency_ms["p50"] > 0

    # Act 2: labels collected during the session grew the training data; a retrain job
    # registered a challenger with lineage; its promotion swapped the serving model live.
    job = report.retrain_job
    assert job is not None and job["status"] == "succeeded"
    result = job["result"]
    assert result["model_name"] == LDA and result["version"] >= 2
    assert set(result["comparison"]["roc_auc"]) >= {"challenger", "champion"}
    second = report.second
    assert second is not None
    assert second.predicted == second.confirmed == second.distinct_seq and not second.missing
    versions = [v.label for v in second.versions]
    assert versions[0].startswith(f"{LDA}:") and versions[-1] == f"{LDA}:{result['version']}"
    assert second.swap_seen_after_s is not None and second.swap_seen_after_s < 5
