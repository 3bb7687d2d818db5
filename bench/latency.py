"""Latency: publish -> prediction row at fixed rates, and acquisition -> result end to end.

``latency_table`` (run by ``bench.spine`` and ``bench.suite``): at each rate the same
publisher first feeds a bare consumer (``bench.bare_consumer``: the broker hop alone), then
one neurostream LDA worker; ``added`` is the worker's percentile minus the broker's. Every
window is stamped ``sent_at`` as it goes on the wire.

``python -m bench.latency`` (about 3 minutes; ``--seconds``, ``--sessions 1 10``): from the
acquisition of an epoch's last sample to its prediction, and of a trial's last epoch's
last sample to its decision, received by a pylsl inlet in another process on the
session's ``PredictionOutlet`` and ``DecisionOutlet``, for 1, 10 and 100 concurrent P300
speller sessions. A session is the producer's own pieces on one event loop: a source
(``LslSource`` reading a pylsl outlet that another process fills in real time, stamped on
the LSL clock; or a simulated board whose samples are stamped with the wall time they fall
due), a ``Cutter``, a ``WindowPublisher``, both outlets; N sessions run as asyncio tasks in
min(N, cores) producer processes. One real worker process (``python -m workers``, LDA)
scores the epochs and its decider (``workers.decider``) decides each trial. The broker's
and the worker's shares come from the window's ``sent_at``, the prediction's
``predicted_at`` and the decision's ``decided_at`` (PostgreSQL); the bare-broker baseline
(publish -> consume of a window-sized message on a quorum queue) runs in the same run.
Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aio_pika
import numpy as np
import psycopg
import pylsl
import uvloop
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb

from bench.common import (
    FS,
    N_CH,
    N_S,
    bench_core,
    serve_model,
    table,
    train,
    wait_count,
    wait_workers,
    windows,
)
from bench.common import worker_procs as workers
from bench.lsl import quiet_liblsl
from neurostream import topology
from neurostream.contract import Window
from neurostream.decisions import SpellerLayout
from neurostream.geometry import EpochGeometry
from neurostream.settings import CoreSettings
from producer.board import Chunk
from producer.lsl import LslSource, StreamQuery
from producer.outlet import DecisionOutlet, PredictionOutlet, ResultOutlet
from producer.publisher import WindowPublisher
from producer.session import Cutter
from producer.settings import ProducerSettings

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


# --- end to end: acquisition -> prediction and decision at an LSL subscriber ---------------
#
# ``python -m bench.latency`` runs this part (``latency_table`` above is what bench.spine and
# bench.suite run). Sessions are P300 spellers: 6x6 grid, rows coded 1-6, columns 7-12,
# every code flashed once per repetition in a seeded order, ``REPETITIONS`` repetitions a
# trial, a P300 on the target row's and column's flashes. The stimulus program stamps each
# flash's trial into its marker (``code + 100 * (trial + 1)``), which the bench's session
# loop turns back into the window's ``marker`` and ``trial`` (the producer has no speller
# paradigm for a real source): that is the only step not the producer's own.

E2E_SERVICE = "e2e"
REPETITIONS = 2  # per trial: the fixed rule decides after the 2nd
RULES = f"fixed:{REPETITIONS},posterior:0.9:{REPETITIONS}"
FIXED_RULE = f"fixed-{REPETITIONS}"
PAUSE_S = 0.5  # between trials
E2E_FS, E2E_CH = FS, N_CH  # bench.common's epochs: the served LDA's input
LEAD_S = 1.0  # stream start to the first flash
TRIAL_CODE = 100  # marker = code + TRIAL_CODE * (trial + 1)
POLL_S = 0.04  # ProducerSettings.poll_s: the session loop's wait when nothing came
MARKER_DELAY_S = 0.05  # LslSource's hold-back for late markers (the producer's default 0.25)
BARE_RATE, BARE_N = 100, 500  # the bare-broker baseline: window-sized messages


@dataclass(frozen=True)
class Flash:
    at_s: float  # from the stream's start
    code: int
    trial: int
    target: bool


def schedule(soa_s: float, seconds: float, seed: int) -> tuple[list[Flash], list[int]]:
    """The flashes of whole trials that fit in ``seconds``, and each trial's target symbol."""
    layout = SpellerLayout.grid(6, 6)
    rng = np.random.default_rng(seed)
    flashes: list[Flash] = []
    targets: list[int] = []
    t = LEAD_S
    per_trial = REPETITIONS * len(layout.codes) * soa_s
    while t + per_trial + 1.0 < seconds:  # + an epoch's length: its last flash is cut too
        symbol = int(rng.integers(layout.n_symbols))
        hit = set(layout.targets(symbol))
        for _ in range(REPETITIONS):
            for code in rng.permutation(layout.codes):
                flashes.append(Flash(t, int(code), len(targets), int(code) in hit))
                t += soa_s
        targets.append(symbol)
        t += PAUSE_S
    return flashes, targets


def signal(flashes: list[Flash], seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``seconds`` of 16-channel EEG (noise, a P300 after each target flash) and the marker
    channel: what a headset and a stimulus program produce together."""
    n = int(seconds * E2E_FS)
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 10, (E2E_CH, n)).astype(np.float32)
    markers = np.zeros(n)
    t = np.arange(int(0.8 * E2E_FS)) / E2E_FS
    bump = (6 * np.exp(-((t - 0.4) ** 2) / (2 * 0.06**2))).astype(np.float32)  # 300 ms after
    for f in flashes:
        i = round(f.at_s * E2E_FS)
        markers[i] = f.code + TRIAL_CODE * (f.trial + 1)
        if f.target:
            data[:, i - 25 : i - 25 + bump.size] += bump[: max(0, n - i + 25)]
    return data, markers


def untag(window: Window) -> Window:
    """The window as a speller paradigm would cut it: the raw code and its trial."""
    m = window.header.marker
    if m is None or m < TRIAL_CODE:
        return window
    header = window.header.model_copy(
        update={"marker": m % TRIAL_CODE, "trial": m // TRIAL_CODE - 1}
    )
    return replace(window, header=header)


# --- the processes on the other side: the headset + stimulus program, and the subscriber


def push_lsl(name: str, soa_s: float, seconds: float, seed: int) -> None:
    """An LSL EEG outlet and a marker outlet for one session: on ``go`` (stdin), every sample
    pushed as it falls due, stamped with its due time (``local_clock()``), each flash's
    marker on its sample; ends after ``seconds`` or when stdin closes."""
    info = pylsl.StreamInfo(name, "EEG", E2E_CH, E2E_FS, pylsl.cf_float32, name)
    chans = info.desc().append_child("channels")
    for i in range(E2E_CH):
        ch = chans.append_child("channel")
        ch.append_child_value("label", f"ch{i}")
        ch.append_child_value("type", "EEG")
        ch.append_child_value("unit", "microvolts")
    eeg = pylsl.StreamOutlet(info)
    marker_info = pylsl.StreamInfo(
        f"{name}-markers", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, f"{name}-m"
    )
    markers_out = pylsl.StreamOutlet(marker_info)
    flashes, _ = schedule(soa_s, seconds, seed)
    data, markers = signal(flashes, seconds, seed)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    t0 = pylsl.local_clock()
    sent, n = 0, data.shape[1]
    while sent < n:
        due = min(n, int((pylsl.local_clock() - t0) * E2E_FS) + 1)
        if due > sent:
            eeg.push_chunk(data[:, sent:due].T.copy(), t0 + (due - 1) / E2E_FS)
            for i in (np.flatnonzero(markers[sent:due]) + sent).tolist():
                markers_out.push_sample([int(markers[i])], t0 + i / E2E_FS)
            sent = due
        time.sleep(max(0.0, t0 + sent / E2E_FS - pylsl.local_clock()))
    print("done", flush=True)
    sys.stdin.read()  # outlets stay up until the session has read its last samples


def subscribe(source_ids: list[str]) -> None:
    """Inlets on the given result outlets, a thread each blocking in ``pull_sample``: prints
    ``ready`` once all are open, then, when stdin closes, one JSON line of
    [outlet index, first channel (seq or trial), wall time of receipt] per sample."""
    offset = time.time() - pylsl.local_clock()
    found: dict[str, pylsl.StreamInfo] = {}
    deadline = time.monotonic() + 60
    # One id at a time: a bulk resolve of hundreds of outlets loses replies.
    while len(found) < len(source_ids) and time.monotonic() < deadline:
        for sid in (s for s in source_ids if s not in found):
            for info in pylsl.resolve_byprop("source_id", sid, 1, 2.0):
                found[sid] = info
    inlets = [pylsl.StreamInlet(found[s], processing_flags=0) for s in source_ids]
    for inlet in inlets:
        inlet.open_stream(10.0)
    got: list[tuple[int, float, float]] = []
    stop = threading.Event()

    def pull(i: int, inlet: pylsl.StreamInlet) -> None:
        while not stop.is_set():
            sample, _ = inlet.pull_sample(0.2)
            if sample is not None:
                got.append((i, sample[0], pylsl.local_clock() + offset))

    threads = [threading.Thread(target=pull, args=x, daemon=True) for x in enumerate(inlets)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join(2)
    print(json.dumps(got), flush=True)


# --- one producer process: its sessions, their outlets, a subscriber ------------------------


class SimBoard:
    """A board's read: the samples due by now, stamped with their due (acquisition) time."""

    def __init__(self, data: np.ndarray, markers: np.ndarray, start: float) -> None:
        self.data, self.markers, self.start = data, markers, start
        self.sent = 0

    def read(self) -> Chunk | None:
        n = self.data.shape[1]
        if self.sent >= n:
            return None
        due = min(n, int((time.time() - self.start) * E2E_FS) + 1)
        a, self.sent = self.sent, max(self.sent, due)
        ts = self.start + np.arange(a, self.sent) / E2E_FS
        return Chunk(self.data[:, a : self.sent], ts, self.markers[a : self.sent])


@dataclass
class Plan:
    """What one producer process runs (passed as JSON)."""

    amqp_url: str
    database_url: str
    sessions: list[str]
    mode: str  # "lsl" or "board"
    soa_s: float
    seconds: float


async def register_sessions(plan: Plan) -> None:
    """The session rows as the producer writes them for a speller (the decider's layout)."""
    paradigm = {
        "kind": "speller",
        "speller": SpellerLayout.grid(6, 6).describe(),
        "repetitions": REPETITIONS,
        "soa_s": plan.soa_s,
        "epoch": EpochGeometry.cut(-0.1, 0.7).describe(),
    }
    channels = json.dumps([f"ch{i}" for i in range(E2E_CH)])
    async with await psycopg.AsyncConnection.connect(plan.database_url) as c:
        for s in plan.sessions:
            await c.execute(
                "INSERT INTO sessions (session_id, service, board, fs, channels, paradigm) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [s, E2E_SERVICE, plan.mode, E2E_FS, channels, Jsonb(paradigm)],
            )
        await c.commit()


async def stream_session(
    session: str, plan: Plan, read: Callable[[], Chunk | None], publisher: WindowPublisher
) -> int | None:
    """Read as ``producer.session`` does (again at once after samples, else after
    ``POLL_S``), cut, publish; returns the last seq published."""
    settings = ProducerSettings(session_id=session, service=E2E_SERVICE, paradigm="none")
    cutter = Cutter(settings, E2E_FS, tuple(f"ch{i}" for i in range(E2E_CH)), paradigm="none")
    last: int | None = None
    end = time.monotonic() + plan.seconds + 1.0
    while time.monotonic() < end:
        chunk = read()
        if chunk is None or chunk.n == 0:
            await asyncio.sleep(POLL_S)
            continue
        for w in cutter.push(chunk):
            await publisher.publish_window(untag(w))
            last = w.header.seq
    return last


def start_pusher(name: str, plan: Plan, seed: int) -> subprocess.Popen[str]:
    """A ``--push`` process for one session, once its outlets are up."""
    cmd = [sys.executable, "-m", "bench.latency", "--push", name, "--seed", str(seed)]
    cmd += ["--soa", str(plan.soa_s), "--seconds", str(plan.seconds)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


async def produce(plan: Plan) -> dict[str, Any]:
    """Run the plan's sessions together on this process's event loop; returns the
    subscriber's receipts per session."""
    await register_sessions(plan)
    conn = await aio_pika.connect_robust(plan.amqp_url)
    outlets: list[ResultOutlet] = []
    pushers: list[subprocess.Popen[str]] = []
    sources: list[LslSource] = []
    publishers = [
        WindowPublisher(plan.amqp_url, E2E_SERVICE, max_in_flight=64) for _ in plan.sessions
    ]
    readers: list[Callable[[], Chunk | None]] = []
    seeds = {s: zlib.crc32(s.encode()) for s in plan.sessions}
    for s in plan.sessions:
        if plan.mode == "lsl":
            pushers.append(start_pusher(f"bench-e2e-{s}", plan, seeds[s]))
            src = LslSource(
                StreamQuery(name=f"bench-e2e-{s}"),
                StreamQuery(name=f"bench-e2e-{s}-markers"),
                marker_delay_s=MARKER_DELAY_S,
            )
            await asyncio.to_thread(src.start)
            sources.append(src)
            readers.append(src.read)
            offset: float | None = src.lsl_offset
        else:
            offset = None
        outlets.append(
            PredictionOutlet(plan.amqp_url, E2E_SERVICE, s, lsl_offset=offset, connection=conn)
        )
        outlets.append(
            DecisionOutlet(
                plan.amqp_url, E2E_SERVICE, s, rule=FIXED_RULE, lsl_offset=offset, connection=conn
            )
        )
    for o in outlets:
        await o.start()
    for pub in publishers:
        await pub.start()
    listener = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.latency",
        "--subscribe",
        ",".join(o.source_id for o in outlets),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        limit=1 << 26,
    )
    assert listener.stdout is not None and listener.stdin is not None
    assert (await listener.stdout.readline()).strip() == b"ready"
    start = time.time()
    if plan.mode == "board":
        for s in plan.sessions:
            flashes, _ = schedule(plan.soa_s, plan.seconds, seeds[s])
            board = SimBoard(*signal(flashes, plan.seconds, seeds[s]), start)
            readers.append(board.read)
    for proc in pushers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    lasts = await asyncio.gather(
        *(
            stream_session(s, plan, r, pub)
            for s, r, pub in zip(plan.sessions, readers, publishers, strict=True)
        )
    )
    for pub in publishers:
        await pub.flush(30)
    await asyncio.gather(*(outlets[2 * i].drain(last, 30) for i, last in enumerate(lasts)))
    await asyncio.sleep(1.0)  # the last trials' decisions
    listener.stdin.close()
    got = json.loads(await listener.stdout.readline())
    await listener.wait()
    for o in outlets:
        await o.close()
    for pub in publishers:
        await pub.close()
    for src in sources:
        src.stop()
    for proc in pushers:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    await conn.close()
    out: dict[str, dict[str, dict[int, float]]] = {
        s: {"predictions": {}, "decisions": {}} for s in plan.sessions
    }
    for index, key, at in got:
        kind = "predictions" if index % 2 == 0 else "decisions"
        out[plan.sessions[index // 2]][kind][int(key)] = at
    return {"start": start, "sessions": out}


# --- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    mode: str  # "lsl": a pylsl outlet per session in another process; "board": board stamps
    sessions: int
    soa_s: float

    @property
    def rate(self) -> float:
        """Windows (epochs) per second per session while flashing."""
        return 1 / self.soa_s

    def processes(self, cores: int) -> int:
        return min(self.sessions, cores)


def scenarios() -> list[Scenario]:
    """1 session over LSL and from board stamps, 10 and 100 from board stamps; 100 sessions
    flash 4x slower, so the machine serves them all."""
    return [
        Scenario("lsl", 1, 0.125),
        Scenario("board", 1, 0.125),
        Scenario("board", 10, 0.125),
        Scenario("board", 100, 0.5),
    ]


_PREDICTIONS = """
SELECT session_id, seq, trial, extract(epoch FROM window_ts)::float8,
    extract(epoch FROM sent_at)::float8, extract(epoch FROM predicted_at)::float8
FROM predictions WHERE session_id = ANY(%s) AND role = 'serving'
"""
_DECISIONS = """
SELECT session_id, trial, symbol_index, extract(epoch FROM last_sample_at)::float8,
    extract(epoch FROM decided_at)::float8
FROM decisions WHERE session_id = ANY(%s) AND rule = %s
"""


@dataclass
class Measured:
    """One scenario's latencies (ms) and how many decisions were right."""

    scenario: Scenario
    predictions: dict[str, np.ndarray]  # total, producer, worker, back
    decisions: dict[str, np.ndarray]  # total, predicted, decider, back
    expected: tuple[int, int]  # windows, decisions the schedule should give
    correct: int


async def run_scenario(core: CoreSettings, sc: Scenario, seconds: float, tag: str) -> Measured:
    names = [f"{tag}-{i}" for i in range(sc.sessions)]
    procs = sc.processes(os.cpu_count() or 1)
    plans = [
        Plan(core.amqp_url, core.database_url, names[i::procs], sc.mode, sc.soa_s, seconds)
        for i in range(procs)
    ]
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.latency",
            "--produce",
            json.dumps(asdict(p)),
            stdout=subprocess.PIPE,
            limit=1 << 26,
        )
        for p in plans
    ]
    receipts: dict[str, Any] = {}
    for r in runs:
        out, _ = await r.communicate()
        receipts |= json.loads(out.decode().strip().splitlines()[-1])["sessions"]
    async with await psycopg.AsyncConnection.connect(core.database_url) as c:
        preds = await (await c.execute(_PREDICTIONS, [names])).fetchall()
        decs = await (await c.execute(_DECISIONS, [names, FIXED_RULE])).fetchall()
    last = (int(0.8 * E2E_FS) - 1) / E2E_FS  # an epoch's last sample after its first
    p: dict[str, list[float]] = {k: [] for k in ("total", "producer", "worker", "back")}
    last_pred: dict[tuple[str, int], float] = {}
    for session, seq, trial, t0, sent, predicted in preds:
        if trial is not None:
            key = (session, int(trial))
            last_pred[key] = max(last_pred.get(key, 0.0), predicted)
        got = receipts[session]["predictions"].get(str(seq))
        if got is None:
            continue
        acquired = t0 + last
        p["total"].append(got - acquired)
        p["producer"].append(sent - acquired)
        p["worker"].append(predicted - sent)
        p["back"].append(got - predicted)
    d: dict[str, list[float]] = {k: [] for k in ("total", "predicted", "decider", "back")}
    correct = 0
    targets = {s: schedule(sc.soa_s, seconds, zlib.crc32(s.encode()))[1] for s in names}
    n_windows = sum(len(schedule(sc.soa_s, seconds, zlib.crc32(s.encode()))[0]) for s in names)
    for session, trial, symbol, acquired, decided in decs:
        correct += int(targets[session][trial] == symbol)
        got = receipts[session]["decisions"].get(str(trial))
        if got is None or acquired is None:
            continue
        d["total"].append(got - acquired)
        d["predicted"].append(last_pred[(session, trial)] - acquired)
        d["decider"].append(decided - last_pred[(session, trial)])
        d["back"].append(got - decided)
    as_ms = lambda x: {k: np.array(v) * 1000 for k, v in x.items()}  # noqa: E731
    return Measured(
        sc, as_ms(p), as_ms(d), (n_windows, sum(len(t) for t in targets.values())), correct
    )


def _q(values: np.ndarray) -> list[str]:
    if values.size == 0:
        return ["—"] * len(QUANTILES)
    return [f"{np.percentile(values, q):.1f}" for q in QUANTILES]


def _p50(values: np.ndarray) -> str:
    return "—" if values.size == 0 else f"{np.percentile(values, 50):.1f}"


def report(results: list[Measured], bare: dict[str, float], seconds: float, cores: int) -> None:
    rows: list[list[object]] = []
    for m in results:
        sc = m.scenario
        where = "LSL outlet (other process)" if sc.mode == "lsl" else "board stamps"
        head = [sc.sessions, f"{sc.processes(cores)}", where, f"{sc.rate:g}"]
        p, d = m.predictions, m.decisions
        rows.append(
            [*head, "prediction", f"{p['total'].size}/{m.expected[0]}", *_q(p["total"])]
            + [_p50(p[k]) for k in ("producer", "worker", "back")]
        )
        rows.append(
            [
                *head,
                f"decision ({FIXED_RULE})",
                f"{d['total'].size}/{m.expected[1]}",
                *_q(d["total"]),
            ]
            + [_p50(d[k]) for k in ("predicted", "decider", "back")]
        )
    rows.append(
        [
            "—",
            "—",
            "bare broker: publish -> consume",
            f"{BARE_RATE}",
            f"window-sized ({N_CH}x{N_S} float32)",
            BARE_N,
        ]
        + [f"{bare[f'p{q}']:.1f}" for q in QUANTILES]
        + ["", "", ""]
    )
    table(
        f"Acquisition -> result at an LSL subscriber (ms), {seconds:g} s per scenario; shares "
        "are p50s: prediction = producer (acquired -> sent_at) + worker (sent_at -> "
        "predicted_at, broker hop in) + back (predicted_at -> receipt); decision = its last "
        "epoch's prediction (acquired -> predicted_at) + decider (-> decided_at) + back "
        "(-> receipt)",
        [
            "sessions",
            "producer procs",
            "source",
            "windows/s/session",
            "result",
            "received",
            "p50",
            "p95",
            "p99",
            "producer | predicted",
            "worker | decider",
            "back",
        ],
        rows,
    )
    for m in results:
        print(
            f"  {m.scenario.sessions} session(s), {m.scenario.mode}: {FIXED_RULE} decisions "
            f"correct {m.correct}/{m.expected[1]} (chance 1/36)"
        )


async def e2e(seconds: float, only: list[int] | None) -> None:
    core = bench_core("ns_bench_e2e")
    cores = os.cpu_count() or 1
    await serve_model(core, E2E_SERVICE, train())
    bare = await broker_latency(core, BARE_RATE, BARE_N)
    results = []
    with workers(core, E2E_SERVICE, 1, decide="true", decision_rules=RULES):
        await wait_workers(core, E2E_SERVICE)
        await run_scenario(core, Scenario("board", 1, 0.125), 6.0, "warmup")  # lazy set-up
        for i, sc in enumerate(scenarios()):
            if only is None or sc.sessions in only:
                results.append(await run_scenario(core, sc, seconds, f"e2e{i}"))
    report(results, bare, seconds, cores)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds streamed per scenario")
    ap.add_argument(
        "--sessions", type=int, nargs="*", help="only the scenarios with these session counts"
    )
    ap.add_argument("--push", metavar="NAME", help=argparse.SUPPRESS)
    ap.add_argument("--soa", type=float, default=0.125, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--subscribe", metavar="SOURCE_IDS", help=argparse.SUPPRESS)
    ap.add_argument("--produce", metavar="PLAN", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.push:
        push_lsl(args.push, args.soa, args.seconds, args.seed)
    elif args.subscribe:
        subscribe(args.subscribe.split(","))
    elif args.produce:
        result = uvloop.run(produce(Plan(**json.loads(args.produce))))
        print(json.dumps(result), flush=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            quiet_liblsl(Path(tmp))
            uvloop.run(e2e(args.seconds, args.sessions))
