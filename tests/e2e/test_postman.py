"""The Postman collection under newman, against every HTTP service started as a subprocess.

Seeds what the collection reads (a streamed, labelled, predicted session) through the real
path: a model registered for a seed service, one worker with its Prometheus endpoint, the
producer on BrainFlow's synthetic board, the ML data API archiving windows and labels.
Then newman runs the committed collection and its JSON report must show 0 failures; the
worker's ``/metrics`` must count the windows it processed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from launcher import bootstrap
from neurostream.settings import CoreSettings
from postman import services
from postman.generate import COLLECTION, ENVIRONMENT, ROOT

pytestmark = pytest.mark.e2e
SEED_SERVICE = "pm-seed"
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(core: CoreSettings, extra: dict[str, str]) -> dict[str, str]:
    assert core.api_token is not None
    return (
        os.environ
        | {
            "NEUROSTREAM_DATABASE_URL": core.database_url,
            "NEUROSTREAM_AMQP_URL": core.amqp_url,
            "NEUROSTREAM_API_TOKEN": core.api_token.get_secret_value(),
            "NEUROSTREAM_MODE": core.mode,
        }
        | extra
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="module")
def stack(core: CoreSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Every HTTP service + one worker of the seed service, as child processes."""
    logs = tmp_path_factory.mktemp("stack")
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for package in services.available():
            prefix = services.settings_class(package).model_config.get("env_prefix", "")
            port = free_port()
            urls[package] = f"http://127.0.0.1:{port}"
            out = (logs / f"{package}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", package],
                    env=_env(
                        core,
                        {
                            f"{prefix}PORT": str(port),
                            f"{prefix}LOG_LEVEL": "warning",
                            # a 10 s session is enough windows for a drift test
                            "NEUROSTREAM_MON_MIN_WINDOWS": "5",
                        },
                    ),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        metrics_port = free_port()
        worker_log = (logs / "worker.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "workers"],
                env=_env(
                    core,
                    {
                        "NEUROSTREAM_WORKER_SERVICE": SEED_SERVICE,
                        "NEUROSTREAM_WORKER_WORKER_ID": f"{SEED_SERVICE}-1",
                        "NEUROSTREAM_WORKER_METRICS_PORT": str(metrics_port),
                        "NEUROSTREAM_WORKER_HEARTBEAT_S": "1",
                    },
                ),
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_healthy(urls, procs, logs)
        yield {"urls": urls, "metrics": f"http://127.0.0.1:{metrics_port}/metrics", "logs": logs}
    finally:
        _stop(procs)


def _wait_healthy(urls: dict[str, str], procs: list, logs: Path) -> None:
    deadline = time.monotonic() + 90
    pending = dict(urls)
    while pending:
        for name, url in list(pending.items()):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = {f.name: f.read_text()[-2000:] for f in logs.iterdir()}
            pytest.fail(f"services not healthy: {list(pending)}; exited: {dead}; logs: {tails}")
        time.sleep(0.5)


def worker_windows(metrics_url: str, service: str) -> tuple[float, float | None]:
    """(windows processed, queue depth) as the worker's Prometheus endpoint reports them."""
    text = httpx.get(metrics_url, timeout=5).text
    windows, depth = 0.0, None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service") != service:
                continue
            if sample.name == "neurostream_worker_windows_total":
                windows = sample.value
            elif sample.name == "neurostream_worker_queue_depth":
                depth = sample.value
    return windows, depth


@pytest.fixture(scope="module")
async def seeded(core: CoreSettings, stack: dict) -> dict:
    """A labelled session predicted by the worker and archived by the ML data API."""
    from producer.session import run_session
    from producer.settings import ProducerSettings

    trained = await asyncio.to_thread(bootstrap.train_from_simulation, "sklearn-lda", seconds=120)
    await bootstrap.register(
        core, trained, model_name=f"{SEED_SERVICE}-lda", service=SEED_SERVICE, assign=True
    )
    # The worker consumes once its heartbeat sees the assignment.
    await asyncio.sleep(3)
    result = await run_session(
        core,
        ProducerSettings(service=SEED_SERVICE, board="synthetic", duration_s=10, sliding=False),
    )
    assert result.windows_confirmed > 0
    deadline = time.monotonic() + 60
    data_url = stack["urls"]["ml_data_api"]
    async with httpx.AsyncClient() as http:
        while True:
            windows, _ = worker_windows(stack["metrics"], SEED_SERVICE)
            r = await http.get(f"{data_url}/sessions/{result.session_id}")
            archived = r.json() if r.status_code == 200 else {}
            if (
                windows >= result.windows_confirmed
                and archived.get("windows", 0) >= result.windows_confirmed
                and archived.get("labelled", 0) > 0
            ):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"seed session not processed: worker {windows}, data {archived}")
            await asyncio.sleep(0.5)
    return {"session_id": result.session_id, "confirmed": result.windows_confirmed}


async def test_worker_metrics_show_the_windows_it_processed(stack: dict, seeded: dict) -> None:
    await asyncio.sleep(1.5)  # one heartbeat samples the queue depth
    windows, depth = worker_windows(stack["metrics"], SEED_SERVICE)
    assert windows >= seeded["confirmed"]
    assert depth is not None and depth >= 0


@pytest.mark.skipif(not NEWMAN.exists(), reason="run scripts/setup (npm ci) to install newman")
async def test_newman_runs_the_collection_with_no_failures(
    core: CoreSettings, stack: dict, seeded: dict, tmp_path: Path
) -> None:
    assert core.api_token is not None
    report = tmp_path / "newman.json"
    env_vars = [f"baseUrl_{name}={url}" for name, url in stack["urls"].items()]
    env_vars += [
        f"apiToken={core.api_token.get_secret_value()}",
        f"sessionId={seeded['session_id']}",
    ]
    cmd = [
        str(NEWMAN),
        "run",
        str(COLLECTION),
        "-e",
        str(ENVIRONMENT),
        "--reporters",
        "cli,json",
        "--reporter-json-export",
        str(report),
        "--timeout-request",
        "60000",
        "--color",
        "off",
    ]
    for var in env_vars:
        cmd += ["--env-var", var]
    node = shutil.which("node")
    assert node, "node is needed for newman"
    proc = await asyncio.to_thread(
        subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    run = json.loads(report.read_text())["run"]
    failures = [
        f"{f['source'].get('name')}: {f['error'].get('test', '')} {f['error'].get('message')}"
        for f in run["failures"]
    ]
    assert failures == [], proc.stdout[-6000:]
    stats = run["stats"]
    print(
        "newman: " + ", ".join(f"{k} {v['total']} ({v['failed']} failed)" for k, v in stats.items())
    )
    assert stats["requests"]["failed"] == 0 and stats["assertions"]["failed"] == 0
    assert stats["requests"]["total"] >= sum(
        len(services.operations(s.spec)) for s in services.load_all()
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
