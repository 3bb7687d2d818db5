"""RabbitMQ topology, declared in one place and idempotently by every service.

- ``eeg.windows`` (topic, routing key = service name) -> quorum queue ``svc.<service>``
  whose dead-letter exchange ``eeg.dead`` routes to ``svc.<service>.dead``. Workers
  publish rejected windows to ``eeg.dead`` themselves (so they carry a reason header);
  the quorum queue's delivery limit dead-letters a window that keeps killing workers.
- ``eeg.predictions`` (topic, key ``<service>.<session_id>``): results for closed loops.
- ``eeg.decisions`` (topic, key ``<service>.<session_id>``): a trial-based paradigm's
  decisions (a speller's symbols, ``contract.DecisionMessage``), made from the predictions.
- ``models.events`` (topic, key = service): model assignment changes; each worker
  binds its own exclusive queue so every replica hears every event.
- ``eeg.labels`` (topic, key = session_id): ground-truth label events; a trial's truth
  (``contract.TrialTruth``) has the key ``trial.<service>.<session_id>``.
- ``data.windows``: the ML data API's window archive, bound to ``eeg.windows`` with ``#``
  (every window of every service), bounded (``x-max-length``, ``drop-head``).
- Record-only sessions (calibration data, no model yet) publish windows with the key
  ``record:<service>`` (``record_key``): no service queue binds it (a service name cannot
  hold ``:``), the archive does, and ``service_of`` turns the key back into the service.
- ``data.labels``: the ML data API's ground-truth collector, bound to ``eeg.labels`` with
  ``#``; a malformed event dead-letters to ``data.labels.dead``.
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

WINDOWS_EXCHANGE = "eeg.windows"
DEAD_EXCHANGE = "eeg.dead"
PREDICTIONS_EXCHANGE = "eeg.predictions"
DECISIONS_EXCHANGE = "eeg.decisions"
MODEL_EVENTS_EXCHANGE = "models.events"
LABELS_EXCHANGE = "eeg.labels"
# A window redelivered this many times (its worker died on it each time) is dead-lettered.
DELIVERY_LIMIT = 10
REASON_HEADER = "x-neurostream-reason"
ARCHIVE_QUEUE = "data.windows"
ARCHIVE_MAX_LENGTH = 1_000_000
LABELS_QUEUE = "data.labels"
LABELS_DEAD_QUEUE = "data.labels.dead"
RECORD_PREFIX = "record:"


def service_queue(service: str) -> str:
    return f"svc.{service}"


def dead_queue(service: str) -> str:
    return f"svc.{service}.dead"


def record_key(service: str) -> str:
    """Routing key of a record-only session's windows: archived, never queued for a worker."""
    return f"{RECORD_PREFIX}{service}"


def service_of(routing_key: str) -> str:
    """The service a window's routing key names (``p300`` or ``record:p300`` -> ``p300``)."""
    return routing_key.removeprefix(RECORD_PREFIX)


async def declare_exchanges(channel: AbstractChannel) -> dict[str, AbstractExchange]:
    names = {
        WINDOWS_EXCHANGE: aio_pika.ExchangeType.TOPIC,
        DEAD_EXCHANGE: aio_pika.ExchangeType.DIRECT,
        PREDICTIONS_EXCHANGE: aio_pika.ExchangeType.TOPIC,
        DECISIONS_EXCHANGE: aio_pika.ExchangeType.TOPIC,
        MODEL_EVENTS_EXCHANGE: aio_pika.ExchangeType.TOPIC,
        LABELS_EXCHANGE: aio_pika.ExchangeType.TOPIC,
    }
    return {
        name: await channel.declare_exchange(name, kind, durable=True)
        for name, kind in names.items()
    }


async def declare_service(channel: AbstractChannel, service: str) -> AbstractQueue:
    """Declare the service's quorum queue and its dead-letter queue; return the former."""
    ex = await declare_exchanges(channel)
    dead = await channel.declare_queue(
        dead_queue(service), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(ex[DEAD_EXCHANGE], routing_key=service)
    queue = await channel.declare_queue(
        service_queue(service),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_EXCHANGE,
            "x-dead-letter-routing-key": service,
            "x-delivery-limit": DELIVERY_LIMIT,
        },
    )
    await queue.bind(ex[WINDOWS_EXCHANGE], routing_key=service)
    return queue


async def declare_archive(channel: AbstractChannel) -> AbstractQueue:
    """The window archive queue (``data.windows``), bound to every window."""
    ex = await declare_exchanges(channel)
    queue = await channel.declare_queue(
        ARCHIVE_QUEUE,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-max-length": ARCHIVE_MAX_LENGTH,
            "x-overflow": "drop-head",
        },
    )
    await queue.bind(ex[WINDOWS_EXCHANGE], routing_key="#")
    return queue


async def declare_label_store(channel: AbstractChannel) -> AbstractQueue:
    """The ground-truth collector's queue (``data.labels``) and its dead-letter queue."""
    ex = await declare_exchanges(channel)
    dead = await channel.declare_queue(
        LABELS_DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(ex[DEAD_EXCHANGE], routing_key=LABELS_QUEUE)
    queue = await channel.declare_queue(
        LABELS_QUEUE,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_EXCHANGE,
            "x-dead-letter-routing-key": LABELS_QUEUE,
        },
    )
    await queue.bind(ex[LABELS_EXCHANGE], routing_key="#")
    return queue
