"""A bare aio-pika consumer in its own process: no work, one ack per window.

``bench.latency`` publishes to it at the same rates as to a worker; the time from the
``sent_at`` stamp to its receipt is the broker's own share of the latency (persistent
messages on a quorum queue, same machine), so neurostream's added latency is the rest.
Prints ``ready`` once consuming, then one JSON list of latencies in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aio_pika
import uvloop

from neurostream import topology


def _seconds(value: object) -> float:
    return float(value.decode() if isinstance(value, bytes | bytearray) else value)  # type: ignore[arg-type]


async def consume(amqp_url: str, service: str, n: int, prefetch: int) -> list[float]:
    conn = await aio_pika.connect_robust(amqp_url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=prefetch)
        queue = await topology.declare_service(ch, service)
        lat: list[float] = []
        done = asyncio.Event()

        async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            lat.append((time.time() - _seconds((msg.headers or {})["sent_at"])) * 1000)
            await msg.ack()
            if len(lat) >= n:
                done.set()

        await queue.consume(on)
        print("ready", flush=True)
        await done.wait()
        return lat


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("amqp_url")
    ap.add_argument("service")
    ap.add_argument("n", type=int)
    ap.add_argument("--prefetch", type=int, default=512)
    a = ap.parse_args()
    lat = uvloop.run(consume(a.amqp_url, a.service, a.n, a.prefetch))  # as the workers
    print(json.dumps(lat), flush=True)
