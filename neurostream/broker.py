"""Connecting to RabbitMQ: one node or a cluster, with fail-over to another node.

Every part (producer, workers, decider, the APIs, the outlets) connects through
``connect``. ``NEUROSTREAM_AMQP_URL`` may name several nodes of one cluster, as several
hosts in one URL (``amqp://u:p@rabbit-0:5672,rabbit-1:5672,rabbit-2:5672/vhost``, the
form the Java and .NET clients' address lists and MongoDB's URLs use) or as several full
URLs separated by commas or spaces.

aio-pika's robust connection reconnects to the one URL it was given (its issue #141),
so a node that is killed stays the only one it tries. ``FailoverConnection`` keeps
aio-pika's recovery (channels reopened, exchanges, queues, bindings and consumers
re-declared, ``reconnect_callbacks`` run) and changes only where each attempt goes: the
first connection takes the first node that answers, in the listed order, and every
reconnect attempt after that goes to the next node round the list. A live node of the
cluster serves every queue (quorum queues are replicated, their leader moves), so the
next node is as good as the one that went away.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

from neurostream.errors import BrokerUnavailable, ConfigError, redact_url

log = logging.getLogger(__name__)

_SCHEMES = ("amqp://", "amqps://")


def addresses(amqp_url: str) -> tuple[str, ...]:
    """One URL per broker node of ``amqp_url`` (see the module docstring for the forms)."""
    text = amqp_url.strip()
    if not text:
        raise ConfigError("the AMQP URL is empty", field="amqp_url")
    # Several full URLs: a separator followed by a scheme starts the next one.
    parts = [p for p in re.split(r"[\s,]+(?=amqps?://)", text) if p]
    out: list[str] = []
    for part in parts:
        if not part.startswith(_SCHEMES):
            raise ConfigError(
                f"{redact_url(part)!r} is not an AMQP URL: it must start with amqp:// or amqps://",
                field="amqp_url",
            )
        scheme, rest = part.split("://", 1)
        authority, sep, tail = _split_authority(rest)
        userinfo, at, hosts = authority.rpartition("@")
        for host in hosts.split(","):
            if not host.strip():
                raise ConfigError(
                    f"{redact_url(part)!r} lists an empty host (two commas, or a comma at "
                    "the end of the host list)",
                    field="amqp_url",
                )
            out.append(f"{scheme}://{userinfo}{at}{host.strip()}{sep}{tail}")
    return tuple(out)


def _split_authority(rest: str) -> tuple[str, str, str]:
    """``host-list`` and what follows it (``/vhost?query``), split at the first / ? or #."""
    match = re.search(r"[/?#]", rest)
    if match is None:
        return rest, "", ""
    i = match.start()
    return rest[:i], rest[i], rest[i + 1 :]


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection that moves to the next address on every reconnect attempt.

    aio-pika clears ``transport`` right before each connection attempt (and in
    ``Connection.__init__`` and on ``close``, which are not attempts); that is the one
    point every attempt passes, the first and the failed ones included, so the address
    moves there. A test of this module
    (``tests/integration/test_broker.py``) fails if a later aio-pika stops passing it.
    """

    def __init__(self, urls: Sequence[URL], start: int = 0, **kwargs: Any) -> None:
        self.addresses: tuple[URL, ...] = tuple(urls)
        self._index = start % len(self.addresses)
        self._attempts = 0
        self.failovers = 0  # reconnect attempts made after the first connection
        super().__init__(self.addresses[self._index], **kwargs)
        self._attempts = 0  # the clear in Connection.__init__ is not an attempt

    @property
    def transport(self) -> Any:
        return self.__dict__.get("_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if (
            value is None
            and hasattr(self, "_attempts")
            and not getattr(self, "_close_called", False)
        ):
            if self._attempts:
                self._index = (self._index + 1) % len(self.addresses)
                self.url = self.addresses[self._index]
                self.failovers += 1
                log.info("connecting to RabbitMQ at %s", self)
            self._attempts += 1
        self.__dict__["_transport"] = value


async def connect(
    amqp_url: str,
    *,
    name: str | None = None,
    connect_timeout_s: float = 10.0,
    reconnect_s: float = 1.0,
) -> AbstractRobustConnection:
    """A robust connection to the first node of ``amqp_url`` that answers.

    ``name`` is the connection's name on the broker (``rabbitmqctl list_connections
    name``); ``reconnect_s`` the pause between reconnect attempts (aio-pika's default of
    5 s is the length of a fail-over when a node dies).
    """
    urls = [URL(a) for a in addresses(amqp_url)]
    properties = {"connection_name": name} if name else None
    errors: list[str] = []
    for start in range(len(urls)):
        connection = FailoverConnection(
            urls,
            start=start,
            client_properties=properties,
            reconnect_interval=reconnect_s,
        )
        try:
            await connection.connect(timeout=connect_timeout_s)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            errors.append(f"{redact_url(str(urls[start]))}: {str(exc) or type(exc).__name__}")
            await connection.close()
            continue
        return connection
    if len(urls) == 1:
        raise BrokerUnavailable.at(amqp_url, _Failed(errors[0].split(": ", 1)[1]))
    raise BrokerUnavailable.at(amqp_url, _Failed("; ".join(errors)))


def current_address(connection: AbstractRobustConnection) -> str:
    """The address ``connection`` uses now (password hidden): for logs and tests."""
    return redact_url(str(getattr(connection, "url", "")))


class _Failed(Exception):
    """Why no node answered: each node's own error, joined (for ``Unavailable.at``)."""
