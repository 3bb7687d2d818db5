"""The one error tree of neurostream: every error a part raises on purpose is one of these.

One constructor shape everywhere: the message first (a sentence that says what went wrong
and, where there is one, what to do), then keyword context. ``field`` names the input at
fault (an API field, a setting, a header), ``status`` is the HTTP status an API answers
with, ``session_id``/``seq`` locate a window. The HTTP services map any
``NeurostreamError`` to ``status`` with the message as ``detail`` (``neurostream.api``),
so a service adds a subclass, never a handler. The command line prints ``str(error)`` and
``hint`` as one readable line and exits non-zero.

::

    NeurostreamError                    message, *, field, status, hint, session_id, seq
    ├── Unavailable                     a server the part needs cannot be reached (503)
    │   ├── DatabaseUnavailable         PostgreSQL; the message names the command to start it
    │   └── BrokerUnavailable           RabbitMQ; likewise
    ├── ConfigError                     a setting or command-line option that cannot work
    ├── SourceError                     an EEG source (board, file, stream) that cannot be read
    ├── ContractError                   a window that breaks the message contract (dead letter)
    ├── ArtifactError                   a model artifact that must not be served
    ├── UnknownPipeline                 a feature pipeline this code base lacks
    └── RequestError                    a request that cannot be honoured (422)
        ├── InvalidRequest              bad input beyond schema validation (422)
        ├── NotFound                    the thing named does not exist (404)
        └── Conflict                    it clashes with what exists (409)

Services subclass these (``registry.RegistryError`` is a ``RequestError``; the queue
manager's ``InvalidUpload`` an ``InvalidRequest``); nothing else in the code base derives
from ``Exception`` directly to signal a user-facing failure.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "ArtifactError",
    "BrokerUnavailable",
    "ConfigError",
    "Conflict",
    "ContractError",
    "DatabaseUnavailable",
    "InvalidRequest",
    "NeurostreamError",
    "NotFound",
    "RequestError",
    "SourceError",
    "Unavailable",
    "UnknownPipeline",
    "redact_url",
]

_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs.

    Takes URLs (``amqp://guest:guest@host:5672/``, ``postgresql://u:p@h/db``, several
    comma-separated hosts) and libpq key/value strings (``host=h password=p``).
    """
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
    return urlunsplit(parts._replace(netloc=netloc))


class NeurostreamError(Exception):
    """Base of every deliberate neurostream error; see the module docstring for the tree."""

    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        status: int | None = None,
        hint: str | None = None,
        session_id: str | None = None,
        seq: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        self.session_id = session_id
        self.seq = seq
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class Unavailable(NeurostreamError):
    """A server the part needs cannot be reached; retrying after starting it helps."""

    status: int = 503


class DatabaseUnavailable(Unavailable):
    """PostgreSQL could not be reached; the message names the command that starts it."""

    @classmethod
    def at(cls, url: str, cause: BaseException) -> DatabaseUnavailable:
        return cls(
            f"cannot reach PostgreSQL at {redact_url(url)}: {cause}. Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or `neurostream infra up`."
        )


class BrokerUnavailable(Unavailable):
    """RabbitMQ could not be reached; the message names the command that starts it."""

    @classmethod
    def at(cls, url: str, cause: BaseException) -> BrokerUnavailable:
        return cls(
            f"cannot reach RabbitMQ at {redact_url(url)}: {cause}. Start it with "
            "`rabbitmq-server -detached` or `neurostream infra up`."
        )


class ConfigError(NeurostreamError):
    """A setting or command-line option that cannot work; ``field`` names it."""

    status: int = 422


class SourceError(NeurostreamError):
    """An EEG source that cannot be opened or read (board, file, stream)."""

    status: int = 422


class ContractError(NeurostreamError):
    """A window that breaks the contract; ``reason`` goes into the dead-letter header."""

    status: int = 422

    def __init__(
        self, reason: str, *, session_id: str | None = None, seq: int | None = None
    ) -> None:
        super().__init__(reason, session_id=session_id, seq=seq)

    @property
    def reason(self) -> str:
        return self.message


class ArtifactError(NeurostreamError):
    """An artifact that must not be served: bad hash, untrusted content, or unloadable."""

    status: int = 422


class UnknownPipeline(NeurostreamError):
    """A feature pipeline key this code base does not provide (``field`` is the key)."""

    status: int = 422

    def __init__(self, key: str, *, available: list[str] | None = None) -> None:
        listed = f"; available: {available}" if available is not None else ""
        super().__init__(
            f"unknown feature pipeline {key!r}{listed} "
            "(register models for a pipeline this worker's code provides)",
            field="feature_pipeline",
        )
        self.key = key


class RequestError(NeurostreamError):
    """A request that cannot be honoured; ``field`` names the offending input."""

    status: int = 422


class InvalidRequest(RequestError):
    """Input that passed schema validation but cannot be used."""

    status: int = 422


class NotFound(RequestError):
    """The named thing (service, model, version, session, ...) does not exist."""

    status: int = 404


class Conflict(RequestError):
    """The request clashes with what exists (duplicate name, alias still followed)."""

    status: int = 409
