"""The demo's acts: live session with an assignment swap, retrain, promotion live.

What it prints is the story (set-up, each act's figures, where to look); the services',
workers' and libraries' logs go to ``opts.log_file`` when it is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx

from launcher import bootstrap
from launcher.demo import monitor
from launcher.demo import retrain as demo_retrain
from launcher.demo.options import CNN, LDA, DemoOptions, DemoReport
from launcher.demo.report import print_report, session_report
from launcher.demo.services import apis, services, wait_ready
from neurostream import infra, registry
from neurostream.db import open_pool
from neurostream.settings import CoreSettings
from producer.session import run_session
from producer.settings import ProducerSettings

log = logging.getLogger(__name__)


async def ensure_models(core: CoreSettings, opts: DemoOptions) -> dict[str, int]:
    """Train + register the LDA (champion, serving) and the EEGNet if not registered yet."""
    pool = await open_pool(core.database_url, max_size=1)
    async with pool.connection() as conn:
        have = {m: await registry.get_alias(conn, m, "champion") for m in (LDA, CNN)}
    await pool.close()
    ids: dict[str, int] = {}
    missing = [m for m in (LDA, CNN) if have[m] is None]
    if missing:
        print(
            f"training first models {', '.join(missing)} on a {opts.train_seconds:.0f} s "
            "simulated oddball session (first run only, about a minute)"
        )
    else:
        print(
            "first models: "
            + ", ".join(f"{m} v{have[m]['version']}" for m in (LDA, CNN))  # type: ignore[index]
            + " (champion), registered by an earlier run"
        )
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
            f"  registered {name} v{reg.version}: validation ROC-AUC "
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
    shift: bool = False,
) -> DemoReport:
    """Stream one live synthetic session; run ``act`` (a model change) at ``act_at``."""
    settings = ProducerSettings(
        service=opts.service, board="synthetic", duration_s=duration_s, seed=seed, sliding=False
    )
    if shift and opts.shift_at is not None:
        settings = settings.model_copy(
            update={
                "shift_after_s": duration_s * opts.shift_at,
                "shift_channels": list(opts.shift_channels),
                "shift_gain": opts.shift_gain,
            }
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
    report = await session_report(
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
    if opts.log_file is not None:
        print(
            f"logs of the services, workers and libraries: {opts.log_file} "
            "(--verbose shows them here)"
        )
    infra.ensure_local(core.database_url, core.amqp_url)
    print("PostgreSQL and RabbitMQ are up")
    await ensure_models(core, opts)
    token = core.api_token.get_secret_value() if core.api_token else secrets.token_urlsafe(24)
    auth = {"Authorization": f"Bearer {token}"}
    await _assign_direct(core, opts.service, CNN)
    with services(core, opts, token) as worker_ids:
        started = time.monotonic()
        await wait_ready(opts, worker_ids)
        print(
            f"started {', '.join(apis(opts))} and {opts.workers} workers "
            f"(ready in {time.monotonic() - started:.0f} s)"
        )
        mon_port = apis(opts).get("monitoring API", ("", 0, {}))[1]
        watch = bool(mon_port and opts.shift_at is not None)
        mon = httpx.AsyncClient(base_url=f"http://127.0.0.1:{mon_port}", headers=auth, timeout=120)
        if watch:
            await monitor.add_rule(mon, opts.service)
        shifted = (
            f"; {', '.join(opts.shift_channels)} x{opts.shift_gain:g} from {opts.shift_at:.0%}"
            if watch
            else ""
        )
        print(
            f"\n[1] live session, {opts.duration_s:.0f} s: serving {CNN}; "
            f"the queue manager assigns {LDA} at {opts.swap_at or 0:.0%}{shifted}"
        )
        session_start = datetime.now(UTC)
        report = await _live_session(
            core,
            opts,
            duration_s=opts.duration_s,
            seed=opts.session_seed,
            act_at=opts.swap_at,
            act=lambda: _assign(opts, token, LDA),
            shift=watch,
        )
        print_report(report)
        if watch:
            report.drift = await monitor.drift_after(mon, opts.service, since=session_start)
            monitor.print_drift(report.drift, list(opts.shift_channels))
        await mon.aclose()
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
        urls = {name: f"http://127.0.0.1:{port}/docs" for name, (_, port, _) in apis(opts).items()}
        urls |= {
            "workers": f"http://127.0.0.1:{opts.qm_port}/workers",
            **{
                f"worker {i + 1} metrics": f"http://127.0.0.1:{opts.metrics_port + i}/metrics"
                for i in range(opts.workers)
            },
        }
        if "monitoring API" in apis(opts):
            urls["dashboard"] = f"http://127.0.0.1:{opts.qm_port + 2}/dashboard"
        report.urls |= urls
        if opts.keep:
            print("\nwhere to look (the services keep running; Ctrl-C stops them):")
            for name, url in urls.items():
                print(f"  {name:<24} {url}")
            print(f"  API token for writes     {token}")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
    if not opts.keep:
        print(
            "\nthe services and workers have stopped; run with --keep to keep them running "
            "and see where to look (API docs, dashboard, worker metrics)"
        )
    return report


async def _assign_direct(core: CoreSettings, service: str, model_name: str) -> None:
    """Start every demo from the LDA champion (the swap moves to the EEGNet)."""
    pool = await open_pool(core.database_url, max_size=1)
    try:
        async with pool.connection() as conn:
            await registry.assign(conn, service, model_name, "champion")
    finally:
        await pool.close()
