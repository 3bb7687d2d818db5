"""What a team would pick instead: one Celery task per window, same broker, same database.

The task does the same work as a neurostream worker (decode, featurize, classify with the
same model, write the prediction row idempotently) but per window, with Celery's default
JSON serializer (the body travels base64-encoded). Started by ``bench.suite``.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import psycopg
from celery import Celery

from neurostream.contract import decode
from neurostream.models.serving import ServingModel

app = Celery(
    "neurostream_bench",
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
)
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=64, task_acks_late=True)

_state: dict[str, Any] = {}


def _model() -> tuple[ServingModel, psycopg.Connection]:
    if "model" not in _state:
        conn = psycopg.connect(os.environ["BENCH_DATABASE_URL"], autocommit=True)
        version_id = int(os.environ["BENCH_MODEL_VERSION_ID"])
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        row = cur.execute("SELECT * FROM model_versions WHERE id = %s", [version_id]).fetchone()
        _state["model"] = ServingModel.from_row(row)  # type: ignore[arg-type]
        _state["conn"] = conn
    return _state["model"], _state["conn"]


@app.task(name="classify")
def classify(body_b64: str, headers: dict[str, Any]) -> None:
    model, conn = _model()
    window = decode(base64.b64decode(body_b64), headers)
    h = window.header
    pred = model.predict(window.data[None, ...], h.fs)
    conn.execute(
        "INSERT INTO predictions (session_id, seq, model_version_id, window_ts, service, kind,"
        " marker, predicted, score, proba, sent_at, worker_id) VALUES (%s, %s, %s,"
        " to_timestamp(%s), 'celery', %s, %s, %s, %s, %s, to_timestamp(%s), 'celery')"
        " ON CONFLICT DO NOTHING",
        [
            h.session_id,
            h.seq,
            model.version_id,
            h.t0,
            h.kind.value,
            h.marker,
            int(pred.predicted[0]),
            float(pred.score[0]),
            pred.proba[0].tolist(),
            h.sent_at or time.time(),
        ],
    )


def enqueue(items: list[tuple[bytes, dict[str, Any]]]) -> float:
    """Publish one task per window; returns tasks/s."""
    t = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for body, headers in items:
            classify.apply_async((base64.b64encode(body).decode(), headers), producer=producer)
    return len(items) / (time.perf_counter() - t)
