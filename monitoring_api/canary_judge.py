"""The canary rule at work: each running canary's live figures, its verdict, and its end.

Workers record which arm each session started on (``canary_sessions``); this module reads
what each arm did since the canary started (serving predictions, rejections, gated
epochs, the windows the canary raised on, the label-free estimate and measured scores of
``neurostream.estimation``/``scoring``, the newest drift share of the arm's sessions),
asks ``neurostream.canary.judge`` for the verdict, and on promote or rollback ends the
canary (``registry.conclude_canary``: once, whoever is first) and publishes it on
``models.events`` so every worker replica follows at once (they also re-read the
registry at each heartbeat, so a failed publish only delays them).

``GET /services/{name}/canary`` (``routers/canary.py``) shows the same figures and
verdict. The loop runs in the API process beside the drift evaluator
(``NEUROSTREAM_MON_CANARY_JUDGE=false`` turns it off); lifecycle as the evaluator's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from monitoring_api.settings import MonitoringSettings
from neurostream import broker, estimation, registry, scoring, topology
from neurostream.canary import ArmFigures, CanaryEvent, CanaryRule, Verdict, judge
from neurostream.db import open_pool
from neurostream.events import publish_canary_event
from neurostream.lifecycle import every, settle
from neurostream.settings import CoreSettings

log = logging.getLogger(__name__)
# The estimate and the measured scores come from at most this many of an arm's newest
# predictions (a bounded pull per tick); the window and label counts the rule compares
# with ``rule.windows``/``min_labels`` are counted in SQL, over all of them.
MAX_ROWS = 200_000

# One arm's serving predictions since the canary started (to its end), by the arm's version.
_ARM_PREDICTIONS = """
FROM predictions p
JOIN canary_sessions c ON c.canary_id = %(c)s AND c.session_id = p.session_id AND c.arm = %(arm)s
LEFT JOIN labels l ON l.session_id = p.session_id AND l.seq = p.seq
WHERE p.service = %(svc)s AND p.role = 'serving' AND p.model_version_id = %(v)s
  AND p.predicted_at >= %(start)s AND (%(end)s::timestamptz IS NULL OR p.predicted_at <= %(end)s)
"""
_SAMPLE = f"""
SELECT p.predicted, p.score::float8, p.proba, l.label {_ARM_PREDICTIONS}
ORDER BY p.predicted_at DESC LIMIT %(limit)s
"""
_COUNTS = f"""
SELECT
    (SELECT count(*) FROM canary_sessions c WHERE c.canary_id = %(c)s AND c.arm = %(arm)s)
        AS sessions,
    (SELECT count(*) {_ARM_PREDICTIONS}) AS windows,
    (SELECT count(l.label) {_ARM_PREDICTIONS}) AS labels,
    (SELECT count(*) FROM rejections r JOIN canary_sessions c ON c.canary_id = %(c)s
        AND c.session_id = r.session_id AND c.arm = %(arm)s
        WHERE r.service = %(svc)s AND r.rejected_at >= %(start)s
          AND (%(end)s::timestamptz IS NULL OR r.rejected_at <= %(end)s)) AS rejected,
    (SELECT count(*) FROM gated g JOIN canary_sessions c ON c.canary_id = %(c)s
        AND c.session_id = g.session_id AND c.arm = %(arm)s
        WHERE g.service = %(svc)s AND g.role = 'serving' AND g.model_version_id = %(v)s
          AND g.gated_at >= %(start)s
          AND (%(end)s::timestamptz IS NULL OR g.gated_at <= %(end)s)) AS gated,
    (SELECT count(*) FROM canary_failures f JOIN canary_sessions c ON c.canary_id = %(c)s
        AND c.session_id = f.session_id AND c.arm = %(arm)s
        WHERE f.canary_id = %(c)s) AS errors,
    (SELECT d.share FROM drift_metrics d JOIN canary_sessions c ON c.canary_id = %(c)s
        AND c.session_id = d.session_id AND c.arm = %(arm)s
        WHERE d.service = %(svc)s AND d.scope = 'overall' AND d.name = 'share'
          AND d.evaluated_at >= %(start)s
        ORDER BY d.time DESC LIMIT 1) AS drift_share
"""


def _positive(proba: list[float], score: float) -> float:
    return float(proba[1]) if len(proba) == 2 else float(score)


async def arm_figures(conn: AsyncConnection[Any], canary: dict[str, Any], arm: str) -> ArmFigures:
    """What ``arm`` of ``canary`` did, over its sessions, since the canary started."""
    version = canary["version_id"] if arm == "canary" else canary["champion_version_id"]
    params = {
        "c": canary["id"],
        "arm": arm,
        "svc": canary["service"],
        "v": version,
        "start": canary["started_at"],
        "end": canary["ended_at"],
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_COUNTS, params)
        counts = await cur.fetchone()
    assert counts is not None
    cur2 = await conn.execute(_SAMPLE, params | {"limit": MAX_ROWS})
    rows = await cur2.fetchall()
    labelled = [r for r in rows if r[3] is not None]
    positive = np.array([_positive(r[2], r[1]) for r in rows], dtype=np.float64)
    lab_p = np.array([_positive(r[2], r[1]) for r in labelled], dtype=np.float64)
    lab_y = np.array([r[3] for r in labelled])
    est = estimation.estimate(positive, lab_p if labelled else None, lab_y if labelled else None)
    measured: dict[str, float | None] = {}
    if labelled:
        m = scoring.score(lab_y, lab_p, predicted=[r[0] for r in labelled])
        measured = {k: m.get(k) for k in ("roc_auc", "balanced_accuracy", "accuracy")}
    drift = counts["drift_share"]
    return ArmFigures(
        sessions=int(counts["sessions"]),
        windows=int(counts["windows"]),
        rejected=int(counts["rejected"]),
        gated=int(counts["gated"]),
        errors=int(counts["errors"]) if arm == "canary" else 0,
        estimated={
            k: est[k]
            for k in ("expected_roc_auc", "expected_balanced_accuracy", "expected_accuracy")
        },
        measured=measured,
        labels=int(counts["labels"]),
        drift_share=None if drift is None else float(drift),
    )


@dataclass(frozen=True, slots=True)
class Assessment:
    """A canary with both arms' figures and the rule's verdict on them now."""

    canary: dict[str, Any]
    rule: CanaryRule
    figures: dict[str, ArmFigures]
    verdict: Verdict


async def assess(conn: AsyncConnection[Any], canary: dict[str, Any]) -> Assessment:
    rule = CanaryRule.from_stored(registry.json_column(canary["rule"]))
    figures = {arm: await arm_figures(conn, canary, arm) for arm in ("canary", "champion")}
    verdict = judge(rule, figures["canary"], figures["champion"])
    return Assessment(canary, rule, figures, verdict)


class CanaryJudge:
    """Applies each running canary's rule on a timer; the pool and connection are injected
    or created by ``start``/``open`` (and then closed by ``close``)."""

    def __init__(
        self,
        core: CoreSettings,
        settings: MonitoringSettings,
        *,
        pool: AsyncConnectionPool | None = None,
        connection: AbstractRobustConnection | None = None,
    ) -> None:
        self.core = core
        self.settings = settings
        self.pool: AsyncConnectionPool | None = pool
        self.connection: AbstractRobustConnection | None = connection
        self.ticks = 0
        self._owns_pool = pool is None
        self._owns_connection = connection is None
        self._exchange: AbstractExchange | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self.pool is None:
            self.pool = await open_pool(self.core.database_url, max_size=2)

    async def start(self) -> None:
        await self.open()
        self._stopping.clear()
        self._task = asyncio.create_task(
            every(self.settings.canary_every_s, self._stopping, self.tick, "canary pass"),
            name="canary-judge",
        )

    def request_stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        self.request_stop()
        if self._task is not None:
            await settle(self._task, self.settings.close_timeout_s, "canary pass")
            self._task = None
        if self._owns_connection and self.connection is not None:
            await self.connection.close()
            self.connection = None
        if self._owns_pool and self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def tick(self) -> list[dict[str, Any]]:
        """One pass over the running canaries: the ones it ended, with their verdicts.

        Each service is judged on its own connection, and one that fails (its figures
        cannot be read, ``assign`` refuses the promotion) is logged and retried next pass
        without holding up the others."""
        if self.pool is None:
            raise RuntimeError("the canary judge is not open: call start() or open() first")
        ended: list[dict[str, Any]] = []
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT service FROM canaries WHERE status = 'running'")
            services = [r["service"] for r in await cur.fetchall()]
        for service in services:
            try:
                row = await self._judge(service)
            except Exception as exc:
                log.error(
                    "canary of %s not judged this pass (retried in %ss): %s",
                    service,
                    self.settings.canary_every_s,
                    exc,
                )
                continue
            if row is not None:
                ended.append(row)
        self.ticks += 1
        return ended

    async def _judge(self, service: str) -> dict[str, Any] | None:
        """Apply the rule to ``service``'s running canary; its row if this call ended it."""
        assert self.pool is not None
        async with self.pool.connection() as conn:
            canary = await registry.get_canary(conn, service)
            if canary is None or canary["status"] != "running":
                return None
            verdict = (await assess(conn, canary)).verdict
            if verdict.action == "keep":
                return None
            status = "promoted" if verdict.action == "promote" else "rolled_back"
            row = await registry.conclude_canary(conn, canary["id"], status, verdict.reason)
            if row is None:  # a worker or an operator ended it first
                return None
            log.info("canary %s of %s %s: %s", row["id"], service, status, verdict.reason)
            event = await registry.canary_event(
                conn,
                "canary_promoted" if status == "promoted" else "canary_rolled_back",
                row,
                verdict.reason,
            )
        published = await self.publish(event)
        return row | {"verdict": verdict.action, "event_published": published}

    async def publish(self, event: CanaryEvent) -> bool:
        """Publish on ``models.events``; False when the broker could not be reached."""
        try:
            if self._exchange is None:
                if self.connection is None:
                    self.connection = await broker.connect(
                        self.core.amqp_url, name="monitoring_api:canary"
                    )
                channel = await self.connection.channel(publisher_confirms=True)
                self._exchange = (await topology.declare_exchanges(channel))[
                    topology.MODEL_EVENTS_EXCHANGE
                ]
            await publish_canary_event(self._exchange, event)
        except Exception as exc:
            log.warning("could not publish %s for %s: %s", event.event, event.service, exc)
            self._exchange = None
            return False
        return True
