"""Private infrastructure the fault tests may break: a RabbitMQ node and a PostgreSQL cluster.

The shared broker (5672) and database (5432) serve other test runs on this machine, so
restarts and outages only ever hit these throw-away instances: a second RabbitMQ node
(own node name, ports, data and log dirs, no plugins), a three-node RabbitMQ cluster
whose nodes are killed and restarted, and a second PostgreSQL cluster (``initdb`` into a
temporary directory). All are torn down by the session fixtures in ``conftest.py``
whatever happens.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


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


class OwnCluster:
    """Three RabbitMQ nodes on this machine joined into one cluster, for killing nodes.

    Each node has its own name (``nscluster<pid><a|b|c>@localhost``), AMQP and distribution
    ports and directories under one temporary base. The nodes boot in parallel, then the
    second and third join the first (``stop_app``, ``join_cluster``, ``start_app``). ``kill``
    is a SIGKILL of the node's VM, as a crashed host would be; ``restart`` boots it again on
    the same name and data so it rejoins as the same cluster member.
    """

    SIZE = 3

    def __init__(self) -> None:
        if not shutil.which("rabbitmq-server") or not shutil.which("rabbitmqctl"):
            raise RuntimeError("rabbitmq-server is not installed")
        self.base = Path(tempfile.mkdtemp(prefix="nscluster-rmq-"))
        tag = f"nscluster{os.getpid()}"
        self.nodes = [f"{tag}{c}@localhost" for c in "abc"[: self.SIZE]]
        self.ports = [free_port() for _ in self.nodes]
        self.dist_ports = [free_port() for _ in self.nodes]
        self.envs: list[dict[str, str]] = []
        (self.base / "enabled_plugins").write_text("[].\n")
        paths = [self.base, self.base / "enabled_plugins"]
        for i, node in enumerate(self.nodes):
            home = self.base / node.split("@")[0]
            for sub in ("", "mnesia", "log"):
                (home / sub).mkdir(exist_ok=True)
                paths.append(home / sub)
            self.envs.append(
                {
                    "RABBITMQ_NODENAME": node,
                    "RABBITMQ_NODE_PORT": str(self.ports[i]),
                    "RABBITMQ_DIST_PORT": str(self.dist_ports[i]),
                    "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(home / "log"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
                    "RABBITMQ_PID_FILE": str(home / "pid"),
                    "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
                    # Three VMs share two cores with the tests: one scheduler each.
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 1:1 +sbwt none",
                }
            )
        if os.geteuid() == 0:
            for p in paths:
                shutil.chown(p, "rabbitmq", "rabbitmq")
        self.startup_s = 0.0

    # -- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Every node in one URL, first node first."""
        return self.url_from(0)

    def url_from(self, i: int) -> str:
        """The same hosts rotated to start at node ``i``: a client connects there first."""
        hosts = [f"127.0.0.1:{p}" for p in self.ports[i:] + self.ports[:i]]
        return f"amqp://guest:guest@{','.join(hosts)}/"

    def node_url(self, i: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports[i]}/"

    def index(self, node: str) -> int:
        return self.nodes.index(node)

    # -- control -----------------------------------------------------------------------

    def ctl(self, i: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.nodes[i], *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _ctl_ok(self, i: int, *args: str, timeout: float = 60) -> str:
        res = self.ctl(i, *args, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl -n {self.nodes[i]} {' '.join(args)} failed: {res.stderr.strip()}"
                f"; logs in {self.base}"
            )
        return res.stdout

    def _boot(self, i: int) -> None:
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env={**os.environ, **self.envs[i]},
            check=True,
            timeout=30,
            capture_output=True,
        )

    def _wait_ready(self, i: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                res = self.ctl(i, "await_startup", "--timeout", "20", timeout=40)
            except subprocess.TimeoutExpired:  # the CLI's own VM is slow on a loaded host
                continue
            if res.returncode == 0 and _port_open(self.ports[i]):
                return
            time.sleep(0.3)
        raise RuntimeError(f"cluster node {self.nodes[i]} did not start; logs in {self.base}")

    def _boot_ready(self, i: int) -> None:
        self._boot(i)
        self._wait_ready(i, 120)

    def _join_first(self, i: int) -> None:
        self._ctl_ok(i, "stop_app")
        self._ctl_ok(i, "join_cluster", self.nodes[0])
        self._ctl_ok(i, "start_app")
        self._wait_ready(i, 60)

    def _parallel(self, fn: Callable[[int], None], indices: Iterable[int]) -> None:
        with ThreadPoolExecutor(max_workers=self.SIZE) as pool:
            for f in [pool.submit(fn, i) for i in indices]:
                f.result()

    def start(self) -> None:
        """Boot the nodes in parallel and join the others to the first one."""
        t0 = time.monotonic()
        self._parallel(self._boot_ready, range(self.SIZE))
        self._parallel(self._join_first, range(1, self.SIZE))
        self.wait_running(list(range(self.SIZE)), 60)
        self.startup_s = time.monotonic() - t0

    def running_nodes(self, via: int | None = None) -> list[str]:
        """Nodes the cluster sees running, asked of ``via`` (or of any live node)."""
        for i in [via] if via is not None else self.live():
            out = self.ctl(i, "cluster_status", "--formatter", "json", timeout=30)
            if out.returncode == 0:
                return list(json.loads(out.stdout)["running_nodes"])
        return []

    def wait_running(self, indices: list[int], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        want = {self.nodes[i] for i in indices}
        while time.monotonic() < deadline:
            if want <= set(self.running_nodes()):
                return
            time.sleep(0.3)
        raise RuntimeError(f"nodes {sorted(want)} not running in the cluster; logs in {self.base}")

    def pid(self, i: int) -> int | None:
        """The OS pid of node ``i``'s VM (from its pid file), if it is alive."""
        path = Path(self.envs[i]["RABBITMQ_PID_FILE"])
        text = path.read_text().strip() if path.exists() else ""
        if text.isdigit() and Path(f"/proc/{text}").exists():
            return int(text)
        return None

    def live(self) -> list[int]:
        return [i for i in range(self.SIZE) if self.pid(i) is not None]

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``'s VM and wait until it is gone, from the OS and from epmd."""
        pid = self.pid(i)
        if pid is None:
            raise RuntimeError(f"cluster node {self.nodes[i]} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        name = self.nodes[i].split("@")[0]
        while time.monotonic() < deadline:
            gone = not Path(f"/proc/{pid}").exists() or _zombie(pid)
            names = subprocess.run(
                ["epmd", "-names"], capture_output=True, text=True, check=False, timeout=10
            ).stdout
            if gone and f"name {name} " not in names and not _port_open(self.ports[i]):
                return
            time.sleep(0.1)
        raise RuntimeError(f"cluster node {self.nodes[i]} (pid {pid}) did not die")

    def restart(self, i: int) -> None:
        """Boot a killed node on its name and data; return once the others see it running."""
        self._boot(i)
        self._wait_ready(i, 120)
        self.wait_running([i], 60)

    # -- queues and connections --------------------------------------------------------

    def _queue_info(self, queue: str, vhost: str = "/") -> dict[str, Any]:
        for i in self.live():
            res = self.ctl(
                i, "list_queues", "-p", vhost, "name", "leader", "members", "online",
                "messages_ready", "messages_unacknowledged", "consumers",
                "--formatter", "json", timeout=30,
            )  # fmt: skip
            if res.returncode == 0:
                for q in json.loads(res.stdout):
                    if q["name"] == queue:
                        return dict(q)
                raise KeyError(f"queue {queue!r} not found on the cluster")
        raise RuntimeError(f"no live cluster node answered; logs in {self.base}")

    def leader(self, queue: str, vhost: str = "/") -> int:
        """Index of the node that leads the quorum queue ``queue``."""
        return self.index(self._queue_info(queue, vhost)["leader"])

    def members(self, queue: str, vhost: str = "/") -> list[int]:
        """Indices of the quorum queue's members (online or not)."""
        return sorted(self.index(n) for n in self._queue_info(queue, vhost)["members"])

    def online(self, queue: str, vhost: str = "/") -> list[int]:
        return sorted(self.index(n) for n in self._queue_info(queue, vhost)["online"])

    def queue_counts(self, queue: str, vhost: str = "/") -> dict[str, int]:
        """``messages_ready``, ``messages_unacknowledged``, ``consumers`` of ``queue``."""
        q = self._queue_info(queue, vhost)
        return {k: int(q[k]) for k in ("messages_ready", "messages_unacknowledged", "consumers")}

    def connections(self, i: int) -> list[str]:
        """Names of the client connections that node ``i`` serves: the name the client
        gave (``connection_name``), else the broker's ``peer -> node`` name."""
        for j in self.live():
            res = self.ctl(
                j, "list_connections", "name", "port", "client_properties", "--formatter", "json"
            )
            if res.returncode == 0:
                return [
                    _connection_name(c)
                    for c in json.loads(res.stdout)
                    if c["port"] == self.ports[i]
                ]
        raise RuntimeError(f"no live cluster node answered; logs in {self.base}")

    def shutdown(self) -> None:
        """Stop every node (kill what does not stop) and delete the base directory."""
        for i in range(self.SIZE):
            pid = self.pid(i)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)


def _connection_name(info: dict[str, Any]) -> str:
    # client_properties as rabbitmqctl's JSON writes an AMQP table: [[key, type, value], ...]
    for key, _type, value in info.get("client_properties") or []:
        if key == "connection_name":
            return str(value)
    return str(info["name"])


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
