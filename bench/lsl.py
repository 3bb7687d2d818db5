"""The LSL source and the predictions outlet: latency added and CPU per stream-second.

    .venv/bin/python -m bench.lsl                 # about 2 minutes on 2 cores
    .venv/bin/python -m bench.lsl --seconds 30    # longer runs, steadier tails

An outlet in another process (``python -m bench.lsl --push ...``) pushes each sample as
soon as it is due, stamped with its due time, which is ``local_clock()`` at the push to
within the pusher's own lag (printed). This process reads it as the producer does: read,
and when nothing came wait ``poll_s`` (40 ms, ``ProducerSettings.poll_s``) before the next
read. For every sample handed out, latency is ``local_clock()`` at hand-out minus the
sample's LSL time. The baseline is a bare ``StreamInlet.pull_chunk`` loop (the source's
processing flags, same poll) on the same stream in the same run; a 1 ms poll of the bare
inlet shows the transport alone. With a marker stream the source holds samples back by
``marker_delay_s`` by design, so those rows show what the hold-back costs.

CPU: thread CPU spent inside ``read()`` (``pull_chunk`` for the baseline) per second of
stream, and the whole process's CPU over the same span (liblsl's receiving threads
included), for a Muse-like 4 ch @ 256 Hz and a 64 ch @ 1000 Hz float32 stream, with and
without an ``XdfWriter`` recording to a temporary file.

Predictions: a message in the worker's body shape published on ``eeg.predictions`` ->
``PredictionOutlet`` in this process -> a pylsl inlet in another process (``--listen``),
publish to receipt; the baseline is a plain aio-pika consumer of the same exchange and key
(publish to its callback) in the same run. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import numpy as np
import pylsl
import uvloop

from bench.common import bench_core, table
from neurostream import topology
from neurostream.settings import CoreSettings
from producer.lsl import EEG_FLAGS, LslSource, StreamQuery
from producer.outlet import PredictionOutlet
from producer.outlet import source_id as outlet_source_id
from producer.xdf import XdfWriter

QUANTILES = (50, 95, 99)
POLL_S = 0.04  # ProducerSettings.poll_s
WARMUP_S = 1.0  # read and discard after opening: connection, first clock offsets
MARKER_EVERY_S = 0.5
MUSE = ("TP9", "AF7", "AF8", "TP10")


def quiet_liblsl(tmp: Path) -> None:
    """liblsl's INFO lines off (errors stay) for this process and the ones it starts; the
    config is read at the first liblsl call, so this comes before any."""
    if "LSLAPICFG" not in os.environ:
        cfg = tmp / "lsl_api.cfg"
        cfg.write_text("[log]\nlevel = -2\n")
        os.environ["LSLAPICFG"] = str(cfg)


# --- the processes on the other side ------------------------------------------------------


def push(name: str, n_channels: int, fs: float) -> None:
    """Outlets ``name`` (EEG) and ``name-markers``: every sample pushed when due, a marker
    (1, 2, ...) every 0.5 s stamped on its sample, until stdin closes; then one JSON line
    with the push lag (``local_clock()`` after the push minus the last sample's stamp)."""
    info = pylsl.StreamInfo(name, "EEG", n_channels, fs, pylsl.cf_float32, name)
    chans = info.desc().append_child("channels")
    labels = MUSE if n_channels == len(MUSE) else [f"ch{i}" for i in range(n_channels)]
    for label in labels:
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", "EEG")
        ch.append_child_value("unit", "microvolts")
    eeg = pylsl.StreamOutlet(info)
    markers = pylsl.StreamOutlet(
        pylsl.StreamInfo(
            f"{name}-markers", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, f"{name}-m"
        )
    )
    block = np.random.default_rng(0).normal(0, 10, (int(fs), n_channels)).astype(np.float32)
    every = round(MARKER_EVERY_S * fs)
    closed = threading.Event()

    def watch() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=watch, daemon=True).start()
    print("ready", flush=True)
    t0 = pylsl.local_clock()
    sent = 0
    lags: list[float] = []
    while not closed.is_set():
        due = int((pylsl.local_clock() - t0) * fs) + 1
        if due > sent:
            idx = np.arange(sent, due) % block.shape[0]
            last = t0 + (due - 1) / fs
            eeg.push_chunk(block[idx], last)
            lags.append(pylsl.local_clock() - last)
            for i in range(sent, due):
                if i % every == 0:
                    markers.push_sample([i // every % 2 + 1], t0 + i / fs)
            sent = due
        time.sleep(max(0.0, t0 + sent / fs - pylsl.local_clock()))
    lag = np.array(lags) * 1000
    print(json.dumps({f"p{q}": float(np.percentile(lag, q)) for q in QUANTILES}), flush=True)


def listen(source_id: str, n: int) -> None:
    """A pylsl inlet on the predictions outlet ``source_id``: prints ``ready`` once
    connected, then one JSON line of [seq, local_clock() at receipt] for ``n`` samples."""
    found = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(10.0)
    print("ready", flush=True)
    got: list[list[float]] = []
    deadline = time.monotonic() + 120
    while len(got) < n and time.monotonic() < deadline:
        sample, _ = inlet.pull_sample(1.0)
        if sample is not None:
            got.append([sample[0], pylsl.local_clock()])
    print(json.dumps(got), flush=True)


@dataclass
class Pusher:
    """A ``--push`` process; ``close()`` ends it and returns its push lag (ms)."""

    name: str
    n_channels: int
    fs: float
    proc: subprocess.Popen[str] = field(init=False)

    def __post_init__(self) -> None:
        cmd = [sys.executable, "-m", "bench.lsl", "--push", self.name]
        cmd += ["--channels", str(self.n_channels), "--fs", str(self.fs)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        lag: dict[str, float] = json.loads(self.proc.stdout.readline())
        self.proc.wait(10)
        return lag


# --- reading: the source and the bare inlet -----------------------------------------------


@dataclass
class Reading:
    """One reading run: per-sample latencies (ms) and CPU spent (s)."""

    latency_ms: np.ndarray
    samples: int
    in_read_s: float  # thread CPU inside read() / pull_chunk
    process_s: float  # the whole process, over the same span
    markers: str = "—"

    def per_stream_s(self, fs: float, cpu_s: float) -> float:
        """ms of CPU per second of stream."""
        return cpu_s * 1000 / (self.samples / fs)


class Bare:
    """The baseline: a bare inlet, the source's processing flags, pull_chunk as it polls."""

    def __init__(self, name: str) -> None:
        found = pylsl.resolve_byprop("name", name, 1, 10.0)
        self.inlet = pylsl.StreamInlet(found[0], recover=False, processing_flags=EEG_FLAGS)
        self.inlet.open_stream(3.0)
        self.inlet.time_correction(3.0)

    def read(self) -> np.ndarray:
        """LSL times of the samples pulled."""
        _, ts = self.inlet.pull_chunk(0.0, 4096, as_numpy=True)
        return np.asarray(ts, dtype=np.float64)

    def stop(self) -> None:
        self.inlet.close_stream()


class Source:
    """``LslSource`` as the session loop reads it; LSL times back from its wall times."""

    def __init__(self, src: LslSource) -> None:
        self.src = src
        src.start()

    def read(self) -> np.ndarray:
        chunk = self.src.read()
        assert chunk is not None
        return chunk.timestamps - self.src.lsl_offset

    def stop(self) -> None:
        self.src.stop()


def measure(reader: Bare | Source, seconds: float, poll_s: float) -> Reading:
    """Read as ``producer.session._read`` does: again at once after samples, else after
    ``poll_s``; the first ``WARMUP_S`` are read and discarded."""
    lat: list[np.ndarray] = []
    in_read = 0.0
    start = time.monotonic()
    measuring = False
    p0 = 0.0
    try:
        while True:
            now = time.monotonic()
            if not measuring and now - start >= WARMUP_S:
                measuring, p0 = True, time.process_time()
            if now - start >= WARMUP_S + seconds:
                break
            c0 = time.thread_time()
            ts = reader.read()
            c1 = time.thread_time()
            handed = pylsl.local_clock()
            if measuring:
                in_read += c1 - c0
                if ts.size:
                    lat.append(handed - ts)
            if not ts.size:
                time.sleep(poll_s)
        process = time.process_time() - p0
    finally:
        reader.stop()
    latency = np.concatenate(lat) * 1000 if lat else np.zeros(0)
    return Reading(latency, latency.size, in_read, process)


def source_reading(
    name: str,
    seconds: float,
    *,
    marker_delay_s: float | None = None,
    xdf: Path | None = None,
) -> Reading:
    recorder = None
    if xdf is not None:
        recorder = XdfWriter(xdf, overwrite=True)
        recorder.open()  # as the producer does, before start()
    markers = StreamQuery(name=f"{name}-markers") if marker_delay_s is not None else None
    src = LslSource(
        StreamQuery(name=name),
        markers,
        marker_delay_s=0.25 if marker_delay_s is None else marker_delay_s,
        recorder=recorder,
    )
    reading = measure(Source(src), seconds, POLL_S)
    if markers is not None:
        reading.markers = f"{src.markers_placed} placed, {src.markers_late} late"
    return reading


def pct(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, q)) for q in QUANTILES]


def reading_rows(cases: Sequence[tuple[str, Reading]], base: Reading) -> list[list[object]]:
    b = pct(base.latency_ms)
    rows: list[list[object]] = []
    for label, r in cases:
        p = pct(r.latency_ms)
        added = "—" if r is base else f"{p[0] - b[0]:+.1f} / {p[2] - b[2]:+.1f}"
        rows.append([label, f"{r.samples:,}", *(f"{x:.1f}" for x in p), added, r.markers])
    return rows


def cpu_rows(fs: float, cases: Sequence[tuple[str, Reading]], base: Reading) -> list[list[object]]:
    b_read, b_proc = base.per_stream_s(fs, base.in_read_s), base.per_stream_s(fs, base.process_s)
    rows: list[list[object]] = []
    for label, r in cases:
        in_read, proc = r.per_stream_s(fs, r.in_read_s), r.per_stream_s(fs, r.process_s)
        rows.append(
            [
                label,
                f"{in_read:.2f}",
                f"{in_read / b_read:.1f}",
                f"{proc:.2f}",
                f"{proc / b_proc:.1f}",
            ]
        )
    return rows


# --- the predictions outlet ----------------------------------------------------------------


def prediction_body(session: str, seq: int) -> bytes:
    """One serving prediction in ``workers.worker._publish``'s shape: an epoch."""
    item = {
        "seq": seq,
        "model_version_id": 1,
        "predicted": seq % 2,
        "score": 0.5,
        "marker": 2,
        "t0": time.time() - 0.8,
        "kind": "epoch",
        "fs": 256.0,
        "n_samples": 231,
        "tmin": -0.1,
    }
    return json.dumps({"session_id": session, "predictions": [item]}).encode()


async def publish_all(
    core: CoreSettings, key: str, session: str, n: int, rate: float
) -> dict[int, float]:
    """Publish ``n`` messages at ``rate``/s without confirms (as the worker publishes them);
    returns each seq's ``local_clock()`` just before its publish."""
    sent: dict[int, float] = {}
    conn = await aio_pika.connect_robust(core.amqp_url)
    async with conn:
        ch = await conn.channel(publisher_confirms=False)
        ex = (await topology.declare_exchanges(ch))[topology.PREDICTIONS_EXCHANGE]
        start = time.perf_counter()
        for seq in range(n):
            await asyncio.sleep(max(0.0, start + seq / rate - time.perf_counter()))
            body = prediction_body(session, seq)
            sent[seq] = pylsl.local_clock()
            await ex.publish(
                aio_pika.Message(body, content_type="application/json"), routing_key=key
            )
        await asyncio.sleep(0.5)  # let the last ones arrive before the connection goes
    return sent


async def broker_round_trip(core: CoreSettings, n: int, rate: float) -> np.ndarray:
    """Publish -> a plain aio-pika consumer's callback (ms), same exchange and key."""
    key, session = "bench-lsl.bare", "bare"
    got: dict[int, float] = {}
    conn = await aio_pika.connect_robust(core.amqp_url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=64)  # as the outlet
        ex = (await topology.declare_exchanges(ch))[topology.PREDICTIONS_EXCHANGE]
        queue = await ch.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(ex, routing_key=key)

        async def on(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                body = json.loads(message.body)
                for item in body["predictions"]:
                    got[int(item["seq"])] = pylsl.local_clock()

        await queue.consume(on)
        sent = await publish_all(core, key, session, n, rate)
    return np.array([(got[s] - t) * 1000 for s, t in sent.items() if s in got])


async def outlet_round_trip(core: CoreSettings, n: int, rate: float) -> np.ndarray:
    """Publish -> ``PredictionOutlet`` -> a pylsl inlet in another process (ms)."""
    service, session = "bench-lsl", "outlet"
    outlet = PredictionOutlet(core.amqp_url, service, session)
    await outlet.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.lsl",
            "--listen",
            outlet_source_id(session),
            "--n",
            str(n),
            stdout=subprocess.PIPE,
            limit=1 << 24,
        )
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
        sent = await publish_all(core, outlet.routing_key, session, n, rate)
        got = {int(seq): t for seq, t in json.loads(await proc.stdout.readline())}
        await proc.wait()
    finally:
        await outlet.close()
    return np.array([(got[s] - t) * 1000 for s, t in sent.items() if s in got])


# --- the run ------------------------------------------------------------------------------


def stream_cases(
    name: str, n_channels: int, fs: float, seconds: float, muse: bool, tmp: Path
) -> tuple[list[tuple[str, Reading]], Reading, dict[str, float]]:
    pusher = Pusher(name, n_channels, fs)
    try:
        cases: list[tuple[str, Reading]] = []
        if muse:
            cases.append(("bare inlet, 1 ms poll (transport)", measure(Bare(name), seconds, 0.001)))
        base = measure(Bare(name), seconds, POLL_S)
        cases.append(("bare inlet (baseline)", base))
        cases.append(("LslSource, no marker stream", source_reading(name, seconds)))
        if muse:
            for delay in (0.05, 0.25):
                reading = source_reading(name, seconds, marker_delay_s=delay)
                cases.append((f"LslSource, markers, marker_delay_s {delay:g}", reading))
        xdf = source_reading(name, seconds, xdf=tmp / f"{name}.xdf")
        cases.append(("LslSource + XdfWriter, no marker stream", xdf))
    finally:
        lag = pusher.close()
    return cases, base, lag


async def predictions(n: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    core = bench_core("ns_bench_lsl")
    bare = await broker_round_trip(core, n, rate)
    outlet = await outlet_round_trip(core, n, rate)
    return bare, outlet


def main(seconds: float, n: int, rate: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        quiet_liblsl(Path(tmp))
        run(seconds, n, rate, Path(tmp))


def run(seconds: float, n: int, rate: float, tmp: Path) -> None:
    streams = (("Muse-like 4 ch @ 256 Hz", 4, 256.0, True), ("64 ch @ 1000 Hz", 64, 1000.0, False))
    results = []
    for i, (label, n_channels, fs, muse) in enumerate(streams):
        name = f"bench-lsl-{i}-{int(time.time())}"
        results.append((label, fs, *stream_cases(name, n_channels, fs, seconds, muse, tmp)))
    for label, _, cases, base, lag in results:
        table(
            f"Latency, {label}: local_clock() at hand-out - sample's LSL time, ms "
            f"(read every {POLL_S * 1000:g} ms when nothing came; {seconds:g} s per row; "
            f"pusher's own lag p50 {lag['p50']:.2f}, p99 {lag['p99']:.2f} ms)",
            ["reader", "samples", "p50", "p95", "p99", "added p50 / p99", "markers"],
            reading_rows(cases, base),
        )
    for label, fs, cases, base, _ in results:
        table(
            f"CPU per stream-second, {label}: ms of CPU per s of stream "
            "(in read: the reading thread inside read()/pull_chunk; process: all threads)",
            ["reader", "in read", "x bare", "process", "x bare"],
            cpu_rows(fs, [c for c in cases if "1 ms poll" not in c[0]], base),
        )
    bare, outlet = uvloop.run(predictions(n, rate))
    b, o = pct(bare), pct(outlet)
    table(
        f"Predictions, publish on eeg.predictions -> receipt, ms ({n} messages at {rate:g}/s)",
        ["path", "received", "p50", "p95", "p99", "added p50 / p99"],
        [
            ["bare aio-pika consumer (baseline)", len(bare), *(f"{x:.2f}" for x in b), "—"],
            [
                "PredictionOutlet -> pylsl inlet (other process)",
                len(outlet),
                *(f"{x:.2f}" for x in o),
                f"{o[0] - b[0]:+.2f} / {o[2] - b[2]:+.2f}",
            ],
        ],
    )
    muse_cases = dict(results[0][2])
    base_p50 = pct(results[0][3].latency_ms)[0]
    none_p50 = pct(muse_cases["LslSource, no marker stream"].latency_ms)[0]
    transport_p50 = pct(muse_cases["bare inlet, 1 ms poll (transport)"].latency_ms)[0]
    held_p50 = pct(muse_cases["LslSource, markers, marker_delay_s 0.25"].latency_ms)[0]
    print(
        f"\nWithout a marker stream LslSource adds {none_p50 - base_p50:+.1f} ms p50 to a bare "
        f"inlet polled alike ({base_p50:.1f} ms: half the {POLL_S * 1000:g} ms poll, the "
        f"transport is {transport_p50:.1f} ms); with one it adds its marker_delay_s by design "
        f"({held_p50:.0f} ms p50 at 0.25 s); the predictions outlet adds {o[0] - b[0]:.2f} ms "
        f"p50 to the broker's {b[0]:.2f} ms."
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds measured per row")
    ap.add_argument("--messages", type=int, default=300, help="prediction messages per path")
    ap.add_argument("--rate", type=float, default=50.0, help="prediction messages per second")
    ap.add_argument("--push", metavar="NAME", help=argparse.SUPPRESS)
    ap.add_argument("--channels", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--fs", type=float, default=256.0, help=argparse.SUPPRESS)
    ap.add_argument("--listen", metavar="SOURCE_ID", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.push:
        push(args.push, args.channels, args.fs)
    elif args.listen:
        listen(args.listen, args.n)
    else:
        main(args.seconds, args.messages, args.rate)
