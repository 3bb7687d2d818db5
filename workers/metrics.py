"""Prometheus metrics of a worker (served on ``metrics_port`` when set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WINDOWS = Counter(
    "neurostream_worker_windows_total", "Windows predicted and durably written", ["service"]
)
REJECTED = Counter(
    "neurostream_worker_rejected_total", "Windows sent to the dead-letter queue", ["service"]
)
DUPLICATES = Counter(
    "neurostream_worker_redelivered_total",
    "Predictions already stored (redelivered windows, not counted twice)",
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
