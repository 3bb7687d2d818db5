"""``neurostream train`` and ``neurostream retrain`` against the real PostgreSQL: what a
user's command registers, and the path from stored labelled sessions to a retrain job.

The commands run as the installed console script in a subprocess, pointed at the test
session's isolated database and vhost by environment variables."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from neurostream import datasets, registry
from neurostream.settings import CoreSettings
from tests.factories import synthetic_p300, unique
from tests.recording_files import EEG_NOTEBOOKS

pytestmark = pytest.mark.integration
NEUROSTREAM = Path(sys.executable).with_name("neurostream")
VISUAL_P300 = EEG_NOTEBOOKS / "visual" / "P300" / "subject2" / "session1"


def neurostream(core: CoreSettings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")}
    env |= {
        "NEUROSTREAM_DATABASE_URL": core.database_url,
        "NEUROSTREAM_AMQP_URL": core.amqp_url,
        "NEUROSTREAM_API_TOKEN": core.api_token.get_secret_value() if core.api_token else "",
    }
    return subprocess.run(
        [str(NEUROSTREAM), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.mark.skipif(
    not VISUAL_P300.is_dir(), reason=f"the real recordings are not in {VISUAL_P300}"
)
async def test_train_on_two_runs_registers_channels_by_name_and_the_loro_score(
    core: CoreSettings, pool: Any, tmp_path: Path
) -> None:
    run1, run2 = sorted(VISUAL_P300.glob("*.csv"))[:2]
    name, service = unique("visual-p300"), unique("svc")
    result = neurostream(
        core,
        *("train", "--file", str(run1), "--file", str(run2)),
        *("--events", "target=2,nontarget=1", "--family", "sklearn-lda"),
        *("--model-name", name, "--service", service),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{run1.name}: nontarget 170  target 24" in out
    assert "leave-one-run-out (2 runs): ROC-AUC" in out and "stratified 5-fold" in out
    assert f"registered {name} v1" in out and f"service {service} now serves {name}" in out
    async with pool.connection() as conn:
        version = await registry.get_version(conn, name, 1)
        serving = await registry.resolve_service(conn, service)
    assert version is not None
    assert version["input_spec"]["channels"] == ["TP9", "AF7", "AF8", "TP10"]
    assert version["input_spec"]["fs"] == 256.0
    metrics = version["metrics"]
    cv = metrics["cv"]
    assert cv["scheme"] == "leave-one-run-out" and cv["n_folds"] == 2
    assert [f["test"] for f in cv["folds"]] == [run1.name, run2.name]
    assert metrics["roc_auc"] == cv["roc_auc"] is not None
    assert cv["balanced_accuracy"] is not None and cv["pooled"]["n"] == metrics["fitted_on"]
    assert metrics["cv_kfold"]["scheme"] == "stratified-kfold"
    lineage = metrics["lineage"]
    assert [f["name"] for f in lineage["files"]] == [run1.name, run2.name]
    assert all(len(f["sha256"]) == 64 for f in lineage["files"])
    assert lineage["events"] == {"target": 2, "nontarget": 1}
    assert lineage["dataset_hash"] == version["dataset_hash"]
    assert serving.serving == version["id"]


async def _labelled_session(conn: Any, session_id: str, seed: int) -> None:
    """An archived, labelled epoch session as the archiver and the collector leave it."""
    x, y = synthetic_p300(n=30, seed=seed)
    for seq, (window, label) in enumerate(zip(x, y, strict=True)):
        await conn.execute(
            """INSERT INTO windows (session_id, seq, window_ts, service, kind, marker, fs,
                n_channels, n_samples, data, channels)
            VALUES (%s, %s, %s, 'p300', 'epoch', %s, 250, %s, %s, %s, %s)""",
            [
                session_id, seq, datetime.fromtimestamp(1e9 + seq, UTC), int(label) + 1,
                window.shape[0], window.shape[1], window.tobytes(),
                '["Fz", "Cz", "Pz", "Oz"]',
            ],
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO labels (session_id, seq, label) VALUES (%s, %s, %s)",
            [session_id, seq, int(label)],
        )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_retrain_snapshots_the_sessions_and_holds_the_last_one_out(
    core: CoreSettings, pool: Any, tmp_path: Path
) -> None:
    a, b = unique("s-a"), unique("s-b")
    async with pool.connection() as conn:
        await _labelled_session(conn, a, 1)
        await _labelled_session(conn, b, 2)
    name = unique("retrain")
    api = f"http://127.0.0.1:{_closed_port()}"
    result = neurostream(
        core,
        *("retrain", "--session", a, "--session", b, "--model-name", name),
        *("--service", "", "--api", api),
        cwd=tmp_path,
    )
    # The snapshots are stored; no retraining API listens there, which it says.
    assert f"training dataset {name}-sessions@1" in result.stdout
    assert f"testing dataset {name}-sessions-test@1" in result.stdout
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: cannot reach the retraining API at {api}" in result.stderr
    assert "neurostream retraining-api" in result.stderr
    async with pool.connection() as conn:
        train = await datasets.get_dataset(conn, f"{name}-sessions")
        test = await datasets.get_dataset(conn, f"{name}-sessions-test")
    assert train is not None and train["kind"] == "training" and train["n_rows"] == 30
    assert train["channels"] == ["Fz", "Cz", "Pz", "Oz"]
    assert test is not None and test["kind"] == "testing" and test["n_rows"] == 30


def test_retrain_on_one_session_asks_for_held_out_data(core: CoreSettings, tmp_path: Path) -> None:
    result = neurostream(core, "retrain", "--session", "s-only", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hint: add --test-session S" in result.stderr


async def test_retrain_queues_a_job_the_retraining_api_runs(
    core: CoreSettings, pool: Any, tmp_path: Path
) -> None:
    a, b = unique("s-a"), unique("s-b")
    async with pool.connection() as conn:
        await _labelled_session(conn, a, 3)
        await _labelled_session(conn, b, 4)
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")}
    env |= {
        "NEUROSTREAM_DATABASE_URL": core.database_url,
        "NEUROSTREAM_AMQP_URL": core.amqp_url,
        "NEUROSTREAM_API_TOKEN": core.api_token.get_secret_value() if core.api_token else "",
        "NEUROSTREAM_RT_PORT": str(port),
        "NEUROSTREAM_RT_POLL_S": "0.2",
    }
    api = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "retraining_api"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # until it listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.1)
        name = unique("retrain")
        result = neurostream(
            core,
            *("retrain", "--session", a, "--session", b, "--model-name", name),
            *("--service", "", "--api", f"http://127.0.0.1:{port}", "--follow"),
            cwd=tmp_path,
        )
    finally:
        api.terminate()
        await asyncio.wait_for(api.wait(), timeout=30)
    assert result.returncode == 0, result.stderr
    assert "retrain job" in result.stdout and f"curl http://127.0.0.1:{port}/jobs/" in result.stdout
    assert f"{name} v1 is the challenger" in result.stdout
    async with pool.connection() as conn:
        version = await registry.get_version(conn, name, 1)
    assert version is not None and version["input_spec"]["channels"] == ["Fz", "Cz", "Pz", "Oz"]
