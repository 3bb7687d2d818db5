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
import importlib.util
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
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
    retrain_job: dict[str, Any] | None = None
    second: DemoReport | None = None


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
    retrain: bool = True
    second_s: float = 20.0


def _env(core: CoreSettings, token: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)  # PATH and friends for the child; settings below win
    env |= {
        "NEUROSTREAM_DATABASE_URL": core.database_url,
        "NEUROSTREAM_AMQP_URL": core.amqp_url,
        "NEUROSTREAM_API_TOKEN": token,
        "NEUROSTREAM_MODE": core.mode,
    }
    return env | extra


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _apis(opts: DemoOptions) -> dict[str, tuple[str, int, dict[str, str]]]:
    """HTTP services the demo runs: name -> (module, port, settings)."""
    apis = {
        "queue manager": ("queue_manager", opts.qm_port, {"NEUROSTREAM_QM_LOG_LEVEL": "warning"}),
        "ml data API": ("ml_data_api", opts.qm_port + 1, {}),
        "retraining API": ("retraining_api", opts.qm_port + 3, {}),
    }
    if _has_module("monitoring_api.app"):
        apis["monitoring API"] = ("monitoring_api", opts.qm_port + 2, {})
    prefixes = {
        "queue_manager": "QM",
        "ml_data_api": "DATA",
        "retraining_api": "RT",
        "monitoring_api": "MON",
    }
    return {
        name: (module, port, extra | {f"NEUROSTREAM_{prefixes[module]}_PORT": str(port)})
        for name, (module, port, extra) in apis.items()
    }


@contextmanager
def _services(core: CoreSettings, opts: DemoOptions, token: str) -> Iterator[list[str]]:
    """The HTTP services + workers as child processes, stopped with SIGTERM on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    worker_ids = [
        f"demo-{opts.service}-{i + 1}-{secrets.token_hex(2)}" for i in range(opts.workers)
    ]
    try:
        for module, _, extra in _apis(opts).values():
            procs.append(
                subprocess.Popen([sys.executable, "-m", module], env=_env(core, token, extra))
            )
        for i, wid in enumerate(worker_ids):
            worker_env = {
                "NEUROSTREAM_WORKER_SERVICE": opts.service,
                "NEUROSTREAM_WORKER_WORKER_ID": wid,
                "NEUROSTREAM_WORKER_METRICS_PORT": str(opts.metrics_port + i),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "workers"], env=_env(core, token, worker_env)
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


async def _wait_ready(opts: DemoOptions, worker_ids: list[str]) -> None:
    deadline = time.monotonic() + 90
    apis = {name: port for name, (_, port, _) in _apis(opts).items()}
    down: list[str] = list(apis)
    missing: set[str] = set(worker_ids)
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            down = []
            for name, port in apis.items():
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code != 200:
                        down.append(name)
                except httpx.HTTPError:
                    down.append(name)
            try:
                rows = (
                    await http.get(
                        f"http://127.0.0.1:{opts.qm_port}/workers", params={"service": opts.service}
                    )
                ).json()
                missing = set(worker_ids) - {
                    r["worker_id"]
                    for r in rows
                    if r["status"] == "running" and r.get("model_version_id")
                }
            except (httpx.HTTPError, ValueError, TypeError, KeyError):
                pass
            if not down and not missing:
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(
        f"not ready after 90 s: services down {down}, workers without a model {sorted(missing)}"
    )


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


async def _live_session(
    core: CoreSettings,
    opts: DemoOptions,
    *,
    duration_s: float,
    seed: int,
    act_at: float | None,
    act: Callable[[], Awaitable[object]] | None,
) -> DemoReport:
    """Stream one live synthetic session; run ``act`` (a model change) at ``act_at``."""
    from producer.session import run_session
    from producer.settings import ProducerSettings

    settings = ProducerSettings(
        service=opts.service, board="synthetic", duration_s=duration_s, seed=seed, sliding=False
    )
    t_start = time.time()
    acted: list[float] = []

    async def later() -> None:
        assert act_at is not None and act is not None
        await asyncio.sleep(duration_s * act_at)
        acted.append(time.time())
        await act()

    task = asyncio.create_task(later()) if act is not None and act_at is not None else None
    result = await run_session(core, settings)
    if task is not None:
        await task
    report = await _report(
        core,
        result.session_id,
        result.windows_confirmed,
        result.truth,
        t_start,
        acted[0] if acted else None,
    )
    report.urls = {
        "session summary": f"http://127.0.0.1:{opts.qm_port}/sessions/{result.session_id}/summary",
        "jobs": f"http://127.0.0.1:{opts.qm_port}/jobs?session_id={result.session_id}",
    }
    return report


async def run_demo(core: CoreSettings, opts: DemoOptions) -> DemoReport:
    """Session 1 swaps EEGNet -> LDA by assignment; then (``retrain``) a retrain job on the
    grown labelled data and session 2 promotes the challenger live."""
    from neurostream import demo_retrain

    infra.ensure_local(core.database_url, core.amqp_url)
    await ensure_models(core, opts)
    token = core.api_token.get_secret_value() if core.api_token else secrets.token_urlsafe(24)
    auth = {"Authorization": f"Bearer {token}"}
    await _assign_direct(core, opts.service, CNN)
    with _services(core, opts, token) as worker_ids:
        await _wait_ready(opts, worker_ids)
        print(
            f"\n[1] live session, {opts.duration_s:.0f} s: serving {CNN}; "
            f"the queue manager assigns {LDA} at {opts.swap_at or 0:.0%}"
        )
        report = await _live_session(
            core,
            opts,
            duration_s=opts.duration_s,
            seed=opts.session_seed,
            act_at=opts.swap_at,
            act=lambda: _assign(opts, token, LDA),
        )
        print_report(report)
        if opts.retrain:
            data = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{opts.qm_port + 1}", headers=auth, timeout=120
            )
            rt = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{opts.qm_port + 3}", headers=auth, timeout=120
            )
            async with data, rt:
                await demo_retrain.ensure_datasets(data)
                training = await demo_retrain.grow_training_dataset(data, opts.service)
                print(
                    f"\n[2] training snapshot p300-train v{training['version']}: "
                    f"{training['n_rows']} labelled windows (the last version grown by the live "
                    f"sessions), hash {training['content_hash'][:12]}"
                )
                job = await demo_retrain.retrain(rt, LDA, f"p300-train@{training['version']}")
                report.retrain_job = job
                demo_retrain.print_comparison(job)
                print(
                    "  (the demo promotes whatever the comparison says, to show the live swap; "
                    "a job can carry a promote rule instead)"
                )
                print(
                    f"\n[3] live session, {opts.second_s:.0f} s: the challenger is promoted "
                    "to champion a third of the way in (the service follows the alias)"
                )
                report.second = await _live_session(
                    core,
                    opts,
                    duration_s=opts.second_s,
                    seed=opts.session_seed + 1,
                    act_at=1 / 3,
                    act=lambda: demo_retrain.promote(rt, LDA),
                )
                print_report(report.second)
        urls = {name: f"http://127.0.0.1:{port}/docs" for name, (_, port, _) in _apis(opts).items()}
        urls |= {
            "workers": f"http://127.0.0.1:{opts.qm_port}/workers",
            **{
                f"worker {i + 1} metrics": f"http://127.0.0.1:{opts.metrics_port + i}/metrics"
                for i in range(opts.workers)
            },
        }
        if "monitoring API" in _apis(opts):
            urls["dashboard"] = f"http://127.0.0.1:{opts.qm_port + 2}/dashboard"
        report.urls |= urls
        print("\nwhere to look:")
        for name, url in urls.items():
            print(f"  {name:<24} {url}")
        if opts.keep:
            print(f"services keep running (API token: {token}); Ctrl-C to stop")
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
