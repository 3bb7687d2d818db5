"""Private infrastructure the fault tests may break: a RabbitMQ node and a PostgreSQL cluster.

The shared broker (5672) and database (5432) serve other test runs on this machine, so
restarts and outages only ever hit these throw-away instances: a second RabbitMQ node
(own node name, ports, data and log dirs, no plugins) and a second PostgreSQL cluster
(``initdb`` into a temporary directory). Both are torn down by the session fixtures in
``conftest.py`` whatever happens.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(user: str, cmd: list[str], env: dict[str, str] | None = None) -> list[str]:
    """Run ``cmd`` as ``user`` when we are root (daemons refuse to run as root)."""
    if os.geteuid() != 0:
        return cmd
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return ["su", user, "-s", "/bin/sh", "-c", f"{prefix} {shlex.join(cmd)}".strip()]


class OwnBroker:
    """A second RabbitMQ node: ``stop_app``/``start_app`` it without touching the shared one."""

    def __init__(self) -> None:
        if not shutil.which("rabbitmq-server") or not shutil.which("rabbitmqctl"):
            raise RuntimeError("rabbitmq-server is not installed")
        self.node = f"nsfaults{os.getpid()}@localhost"
        self.port, self.dist_port = free_port(), free_port()
        self.base = Path(tempfile.mkdtemp(prefix="nsfaults-rmq-"))
        (self.base / "enabled_plugins").write_text("[].\n")
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir()
        if os.geteuid() == 0:
            for p in [self.base, *self.base.iterdir()]:
                shutil.chown(p, "rabbitmq", "rabbitmq")
        self.env = {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env={**os.environ, **self.env},
            check=True,
            timeout=30,
            capture_output=True,
        )
        self.wait_ready(90)

    def wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.ctl("await_startup", "--timeout", "10", timeout=20).returncode == 0:
                if _port_open(self.port):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"own RabbitMQ node {self.node} did not start; logs in {self.base}")

    def stop_app(self) -> None:
        res = self.ctl("stop_app")
        if res.returncode != 0:
            raise RuntimeError(f"stop_app failed: {res.stderr}")

    def start_app(self) -> None:
        res = self.ctl("start_app")
        if res.returncode != 0:
            raise RuntimeError(f"start_app failed: {res.stderr}")
        self.wait_ready(60)

    def shutdown(self) -> None:
        self.ctl("stop", timeout=60)
        pid = (self.base / "pid").read_text().strip() if (self.base / "pid").exists() else ""
        if pid.isdigit():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)


class OwnPostgres:
    """A second PostgreSQL cluster in a temporary directory, stopped and started at will."""

    def __init__(self) -> None:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not versions:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.bin = versions[-1].parent
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="nsfaults-pg-"))
        self.data = self.base / "data"
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self._pg(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres"], timeout=120)

    def _pg(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = _as_user("postgres", [str(self.bin / args[0]), *args[1:]])
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {res.stdout}\n{res.stderr}")
        return res

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.base / "log")
        self._pg(["pg_ctl", "-D", str(self.data), "-o", opts, "-l", log, "-w", "start"])

    def stop(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"])

    @property
    def running(self) -> bool:
        return _port_open(self.port)

    def shutdown(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._pg(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"])
            except RuntimeError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
