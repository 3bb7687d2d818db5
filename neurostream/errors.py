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
    │   ├── DatabaseUnavailable         PostgreSQL; ``.at(url, cause)`` words the message
    │   └── BrokerUnavailable           RabbitMQ; likewise
    ├── ConfigError                     a setting or command-line option that cannot work (422)
    ├── SourceError                     an EEG source (board, file, stream) that cannot be read
    ├── ContractError                   a window that breaks the message contract (dead letter)
    ├── ArtifactError                   a model artifact that must not be served (422)
    ├── UnknownPipeline                 a feature pipeline this code base lacks (422; ``key``)
    └── RequestError                    a request that cannot be honoured (422)
        ├── InvalidRequest              bad input beyond schema validation (422)
        ├── NotFound                    the thing named does not exist (404)
        └── Conflict                    it clashes with what exists (409)

Each class is defined once, here, and re-exported where it is used
(``contract.ContractError``, ``models.artifacts.ArtifactError``,
``features.UnknownPipeline``, ``db.DatabaseUnavailable``). Services subclass the leaves
and keep the constructor shape::

    RequestError
    └── registry.RegistryError          a registry input (``field`` names it; 422)
        ├── registry.NotFound           also a NotFound (404)
        ├── registry.Conflict           also a Conflict (409)
        │   └── registry.Incompatible   a service input a model cannot meet (409)
        └── registry.BadRef             also an InvalidRequest (422)
    InvalidRequest
    ├── queue_manager.validation.InvalidUpload
    ├── retraining_api.validation.InvalidRequest
    ├── ml_data_api.errors.Invalid
    └── monitoring_api.errors.MonitoringError
    NotFound
    ├── ml_data_api.errors.NotFound
    └── monitoring_api.errors.NotFound
    Conflict
    └── retraining_api.promotion.JobLost  the job stopped being this runner's

Nothing else in the code base derives from ``Exception`` directly to signal a user-facing
failure (``retraining_api.progress.Cancelled`` is a control-flow signal, not an error).
"""

from __future__ import annotations

import re
from typing import ClassVar, Self, TypedDict, Unpack

__all__ = [
    "ArtifactError",
    "BrokerUnavailable",
    "ConfigError",
    "Conflict",
    "Context",
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

_SECRET = "***"
# libpq key/value strings (``host=h password=p``, quoted values with escapes) and the same
# keys in a URL's query (``postgresql:///db?password=p``); ``sslpassword`` is caught too.
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"(password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs.

    Takes URLs (``amqp://guest:guest@host:5672/``, ``postgresql://u:p@h/db``, several
    comma-separated hosts, ``?password=`` in the query) and libpq key/value strings
    (``host=h password=p``).
    """
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub(rf"\1{_SECRET}", url)
    # The authority is what follows "//" up to the first "/", "?" or "#" (as urlsplit
    # reads it); editing the string in place keeps the URL as configured, where
    # urlunsplit would rewrite it (``postgresql:///db`` loses its empty host) and
    # urlsplit refuses some (an unclosed "[").
    netloc = re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0]
    userinfo = netloc.rpartition("@")[0]  # a password may itself hold an "@"
    user, colon, _ = userinfo.partition(":")
    out = url.replace(f"//{userinfo}@", f"//{user}:{_SECRET}@", 1) if colon else url
    head, sep, query = out.partition("?")
    return head + sep + _QUERY_PASSWORD.sub(rf"\1{_SECRET}", query)


class Context(TypedDict, total=False):
    """The keyword context every error takes (subclasses pass it on with ``**context``)."""

    field: str | None
    status: int | None
    hint: str | None
    session_id: str | None
    seq: int | None


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
    """A server the part needs cannot be reached; retrying after starting it helps.

    ``at(url, cause)`` writes the one message for every part that connects: the server,
    where (password hidden), why, and the command that starts it; ``reconnecting(url)``
    the one for a health check that finds a robust connection down.
    """

    status: int = 503
    server: ClassVar[str] = "the server"
    start: ClassVar[str] = "`neurostream infra up`"

    @classmethod
    def at(cls, url: str, cause: BaseException) -> Self:
        # Drivers may echo the URL in their error text: hide its password there too.
        why = str(cause).replace(url, redact_url(url)) or type(cause).__name__
        return cls(
            f"cannot reach {cls.server} at {redact_url(url)}: {why}. Start it with {cls.start}."
        )

    @classmethod
    def reconnecting(cls, url: str) -> Self:
        """A robust connection that dropped and is being re-established (health checks)."""
        return cls(
            f"the connection to {cls.server} at {redact_url(url)} is closed and reconnecting; "
            f"if it stays closed, start it with {cls.start}."
        )


class DatabaseUnavailable(Unavailable):
    """PostgreSQL could not be reached; the message names the command that starts it."""

    server = "PostgreSQL"
    start = (
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
        "or `neurostream infra up`"
    )


class BrokerUnavailable(Unavailable):
    """RabbitMQ could not be reached; the message names the command that starts it."""

    server = "RabbitMQ"
    start = "`rabbitmq-server -detached` or `neurostream infra up`"


class ConfigError(NeurostreamError):
    """A setting or command-line option that cannot work; ``field`` names it."""

    status: int = 422


class SourceError(NeurostreamError):
    """An EEG source that cannot be opened or read (board, file, stream)."""

    status: int = 422


class ContractError(NeurostreamError):
    """A window that breaks the contract; ``reason`` goes into the dead-letter header."""

    status: int = 422

    @property
    def reason(self) -> str:
        return self.message


class ArtifactError(NeurostreamError):
    """An artifact that must not be served: bad hash, untrusted content, or unloadable."""

    status: int = 422


class UnknownPipeline(NeurostreamError):
    """A feature pipeline key this code base does not provide; ``key`` is the key asked for."""

    status: int = 422

    def __init__(self, message: str, *, key: str = "", **context: Unpack[Context]) -> None:
        context.setdefault("field", "feature_pipeline")
        super().__init__(message, **context)
        self.key = key

    @classmethod
    def of(cls, key: str, available: list[str]) -> UnknownPipeline:
        return cls(
            f"unknown feature pipeline {key!r}; available: {available} (upgrade neurostream "
            "on this worker, or retrain the model on an available one)",
            key=key,
        )


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
