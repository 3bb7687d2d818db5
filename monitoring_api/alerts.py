"""Alert rules: compute each rule's metric, fire or clear its alert, call its webhook.

A rule holds ``metric comparison threshold`` over the last ``window_s`` seconds of one
service. Drift metrics average the ``drift_metrics`` series over the window (data time,
ending at the latest evaluation) of the session in progress: the one of the service's
newest archived window, so an earlier session's drift never speaks for the current one.
Serving metrics are computed over predictions made in the last ``window_s`` (wall time);
``gated_share`` over the session the service scored last in that window: its epochs the
artifact gate kept from scoring (``gated``) over all it handled (a loose electrode makes
it near 1, and the session otherwise just goes quiet).
An alert row opens when the condition starts to hold and is cleared when it stops holding,
which includes having nothing left to measure (a session that ended, a new session not yet
evaluated); both transitions POST a JSON body to the rule's webhook. Webhook failures are
recorded on the alert and logged; they never stop the evaluator.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from prometheus_client import Gauge
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from neurostream import scoring

log = logging.getLogger(__name__)

# What Prometheus alerts on (deploy/prometheus/rules/neurostream.yml): one series per rule,
# refreshed from the alerts table after each pass, so a restarted API reports what fires.
FIRING = Gauge(
    "neurostream_monitoring_alert_firing",
    "1 while the monitoring API's alert rule fires, 0 while it does not",
    ["service", "rule", "metric", "kind"],
)
DRIFT_METRICS = frozenset({"drift_share", "mmd", "drifted_channels"})
_published: set[tuple[str, str, str, str]] = set()

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

_SESSION = """(SELECT session_id FROM windows WHERE service = %(service)s
    ORDER BY window_ts DESC LIMIT 1)"""
_OVERALL = f"""WITH s AS (SELECT time, statistic FROM drift_metrics
    WHERE service = %(service)s AND scope = 'overall' AND name = %(name)s
      AND session_id = {_SESSION})
SELECT avg(statistic) FROM s WHERE time >= (SELECT max(time) FROM s) - make_interval(secs => %(w)s)
"""
_DRIFTED_CHANNELS = f"""WITH e AS (SELECT time, count(*) FILTER (WHERE drifted) AS n
    FROM drift_metrics WHERE service = %(service)s AND scope = 'channel'
      AND session_id = {_SESSION} GROUP BY time)
SELECT avg(n)::float8 FROM e WHERE time >= (SELECT max(time) FROM e) - make_interval(secs => %(w)s)
"""
_RECENT = "predicted_at > now() - make_interval(secs => %(w)s) AND service = %(service)s"
_LATENCY = f"""SELECT percentile_cont(0.95) WITHIN GROUP (
    ORDER BY EXTRACT(EPOCH FROM predicted_at - sent_at) * 1000)
FROM predictions WHERE {_RECENT} AND role = 'serving' AND sent_at IS NOT NULL"""
_THROUGHPUT = f"""SELECT CASE WHEN count(*) = 0 THEN NULL ELSE count(*) / %(w)s END
FROM predictions WHERE {_RECENT} AND role = 'serving'"""
_CONFUSION = f"""SELECT l.label, p.predicted, count(*)
FROM predictions p JOIN labels l ON l.session_id = p.session_id AND l.seq = p.seq
WHERE p.{_RECENT.replace("AND service", "AND p.service")} AND p.role = 'serving'
GROUP BY l.label, p.predicted"""
_POSITIVE = f"""SELECT avg((predicted = 1)::int)::float8 FROM predictions
WHERE {_RECENT} AND role = 'serving'"""
_REJECTIONS = """SELECT CASE WHEN p + r = 0 THEN NULL ELSE r::float8 / (p + r) END FROM
    (SELECT count(*) AS p FROM predictions WHERE predicted_at > now() - make_interval(secs => %(w)s)
        AND service = %(service)s AND role = 'serving') a,
    (SELECT count(*) AS r FROM rejections WHERE rejected_at > now() - make_interval(secs => %(w)s)
        AND service = %(service)s) b"""

_GATED_RECENT = (
    "service = %(service)s AND role = 'serving' AND {t} > now() - make_interval(secs => %(w)s)"
)
_GATED_SESSION = f"""(SELECT session_id FROM (
        SELECT session_id, predicted_at AS t FROM predictions
            WHERE {_GATED_RECENT.format(t="predicted_at")}
        UNION ALL SELECT session_id, gated_at FROM gated WHERE {_GATED_RECENT.format(t="gated_at")}
    ) x ORDER BY t DESC LIMIT 1)"""
_GATED = f"""SELECT CASE WHEN p + g = 0 THEN NULL ELSE g::float8 / (p + g) END FROM
    (SELECT count(*) AS p FROM predictions WHERE {_GATED_RECENT.format(t="predicted_at")}
        AND session_id = {_GATED_SESSION}) a,
    (SELECT count(*) AS g FROM gated WHERE {_GATED_RECENT.format(t="gated_at")}
        AND session_id = {_GATED_SESSION}) b"""

METRICS: dict[str, tuple[str, dict[str, Any]]] = {
    "drift_share": (_OVERALL, {"name": "share"}),
    "mmd": (_OVERALL, {"name": "mmd"}),
    "drifted_channels": (_DRIFTED_CHANNELS, {}),
    "latency_p95_ms": (_LATENCY, {}),
    "throughput_per_s": (_THROUGHPUT, {}),
    "balanced_accuracy": (_CONFUSION, {}),
    "accuracy": (_CONFUSION, {}),
    "positive_rate": (_POSITIVE, {}),
    "rejection_rate": (_REJECTIONS, {}),
    "gated_share": (_GATED, {}),
}


async def metric_value(
    conn: AsyncConnection[Any], metric: str, service: str, window_s: float
) -> float | None:
    """The metric over the window, or None when there is nothing to measure."""
    query, extra = METRICS[metric]
    cur = await conn.execute(query, {"service": service, "w": window_s, **extra})
    if query is _CONFUSION:  # labelled predictions: the scorer's definition, not SQL's
        cells = await cur.fetchall()  # (label, predicted, count)
        if not cells:
            return None
        counts = [c[2] for c in cells]
        labels = np.repeat([c[0] for c in cells], counts)
        predicted = np.repeat([c[1] for c in cells], counts)
        value: float | None = scoring.score(labels, predicted=predicted)[metric]
        return value
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def post_webhook(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], *, retries: int, backoff_s: float
) -> str:
    """POST with retries and doubling backoff; returns a status line, never raises."""
    error = "not attempted"
    for attempt in range(1, retries + 1):
        try:
            response = await client.post(url, json=body)
            if response.status_code < 300:
                return f"delivered ({response.status_code}, attempt {attempt})"
            error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    log.warning("webhook %s failed after %d attempts: %s", url, retries, error)
    return f"failed after {retries} attempts: {error}"[:500]


def _payload(
    event: str, rule: dict[str, Any], alert: dict[str, Any], value: float | None
) -> dict[str, Any]:
    return {
        "event": event,
        "alert_id": alert["id"],
        "rule": {
            k: rule[k]
            for k in ("id", "name", "service", "metric", "comparison", "threshold", "window_s")
        },
        "service": rule["service"],
        "metric": rule["metric"],
        "value": value,
        "threshold": rule["threshold"],
        "fired_at": alert["fired_at"].isoformat(),
        "cleared_at": alert["cleared_at"].isoformat() if alert.get("cleared_at") else None,
    }


async def evaluate_rules(
    pool: AsyncConnectionPool,
    client: httpx.AsyncClient,
    *,
    retries: int = 3,
    backoff_s: float = 0.5,
) -> list[dict[str, Any]]:
    """One pass over enabled rules; returns the transitions (fired / cleared) it made."""
    transitions: list[dict[str, Any]] = []
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        # A disabled rule watches nothing, so nothing of it fires now.
        await cur.execute(
            """UPDATE alerts a SET state = 'cleared', cleared_at = now() FROM alert_rules r
            WHERE a.rule_id = r.id AND NOT r.enabled AND a.state = 'firing'"""
        )
        await cur.execute("SELECT * FROM alert_rules WHERE enabled ORDER BY id")
        rules = await cur.fetchall()
    for rule in rules:
        try:
            transitions += await _evaluate(pool, client, rule, retries, backoff_s)
        except Exception:  # one bad rule must not stop the others
            log.exception("alert rule %s could not be evaluated", rule["name"])
    await refresh_firing(pool)
    return transitions


async def refresh_firing(pool: AsyncConnectionPool) -> None:
    """Set ``FIRING`` for every rule (kind ``drift`` or ``serving``); drop deleted rules'."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """SELECT r.service, r.name, r.metric, EXISTS (SELECT 1 FROM alerts a
                WHERE a.rule_id = r.id AND a.state = 'firing') FROM alert_rules r"""
        )
        rows = await cur.fetchall()
    seen: set[tuple[str, str, str, str]] = set()
    for service, name, metric, firing in rows:
        labels = (service, name, metric, "drift" if metric in DRIFT_METRICS else "serving")
        FIRING.labels(*labels).set(1 if firing else 0)
        seen.add(labels)
    for labels in _published - seen:
        FIRING.remove(*labels)
    _published.clear()
    _published.update(seen)


async def _evaluate(
    pool: AsyncConnectionPool,
    client: httpx.AsyncClient,
    rule: dict[str, Any],
    retries: int,
    backoff_s: float,
) -> list[dict[str, Any]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        value = await metric_value(conn, rule["metric"], rule["service"], rule["window_s"])
        # Nothing to measure is not a condition that holds: an open alert clears.
        holds = value is not None and COMPARISONS[rule["comparison"]](value, rule["threshold"])
        await cur.execute(
            "SELECT * FROM alerts WHERE rule_id = %s AND state = 'firing' ORDER BY id DESC LIMIT 1",
            [rule["id"]],
        )
        open_alert = await cur.fetchone()
        if holds and open_alert is None:
            assert value is not None
            event = "fired"
            await cur.execute(
                """INSERT INTO alerts (rule_id, rule_name, service, metric, comparison, threshold,
                    value, state) VALUES (%s, %s, %s, %s, %s, %s, %s, 'firing') RETURNING *""",
                [
                    rule["id"],
                    rule["name"],
                    rule["service"],
                    rule["metric"],
                    rule["comparison"],
                    rule["threshold"],
                    value,
                ],
            )
        elif not holds and open_alert is not None:
            event = "cleared"
            # Every firing row of the rule: a copy left by a second evaluator clears too.
            await cur.execute(
                """UPDATE alerts SET state = 'cleared', cleared_at = now(), cleared_value = %s
                WHERE rule_id = %s AND state = 'firing' RETURNING *""",
                [value, rule["id"]],
            )
        else:
            return []
        alert = max(await cur.fetchall(), key=lambda a: a["id"], default=None)
        await conn.commit()
    assert alert is not None
    log.info("alert %s %s: %s = %s", rule["name"], event, rule["metric"], value)
    if rule["webhook_url"]:
        status = await post_webhook(
            client,
            rule["webhook_url"],
            _payload(event, rule, alert, value),
            retries=retries,
            backoff_s=backoff_s,
        )
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE alerts SET webhook_status = %s WHERE id = %s",
                [f"{event}: {status}", alert["id"]],
            )
    return [{"event": event, "alert_id": alert["id"], "rule": rule["name"], "value": value}]
