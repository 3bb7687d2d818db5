"""The demo's processes: every HTTP service and N workers, started and awaited."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from launcher.demo.options import DemoOptions
from neurostream.settings import CoreSettings


def child_env(core: CoreSettings, token: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)  # PATH and friends for the child; settings below win
    env |= {
        "NEUROSTREAM_DATABASE_URL": core.database_url,
        "NEUROSTREAM_AMQP_URL": core.amqp_url,
        "NEUROSTREAM_API_TOKEN": token,
        "NEUROSTREAM_MODE": core.mode,
        # BrainFlow 5.23 imports pkg_resources (see pyproject.toml)
        "PYTHONWARNINGS": "ignore:pkg_resources is deprecated:UserWarning",
    }
    return env | extra


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def apis(opts: DemoOptions) -> dict[str, tuple[str, int, dict[str, str]]]:
    """HTTP services the demo runs: name -> (module, port, settings)."""
    apis = {
        "queue manager": ("queue_manager", opts.qm_port, {"NEUROSTREAM_QM_LOG_LEVEL": "warning"}),
        "ml data API": ("ml_data_api", opts.qm_port + 1, {}),
        "retraining API": ("retraining_api", opts.qm_port + 3, {}),
    }
    if _has_module("monitoring_api.app"):
        from launcher.demo.monitor import monitoring_env

        mon_env = monitoring_env(opts) if opts.shift_at else {}
        apis["monitoring API"] = ("monitoring_api", opts.qm_port + 2, mon_env)
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
def services(core: CoreSettings, opts: DemoOptions, token: str) -> Iterator[list[str]]:
    """The HTTP services + workers as child processes, stopped with SIGTERM on exit.

    Their output goes to ``opts.log_file`` when set (appended), else to this terminal.
    """
    procs: list[subprocess.Popen[bytes]] = []
    worker_ids = [
        f"demo-{opts.service}-{i + 1}-{secrets.token_hex(2)}" for i in range(opts.workers)
    ]
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(opts.log_file.open("ab")) if opts.log_file else None
        out: dict[str, Any] = {"stdout": log, "stderr": subprocess.STDOUT} if log else {}
        try:
            yield from _start(core, opts, token, worker_ids, procs, out)
        finally:
            _stop(procs)


def _start(
    core: CoreSettings,
    opts: DemoOptions,
    token: str,
    worker_ids: list[str],
    procs: list[subprocess.Popen[bytes]],
    out: dict[str, Any],
) -> Iterator[list[str]]:
    for module, _, extra in apis(opts).values():
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", module], env=child_env(core, token, extra), **out
            )
        )
    for i, wid in enumerate(worker_ids):
        worker_env = {
            "NEUROSTREAM_WORKER_SERVICE": opts.service,
            "NEUROSTREAM_WORKER_WORKER_ID": wid,
            "NEUROSTREAM_WORKER_METRICS_PORT": str(opts.metrics_port + i),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "workers"], env=child_env(core, token, worker_env), **out
            )
        )
    yield worker_ids


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


async def wait_ready(opts: DemoOptions, worker_ids: list[str]) -> None:
    deadline = time.monotonic() + 90
    ports = {name: port for name, (_, port, _) in apis(opts).items()}
    down: list[str] = list(ports)
    missing: set[str] = set(worker_ids)
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            down = []
            for name, port in ports.items():
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
