"""The one error tree: every class in it, the tree its docstring draws, and redact_url."""

from __future__ import annotations

import importlib
import re

import pytest

import ml_data_api.errors
import monitoring_api.errors
import queue_manager.validation
import retraining_api.promotion
import retraining_api.validation
from neurostream import errors, registry
from neurostream.db import ensure_database
from neurostream.errors import (
    BrokerUnavailable,
    ContractError,
    DatabaseUnavailable,
    NeurostreamError,
    UnknownPipeline,
    redact_url,
)
from producer.publisher import WindowPublisher
from retraining_api.progress import Cancelled

CORE = [
    obj
    for name in errors.__all__
    if isinstance(obj := getattr(errors, name), type) and issubclass(obj, BaseException)
]
# Each service error with the HTTP status it answers with.
SERVICE: dict[type[NeurostreamError], int] = {
    registry.RegistryError: 422,
    registry.NotFound: 404,
    registry.Conflict: 409,
    registry.BadRef: 422,
    ml_data_api.errors.Invalid: 422,
    ml_data_api.errors.NotFound: 404,
    monitoring_api.errors.MonitoringError: 422,
    monitoring_api.errors.NotFound: 404,
    queue_manager.validation.InvalidUpload: 422,
    retraining_api.validation.InvalidRequest: 422,
    retraining_api.promotion.JobLost: 409,
}
CORE_STATUS: dict[type[NeurostreamError], int] = {
    errors.NeurostreamError: 500,
    errors.Unavailable: 503,
    errors.DatabaseUnavailable: 503,
    errors.BrokerUnavailable: 503,
    errors.ConfigError: 422,
    errors.SourceError: 422,
    errors.ContractError: 422,
    errors.ArtifactError: 422,
    errors.UnknownPipeline: 422,
    errors.RequestError: 422,
    errors.InvalidRequest: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
}


def test_every_core_class_has_a_status() -> None:
    assert set(CORE) == set(CORE_STATUS)


@pytest.mark.parametrize("cls", [*CORE, *SERVICE], ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_one_constructor_shape(cls: type[NeurostreamError]) -> None:
    exc = cls("the sentence", field="a.b", session_id="s1", seq=3)
    assert isinstance(exc, NeurostreamError)
    assert (str(exc), exc.message, exc.field) == ("the sentence", "the sentence", "a.b")
    assert (exc.session_id, exc.seq, exc.hint) == ("s1", 3, None)
    assert exc.status == (CORE_STATUS | SERVICE)[cls]
    assert cls("x", status=418).status == 418 and cls("x").status == exc.status


def _drawings() -> list[list[tuple[int, str]]]:
    """The module docstring's trees as (depth, name) lines, one list per ``::`` block."""
    doc = errors.__doc__ or ""
    blocks = re.findall(r"::\n\n(.*?)(?:\n\n|\Z)", doc, re.S)
    out = []
    for block in blocks:
        rows = []
        for line in block.splitlines():
            name = re.search(r"[A-Za-z_][\w.]*", line)
            assert name is not None, line
            rows.append((name.start() // 4 - 1, name.group()))  # blocks are indented 4
        out.append(rows)
    return out


def _resolve(name: str) -> type:
    if "." not in name:
        cls = getattr(errors, name)
    else:
        module, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(f"neurostream.{module}"), attr)
        except ModuleNotFoundError:
            cls = getattr(importlib.import_module(module), attr)
    assert isinstance(cls, type)
    return cls


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    core, services = _drawings()
    drawn: dict[type, type | None] = {}
    for rows, direct in ((core, True), (services, False)):
        parents: list[type] = []
        for depth, name in rows:
            cls = _resolve(name)
            parents[depth:] = [cls]
            if depth == 0:
                continue
            parent = parents[depth - 1]
            # The core tree draws direct bases; the services' one "is a" relations.
            assert (cls.__bases__[0] is parent) if direct else issubclass(cls, parent), name
            drawn[cls] = parent
    assert set(CORE) - {NeurostreamError} <= set(drawn)
    assert set(SERVICE) <= set(drawn)


def test_contract_error_keeps_reason_and_window() -> None:
    exc = ContractError("missing header 'seq'", session_id="s1", seq=7)
    assert (exc.reason, exc.session_id, exc.seq, exc.field) == (
        "missing header 'seq'",
        "s1",
        7,
        None,
    )


def test_unknown_pipeline_names_key_and_alternatives() -> None:
    exc = UnknownPipeline.of("erp@9", ["bandpower@1", "erp@1"])
    assert (exc.key, exc.field, exc.status) == ("erp@9", "feature_pipeline", 422)
    assert "'erp@9'" in str(exc) and "['bandpower@1', 'erp@1']" in str(exc)
    assert UnknownPipeline("m", key="k", field="params.feature_pipeline").field == (
        "params.feature_pipeline"
    )


def test_cancelled_is_a_signal_outside_the_tree() -> None:
    assert not issubclass(Cancelled, NeurostreamError)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("amqp://user:pass@host", "amqp://user:***@host"),
        ("amqp://guest:guest@127.0.0.1:5672/vhost", "amqp://guest:***@127.0.0.1:5672/vhost"),
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        ("amqps://u:p%40ss@host/?heartbeat=30", "amqps://u:***@host/?heartbeat=30"),
        ("postgresql://u:s3cr@t@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        (
            "postgresql://u:pw@h1,h2,h3/db?sslmode=require",
            "postgresql://u:***@h1,h2,h3/db?sslmode=require",
        ),
        (
            "postgresql:///db?host=/tmp&password=hunter2&x=1",
            "postgresql:///db?host=/tmp&password=***&x=1",
        ),
        ("postgresql://u:pw@[::1/db", "postgresql://u:***@[::1/db"),  # urlsplit refuses it
        ("host=h password=p dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 'a b\\' c' user=u", "host=h password = *** user=u"),
        ("host=h1,h2 port=5432,5433 PASSWORD=xyz", "host=h1,h2 port=5432,5433 PASSWORD=***"),
    ],
)
def test_redact_url_hides_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest@localhost/",
        "amqp://localhost:5672/%2F",
        "postgresql://postgres@127.0.0.1:5432/neurostream",
        "postgresql:///neurostream?host=/var/run/postgresql",
        "host=localhost dbname=neurostream user=postgres",
    ],
)
def test_redact_url_leaves_passwordless_urls_alone(url: str) -> None:
    assert redact_url(url) == url


def test_unavailable_messages_name_the_start_command_and_hide_the_password() -> None:
    url = "amqp://neuro:s3cret@rabbit:5672/prod"
    broker = BrokerUnavailable.at(url, ConnectionError(f"failed to connect to {url}"))
    assert str(broker) == (
        "cannot reach RabbitMQ at amqp://neuro:***@rabbit:5672/prod: failed to connect to "
        "amqp://neuro:***@rabbit:5672/prod. Start it with `rabbitmq-server -detached` or "
        "`neurostream infra up`."
    )
    db = DatabaseUnavailable.at("host=db password=s3cret dbname=x", TimeoutError())
    assert str(db).startswith("cannot reach PostgreSQL at host=db password=*** dbname=x: ")
    assert "pg_ctlcluster --skip-systemctl-redirect" in str(db) and "TimeoutError" in str(db)
    assert "s3cret" not in str(broker) + str(db)
    assert (broker.status, db.status) == (503, 503)


def test_a_dropped_broker_connection_says_it_is_reconnecting() -> None:
    lost = BrokerUnavailable.reconnecting("amqp://neuro:s3cret@rabbit:5672/prod")
    assert str(lost) == (
        "the connection to RabbitMQ at amqp://neuro:***@rabbit:5672/prod is closed and "
        "reconnecting; if it stays closed, start it with `rabbitmq-server -detached` or "
        "`neurostream infra up`."
    )
    assert lost.status == 503


def test_a_closed_database_port_raises_database_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable) as exc:
        ensure_database("postgresql://neuro:s3cret@127.0.0.1:1/neurostream")
    message = str(exc.value)
    assert message.startswith("cannot reach PostgreSQL at postgresql://neuro:***@127.0.0.1:1/")
    assert "s3cret" not in message and "neurostream infra up" in message


async def test_a_closed_broker_port_raises_broker_unavailable() -> None:
    publisher = WindowPublisher("amqp://neuro:s3cret@127.0.0.1:1/", "svc")
    with pytest.raises(BrokerUnavailable) as exc:
        await publisher.start()
    message = str(exc.value)
    assert message.startswith("cannot reach RabbitMQ at amqp://neuro:***@127.0.0.1:1/: ")
    assert "s3cret" not in message and "rabbitmq-server -detached" in message
