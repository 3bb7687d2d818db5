"""Latency: publish -> prediction row at fixed rates, against the broker's own share.

At each rate the same publisher first feeds a bare consumer (``bench.bare_consumer``: the
broker hop alone), then one neurostream LDA worker; ``added`` is the worker's percentile
minus the broker's. Every window is stamped ``sent_at`` as it goes on the wire.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
import urllib.request

import aio_pika
import numpy as np
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from bench.common import serve_model, table, train, wait_count, wait_workers, windows
from bench.common import worker_procs as workers
from neurostream import topology
from neurostream.settings import CoreSettings

QUANTILES = (50, 95, 99)


async def publish_at(core: CoreSettings, service: str, session: str, rate: int, n: int) -> float:
    """Publish ``n`` windows at ``rate``/s (confirmed); returns the achieved rate."""
    items = windows(session, n)  # pre-encoded, as bench.common fills queues
    conn = await aio_pika.connect_robust(core.amqp_url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await topology.declare_service(ch, service)
        ex = await ch.get_exchange(topology.WINDOWS_EXCHANGE)

        async def send(body: bytes, headers: dict[str, object], message_id: str) -> None:
            # Stamped as it goes on the wire: a publisher running behind schedule must not
            # count its own backlog as the worker's latency.
            headers["sent_at"] = repr(time.time())
            message = aio_pika.Message(body, headers=headers, message_id=message_id)  # type: ignore[arg-type]
            await ex.publish(message, service)

        tasks = []
        start = time.perf_counter()
        for seq in range(n):
            delay = start + seq / rate - time.perf_counter()
            # Behind schedule, still yield so the sends already created go out.
            await asyncio.sleep(max(delay, 0))
            body, headers = items[seq]
            tasks.append(asyncio.ensure_future(send(body, headers, f"{session}:{seq}")))
        await asyncio.gather(*tasks)
        return n / (time.perf_counter() - start)


async def broker_latency(core: CoreSettings, rate: int, n: int) -> dict[str, float]:
    """Publish -> receipt by a bare consumer process: the floor any worker starts from."""
    service = "lat-bare"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bare_consumer",
        core.amqp_url,
        service,
        str(n),
        stdout=subprocess.PIPE,
        limit=1 << 26,  # the latencies come back as one JSON line
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    achieved = await publish_at(core, service, f"bare-{rate}", rate, n)
    lat = np.array(json.loads(await proc.stdout.readline()))
    await proc.wait()
    return {"achieved": achieved} | {f"p{q}": float(np.percentile(lat, q)) for q in QUANTILES}


METRICS_PORT = 9119


def processing_counts(port: int = METRICS_PORT) -> dict[float, float]:
    """Cumulative bucket counts of the worker's ``neurostream_worker_processing_seconds``
    (received -> written and acked: its own share, the broker's hop excluded)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "neurostream_worker_processing_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    out[le] = out.get(le, 0.0) + sample.value
    return out


def processing_share(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Of the windows between two scrapes: the share settled within 5 ms, and the bucket
    bound under which 99% were (a histogram gives bounds, not exact percentiles)."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta[math.inf]
    p99 = next(le for le, c in delta.items() if c >= 0.99 * total)
    return {"within_5ms": delta[0.005] / total, "own_p99_le": p99 * 1000}


async def worker_latency(core: CoreSettings, rate: int, n: int, session: str) -> dict[str, float]:
    """Publish -> prediction row with a running ``lat`` worker."""
    before = processing_counts()
    achieved = await publish_at(core, "lat", session, rate, n)
    await wait_count(core, session, n)
    own = processing_share(before, processing_counts())
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        rows = await (
            await c.execute(
                "SELECT (extract(epoch FROM predicted_at) - extract(epoch FROM sent_at))::float8 "
                "FROM predictions WHERE session_id = %s",
                [session],
            )
        ).fetchall()
    lat = np.array([r[0] for r in rows]) * 1000
    return (
        {"achieved": achieved, "n": len(lat)}
        | {f"p{q}": float(np.percentile(lat, q)) for q in QUANTILES}
        | own
    )


async def latency_table(
    core: CoreSettings, rates: list[int], seconds: float, rounds: int = 3
) -> dict[int, dict[str, float]]:
    """One LDA worker; at each rate the broker alone, then the worker, ``rounds`` times in
    alternation; print the medians and return the worker's per rate with ``added_p50``/
    ``added_p99`` (medians of the per-round differences).

    One round's p99 at 1k/s swings from 5 to 85 ms on the 2-core VM, for the bare
    consumer as much as for the worker (the broker's quorum-queue log shares the disk and
    the cores), so a single pair of runs says little. ``own`` is the worker's histogram of
    received -> written and acked, which leaves the broker's hop out altogether."""
    await serve_model(core, "lat", train())
    rows = []
    out: dict[int, dict[str, float]] = {}
    med = statistics.median
    with workers(core, "lat", 1, metrics_port=str(METRICS_PORT)):
        await wait_workers(core, "lat")
        await worker_latency(core, 200, 200, "lat-warmup")  # first batches pay lazy set-up
        for rate in rates:
            n = int(rate * seconds)
            bare, work = [], []
            for i in range(rounds):
                bare.append(await broker_latency(core, rate, n))
                work.append(await worker_latency(core, rate, n, f"lat-{rate}-{i}"))
            r = {k: med(w[k] for w in work) for k in work[0]}
            b = {k: med(x[k] for x in bare) for k in bare[0]}
            out[rate] = r | {
                f"added_p{q}": med(w[f"p{q}"] - x[f"p{q}"] for w, x in zip(work, bare, strict=True))
                for q in (50, 99)
            }
            rows.append(
                [rate, f"{r['achieved']:,.0f}", int(sum(w["n"] for w in work))]
                + [f"{b[f'p{q}']:.1f}" for q in (50, 99)]
                + [f"{r[f'p{q}']:.1f}" for q in QUANTILES]
                + [f"{out[rate][f'added_p{q}']:.1f}" for q in (50, 99)]
                + [f"{r['own_p99_le']:g}", f"{100 * r['within_5ms']:.2f}%"]
                + [
                    " ".join(
                        f"{x['p99']:.0f}/{w['p99']:.0f}" for w, x in zip(work, bare, strict=True)
                    )
                ]
            )
    table(
        "Latency publish -> prediction row (ms), one worker, LDA; broker = bare consumer, "
        f"added = worker - broker; medians over {rounds} alternating rounds",
        [
            "target/s",
            "achieved/s",
            "windows",
            "broker p50",
            "broker p99",
            "p50",
            "p95",
            "p99",
            "added p50",
            "added p99",
            "own p99 <=",
            "own <= 5 ms",
            "p99 per round (broker/worker)",
        ],
        rows,
    )
    return out
