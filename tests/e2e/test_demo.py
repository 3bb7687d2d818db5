"""The demo as a newcomer runs it: a short story on the terminal, the logs in a file.

Runs the installed ``neurostream demo`` command against the test session's database and
vhost. Before the launcher sent logs to a file the demo printed ~260 lines, two thirds of
them library logs; the figures it printed then are listed below and must all still be
there (the URL list moved behind ``--keep``, which would keep this test waiting).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from neurostream.settings import CoreSettings

pytestmark = pytest.mark.e2e

NEUROSTREAM = Path(sys.executable).with_name("neurostream")
ROOT = Path(__file__).resolve().parents[2]

# Every figure's label in the demo's output before the change (`neurostream demo
# --duration 30`, second run), acts 1-3; the comparison rows are the headline metrics.
FIGURES = [
    "[1] live session",
    "windows confirmed by the broker",
    "serving predictions stored",
    "distinct seq",
    "dead-lettered",
    "ROC-AUC vs ground truth",
    "held-out ROC-AUC (whole live session)",
    "model swap: requested at",
    "first prediction by the new version",
    "latency publish -> prediction row",
    "drift (latest window vs the session's start)",
    "share of features drifted",
    "MMD²",
    "channels shifted by the producer",
    "channels the monitor flags",
    "alert demo-drift-share",
    "[2] training snapshot",
    "labelled windows",
    "retrain job",
    "registered as challenger",
    "metric (held-out test)",
    "roc_auc",
    "balanced_accuracy",
    "[3] live session",
]
# Library and service output that must stay in the log file.
NOISE = ["httpx", "HTTP Request", "Uvicorn running", "board_logger", "pkg_resources", "INFO"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_demo_tells_a_short_story_and_logs_to_a_file(
    core: CoreSettings, tmp_path: Path
) -> None:
    assert core.api_token is not None
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")} | {
        "NEUROSTREAM_DATABASE_URL": core.database_url,
        "NEUROSTREAM_AMQP_URL": core.amqp_url,
        "NEUROSTREAM_API_TOKEN": core.api_token.get_secret_value(),
    }
    args = ["demo", "--duration", "30", "--train-seconds", "300", "--log-file", str(log)]
    args += ["--port", str(free_port()), "--metrics-port", str(free_port())]
    result = subprocess.run(
        [str(NEUROSTREAM), *args],
        cwd=ROOT,  # the synthetic recording is cached under var/
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    lines = out.splitlines()
    assert len(lines) <= 80, out
    missing = [label for label in FIGURES if label not in out]
    assert missing == [], out
    if "training first models" in out:  # a fresh database: the first models' figures too
        assert out.count("validation ROC-AUC") == 2, out
    assert [n for n in NOISE if n in out] == [], out
    assert f"logs of the services, workers and libraries: {log}" in lines[0]
    assert "have stopped; run with --keep" in lines[-1]
    logged = log.read_text(errors="replace")
    assert "Uvicorn running" in logged and "HTTP Request" in logged
    assert "board_logger" in logged  # BrainFlow's own logger, redirected
