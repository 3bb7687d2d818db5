"""Model events: how a change of assignment reaches every worker without a restart.

The queue manager publishes one message per affected service on the ``models.events``
topic exchange (routing key = service) after the change is committed; each worker binds
its own exclusive queue, hears the event, and re-reads ``registry.resolve_service``.
The body carries the resolved version ids, so a listener may also act on it directly.
A change of a service's canary (``neurostream.canary.CanaryEvent``) goes the same way,
through ``publish_canary_event``, whoever publishes it (the queue manager, the monitoring
API's judge, a worker rolling a canary back).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from pydantic import BaseModel, ConfigDict, Field

from neurostream import topology
from neurostream.canary import CanaryEvent

CONTENT_TYPE = "application/json"


class ModelEvent(BaseModel):
    """Body of a ``models.events`` message."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    service: str
    serving_version_id: int | None
    shadow_version_id: int | None
    reason: str = Field(description="Why it changed: assign, alias, service-deleted, ...")
    at: datetime


def parse_model_event(body: bytes) -> ModelEvent:
    """Decode an event body; raises ``pydantic.ValidationError`` on a malformed one."""
    return ModelEvent.model_validate_json(body)


async def _exchange(target: AbstractChannel | AbstractExchange) -> AbstractExchange:
    if isinstance(target, AbstractExchange):
        return target
    return (await topology.declare_exchanges(target))[topology.MODEL_EVENTS_EXCHANGE]


async def publish_model_event(
    channel_or_exchange: AbstractChannel | AbstractExchange,
    service: str,
    serving_id: int | None,
    shadow_id: int | None,
    reason: str,
) -> ModelEvent:
    """Publish (persistent; confirmed if the channel has confirms) and return the event."""
    event = ModelEvent(
        service=service,
        serving_version_id=serving_id,
        shadow_version_id=shadow_id,
        reason=reason,
        at=datetime.now(UTC),
    )
    exchange = await _exchange(channel_or_exchange)
    await exchange.publish(
        aio_pika.Message(
            event.model_dump_json().encode(),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            timestamp=event.at,
        ),
        routing_key=service,
    )
    return event


async def publish_canary_event(
    channel_or_exchange: AbstractChannel | AbstractExchange, event: CanaryEvent
) -> None:
    """Publish a change of a service's canary, as ``publish_model_event`` publishes an
    assignment (persistent; confirmed if the channel has confirms); raises on failure."""
    exchange = await _exchange(channel_or_exchange)
    await exchange.publish(
        aio_pika.Message(
            event.encode(),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            timestamp=event.at,
        ),
        routing_key=event.service,
    )
