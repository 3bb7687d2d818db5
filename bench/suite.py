"""All benchmark scenarios side by side in one run (issue 6). Prints tables, asserts nothing.

    .venv/bin/python -m bench.suite            # about 15 minutes on 2 cores

1. ceiling: bare aio-pika consume+ack, same messages and prefetch; and the same bare loop
   on the worker's own receive path (workers/deliveries.py, one multiple-ack per 64)
2. neurostream worker: LDA and EEGNet windows/s, ratio to both ceilings
3. Celery: one task per window, same broker and database, windows/s and latency
4. latency publish -> prediction row at fixed rates until saturation
5. scaling: 1 vs 2 worker replicas
6. drift evaluation over 10k windows (bench/drift.py, when present)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import uvloop

from bench.common import (
    bench_core,
    serve_model,
    steady_rate,
    table,
    train,
    wait_count,
    windows,
)
from bench.latency import latency_table
from bench.spine import ceiling, worker_rate
from neurostream.settings import CoreSettings


@contextmanager
def celery_worker(core: CoreSettings, version_id: int) -> Iterator[None]:
    # The same one-native-thread cap as a neurostream worker (workers/compute.py), so the
    # baseline is not slowed by spinning BLAS/OpenMP threads.
    env = dict(os.environ) | {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "BENCH_CELERY_BROKER": core.amqp_url,
        "BENCH_DATABASE_URL": core.database_url,
        "BENCH_MODEL_VERSION_ID": str(version_id),
    }
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_app",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        p.terminate()
        p.wait(timeout=60)


async def celery_version(core: CoreSettings) -> int:
    """Point the Celery app at the bench vhost and register the LDA it serves."""
    os.environ["BENCH_CELERY_BROKER"] = core.amqp_url
    from bench import celery_app

    celery_app.app.conf.broker_url = core.amqp_url
    return await serve_model(core, "celery", train())


async def celery_throughput(core: CoreSettings, version_id: int, n: int, session: str) -> float:
    """Windows/s of one Celery worker draining ``n`` pre-queued tasks."""
    from bench import celery_app

    celery_app.enqueue(windows(session, n))
    with celery_worker(core, version_id):
        await wait_count(core, session, n)
    return (await steady_rate(core, session))[0]


async def celery_latency(core: CoreSettings, version_id: int) -> tuple[float, float]:
    """p50/p99 publish -> row (ms) at a fixed, sustainable 100 tasks/s."""
    from bench import celery_app

    lat_session = "celery-lat"
    items = windows(lat_session, 500)
    with celery_worker(core, version_id):
        celery_app.enqueue(windows("celery-warmup", 50))  # start-up and lazy set-up
        await wait_count(core, "celery-warmup", 50)
        t0 = time.perf_counter()
        for i, (body, headers) in enumerate(items):
            delay = t0 + i / 100 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            headers = dict(headers) | {"sent_at": repr(time.time())}
            celery_app.enqueue([(body, headers)])
        await wait_count(core, lat_session, len(items))
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        row = await (
            await c.execute(
                "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY "
                "(extract(epoch FROM predicted_at) - extract(epoch FROM sent_at))::float8 * 1000) "
                "FROM predictions WHERE session_id = %s",
                [lat_session],
            )
        ).fetchone()
    assert row is not None
    return float(row[0][0]), float(row[0][1])


def _spread(ratios: list[float]) -> str:
    return ", ".join(f"{r:.2f}" for r in ratios)


async def main(n: int, rates: list[int], seconds: float, rounds: int) -> None:
    core = bench_core("ns_bench_suite")
    celery_id = await celery_version(core)
    # The machine is noisy (the bare ceiling alone moved by a third within one run, and
    # everything by half over minutes), so the consumers alternate round by round and each
    # ratio is the median of the ratios within a round.
    ceil, raw, lda, cel = [], [], [], []
    for i in range(rounds):
        ceil.append(await ceiling(core, n, 512))
        raw.append(await ceiling(core, n, 512, "raw"))
        lda.append((await worker_rate(core, n, 512, 256, tag=f"r{i}"))["rate"])
        cel.append(await celery_throughput(core, celery_id, n // 4, f"celery-tp{i}"))
    cnn = (await worker_rate(core, n // 4, 512, 256, family="torch-eegnet"))["rate"]
    ceil_cnn = await ceiling(core, n, 512)
    x_ceil = [w / c for w, c in zip(lda, ceil, strict=True)]
    x_raw = [w / c for w, c in zip(lda, raw, strict=True)]
    x_raw_ceil = [r / c for r, c in zip(raw, ceil, strict=True)]
    x_cel = [w / k for w, k in zip(lda, cel, strict=True)]
    med = statistics.median
    table(
        f"Throughput (windows/s), one process each, {n:,} epochs of 16 ch x 200 samples; "
        f"medians over {rounds} alternating rounds",
        ["consumer", "windows/s", "x ceiling", "x Celery", "per round"],
        [
            ["bare aio-pika consume+ack (ceiling)", f"{med(ceil):,.0f}", "1.00", "-", "-"],
            [
                "bare worker receive path, multi-ack",
                f"{med(raw):,.0f}",
                f"{med(x_raw_ceil):.2f}",
                "-",
                f"x ceiling {_spread(x_raw_ceil)}",
            ],
            [
                "neurostream worker, LDA",
                f"{med(lda):,.0f}",
                f"{med(x_ceil):.2f}",
                f"{med(x_cel):.1f}",
                f"x ceiling {_spread(x_ceil)}; x Celery {_spread(x_cel)}; "
                f"x its receive path {_spread(x_raw)}",
            ],
            [
                "neurostream worker, EEGNet",
                f"{cnn:,.0f}",
                f"{cnn / ceil_cnn:.2f}",
                "-",
                "vs the ceiling run right after it",
            ],
            ["Celery, one task per window, LDA", f"{med(cel):,.0f}", "-", "1.0", "-"],
        ],
    )
    cel_p50, cel_p99 = await celery_latency(core, celery_id)
    table(
        "Celery latency publish -> row at 100 windows/s (ms)",
        ["p50", "p99"],
        [[f"{cel_p50:.1f}", f"{cel_p99:.1f}"]],
    )

    one, two = [], []
    for i in range(rounds):
        one.append((await worker_rate(core, n, 512, 256, replicas=1, tag=f"s1r{i}"))["rate"])
        two.append((await worker_rate(core, n, 512, 256, replicas=2, tag=f"s2r{i}"))["rate"])
    x_two = [b / a for a, b in zip(one, two, strict=True)]
    table(
        "Scaling, LDA, pre-filled queue (rate while every replica writes)",
        ["replicas", "windows/s", "speed-up", "per round"],
        [
            [1, f"{med(one):,.0f}", "1.00", "-"],
            [2, f"{med(two):,.0f}", f"{med(x_two):.2f}", _spread(x_two)],
        ],
    )

    lat = await latency_table(core, rates, seconds, rounds)
    rows = [
        ["worker vs Celery, LDA", ">= 10x", f"{med(x_cel):.1f}x"],
        ["worker vs bare ceiling, LDA", ">= 0.70", f"{med(x_ceil):.2f}"],
        ["worker vs a bare loop on its own receive path", "-", f"{med(x_raw):.2f}"],
        ["2 replicas vs 1", ">= 1.8x", f"{med(x_two):.2f}x"],
    ]
    if 1000 in lat:
        rows.append(["added p99 at 1k windows/s", "<= 5 ms", f"{lat[1000]['added_p99']:.1f} ms"])
    table("Targets (issue 6)", ["figure", "target", "this run"], rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--windows", type=int, default=20_000)
    ap.add_argument("--rates", type=int, nargs="+", default=[100, 1000, 2000, 4000])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3, help="Alternating throughput rounds.")
    a = ap.parse_args()
    # The event loop the workers run on (workers/settings.py), so the ceiling is fair.
    uvloop.run(main(a.windows, a.rates, a.seconds, a.rounds))
    if importlib.util.find_spec("bench.drift") is not None:
        subprocess.run([sys.executable, "-m", "bench.drift"], check=False)
