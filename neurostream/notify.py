"""Tell workers about committed registry changes over ``models.events``.

Called after the transaction commits, so a worker that re-reads the registry on the event
sees the change. A broker failure here does not undo the change: the caller reports
``event_published: false`` and workers still pick it up at their next heartbeat check.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractExchange
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from neurostream import registry
from neurostream.canary import CanaryEvent
from neurostream.events import publish_canary_event, publish_model_event

log = logging.getLogger(__name__)
EVENTS = Counter(
    "neurostream_model_events_total", "models.events messages published.", ["reason", "outcome"]
)


class Notifier:
    def __init__(self, pool: AsyncConnectionPool, exchange: AbstractExchange) -> None:
        self._pool = pool
        self._exchange = exchange

    async def services(self, names: list[str], reason: str) -> bool:
        """Publish each service's current resolution; False if any publish failed."""
        if not names:
            return True
        async with self._pool.connection() as conn:
            resolved = {n: await registry.resolve_service(conn, n) for n in names}
        ok = True
        for name, models in resolved.items():
            try:
                await publish_model_event(
                    self._exchange, name, models.serving, models.shadow, reason
                )
                EVENTS.labels(reason, "published").inc()
            except Exception:
                log.exception("could not publish models.events for service %s", name)
                EVENTS.labels(reason, "failed").inc()
                ok = False
        return ok

    async def canary(self, event: CanaryEvent) -> bool:
        """Publish a change of a service's canary (``neurostream.canary``); False on failure."""
        try:
            await publish_canary_event(self._exchange, event)
        except Exception:
            log.exception("could not publish %s for service %s", event.event, event.service)
            EVENTS.labels(event.event, "failed").inc()
            return False
        EVENTS.labels(event.event, "published").inc()
        return True
