"""Soak: the spine at a steady share of its own drain ceiling for many minutes, watching for
anything that grows. Prints tables; asserts nothing.

    .venv/bin/python -m bench.soak [--minutes 30] [--share 0.7] [--workers 2]

First the drain ceiling, in the same run: ``--workers`` worker processes (LDA, the workers'
default prefetch and batch) drain a pre-filled queue of producer-shaped epochs
(``bench.spine.worker_rate``). Then the soak, on a fresh service: ``--producers`` producer
processes, each one session's ``WindowPublisher`` (confirms, as the product publishes),
publish at ``share`` x ceiling in total; ``--workers`` fresh ``python -m workers``; the
monitoring API and the ML data API (``python -m monitoring_api``/``ml_data_api``, the data
API without its consumers) polled every ``--poll-s`` as the dashboard polls (its page and
``/overview``) and as a client pages predictions (``/predictions``).

Every minute one row: windows confirmed by the broker and stored, each process's RSS
(``VmRSS``), the service queue's depth (ready + unacked, ``rabbitmqctl``), the p99 of
``sent_at`` -> stored (the prediction row's ``predicted_at``) over the rows stored in that
minute, the slowest API call, the dead-letter queue's depth and the rejections, and the
tables' sizes (``pg_total_relation_size``). At the end the growth per hour (a least-squares
line over the minutes after ``--warmup``) and a verdict. Library logs go to ``--log``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import httpx
import numpy as np
import psycopg
import uvloop
from psycopg import sql

from bench.common import (
    N_CH,
    N_S,
    bench_core,
    epoch,
    serve_model,
    table,
    train,
    wait_workers,
    worker_procs,
)
from bench.spine import worker_rate
from neurostream import infra, topology
from neurostream.settings import CoreSettings
from producer.publisher import WindowPublisher
from workers.settings import WorkerSettings

NAME = "ns_bench_soak"  # database and vhost
SERVICE = "soak"
PREFETCH = WorkerSettings.model_fields["prefetch"].default
BATCH = WorkerSettings.model_fields["batch_max"].default
TABLES = ("predictions", "gated", "rejections", "workers", "sessions", "decisions")
TICK_S = 0.01  # the producers' pacing step
# Verdict thresholds: growth per hour above these counts as "grows" (noise on a shared
# 2-core VM is a few MB of RSS and a few hundred windows of queue depth).
RSS_MB_H = 20.0
QUEUE_H = 1000.0

log = logging.getLogger("bench.soak")


# --- producers: one session each, paced, in their own processes ---------------------------


def produce(
    amqp_url: str,
    session: str,
    rate: float,
    total: int,
    counts: Any,
    stop: MpEvent,
    log_path: str,
) -> None:
    """A producer process: one session at ``rate`` windows/s until ``stop`` (``rate`` 0:
    ``total`` windows as fast as the publisher goes, then exit). ``counts`` holds the
    windows due so far and those the broker confirmed. Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(filename=log_path, level=logging.INFO)
    uvloop.run(_produce(amqp_url, session, rate, total, counts, stop))


async def _produce(
    amqp_url: str, session: str, rate: float, total: int, counts: Any, stop: MpEvent
) -> None:
    # bench.common's epochs, as its ``windows`` makes them but built as they fall due
    # (a soak's windows do not fit in memory pre-encoded); a few bases so not all are equal.
    bases = np.random.default_rng(1).normal(0, 10, (8, N_CH, N_S)).astype(np.float32)
    pub = WindowPublisher(amqp_url, SERVICE)
    await pub.start()
    t_wall, start, seq = time.time(), time.monotonic(), 0
    step = 1 / rate if rate > 0 else 0.001
    while not stop.is_set() and not (total and seq >= total):
        due = int((time.monotonic() - start) * rate) if rate > 0 else total
        counts[0] = due
        while seq < due:
            # Blocks while the publisher's buffer is full: a producer that cannot keep up
            # falls behind (``due`` - confirmed grows), it does not drop windows.
            await pub.publish_window(
                epoch(bases[seq % len(bases)], session, seq, t_wall + seq * step)
            )
            seq += 1
            if seq % 256 == 0:
                counts[1] = pub.windows_confirmed
        counts[1] = pub.windows_confirmed
        await asyncio.sleep(TICK_S)
    await pub.close(flush_s=60)
    counts[1] = pub.windows_confirmed


@dataclass
class Producers:
    """The producer processes and their [due, confirmed] counters."""

    procs: Sequence[mp.process.BaseProcess]
    counts: list[Any]
    stop: MpEvent

    def confirmed(self) -> int:
        return sum(int(c[1]) for c in self.counts)

    def behind(self) -> int:
        """Windows due by now that the broker has not confirmed (the producers' backlog)."""
        return max(0, sum(int(c[0]) - int(c[1]) for c in self.counts))

    def join(self, timeout_s: float) -> None:
        for p in self.procs:
            p.join(timeout_s)

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(90)
            if p.is_alive():
                p.terminate()
                p.join(10)


@contextmanager
def producers(
    core: CoreSettings, sessions: list[str], rate: float, log_path: str, total: int = 0
) -> Iterator[Producers]:
    """One process per session, ``rate`` windows/s in all (0: ``total`` in all, unpaced)."""
    ctx = mp.get_context("spawn")  # the parent runs an event loop: no fork
    stop = ctx.Event()
    counts = [ctx.Array("q", 2) for _ in sessions]
    n = len(sessions)
    procs = [
        ctx.Process(
            target=produce,
            args=(core.amqp_url, s, rate / n, total // n, counts[i], stop, log_path),
            daemon=True,
        )
        for i, s in enumerate(sessions)
    ]
    out = Producers(procs, counts, stop)
    try:
        for p in procs:
            p.start()
        yield out
    finally:
        out.close()


# --- the APIs, as their own processes ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_procs(core: CoreSettings, log_file: Any) -> Iterator[dict[str, tuple[str, int]]]:
    """``python -m monitoring_api`` and ``python -m ml_data_api`` (no consumers: the
    archiver is not part of the spine) on free ports: {name: (base URL, pid)}. In their own
    process group, so Ctrl-C reaches only this script, which stops them."""
    ports = {"monitoring_api": free_port(), "ml_data_api": free_port()}
    env = dict(os.environ) | {
        "NEUROSTREAM_DATABASE_URL": core.database_url,
        "NEUROSTREAM_AMQP_URL": core.amqp_url,
        "NEUROSTREAM_MON_PORT": str(ports["monitoring_api"]),
        "NEUROSTREAM_MON_LOG_LEVEL": "warning",
        "NEUROSTREAM_DATA_PORT": str(ports["ml_data_api"]),
        "NEUROSTREAM_DATA_CONSUMERS": "false",
        "NEUROSTREAM_DATA_LOG_LEVEL": "warning",
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", name],
            env=env,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        for name in ports
    }
    try:
        for name, port in ports.items():
            deadline = time.monotonic() + 90
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except OSError:
                    if procs[name].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{name} did not start; see the log") from None
                    time.sleep(0.2)
        yield {n: (f"http://127.0.0.1:{ports[n]}", procs[n].pid) for n in ports}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass
class Poller:
    """The light API load: the dashboard's page and its ``/overview``, a page of
    predictions, every ``every_s``; each call's duration and status kept."""

    urls: dict[str, tuple[str, int]]
    every_s: float
    calls: list[tuple[float, float, int]] = field(default_factory=list)  # (at, s, status)

    def paths(self) -> list[str]:
        mon, data = self.urls["monitoring_api"][0], self.urls["ml_data_api"][0]
        return [
            f"{mon}/dashboard",
            f"{mon}/overview?service={SERVICE}&window_s=600&bucket_s=5",
            f"{data}/predictions?service={SERVICE}&limit=100",
        ]

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while True:
                for url in self.paths():
                    t = time.perf_counter()
                    try:
                        status = (await http.get(url)).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.calls.append((time.time(), time.perf_counter() - t, status))
                await asyncio.sleep(self.every_s)

    def minute(self, t0: float, t1: float) -> tuple[float, int]:
        """The slowest call (ms) in [t0, t1) and the calls that failed."""
        inside = [(s, st) for at, s, st in self.calls if t0 <= at < t1]
        slowest = max((s for s, _ in inside), default=float("nan")) * 1000
        return slowest, sum(st != 200 for _, st in inside)


# --- what one minute looked like ----------------------------------------------------------


def rss_mb(pid: int) -> float:
    """``VmRSS`` of a live process (MB), NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def worker_pids(core: CoreSettings) -> list[int]:
    """The running workers' pids, from their ids (``<host>-<pid>-<hex>``, the default)."""
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        rows = await (
            await c.execute(
                "SELECT worker_id FROM workers WHERE service = %s AND status = 'running' "
                "ORDER BY started_at",
                [SERVICE],
            )
        ).fetchall()
    return [int(r[0].rsplit("-", 2)[1]) for r in rows]


async def queue_depths(vhost: str) -> dict[str, int]:
    """Ready + unacked messages per queue of ``vhost`` (AMQP's passive declare counts only
    the ready ones)."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_ready",
        "messages_unacknowledged", "--formatter", "json",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return {
        q["name"]: int(q["messages_ready"]) + int(q["messages_unacknowledged"])
        for q in json.loads(out or b"[]")
    }


@dataclass
class Minute:
    minute: int
    confirmed: int
    behind: int
    stored: int
    rss: list[float]  # workers, then monitoring API, data API
    queue: int
    p50_ms: float
    p99_ms: float
    api_ms: float
    api_errors: int
    dead: int
    rejected: int
    sizes_mb: dict[str, float]  # TABLES and "db"


async def db_minute(core: CoreSettings, t0: float, t1: float) -> dict[str, Any]:
    """Rows stored in [t0, t1), their latency, the rejections so far and the sizes."""
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        n, p50, p99 = await (
            await c.execute(
                """SELECT count(*),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY lat),
                       percentile_cont(0.99) WITHIN GROUP (ORDER BY lat)
                   FROM (SELECT extract(epoch FROM predicted_at - sent_at) * 1000 AS lat
                         FROM predictions WHERE service = %s AND role = 'serving'
                           AND predicted_at >= to_timestamp(%s)
                           AND predicted_at < to_timestamp(%s)) m""",
                [SERVICE, t0, t1],
            )
        ).fetchone()  # type: ignore[misc]
        (rejected,) = await (
            await c.execute("SELECT count(*) FROM rejections WHERE service = %s", [SERVICE])
        ).fetchone()  # type: ignore[misc]
        sizes = await (
            await c.execute(
                "SELECT t, pg_total_relation_size(t::regclass) FROM unnest(%s::text[]) t",
                [list(TABLES)],
            )
        ).fetchall()
        (db,) = await (await c.execute("SELECT pg_database_size(current_database())")).fetchone()  # type: ignore[misc]
    mb = {t: s / 2**20 for t, s in sizes} | {"db": db / 2**20}
    nan = float("nan")
    return {
        "stored": int(n),
        "p50": nan if p50 is None else float(p50),
        "p99": nan if p99 is None else float(p99),
        "rejected": int(rejected),
        "sizes": mb,
    }


def minute_row(m: Minute) -> list[object]:
    return (
        [m.minute, f"{m.confirmed:,}", f"{m.behind:,}", f"{m.stored:,}"]
        + [f"{r:.0f}" for r in m.rss]
        + [f"{m.queue:,}", f"{m.p50_ms:.1f}", f"{m.p99_ms:.1f}"]
        + [f"{m.api_ms:.0f}" + (f" ({m.api_errors} err)" if m.api_errors else "")]
        + [m.dead, m.rejected]
        + [f"{m.sizes_mb[t]:.1f}" for t in ("predictions", "gated", "rejections", "workers")]
        + [f"{m.sizes_mb['db']:.0f}"]
    )


# --- the run -------------------------------------------------------------------------------


def per_hour(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over minutes ``xs``, per hour (NaN under 2 points)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y == y]
    if len(pts) < 2:
        return float("nan")
    return float(np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)[0]) * 60


def drop(core: CoreSettings) -> None:
    """Remove the run's database and vhost (bench_core's drop, at the end)."""
    infra.delete_vhost(NAME)
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME)))


async def stored_rate(core: CoreSettings, prefix: str) -> tuple[float, int]:
    """Rows/s from the first to the last stored row of the sessions named ``prefix*``."""
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        n, span = await (
            await c.execute(
                "SELECT count(*), extract(epoch FROM max(predicted_at) - min(predicted_at))"
                "::float8 FROM predictions WHERE service = %s AND session_id LIKE %s",
                [SERVICE, f"{prefix}%"],
            )
        ).fetchone()  # type: ignore[misc]
    return (n - 1) / span if span else float("nan"), int(n)


async def soak(args: argparse.Namespace, log_path: str, log_file: Any) -> None:
    core = bench_core(NAME)
    try:
        drained = await worker_rate(
            core, args.ceiling_windows, PREFETCH, BATCH, replicas=args.workers, tag="soak"
        )
        await serve_model(core, SERVICE, train())
        with ExitStack() as stack:
            stack.enter_context(worker_procs(core, SERVICE, args.workers))
            await wait_workers(core, SERVICE, args.workers)
            pids = await worker_pids(core)
            # The spine end to end: the soak's own producers unpaced, its workers draining.
            ceil_sessions = [f"ceil-{i}" for i in range(args.producers)]
            with producers(core, ceil_sessions, 0, log_path, args.ceiling_windows) as p:
                p.join(600)
                sent = p.confirmed()
            await settle(core, "ceil-", sent)
            e2e, _ = await stored_rate(core, "ceil-")
            ceiling = drained["rate"] if args.basis == "drain" else min(drained["rate"], e2e)
            rate = args.share * ceiling
            table(
                f"Ceilings, {args.ceiling_windows:,} epochs each; {args.workers} workers (LDA, "
                f"prefetch {PREFETCH}, batch_max {BATCH})",
                ["ceiling", "windows/s", "note"],
                [
                    ["drain: the workers empty a pre-filled queue", f"{drained['rate']:,.0f}", ""],
                    [
                        f"end to end: {args.producers} unpaced producers (WindowPublisher, "
                        "confirms) and the workers at once",
                        f"{e2e:,.0f}",
                        "",
                    ],
                    [
                        f"soak: {args.share} x {args.basis} ceiling",
                        f"{rate:,.0f}",
                        f"{rate / args.producers:,.0f}/s per producer",
                    ],
                ],
            )
            urls = stack.enter_context(api_procs(core, log_file))
            pids += [urls["monitoring_api"][1], urls["ml_data_api"][1]]
            sessions = [f"soak-{i}" for i in range(args.producers)]
            prods = stack.enter_context(producers(core, sessions, rate, log_path))
            poller = Poller(urls, args.poll_s)
            poll_task = asyncio.create_task(poller.run())
            stack.callback(poll_task.cancel)
            rows = await minutes(core, args, rate, prods, poller, pids)
            prods.close()
            sent = prods.confirmed()
            stored = await settle(core, "soak-", sent)
        report(args, ceiling, rate, rows, sent, stored)
    finally:
        if not args.keep:
            drop(core)


async def minutes(
    core: CoreSettings,
    args: argparse.Namespace,
    rate: float,
    prods: Producers,
    poller: Poller,
    pids: list[int],
) -> list[Minute]:
    """One row a minute, printed as it comes."""
    header = (
        ["min", "confirmed", "behind", "stored"]
        + [f"w{i + 1} MB" for i in range(args.workers)]
        + ["mon MB", "data MB", "queue", "p50 ms", "p99 ms", "api max ms", "dead", "rej"]
        + ["pred MB", "gated MB", "rej MB", "wkrs MB", "db MB"]
    )
    print(
        f"\nSoak: {args.minutes} min at {rate:,.0f} windows/s ({60 * rate:,.0f} a minute); "
        "behind = due but not confirmed (producers); MB: RSS, then table sizes; queue = "
        "ready + unacked; p50/p99: sent_at -> stored of the minute's rows",
        flush=True,
    )
    widths = [max(len(h), 6) for h in header]
    print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)), flush=True)
    rows: list[Minute] = []
    start, last = time.time(), 0
    for m in range(1, args.minutes + 1):
        t0, t1 = start + 60 * (m - 1), start + 60 * m
        await asyncio.sleep(max(0.0, t1 + 0.5 - time.time()))  # the minute's commits landed
        confirmed, behind = prods.confirmed(), prods.behind()
        rss = [rss_mb(p) for p in pids]
        depths = await queue_depths(NAME)
        db = await db_minute(core, t0, t1)
        api_ms, api_errors = poller.minute(t0, t1)
        row = Minute(
            m,
            confirmed - last,
            behind,
            db["stored"],
            rss,
            depths.get(topology.service_queue(SERVICE), 0),
            db["p50"],
            db["p99"],
            api_ms,
            api_errors,
            depths.get(topology.dead_queue(SERVICE), 0),
            db["rejected"],
            db["sizes"],
        )
        last = confirmed
        rows.append(row)
        cells = minute_row(row)
        print(
            "  " + "  ".join(str(x).rjust(w) for x, w in zip(cells, widths, strict=True)),
            flush=True,
        )
    return rows


async def settle(core: CoreSettings, prefix: str, sent: int, timeout_s: float = 120) -> int:
    """Distinct windows of the sessions ``prefix*`` stored once ``sent`` are (or when
    ``timeout_s`` has passed)."""
    deadline, got = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        async with await psycopg.AsyncConnection.connect(core.database_url) as c:
            (got,) = await (
                await c.execute(
                    "SELECT count(DISTINCT (session_id, seq)) FROM predictions "
                    "WHERE service = %s AND role = 'serving' AND session_id LIKE %s",
                    [SERVICE, f"{prefix}%"],
                )
            ).fetchone()  # type: ignore[misc]
        if got >= sent:
            break
        await asyncio.sleep(1)
    return int(got)


def report(
    args: argparse.Namespace,
    ceiling: float,
    rate: float,
    rows: list[Minute],
    sent: int,
    stored: int,
) -> None:
    warm = min(args.warmup, max(0, len(rows) - 2))  # keep at least two points to fit
    fit = rows[warm:]
    xs = [r.minute for r in fit]
    names = [f"worker {i + 1}" for i in range(args.workers)] + ["monitoring API", "data API"]
    first, last = rows[0], rows[-1]
    growth: list[list[object]] = []
    rss_h = []
    for i, name in enumerate(names):
        h = per_hour(xs, [r.rss[i] for r in fit])
        rss_h.append(h)
        growth.append(
            [f"RSS {name} (MB)", f"{fit[0].rss[i]:.1f}", f"{last.rss[i]:.1f}", f"{h:+.1f}"]
        )
    span = f"minute {first.minute} vs {last.minute}"
    growth.append(
        [f"p99 sent_at -> stored (ms), {span}", f"{first.p99_ms:.1f}", f"{last.p99_ms:.1f}", ""]
    )
    growth.append(
        [f"p50 sent_at -> stored (ms), {span}", f"{first.p50_ms:.1f}", f"{last.p50_ms:.1f}", ""]
    )
    growth.append(
        [f"slowest API call (ms), {span}", f"{first.api_ms:.0f}", f"{last.api_ms:.0f}", ""]
    )
    behind_h = per_hour(xs, [float(r.behind) for r in fit])
    growth.append(
        ["producers behind", f"{fit[0].behind:,}", f"{last.behind:,}", f"{behind_h:+,.0f}"]
    )
    queue_h = per_hour(xs, [float(r.queue) for r in fit])
    growth.append(["queue depth", f"{fit[0].queue:,}", f"{last.queue:,}", f"{queue_h:+,.0f}"])
    dead_h = per_hour(xs, [float(r.dead) for r in fit])
    growth.append(["dead-letter queue", f"{fit[0].dead}", f"{last.dead}", f"{dead_h:+,.0f}"])
    rej_h = per_hour(xs, [float(r.rejected) for r in fit])
    growth.append(["rejections", f"{fit[0].rejected}", f"{last.rejected}", f"{rej_h:+,.0f}"])
    table_h = {}
    for t in (*TABLES, "db"):
        table_h[t] = per_hour(xs, [r.sizes_mb[t] for r in fit])
        growth.append(
            [
                f"{t} (MB)",
                f"{fit[0].sizes_mb[t]:.1f}",
                f"{last.sizes_mb[t]:.1f}",
                f"{table_h[t]:+.1f}",
            ]
        )
    table(
        f"Growth per hour: least squares over minutes {xs[0]}-{xs[-1]} (the first {warm} are "
        "warm-up)",
        ["what", "start", "end", "per hour"],
        growth,
    )
    achieved = float(np.mean([r.confirmed for r in fit])) / 60
    per_min = [r.stored for r in fit]
    bytes_per_row = (
        table_h["predictions"] * 2**20 / (60 * float(np.mean(per_min))) if per_min else 0.0
    )
    print(
        f"\n  target {rate:,.0f} windows/s ({args.share} x {ceiling:,.0f}); achieved "
        f"{achieved:,.0f} confirmed/s after warm-up; {sent:,} confirmed, "
        f"{stored:,} stored ({sent - stored:,} not stored); predictions grow "
        f"{bytes_per_row:,.0f} B per stored window"
    )
    growing = [f"{n} RSS {h:+.0f} MB/h" for n, h in zip(names, rss_h, strict=True) if h > RSS_MB_H]
    if achieved < 0.95 * rate or (behind_h > QUEUE_H and last.behind > rate):
        growing.append(
            f"producers behind ({achieved:,.0f} of {rate:,.0f} windows/s confirmed, "
            f"{last.behind:,} due and unconfirmed)"
        )
    if queue_h > QUEUE_H and last.queue > args.workers * PREFETCH:
        growing.append(f"queue depth {queue_h:+,.0f}/h (not keeping up)")
    if last.dead or last.rejected:
        growing.append(f"dead letters {last.dead}, rejections {last.rejected}")
    growing += [
        f"{t} {table_h[t]:+.1f} MB/h" for t in ("workers", "gated", "rejections") if table_h[t] > 1
    ]
    if sent > stored:
        growing.append(f"{sent - stored:,} confirmed windows not stored")
    expected = f"predictions +{table_h['predictions']:,.0f} MB/h (one row per window, expected)"
    short = f" (fits over {len(fit)} minutes: noise, not trends)" if len(fit) < 5 else ""
    print(
        "  verdict: "
        + ("GROWS: " + "; ".join(growing) if growing else "nothing grows")
        + f"; {expected}; p99 {first.p99_ms:.1f} -> {last.p99_ms:.1f} ms{short}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--share", type=float, default=0.7, help="of the drain ceiling, <= 0.7")
    ap.add_argument("--workers", type=int, default=2, help="worker replicas")
    ap.add_argument("--producers", type=int, default=2, help="producer processes (sessions)")
    ap.add_argument("--ceiling-windows", type=int, default=20_000, help="per ceiling")
    ap.add_argument(
        "--basis",
        choices=["lower", "drain"],
        default="lower",
        help="the ceiling --share applies to: the lower of drain and end to end, or drain",
    )
    ap.add_argument("--warmup", type=int, default=2, help="minutes left out of the fits")
    ap.add_argument("--poll-s", type=float, default=5.0, help="API polling period")
    ap.add_argument("--keep", action="store_true", help="keep the database and vhost")
    ap.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "neurostream-soak.log"))
    a = ap.parse_args()
    if not 0 < a.share <= 0.7:
        ap.error("--share must be in (0, 0.7]")
    if a.minutes < 1 or a.workers < 1 or a.producers < 1:
        ap.error("--minutes, --workers and --producers must be at least 1")
    with open(a.log, "a") as log_file:
        logging.basicConfig(stream=log_file, level=logging.INFO)
        print(f"library logs: {a.log}", flush=True)
        try:
            # The event loop the workers run on (workers/settings.py), as bench.spine.
            uvloop.run(soak(a, a.log, log_file))
        except KeyboardInterrupt:
            print("\ninterrupted; workers, APIs and producers stopped, database dropped")


if __name__ == "__main__":
    main()
