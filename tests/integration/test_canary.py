"""Per-session canaries against the real RabbitMQ and PostgreSQL, with real workers.

The queue manager starts a canary, two worker replicas route each session by its hash and
keep it there, and a canary is ended three ways: it raises on predict (the workers roll it
back, the failed windows re-scored by the champion), its estimated performance is below
the rule (the monitoring API's judge rolls it back), or it holds (promoted; the sessions
that started on the old champion stay on it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from monitoring_api.app import create_app as monitoring_app
from monitoring_api.canary_judge import CanaryJudge
from monitoring_api.settings import MonitoringSettings
from neurostream import registry, topology
from neurostream.canary import bucket
from neurostream.models.training import TrainedModel, train_model
from neurostream.settings import CoreSettings
from queue_manager.app import create_app as queue_manager_app
from queue_manager.settings import QueueManagerSettings
from tests.factories import (
    FS,
    app_client,
    p300_windows,
    publish_windows,
    raising_artifact,
    settled,
    start_worker,
    synthetic_p300,
    unique,
)
from workers.worker import Worker

pytestmark = pytest.mark.integration
CHANNELS = [f"c{j}" for j in range(4)]
# Confident on the synthetic P300 (expected balanced accuracy 1.0) vs a model fitted on
# noise, which the label-free estimate puts near 0.93 on the same epochs.
RULE_MIN_ESTIMATE = 0.97


@pytest.fixture(scope="module")
def models() -> dict[str, TrainedModel]:
    x1, y1 = synthetic_p300(channels=4, seed=1)
    x2, y2 = synthetic_p300(channels=4, seed=2)
    noise, yn = synthetic_p300(channels=4, seed=1, amplitude=0.0)
    return {
        "champion": train_model("sklearn-lda", x1, y1, FS, channels=CHANNELS),
        "canary": train_model("sklearn-lda", x2, y2, FS, channels=CHANNELS),
        "noise": train_model("sklearn-lda", noise, yn, FS, channels=CHANNELS),
        "renamed": train_model("sklearn-lda", x2, y2, FS, channels=["x0", "x1", "x2", "x3"]),
    }


@pytest.fixture
async def service(pool, models) -> dict[str, Any]:
    """A fresh service serving version 1; 2 = a good canary, 3 = noise, 4 = other names,
    5 = a version that loads but raises on predict on every real window."""
    name, model = unique("svc"), unique("lda")
    ids = {}
    raising = replace(models["canary"], artifact=raising_artifact(models["canary"]))
    async with pool.connection() as conn:
        for key, trained in [*((k, models[k]) for k in models), ("raising", raising)]:
            row = await registry.register_trained(conn, model, trained, code_version="t")
            ids[key] = row["id"]
        await registry.create_service(conn, name, service_input={"channels": CHANNELS})
        await registry.assign(conn, name, model, "1")
    return {"name": name, "model": model, **ids}


async def start_workers(core: CoreSettings, service: str, started: list[Worker], n: int = 2):
    for _ in range(n):
        await start_worker(core, service, started, decide=False)
    return started


async def until(predicate: Callable[[], Any], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def sessions_by_hash(share: float, canary: int, champion: int) -> tuple[list[str], set[str]]:
    """Fresh session ids, ``canary`` of them hashed under ``share`` and ``champion`` not."""
    prefix, i = unique("s"), 0
    picked_c: list[str] = []
    picked_h: list[str] = []
    while len(picked_c) < canary or len(picked_h) < champion:
        s = f"{prefix}-{i}"
        (picked_c if bucket(s) < share else picked_h).append(s)
        i += 1
    ids = picked_c[:canary] + picked_h[:champion]
    return sorted(ids), set(picked_c[:canary])


async def stream(channel, service: str, sessions: list[str], start: int, n: int) -> None:
    """``n`` epochs per session from ``start``, sessions interleaved as live streams are."""
    per = {s: p300_windows(s, start, n) for s in sessions}
    await publish_windows(channel, service, [per[s][i] for i in range(n) for s in sessions])


async def scalar(pool, query: str, params: Any = ()) -> Any:
    async with pool.connection() as conn:
        row = await (await conn.execute(query, params)).fetchone()
    return row[0] if row else None


async def stored(pool, sessions: list[str]) -> int:
    return int(
        await scalar(
            pool,
            "SELECT count(*) FROM predictions WHERE role = 'serving' AND session_id = ANY(%s)",
            [sessions],
        )
    )


async def at_least(pool, sessions: list[str], n: int) -> bool:
    return await stored(pool, sessions) >= n


async def served(pool, sessions: list[str]) -> list[tuple[str, int, int]]:
    """Every serving prediction of ``sessions`` as (session_id, seq, model_version_id)."""
    async with pool.connection() as conn:
        return await (
            await conn.execute(
                "SELECT session_id, seq, model_version_id FROM predictions "
                "WHERE role = 'serving' AND session_id = ANY(%s)",
                [sessions],
            )
        ).fetchall()


def by_seq(rows: list[tuple[str, int, int]], sessions: list[str], n: int) -> dict[str, list[int]]:
    """The version that served each of seqs 0..n-1, per session."""
    version = {(s, q): v for s, q, v in rows}
    return {s: [version[(s, q)] for q in range(n)] for s in sessions}


def switched_at(
    sessions: list[str], on_canary: set[str], canary: int, champion: int, seq: int, n: int
) -> dict[str, list[int]]:
    """What ``by_seq`` should read when the canary sessions went back to the champion at
    ``seq``: the canary's version before it, the champion's from there (and throughout on
    the champion's sessions)."""
    return {
        s: [canary if s in on_canary and q < seq else champion for q in range(n)] for s in sessions
    }


async def arms(pool, canary_id: int) -> dict[str, tuple[str, int | None]]:
    """Each session the canary recorded: its arm and the seq it switched at (or None)."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT session_id, arm, switch_seq FROM canary_sessions WHERE canary_id = %s",
                [canary_id],
            )
        ).fetchall()
    return {s: (a, q) for s, a, q in rows}


async def switches(pool, canary_id: int) -> dict[str, int | None]:
    """The canary arm's sessions and the seq each went back to the champion at."""
    return {s: q for s, (a, q) in (await arms(pool, canary_id)).items() if a == "canary"}


async def judge_ticks(core, pool, n: int) -> list[list[dict[str, Any]]]:
    """What each of ``n`` passes of a canary judge on ``pool`` ended."""
    judge = CanaryJudge(core, MonitoringSettings(), pool=pool)
    await judge.open()
    try:
        return [await judge.tick() for _ in range(n)]
    finally:
        await judge.close()


async def versions_by_session(pool, sessions: list[str]) -> dict[str, list[int]]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT session_id, array_agg(DISTINCT model_version_id ORDER BY model_version_id)"
                " FROM predictions WHERE role = 'serving' AND session_id = ANY(%s) GROUP BY 1",
                [sessions],
            )
        ).fetchall()
    return dict(rows)


async def events_queue(channel, service: str):
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(topology.MODEL_EVENTS_EXCHANGE, routing_key=service)
    return queue


async def next_canary_event(queue, wanted: str, wait_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        msg = await queue.get(no_ack=True, fail=False)
        if msg is None:
            await asyncio.sleep(0.05)
            continue
        body = json.loads(msg.body)
        if body.get("event") == wanted:
            return body
    raise AssertionError(f"no {wanted} event in {wait_s} s")


async def start_canary(core, service: str, body: dict[str, Any]) -> dict[str, Any]:
    app = queue_manager_app(core, QueueManagerSettings())
    async with app_client(app, core) as http:
        r = await http.put(f"/services/{service}/canary", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def monitoring_view(core, service: str) -> dict[str, Any]:
    app = monitoring_app(core, MonitoringSettings(evaluator=False, canary_judge=False))
    async with app_client(app) as http:
        r = await http.get(f"/services/{service}/canary")
    assert r.status_code == 200, r.text
    return r.json()


async def all_on(started: list[Worker], status: str) -> bool:
    return all(w.slot and w.slot.canary and w.slot.canary.status == status for w in started)


async def test_a_raising_canary_is_rolled_back_with_no_window_lost(
    core, pool, service, channel, workers
) -> None:
    """10 sessions, 30% canary, two replicas, a canary version that loads (it passes the
    warm-up) and raises on predict on every real window: the canary sessions' windows it
    failed on are re-scored by the champion, which serves them from seq 0 (the recorded
    switch); every session is served by the champion alone."""
    sessions, expected_canary = sessions_by_hash(0.3, canary=3, champion=7)
    events = await events_queue(channel, service["name"])
    started = await start_canary(
        core, service["name"], {"ref": "5", "share": 0.3, "rule": {"windows": 100_000}}
    )
    assert (started["status"], started["version_id"], started["share"]) == (
        "running",
        service["raising"],
        0.3,
    )
    assert started["event_published"] is True
    await start_workers(core, service["name"], workers)
    await until(lambda: all_on(workers, "running"))

    await stream(channel, service["name"], sessions, 0, 20)
    await until(lambda: at_least(pool, sessions, 200))
    await settled(core, service["name"], workers)  # anything stored twice is stored now
    recorded = await arms(pool, started["id"])
    # The sessions seen before the rollback recorded their hash's arm; one whose first
    # window came after it is recorded nowhere (an unrecorded session is the champion's).
    on_canary = {s for s, (a, _) in recorded.items() if a == "canary"}
    assert on_canary and on_canary == expected_canary & set(recorded)
    assert set(recorded) <= set(sessions)

    async with pool.connection() as conn:
        once = await (
            await conn.execute(
                "SELECT count(*), count(DISTINCT (session_id, seq)), min(seq), max(seq) "
                "FROM predictions WHERE role = 'serving' AND session_id = ANY(%s)",
                [sessions],
            )
        ).fetchone()
        failures = await (
            await conn.execute(
                "SELECT session_id, seq, reason FROM canary_failures WHERE canary_id = %s",
                [started["id"]],
            )
        ).fetchall()
        status = await (
            await conn.execute("SELECT status, reason FROM canaries WHERE id = %s", [started["id"]])
        ).fetchone()
    # Every window of every session stored exactly once.
    assert once == (200, 200, 0, 19)
    assert status[0] == "rolled_back" and "raised on predict" in status[1]
    assert "unknown categories" in status[1]
    # The canary served no window: each canary session switched at seq 0.
    assert await switches(pool, started["id"]) == {s: 0 for s in on_canary}
    rows = await served(pool, sessions)
    assert by_seq(rows, sessions, 20) == {s: [service["champion"]] * 20 for s in sessions}
    version = {(s, q): v for s, q, v in rows}
    # The failed windows are canary sessions' windows, each re-scored by the champion.
    assert failures
    assert {s for s, _, _ in failures} <= on_canary
    assert all(version[(s, q)] == service["champion"] for s, q, _ in failures)
    assert all("unknown categories" in r for _, _, r in failures)
    event = await next_canary_event(events, "canary_rolled_back")
    assert (event["service"], event["version_id"], event["serving_version_id"]) == (
        service["name"],
        service["raising"],
        service["champion"],
    )
    await until(lambda: all_on(workers, "rolled_back"))

    view = await monitoring_view(core, service["name"])
    assert view["status"] == "rolled_back"
    assert (view["canary"]["sessions"], view["canary"]["windows"]) == (len(on_canary), 0)
    assert view["canary"]["errors"] == len(failures) == view["failed_windows"]
    # Figures stop at the rollback: whatever of the champion's sessions' windows was stored
    # before it.
    assert view["champion"]["sessions"] == len(set(recorded) - on_canary)
    assert view["champion"]["windows"] <= 140
    assert view["switched_sessions"] == len(on_canary)
    assert view["verdict"] == "rollback" and view["verdict_reasons"][0].startswith("error rate")


async def test_a_canary_below_the_estimate_rule_is_rolled_back_by_the_judge(
    core, pool, service, channel, workers
) -> None:
    sessions, expected_canary = sessions_by_hash(0.3, canary=3, champion=7)
    events = await events_queue(channel, service["name"])
    rule = {"windows": 40, "min_estimated_balanced_accuracy": RULE_MIN_ESTIMATE}
    started = await start_canary(core, service["name"], {"ref": "3", "share": 0.3, "rule": rule})
    await start_workers(core, service["name"], workers)
    await until(lambda: all_on(workers, "running"))
    await stream(channel, service["name"], sessions, 0, 20)
    await until(lambda: at_least(pool, sessions, 200))

    view = await monitoring_view(core, service["name"])
    assert view["status"] == "running" and view["canary"]["windows"] == 60
    assert view["canary"]["estimated_balanced_accuracy"] < RULE_MIN_ESTIMATE
    assert view["champion"]["estimated_balanced_accuracy"] >= RULE_MIN_ESTIMATE
    assert view["verdict"] == "rollback"
    assert view["verdict_reasons"] == [
        f"estimated balanced accuracy {view['canary']['estimated_balanced_accuracy']:.3f} "
        f"(at least {RULE_MIN_ESTIMATE:.3f})"
    ]

    ended, again = await judge_ticks(core, pool, 2)
    assert again == []  # ended once
    assert [(e["id"], e["status"], e["verdict"]) for e in ended] == [
        (started["id"], "rolled_back", "rollback")
    ]
    event = await next_canary_event(events, "canary_rolled_back")
    assert event["reason"].startswith("estimated balanced accuracy")
    await until(lambda: all_on(workers, "rolled_back"))

    await stream(channel, service["name"], sessions, 20, 10)
    await until(lambda: at_least(pool, sessions, 300))
    await settled(core, service["name"], workers)
    assert await switches(pool, started["id"]) == {s: 20 for s in expected_canary}
    rows = await served(pool, sessions)
    assert len(rows) == len({(s, q) for s, q, _ in rows}) == 300
    assert by_seq(rows, sessions, 30) == switched_at(
        sessions, expected_canary, service["noise"], service["champion"], 20, 30
    )
    assert (
        await scalar(
            pool, "SELECT count(*) FROM canary_failures WHERE canary_id = %s", [started["id"]]
        )
        == 0
    )


async def test_a_canary_that_holds_is_promoted_and_running_sessions_keep_their_version(
    core, pool, service, channel, workers
) -> None:
    sessions, expected_canary = sessions_by_hash(0.3, canary=3, champion=7)
    early, _ = sessions_by_hash(0.3, canary=1, champion=0)  # hashed to the canary
    events = await events_queue(channel, service["name"])
    await start_workers(core, service["name"], workers)
    await stream(channel, service["name"], early, 0, 10)  # began before the canary
    await until(lambda: at_least(pool, early, 10))

    rule = {"windows": 40, "min_estimated_balanced_accuracy": RULE_MIN_ESTIMATE}
    started = await start_canary(core, service["name"], {"ref": "2", "share": 0.3, "rule": rule})
    await until(lambda: all_on(workers, "running"))
    await stream(channel, service["name"], sessions + early, 10, 10)
    await stream(channel, service["name"], sessions, 0, 10)
    await until(lambda: at_least(pool, sessions + early, 220))

    (ended,) = await judge_ticks(core, pool, 1)
    assert [(e["status"], e["verdict"]) for e in ended] == [("promoted", "promote")]
    event = await next_canary_event(events, "canary_promoted")
    assert (event["version_id"], event["serving_version_id"]) == (
        service["canary"],
        service["canary"],
    )
    async with pool.connection() as conn:
        assert (await registry.resolve_service(conn, service["name"])).serving == service["canary"]
    await until(lambda: all_on(workers, "promoted"))
    assert all(
        w.slot.canary.pinned and w.slot.canary.pinned.version_id == service["champion"]
        for w in workers
    )

    later, _ = sessions_by_hash(0.3, canary=1, champion=1)  # after the promotion
    await stream(channel, service["name"], sessions + early, 20, 5)
    await stream(channel, service["name"], later, 0, 5)
    await until(lambda: at_least(pool, sessions + early + later, 220 + 55 + 10))
    await settled(core, service["name"], workers)
    by_session = await versions_by_session(pool, sessions + early + later)
    assert by_session == {
        **{
            s: [service["canary"] if s in expected_canary else service["champion"]]
            for s in sessions
        },
        early[0]: [service["champion"]],  # began before the canary: stays on the champion
        **{s: [service["canary"]] for s in later},  # new sessions: the new champion
    }
    assert await stored(pool, sessions + early + later) == 285
    arm, _ = (await arms(pool, started["id"]))[early[0]]
    assert bucket(early[0]) < 0.3 and arm == "champion"


async def test_the_queue_manager_refuses_bad_canaries_with_a_message(core, service) -> None:
    name = service["name"]
    app = queue_manager_app(core, QueueManagerSettings())
    async with app_client(app, core) as http, app_client(app) as anonymous:
        r = await http.put(f"/services/{name}/canary", json={"ref": "99", "share": 0.3})
        assert r.status_code == 422 and "'99' is not a version or alias" in r.text
        r = await http.put(f"/services/{name}/canary", json={"ref": "2", "share": 1.5})
        assert r.status_code == 422 and "share" in r.text
        r = await http.put(f"/services/{name}/canary", json={"ref": "1", "share": 0.3})
        assert r.status_code == 409 and "already the champion" in r.text
        r = await http.put(f"/services/{name}/canary", json={"ref": "4", "share": 0.3})
        assert r.status_code == 409 and "does not meet the input" in r.text
        r = await http.put("/services/nope-404/canary", json={"ref": "2", "share": 0.3})
        assert r.status_code == 404
        r = await http.get(f"/services/{name}/canary")
        assert r.status_code == 404 and "has no canary" in r.text
        mon = monitoring_app(core, MonitoringSettings(evaluator=False, canary_judge=False))
        async with app_client(mon) as monitoring:
            m = await monitoring.get(f"/services/{name}/canary")
        assert (m.status_code, m.json()["detail"]) == (404, r.json()["detail"])
        r = await anonymous.put(f"/services/{name}/canary", json={"ref": "2", "share": 0.3})
        assert r.status_code == 401

        r = await http.put(f"/services/{name}/canary", json={"ref": "2", "share": 0.25})
        assert r.status_code == 200 and r.json()["rule"]["windows"] == 200
        r = await http.put(f"/services/{name}/canary", json={"ref": "3", "share": 0.3})
        assert r.status_code == 409 and "already runs canary" in r.text
        r = await http.get(f"/services/{name}/canary")
        assert (r.json()["status"], r.json()["share"], r.json()["sessions"]) == (
            "running",
            0.25,
            {"canary": 0, "champion": 0},
        )
        assert (await anonymous.delete(f"/services/{name}/canary")).status_code == 401
        r = await http.delete(f"/services/{name}/canary")
        assert r.status_code == 200
        assert (r.json()["status"], r.json()["reason"]) == ("rolled_back", "rolled back by hand")
        r = await http.delete(f"/services/{name}/canary")
        assert r.status_code == 409 and "already ended" in r.text


async def test_a_replica_that_missed_the_events_still_serves_each_session_by_one_version(
    core, pool, service, channel, workers
) -> None:
    """Two replicas, only one of which hears ``models.events`` (the other checks the
    registry once an hour): the deaf one routes new sessions by the canary it had not
    heard of, and after a rollback it stores no canary row, so every session is served
    by one version with one switch, at the seq the rollback happened."""
    name = service["name"]
    sessions, on_canary = sessions_by_hash(0.3, canary=3, champion=7)
    heard = await start_worker(core, name, workers, decide=False, prefetch=4)
    deaf = await start_worker(
        core, name, workers, decide=False, prefetch=4, heartbeat_s=3600, model_events=False
    )
    started = await start_canary(core, name, {"ref": "2", "share": 0.3, "rule": {"windows": 10**6}})
    await until(lambda: all_on([heard], "running"))
    assert deaf.slot is not None and deaf.slot.canary is None

    await stream(channel, name, sessions, 0, 20)
    await until(lambda: at_least(pool, sessions, 200))
    await settled(core, name, workers)
    assert heard.counters.processed > 0 and deaf.counters.processed > 0
    # The deaf replica learnt of the canary from the first new session it saw.
    canary = deaf.slot.canary
    assert canary is not None and (canary.id, canary.status) == (started["id"], "running")
    assert await versions_by_session(pool, sessions) == {
        s: [service["canary"] if s in on_canary else service["champion"]] for s in sessions
    }

    app = queue_manager_app(core, QueueManagerSettings())
    async with app_client(app, core) as http:
        r = await http.delete(f"/services/{name}/canary")
    assert r.status_code == 200 and r.json()["status"] == "rolled_back"
    await until(lambda: all_on([heard], "rolled_back"))
    assert canary.status == "running" and deaf.slot.canary is canary  # it has not heard

    before = deaf.counters.processed
    await stream(channel, name, sessions, 20, 20)
    await until(lambda: at_least(pool, sessions, 400))
    await settled(core, name, workers)
    assert deaf.counters.processed > before
    rows = await served(pool, sessions)
    assert len(rows) == len({(s, q) for s, q, _ in rows}) == 400
    assert by_seq(rows, sessions, 40) == switched_at(
        sessions, on_canary, service["canary"], service["champion"], 20, 40
    )
    assert await switches(pool, started["id"]) == {s: 20 for s in on_canary}
    # It found the rollback at its first canary write, and follows it.
    assert canary.status == "rolled_back"


async def test_a_replica_whose_canary_raises_after_it_was_promoted_follows_the_promotion(
    core, pool, service, channel, workers
) -> None:
    """The race: the judge promotes the canary while, on a replica that has not heard it,
    the canary raises. The replica must not mark it rolled back nor score the canary's
    sessions with the old champion: it re-reads the registry and follows the promotion
    (the promoted version is the champion now). Nothing is lost: once an operator assigns
    the old champion again, every window is served by it, once."""
    name = service["name"]
    sessions, _ = sessions_by_hash(0.3, canary=2, champion=0)
    started = await start_canary(core, name, {"ref": "5", "share": 0.3})
    worker = await start_worker(
        core, name, workers, decide=False, heartbeat_s=3600, model_events=False
    )
    assert worker.slot is not None and worker.slot.canary is not None
    assert worker.slot.canary.model is not None  # it loads: it raises on real windows only
    async with pool.connection() as conn:  # what the judge does, with no event heard here
        row = await registry.conclude_canary(conn, started["id"], "promoted", "held the rule")
    assert row is not None and row["status"] == "promoted"

    await stream(channel, name, sessions, 0, 5)
    await until(lambda: all_on([worker], "promoted"))
    assert worker.slot.current.ids[0] == service["raising"]
    async with pool.connection() as conn:
        status = await (
            await conn.execute("SELECT status, reason FROM canaries WHERE id = %s", [started["id"]])
        ).fetchone()
    assert status == ("promoted", "held the rule")
    assert worker.slot.errors == 0  # not counted as a canary rollback here
    assert await stored(pool, sessions) == 0  # nothing scored by the stale champion
    assert (
        await scalar(
            pool, "SELECT count(*) FROM canary_failures WHERE canary_id = %s", [started["id"]]
        )
        == 0
    )

    async with pool.connection() as conn:
        await registry.assign(conn, name, service["model"], "1")
    await worker.close()
    await start_worker(core, name, workers, decide=False)
    await until(lambda: at_least(pool, sessions, 10))
    await settled(core, name, workers[-1:])
    assert await versions_by_session(pool, sessions) == {s: [service["champion"]] for s in sessions}
    assert await stored(pool, sessions) == 10
