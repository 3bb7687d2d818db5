"""Local infrastructure for the one-command demo and the tests.

Starts this machine's PostgreSQL and RabbitMQ when they are not up and creates what
the project needs (database, vhost). Only acts on local hosts: a remote or managed
broker/database is used as configured and never started from here.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from neurostream import broker
from neurostream.db import ensure_database
from neurostream.errors import redact_url

log = logging.getLogger(__name__)
_LOCAL = {"127.0.0.1", "localhost", "::1", ""}


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.5)
    return False


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    log.info("$ %s", " ".join(cmd))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def ensure_postgres(database_url: str) -> None:
    """Start the local cluster if it is down, then create the database if missing."""
    url = urlparse(database_url)
    host, port = url.hostname or "127.0.0.1", url.port or 5432
    if not port_open(host, port):
        if host not in _LOCAL or not shutil.which("pg_ctlcluster"):
            raise RuntimeError(
                f"PostgreSQL is not reachable at {host}:{port}; start it "
                "(e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)"
            )
        for version in sorted(p.name for p in Path("/etc/postgresql").iterdir()):
            _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"])
        if not _wait_port(host, port, 30):
            raise RuntimeError(f"PostgreSQL did not come up on {host}:{port}")
    ensure_database(database_url)


def ensure_rabbitmq(amqp_url: str) -> None:
    """Start the local broker if it is down, then create the URL's vhost if missing.

    A URL that lists several nodes is a cluster, run by whoever runs it: it is only
    checked that one node answers.
    """
    nodes = broker.addresses(amqp_url)
    if len(nodes) > 1:
        reachable = [n for n in nodes if port_open(*_host_port(n))]
        if not reachable:
            raise RuntimeError(
                f"no RabbitMQ node of {redact_url(amqp_url)} is reachable; start the cluster"
            )
        return
    url = urlparse(amqp_url)
    host, port = url.hostname or "127.0.0.1", url.port or 5672
    if not port_open(host, port):
        if host not in _LOCAL or not shutil.which("rabbitmq-server"):
            raise RuntimeError(
                f"RabbitMQ is not reachable at {host}:{port}; "
                "start it (`rabbitmq-server -detached`)"
            )
        _run(["rabbitmq-server", "-detached"])
        _run(["rabbitmqctl", "wait", "--timeout", "60", "--pid", "0"], timeout=90)
        if not _wait_port(host, port, 60):
            raise RuntimeError(f"RabbitMQ did not come up on {host}:{port}")
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    if vhost != "/" and host in _LOCAL:
        ensure_vhost(vhost, url.username or "guest")


def _host_port(amqp_url: str) -> tuple[str, int]:
    url = urlparse(amqp_url)
    return url.hostname or "127.0.0.1", url.port or (5671 if url.scheme == "amqps" else 5672)


def ensure_vhost(vhost: str, user: str = "guest") -> None:
    listed = _run(["rabbitmqctl", "-q", "list_vhosts"]).stdout.split()
    if vhost not in listed:
        _run(["rabbitmqctl", "add_vhost", vhost])
    _run(["rabbitmqctl", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"])


def delete_vhost(vhost: str) -> None:
    _run(["rabbitmqctl", "delete_vhost", vhost])


def ensure_local(database_url: str, amqp_url: str) -> None:
    ensure_postgres(database_url)
    ensure_rabbitmq(amqp_url)
