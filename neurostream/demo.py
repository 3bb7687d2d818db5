"""The one-command live demo (and the end-to-end test's driver).

Sets up PostgreSQL and RabbitMQ, trains and registers first models from a simulated
session when the service has none, starts the queue manager and N worker processes,
streams a live synthetic oddball session from BrainFlow's SYNTHETIC_BOARD, swaps the
serving model half-way through the queue manager's HTTP API, then checks the database:
one prediction per confirmed window, no gaps, no duplicates, held-out ROC-AUC, latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from sklearn.metrics import roc_auc_score

from neurostream import bootstrap, infra
from neurostream.db import open_pool
from neurostream.settings import CoreSettings

log = logging.getLogger(__name__)
LDA, CNN = "p300-lda", "p300-eegnet"
_REPORT_SQL = """
SELECT p.seq, p.model_version_id, p.score,
       (extract(epoch FROM p.predicted_at) - extract(epoch FROM p.sent_at))::float8,
       extract(epoch FROM p.predicted_at)::float8, v.model_name || ':' || v.version
FROM predictions p JOIN model_versions v ON v.id = p.model_version_id
WHERE p.session_id = %s AND p.role = 'serving' ORDER BY p.seq
"""


@dataclass
class VersionReport:
    model_version_id: int
    label: str
    windows: int
    first_seq: int
    last_seq: int
    roc_auc: float | None


@dataclass
class DemoReport:
    session_id: str
    confirmed: int
    predicted: int
    distinct_seq: int
    missing: list[int]
    duplicated: int
    rejected: int
    versions: list[VersionReport]
    roc_auc: float | None
    swap_requested_after_s: float | None
    swap_seen_after_s: float | None
    latency_ms: dict[str, float]
    urls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoOptions:
    service: str = "p300"
    workers: int = 2
    duration_s: float = 60.0
    swap_at: float | None = 0.5  # fraction of the session; None: no swap
    qm_port: int = 8000
    metrics_port: int = 9100
    train_seconds: float = 600.0
    session_seed: int = 7
    keep: bool = False


def _env(core: CoreSettings, token: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)  # PATH and friends for the child; settings below win
    env |= {
        "NEUROSTREAM_DATABASE_URL": core.database_url,
        "NEUROSTREAM_AMQP_URL": core.amqp_url,
        "NEUROSTREAM_API_TOKEN": token,
        "NEUROSTREAM_MODE": core.mode,
    }
    return env | extra


@contextmanager
def _services(core: CoreSettings, opts: DemoOptions, token: str) -> Iterator[list[str]]:
    """Queue manager + workers as child processes, stopped with SIGTERM on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    worker_ids = [
        f"demo-{opts.service}-{i + 1}-{secrets.token_hex(2)}" for i in range(opts.workers)
    ]
    try:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "queue_manager"],
                env=_env(
                    core,
                    token,
                    {
                        "NEUROSTREAM_QM_PORT": str(opts.qm_port),
                        "NEUROSTREAM_QM_LOG_LEVEL": "warning",
                    },
                ),
            )
        )
        for i, wid in enumerate(worker_ids):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "workers"],
                    env=_env(
                        core,
                        token,
                        {
                            "NEUROSTREAM_WORKER_SERVICE": opts.service,
                            "NEUROSTREAM_WORKER_WORKER_ID": wid,
                            "NEUROSTREAM_WORKER_METRICS_PORT": str(opts.metrics_port + i),
                        },
                    ),
                )
            )
        yield worker_ids
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


async def _wait_ready(core: CoreSettings, opts: DemoOptions, worker_ids: list[str]) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{opts.qm_port}") as http:
        while True:
            try:
                health = (await http.get("/health")).status_code == 200
                rows = (await http.get("/workers", params={"service": opts.service})).json()
                ready = {
                    r["worker_id"]
                    for r in rows
                    if r["status"] == "running" and r.get("model_version_id")
                }
                if health and set(worker_ids) <= ready:
                    return
            except (httpx.HTTPError, ValueError, TypeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("queue manager or workers did not become ready in 90 s")
            await asyncio.sleep(0.5)


async def ensure_models(core: CoreSettings, opts: DemoOptions) -> dict[str, int]:
    """Train + register the LDA (champion, serving) and the EEGNet if not registered yet."""
    from neurostream import registry

    pool = await open_pool(core.database_url, max_size=1)
    async with pool.connection() as conn:
        have = {m: await registry.get_alias(conn, m, "champion") for m in (LDA, CNN)}
    await pool.close()
    ids: dict[str, int] = {}
    for name, family in ((LDA, "sklearn-lda"), (CNN, "torch-eegnet")):
        if have[name] is not None:
            ids[name] = int(have[name]["version_id"])  # type: ignore[index]
            continue
        trained = await asyncio.to_thread(
            bootstrap.train_from_simulation, family, seconds=opts.train_seconds
        )
        reg = await bootstrap.register(
            core,
            trained,
            model_name=name,
            service=opts.service,
            alias="champion",
            assign=False,
        )
        print(
            f"registered {name} v{reg.version}: validation ROC-AUC "
            f"{reg.metrics.get('roc_auc', float('nan')):.3f}"
        )
        ids[name] = reg.version_id
    return ids


async def _assign(opts: DemoOptions, token: str, model_name: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{opts.qm_port}") as http:
        r = await http.put(
            f"/services/{opts.service}/assign",
            json={"model_name": model_name, "ref": "champion"},
            headers={"Authorization": f"Bearer {token}"},
        )
        r.raise_for_status()


async def run_demo(core: CoreSettings, opts: DemoOptions) -> DemoReport:
    from producer.session import run_session
    from producer.settings import ProducerSettings

    infra.ensure_local(core.database_url, core.amqp_url)
    await ensure_models(core, opts)
    token = core.api_token.get_secret_value() if core.api_token else secrets.token_urlsafe(24)
    await _assign_direct(core, opts.service, LDA)
    with _services(core, opts, token) as worker_ids:
        await _wait_ready(core, opts, worker_ids)
        settings = ProducerSettings(
            service=opts.service,
            board="synthetic",
            duration_s=opts.duration_s,
            seed=opts.session_seed,
            sliding=False,
        )
        t_start = time.time()
        swap_at: list[float] = []

        async def swap() -> None:
            assert opts.swap_at is not None
            await asyncio.sleep(opts.duration_s * opts.swap_at)
            swap_at.append(time.time())
            await _assign(opts, token, CNN)

        swapper = asyncio.create_task(swap()) if opts.swap_at is not None else None
        result = await run_session(core, settings)
        if swapper is not None:
            await swapper
        report = await _report(
            core,
            result.session_id,
            result.windows_confirmed,
            result.truth,
            t_start,
            swap_at[0] if swap_at else None,
        )
        report.urls = {
            "queue manager API docs": f"http://127.0.0.1:{opts.qm_port}/docs",
            "session summary": f"http://127.0.0.1:{opts.qm_port}/sessions/{result.session_id}/summary",
            "jobs": f"http://127.0.0.1:{opts.qm_port}/jobs?session_id={result.session_id}",
            "workers": f"http://127.0.0.1:{opts.qm_port}/workers",
            **{
                f"worker {i + 1} metrics": f"http://127.0.0.1:{opts.metrics_port + i}/metrics"
                for i in range(opts.workers)
            },
        }
        print_report(report)
        if opts.keep:
            print("services keep running; Ctrl-C to stop")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
    return report


async def _assign_direct(core: CoreSettings, service: str, model_name: str) -> None:
    """Start every demo from the LDA champion (the swap moves to the EEGNet)."""
    from neurostream import registry

    pool = await open_pool(core.database_url, max_size=1)
    try:
        async with pool.connection() as conn:
            await registry.assign(conn, service, model_name, "champion")
    finally:
        await pool.close()


async def _report(
    core: CoreSettings,
    session_id: str,
    confirmed: int,
    truth: dict[int, int],
    t_start: float,
    swap_requested: float | None,
) -> DemoReport:
    pool = await open_pool(core.database_url, max_size=1)
    try:
        rows: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with pool.connection() as conn:
                rows = await (
                    await conn.execute(
                        _REPORT_SQL,
                        [session_id],
                    )
                ).fetchall()
                rejected = (
                    await (
                        await conn.execute(
                            "SELECT count(*) FROM rejections WHERE session_id = %s", [session_id]
                        )
                    ).fetchone()
                )[0]  # type: ignore[index]
            if len({r[0] for r in rows}) + rejected >= confirmed:
                break
            await asyncio.sleep(0.5)
    finally:
        await pool.close()
    seqs = [r[0] for r in rows]
    missing = sorted(set(range(confirmed)) - set(seqs))
    versions: list[VersionReport] = []
    for vid in dict.fromkeys(r[1] for r in rows):
        mine = [r for r in rows if r[1] == vid]
        versions.append(
            VersionReport(
                vid,
                mine[0][5],
                len(mine),
                mine[0][0],
                mine[-1][0],
                _auc([(r[0], r[2]) for r in mine], truth),
            )
        )
    lat = np.array([r[3] for r in rows if r[3] is not None]) * 1000
    swap_seen = None
    if swap_requested is not None and len(versions) > 1:
        swap_seen = (
            min(r[4] for r in rows if r[1] == versions[-1].model_version_id) - swap_requested
        )
    return DemoReport(
        session_id=session_id,
        confirmed=confirmed,
        predicted=len(rows),
        distinct_seq=len(set(seqs)),
        missing=missing,
        duplicated=len(seqs) - len(set(seqs)),
        rejected=int(rejected),
        versions=versions,
        roc_auc=_auc([(r[0], r[2]) for r in rows], truth),
        swap_requested_after_s=None if swap_requested is None else swap_requested - t_start,
        swap_seen_after_s=swap_seen,
        latency_ms={q: float(np.percentile(lat, int(q[1:]))) for q in ("p50", "p95", "p99")}
        if lat.size
        else {},
    )


def _auc(scored: list[tuple[int, float]], truth: dict[int, int]) -> float | None:
    pairs = [(truth[s], sc) for s, sc in scored if s in truth]
    labels = {p[0] for p in pairs}
    if len(labels) < 2:
        return None
    return float(roc_auc_score([p[0] for p in pairs], [p[1] for p in pairs]))


def print_report(r: DemoReport) -> None:
    print(f"\nsession {r.session_id}")
    print(f"  windows confirmed by the broker : {r.confirmed}")
    print(
        f"  serving predictions stored      : {r.predicted} "
        f"(distinct seq {r.distinct_seq}, missing {len(r.missing)}, duplicated {r.duplicated},"
        f" dead-lettered {r.rejected})"
    )
    for v in r.versions:
        auc = "n/a" if v.roc_auc is None else f"{v.roc_auc:.3f}"
        print(
            f"  {v.label:<18} id {v.model_version_id:<4} windows {v.windows:<5} "
            f"seq {v.first_seq}..{v.last_seq}  ROC-AUC vs ground truth {auc}"
        )
    if r.roc_auc is not None:
        print(f"  held-out ROC-AUC (whole live session): {r.roc_auc:.3f}")
    if r.swap_seen_after_s is not None:
        print(
            f"  model swap: requested at {r.swap_requested_after_s:.1f} s, first prediction "
            f"by the new version {r.swap_seen_after_s:.2f} s later"
        )
    if r.latency_ms:
        print(
            "  latency publish -> prediction row: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in r.latency_ms.items())
        )
    for name, url in r.urls.items():
        print(f"  {name:<24} {url}")
