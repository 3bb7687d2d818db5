"""Spine benchmark: one worker's windows/s (LDA) against the bare broker ceiling, and
publish -> prediction-row latency at fixed rates. Run: .venv/bin/python -m bench.spine"""

from __future__ import annotations

import argparse
import asyncio
import time

import aio_pika
import numpy as np
import psycopg

from bench.common import (
    bench_core,
    fill,
    serve_model,
    table,
    train,
    wait_count,
    windows,
    worker_procs,
)
from neurostream import topology
from neurostream.contract import encode, make_window
from neurostream.settings import CoreSettings


async def ceiling(core: CoreSettings, n: int, prefetch: int) -> float:
    """A bare aio-pika consume-and-ack loop, same messages and prefetch: the most possible."""
    service = "ceiling"
    await fill(core, service, windows("ceil", n))
    conn = await aio_pika.connect_robust(core.amqp_url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=prefetch)
        q = await topology.declare_service(ch, service)
        done = asyncio.Event()
        seen = 0
        t0 = 0.0

        async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen, t0
            if seen == 0:
                t0 = time.perf_counter()
            seen += 1
            await msg.ack()
            if seen == n:
                done.set()

        await q.consume(on)
        await done.wait()
        return (n - 1) / (time.perf_counter() - t0)


async def worker_rate(
    core: CoreSettings,
    n: int,
    prefetch: int,
    batch: int,
    *,
    family: str = "sklearn-lda",
    replicas: int = 1,
    tag: str = "",
) -> dict[str, float]:
    """Windows/s of ``replicas`` worker processes draining a pre-filled queue of ``n``."""
    service = f"tp{prefetch}x{batch}{family[:5]}{tag}"
    await serve_model(core, service, train(family))
    session = f"tp-{service}"
    await fill(core, service, windows(session, n))
    with worker_procs(core, service, replicas, prefetch=str(prefetch), batch_max=str(batch)):
        await wait_count(core, session, n)
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        first, last, got = await (
            await c.execute(
                "SELECT extract(epoch FROM min(predicted_at))::float8, "
                "extract(epoch FROM max(predicted_at))::float8, count(*) "
                "FROM predictions WHERE session_id = %s",
                [session],
            )
        ).fetchone()  # type: ignore[misc]
    return {"rate": (got - 1) / (last - first), "stored": got}


async def wait_worker(core: CoreSettings, service: str, timeout_s: float = 60) -> None:
    """Until a worker of ``service`` heartbeats with a model loaded (start-up is seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with await psycopg.AsyncConnection.connect(core.database_url) as c:
            row = await (
                await c.execute(
                    "SELECT count(*) FROM workers WHERE service = %s AND status = 'running' "
                    "AND model_version_id IS NOT NULL",
                    [service],
                )
            ).fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no worker of {service} became ready in {timeout_s} s")


async def latency(
    core: CoreSettings, rate: int, seconds: float, *, session: str | None = None
) -> dict[str, float]:
    """Publish at ``rate`` windows/s (stamped at publish) to a running worker."""
    service = "lat"
    session = session or f"lat-{rate}"
    rng = np.random.default_rng(2)
    data = rng.normal(0, 10, (16, 200)).astype(np.float32)
    chans = [f"ch{i}" for i in range(16)]
    n = int(rate * seconds)
    conn = await aio_pika.connect_robust(core.amqp_url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(topology.WINDOWS_EXCHANGE)
        tasks = []
        start = time.perf_counter()
        for seq in range(n):
            due = start + seq / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            w = make_window(
                data,
                session_id=session,
                seq=seq,
                t0=1.7e9 + seq,
                fs=250.0,
                channels=chans,
                kind="epoch",
                marker=2,
            )
            body, headers = encode(w)
            tasks.append(
                asyncio.ensure_future(
                    ex.publish(
                        aio_pika.Message(body, headers=headers, message_id=f"{session}:{seq}"),
                        service,
                    )
                )
            )
        await asyncio.gather(*tasks)
        achieved = n / (time.perf_counter() - start)
    await wait_count(core, session, n)
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        rows = await (
            await c.execute(
                "SELECT (extract(epoch FROM predicted_at) - extract(epoch FROM sent_at))::float8 "
                "FROM predictions WHERE session_id = %s",
                [session],
            )
        ).fetchall()
    lat = np.array([r[0] for r in rows]) * 1000
    return {
        "achieved": achieved,
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "n": len(lat),
    }


async def latency_table(core: CoreSettings, rates: list[int], seconds: float) -> None:
    """One LDA worker; publish at each rate in turn and print p50/p95/p99."""
    await serve_model(core, "lat", train())
    rows = []
    with worker_procs(core, "lat", 1):
        await wait_worker(core, "lat")
        await latency(core, 200, 1.0, session="lat-warmup")  # first batches pay lazy set-up
        for rate in rates:
            r = await latency(core, rate, seconds)
            rows.append(
                [rate, f"{r['achieved']:,.0f}", r["n"]]
                + [f"{r[q]:.1f}" for q in ("p50", "p95", "p99")]
            )
    table(
        "Latency publish -> prediction row (ms), one worker, LDA",
        ["target/s", "achieved/s", "windows", "p50", "p95", "p99"],
        rows,
    )


async def main(n: int, rates: list[int], seconds: float) -> None:
    core = bench_core("ns_bench_spine")
    ceil = await ceiling(core, n, 512)
    rows = [["bare consume+ack (ceiling)", 512, "-", f"{ceil:,.0f}", "1.00"]]
    for prefetch, batch in ((512, 256), (64, 16), (16, 1)):
        r = await worker_rate(core, n, prefetch, batch)
        rows.append(
            [
                "neurostream worker, LDA",
                prefetch,
                batch,
                f"{r['rate']:,.0f}",
                f"{r['rate'] / ceil:.2f}",
            ]
        )
    table(
        f"Throughput, {n:,} epochs of 16 ch x 200 samples (float32), one process",
        ["consumer", "prefetch", "batch_max", "windows/s", "x ceiling"],
        rows,
    )

    await latency_table(core, rates, seconds)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--windows", type=int, default=20_000)
    ap.add_argument("--rates", type=int, nargs="+", default=[100, 500, 1000, 2000])
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    asyncio.run(main(a.windows, a.rates, a.seconds))
