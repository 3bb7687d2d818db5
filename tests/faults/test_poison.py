"""Poison windows: each goes to the dead-letter queue with a reason, good ones flow on.

Wrong shape, NaN/Inf, wrong fs for the model's input_spec, an unknown schema version, a
truncated body and a body over ``max_window_bytes`` are interleaved with good windows.
Every poison window lands in ``svc.<service>.dead`` with an ``x-neurostream-reason`` header
and a ``rejections`` row; every good window is stored once. Throughput with and without
poison is printed, not asserted (benchmarks live in ``bench/``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aio_pika
import numpy as np
import pytest

from neurostream import topology
from neurostream.contract import Window, encode, make_window
from neurostream.settings import CoreSettings
from tests.factories import FS, synthetic_p300, unique
from tests.faults.conftest import counts, register_service, report, wait_stored
from workers.settings import WorkerSettings
from workers.worker import Worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]
N_GOOD = 1000


def good_windows(session: str, start: int, n: int) -> list[Window]:
    x, _ = synthetic_p300(n=n, channels=4, seed=start + 7)
    return [
        make_window(
            x[i],
            session_id=session,
            seq=start + i,
            t0=1.7e9 + (start + i) * 0.25,
            fs=FS,
            channels=[f"c{j}" for j in range(4)],
            kind="epoch",
            marker=1,
        )
        for i in range(n)
    ]


def poison(session: str, seq: int, kind: str, core: CoreSettings) -> tuple[bytes, dict]:
    """One bad window of each kind, keyed like a real one."""
    w = good_windows(session, seq, 1)[0]
    body, headers = encode(w)
    if kind == "shape":  # 8 channels where the model takes 4
        x = np.zeros((8, 200), np.float32)
        return encode(
            make_window(
                x,
                session_id=session,
                seq=seq,
                t0=1.7e9,
                fs=FS,
                channels=[f"x{i}" for i in range(8)],
            )
        )
    if kind == "nan":
        x = w.data.copy()
        x[1, 3] = np.nan
        x[2, 7] = np.inf
        return x.astype("<f4").tobytes(), headers
    if kind == "fs":  # the model's input_spec says 250 Hz
        return body, {**headers, "fs": "500.0"}
    if kind == "schema":
        return body, {**headers, "schema": 99}
    if kind == "truncated":
        return body[: len(body) // 2 + 1], headers
    if kind == "huge":
        return b"\x00" * (core.max_window_bytes + 4096), headers
    raise ValueError(kind)


KINDS = {
    "shape": "8 channels",
    "nan": "NaN or Inf",
    "fs": "fs 500.0",
    "schema": "unknown schema version 99",
    "truncated": "needs",
    "huge": "exceeds",
}


async def publish(channel, service: str, items: Sequence[Window | tuple[bytes, dict]]) -> None:
    ex = await channel.get_exchange(topology.WINDOWS_EXCHANGE)
    pending = []
    for item in items:
        body, headers = encode(item) if isinstance(item, Window) else item
        msg_id = f"{headers.get('session_id')}:{headers.get('seq')}"
        pending.append(
            ex.publish(aio_pika.Message(body, headers=headers, message_id=msg_id), service)
        )
        if len(pending) >= 200:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def test_poison_windows_are_dead_lettered_with_reasons_and_good_ones_flow(
    core: CoreSettings, lda4, channel
) -> None:
    svc = await register_service(core.database_url, lda4)
    await topology.declare_service(channel, svc["name"])
    worker = Worker(core, WorkerSettings(service=svc["name"], heartbeat_s=0.5))
    await worker.start()
    try:
        # Baseline: good windows only.
        clean = unique("s-clean")
        t0 = time.perf_counter()
        await publish(channel, svc["name"], good_windows(clean, 0, N_GOOD))
        c_clean = await wait_stored(core.database_url, clean, N_GOOD)
        clean_s = time.perf_counter() - t0

        # The same number of good windows with 6 x 10 poison windows interleaved.
        mixed = unique("s-mixed")
        items: list[Window | tuple[bytes, dict]] = []
        bad_seq: dict[int, str] = {}
        seq = 0
        for i, w in enumerate(good_windows(mixed, 0, N_GOOD)):
            items.append(
                make_window(
                    w.data,
                    session_id=mixed,
                    seq=seq,
                    t0=w.header.t0,
                    fs=FS,
                    channels=w.header.channels,
                    kind="epoch",
                    marker=1,
                )
            )
            seq += 1
            if i % 16 == 8 and len(bad_seq) < 60:
                kind = list(KINDS)[len(bad_seq) % len(KINDS)]
                items.append(poison(mixed, seq, kind, core))
                bad_seq[seq] = kind
                seq += 1
        t0 = time.perf_counter()
        await publish(channel, svc["name"], items)
        c_mixed = await wait_stored(core.database_url, mixed, N_GOOD)
        mixed_s = time.perf_counter() - t0
        deadline = time.monotonic() + 20
        while (await counts(core.database_url, mixed, N_GOOD)).dead < len(bad_seq):
            assert time.monotonic() < deadline, "rejections not all recorded"
            await asyncio.sleep(0.1)
    finally:
        await worker.close()

    dead = await channel.declare_queue(
        topology.dead_queue(svc["name"]), durable=True, arguments={"x-queue-type": "quorum"}
    )
    reasons: dict[int, str] = {}
    while True:
        msg = await dead.get(no_ack=True, fail=False, timeout=5)
        if msg is None:
            break
        reasons[int(msg.headers["seq"])] = str(msg.headers[topology.REASON_HEADER])
    c_mixed = await counts(core.database_url, mixed, N_GOOD)
    report(
        "poison-windows",
        sent=N_GOOD + len(bad_seq),
        good=N_GOOD,
        poison=len(bad_seq),
        stored=c_mixed.rows,
        duplicated=c_mixed.duplicated,
        dead_lettered=len(reasons),
        rejection_rows=c_mixed.dead,
        clean_windows_per_s=round(N_GOOD / clean_s),
        mixed_good_windows_per_s=round(N_GOOD / mixed_s),
    )
    for kind in KINDS:
        sample = next(s for s, k in bad_seq.items() if k == kind)
        print(f"  {kind:<9} -> {reasons.get(sample)}")
    assert c_clean.distinct == c_clean.rows == N_GOOD
    assert c_mixed.distinct == c_mixed.rows == N_GOOD and c_mixed.duplicated == 0
    assert set(reasons) == set(bad_seq) and c_mixed.dead == len(bad_seq)
    for s, kind in bad_seq.items():
        assert KINDS[kind] in reasons[s], (kind, reasons[s])
    assert worker.counters.rejected == len(bad_seq)
