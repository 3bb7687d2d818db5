"""Prometheus metrics of a worker (served on ``metrics_port`` when set)."""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

WINDOWS = Counter(
    "neurostream_worker_windows_total", "Windows predicted and durably written", ["service"]
)
REJECTED = Counter(
    "neurostream_worker_rejected_total", "Windows sent to the dead-letter queue", ["service"]
)
GATED = Counter(
    "neurostream_worker_gated_total",
    "Epochs the serving version's artifact gate kept from being scored (stored in gated)",
    ["service"],
)
DUPLICATES = Counter(
    "neurostream_worker_duplicates_total",
    "Rows a write found already stored (no-op inserts of redelivered or resent windows)",
    ["service"],
)
REDELIVERED = Counter(
    "neurostream_worker_redelivered_total",
    "Deliveries the broker marked redelivered (their first consumer's channel closed unacked)",
    ["service"],
)
BATCH = Histogram(
    "neurostream_worker_batch_size",
    "Windows per micro-batch",
    ["service"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
LATENCY = Histogram(
    "neurostream_worker_latency_seconds",
    "Producer publish to prediction written",
    ["service"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PROCESSING = Histogram(
    "neurostream_worker_processing_seconds",
    "Window received by the worker to written (or dead-lettered) and acked: the worker's "
    "own share of the latency, the broker's hop excluded",
    ["service"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
MODEL_VERSION = Gauge(
    "neurostream_worker_model_version_id", "Model version id in service", ["service", "role"]
)
WRITE_FAILURES = Counter(
    "neurostream_worker_write_failures_total", "Batch writes retried (database outage)", ["service"]
)
QUEUE_DEPTH = Gauge(
    "neurostream_worker_queue_depth",
    "Ready windows in svc.<service>, sampled on each heartbeat (passive queue declare)",
    ["service"],
)
GC_PAUSES = Histogram(
    "neurostream_worker_gc_pause_seconds",
    "Cyclic garbage collector pauses (the event loop stands still meanwhile)",
    ["generation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)

_gc_started: list[float] = []
_gc_pauses: deque[tuple[int, float]] = deque(maxlen=10_000)


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    # Runs inside the collector, in whichever thread allocated: it must not take a lock.
    # prometheus_client's locks are not reentrant and its collect() allocates under one, so
    # observing here could deadlock; the pauses wait in a deque for flush_gc_pauses().
    if phase == "start":
        _gc_started.append(time.perf_counter())
    elif _gc_started:
        _gc_pauses.append((int(info["generation"]), time.perf_counter() - _gc_started.pop()))


def observe_gc_pauses() -> None:
    """Time every collection, for ``flush_gc_pauses`` to move into ``GC_PAUSES``.

    A full collection walks the ~290k objects that torch, scikit-learn and SciPy bring
    (~140 ms here); under a steady 1k windows/s none ran in 300 s (bench), so the heap is
    not frozen, but a tail that lines up with generation-2 pauses shows here first.
    """
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def flush_gc_pauses() -> None:
    """Record the pauses timed since the last flush (from ordinary code, not the collector)."""
    while _gc_pauses:
        generation, seconds = _gc_pauses.popleft()
        GC_PAUSES.labels(str(generation)).observe(seconds)


HEARTBEAT = Gauge(
    "neurostream_worker_last_heartbeat_timestamp_seconds",
    "Unix time of the worker's last heartbeat-loop pass; its age, not `up`, tells a stuck "
    "event loop (the metrics endpoint runs in its own thread and keeps answering)",
    ["service"],
)
MODELS_REFUSED = Counter(
    "neurostream_worker_models_refused_total",
    "Model versions refused: failed to load (stage=load) or raised on predict (stage=predict)",
    ["service", "stage"],
)


def beat(service: str) -> None:
    """Stamp the heartbeat and give every per-service series a start at 0.

    A labelled series only appears on its first observation, and ``rate``/``increase``
    need two samples, so without the zero the first write retry or refused model of a
    worker would never reach an alert, nor a first burst of windows a latency quantile.
    """
    HEARTBEAT.labels(service).set_to_current_time()
    for metric in (WINDOWS, REJECTED, GATED, DUPLICATES, REDELIVERED, WRITE_FAILURES):
        metric.labels(service)
    for histogram in (BATCH, LATENCY, PROCESSING):
        histogram.labels(service)
    for stage in ("load", "predict"):
        MODELS_REFUSED.labels(service, stage)
