"""Spine benchmark: one worker's windows/s (LDA) against the bare broker ceiling at several
prefetch/batch settings, and publish -> prediction-row latency at fixed rates.
Run: .venv/bin/python -m bench.spine"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import cast

import aio_pika
import uvloop
from aiormq.abc import DeliveredMessage

from bench.common import (
    assign_now,
    bench_core,
    fill,
    serve_model,
    steady_rate,
    table,
    train,
    wait_count,
    wait_workers,
    windows,
    worker_procs,
)
from bench.latency import latency_table
from neurostream import topology
from neurostream.settings import CoreSettings
from workers.deliveries import Consumer


async def ceiling(core: CoreSettings, n: int, prefetch: int, path: str = "aio-pika") -> float:
    """A bare consume-and-ack loop, same messages and prefetch, no work.

    ``aio-pika``: aio-pika's ``Queue.consume`` with one ack per window (the issue's ceiling).
    ``aio-pika-multi``: the same with one multiple-ack per 64 windows, as a worker acks.
    ``raw``: the worker's own receive path (``workers.deliveries``: aiormq deliveries on the
    robust channel, one multiple-ack per 64 windows), the most a worker can do on it here.
    """
    service = f"ceiling-{path}"
    await fill(core, service, windows("ceil", n))
    conn = await aio_pika.connect_robust(core.amqp_url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=prefetch)
        q = await topology.declare_service(ch, service)
        done = asyncio.Event()
        seen = 0
        t0 = 0.0

        def tick() -> None:
            nonlocal seen, t0
            if seen == 0:
                t0 = time.perf_counter()
            seen += 1
            if seen == n:
                done.set()

        if path.startswith("aio-pika"):
            every = 64 if path == "aio-pika-multi" else 1

            async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
                tick()
                if seen % every == 0 or seen == n:
                    await msg.ack(multiple=every > 1)

            await q.consume(on)
        else:

            async def on_raw(msg: DeliveredMessage) -> None:
                tick()
                if seen % 64 == 0 or seen == n:
                    tag = cast(int, msg.delivery.delivery_tag)  # type: ignore[union-attr]  # a Deliver
                    await msg.channel.basic_ack(tag, multiple=True)

            consumer = Consumer(ch, q.name, on_raw)
            await consumer.start()
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
    await serve_model(core, service, train(family), assign=False)
    session = f"tp-{service}"
    await fill(core, service, windows(session, n))
    with worker_procs(core, service, replicas, prefetch=str(prefetch), batch_max=str(batch)):
        # Replicas idle until the model is assigned, then all load it at once.
        await wait_workers(core, service, replicas, loaded=False)
        await assign_now(core, service)
        await wait_count(core, session, n)
    rate, got = await steady_rate(core, session)
    return {"rate": rate, "stored": got}


async def main(n: int, rates: list[int], seconds: float) -> None:
    core = bench_core("ns_bench_spine")
    ceil = await ceiling(core, n, 512)
    multi = await ceiling(core, n, 512, "aio-pika-multi")
    raw = await ceiling(core, n, 512, "raw")
    rows = [
        ["bare aio-pika consume+ack (ceiling)", 512, "-", f"{ceil:,.0f}", "1.00"],
        ["bare aio-pika consume + multi-ack", 512, "-", f"{multi:,.0f}", f"{multi / ceil:.2f}"],
        ["bare worker receive path + multi-ack", 512, "-", f"{raw:,.0f}", f"{raw / ceil:.2f}"],
    ]
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
    # The event loop the workers run on (workers/settings.py), so the ceiling is fair.
    uvloop.run(main(a.windows, a.rates, a.seconds))
