"""Garbage-collector pauses are exported per generation."""

from __future__ import annotations

import gc

from workers import metrics


def _sample(generation: str, suffix: str = "_count") -> float:
    samples = list(metrics.GC_PAUSES.collect())[0].samples
    return next(
        s.value for s in samples if s.name.endswith(suffix) and s.labels["generation"] == generation
    )


def test_gc_pauses_are_observed_per_generation() -> None:
    metrics.observe_gc_pauses()
    metrics.observe_gc_pauses()  # idempotent
    assert gc.callbacks.count(metrics._on_gc) == 1
    metrics.GC_PAUSES.labels("0")
    metrics.GC_PAUSES.labels("2")
    before = _sample("0"), _sample("2"), _sample("2", "_sum")
    gc.collect(0)
    gc.collect()
    assert _sample("2") == before[1]  # timed, but recorded only by a flush (no lock in gc)
    metrics.flush_gc_pauses()
    # At least the two asked for (plus any the allocations here triggered).
    assert _sample("0") >= before[0] + 1
    assert _sample("2") >= before[1] + 1
    assert _sample("2", "_sum") > before[2]  # a duration, not only a count
