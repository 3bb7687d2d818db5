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
from collections.abc import AsyncIterator, Callable
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
from tests.factories import FS, app_client, synthetic_p300, unique
from tests.integration.test_worker import epochs, publish
from workers.settings import WorkerSettings
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
    """A fresh service serving version 1; 2 = a good canary, 3 = noise, 4 = other names."""
    name, model = unique("svc"), unique("lda")
    ids = {}
    async with pool.connection() as conn:
        for key in ("champion", "canary", "noise", "renamed"):
            row = await registry.register_trained(conn, model, models[key], code_version="t")
            ids[key] = row["id"]
        await registry.create_service(conn, name, service_input={"channels": CHANNELS})
        await registry.assign(conn, name, model, "1")
    return {"name": name, "model": model, **ids}


@pytest.fixture
async def workers(core: CoreSettings) -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        await w.close()


async def start_workers(core: CoreSettings, service: str, started: list[Worker], n: int = 2):
    for _ in range(n):
        w = Worker(core, WorkerSettings(service=service, heartbeat_s=0.3, decide=False))
        await w.start()
        started.append(w)
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
    per = {s: epochs(s, start, n) for s in sessions}
    await publish(channel, service, [per[s][i] for i in range(n) for s in sessions])


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
    """10 sessions, 30% canary, two replicas: each session on one version until the canary
    raises; then the champion takes over at a recorded seq and re-scores what failed."""
    sessions, expected_canary = sessions_by_hash(0.3, canary=3, champion=7)
    events = await events_queue(channel, service["name"])
    started = await start_canary(
        core, service["name"], {"ref": "2", "share": 0.3, "rule": {"windows": 100_000}}
    )
    assert (started["status"], started["version_id"], started["share"]) == (
        "running",
        service["canary"],
        0.3,
    )
    assert started["event_published"] is True
    await start_workers(core, service["name"], workers)
    await until(lambda: all_on(workers, "running"))

    await stream(channel, service["name"], sessions, 0, 20)
    await until(lambda: _at_least(pool, sessions, 200))
    by_session = await versions_by_session(pool, sessions)
    assert {s: v for s, v in by_session.items()} == {
        s: [service["canary"] if s in expected_canary else service["champion"]] for s in sessions
    }
    async with pool.connection() as conn:
        arms = dict(
            await (
                await conn.execute(
                    "SELECT session_id, arm FROM canary_sessions WHERE canary_id = %s",
                    [started["id"]],
                )
            ).fetchall()
        )
    assert {s for s, a in arms.items() if a == "canary"} == expected_canary
    assert set(arms) == set(sessions)

    # Both replicas' canary now raises on every window.
    def boom(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("canary exploded")

    for w in workers:
        assert w.slot is not None and w.slot.canary is not None and w.slot.canary.model
        w.slot.canary.model.predict = boom
    await stream(channel, service["name"], sessions, 20, 20)
    await until(lambda: _at_least(pool, sessions, 400))
    await asyncio.sleep(0.5)  # anything stored twice would show now

    async with pool.connection() as conn:
        once = await (
            await conn.execute(
                "SELECT count(*), count(DISTINCT (session_id, seq)), min(seq), max(seq) "
                "FROM predictions WHERE role = 'serving' AND session_id = ANY(%s)",
                [sessions],
            )
        ).fetchone()
        served = await (
            await conn.execute(
                "SELECT session_id, seq, model_version_id FROM predictions "
                "WHERE role = 'serving' AND session_id = ANY(%s)",
                [sessions],
            )
        ).fetchall()
        switches = dict(
            await (
                await conn.execute(
                    "SELECT session_id, switch_seq FROM canary_sessions WHERE canary_id = %s "
                    "AND arm = 'canary'",
                    [started["id"]],
                )
            ).fetchall()
        )
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
    assert once == (400, 400, 0, 39)
    assert status[0] == "rolled_back" and "raised on predict" in status[1]
    assert "canary exploded" in status[1]
    # The switch is at seq 20 for each canary session: canary before, champion from there.
    assert switches == {s: 20 for s in expected_canary}
    version = {(s, q): v for s, q, v in served}
    for s in sessions:
        want = [
            service["canary"] if s in expected_canary and q < 20 else service["champion"]
            for q in range(40)
        ]
        assert [version[(s, q)] for q in range(40)] == want, s
    # The failed windows are the canary sessions' first windows after the fault, each
    # re-scored by the champion (and by nothing else).
    assert failures
    assert {s for s, _, _ in failures} <= expected_canary
    assert all(q >= 20 and version[(s, q)] == service["champion"] for s, q, _ in failures)
    assert all("canary exploded" in r for _, _, r in failures)
    event = await next_canary_event(events, "canary_rolled_back")
    assert (event["service"], event["version_id"], event["serving_version_id"]) == (
        service["name"],
        service["canary"],
        service["champion"],
    )
    await until(lambda: all_on(workers, "rolled_back"))

    view = await monitoring_view(core, service["name"])
    assert view["status"] == "rolled_back"
    assert (view["canary"]["sessions"], view["canary"]["windows"]) == (3, 60)
    assert view["canary"]["errors"] == len(failures) == view["failed_windows"]
    # Figures stop at the rollback: the champion's sessions' first 20 windows each, and
    # whatever of the next 20 was stored before it.
    assert view["champion"]["sessions"] == 7 and 140 <= view["champion"]["windows"] <= 280
    assert view["switched_sessions"] == 3
    assert view["verdict"] == "rollback" and view["verdict_reasons"][0].startswith("error rate")


async def _at_least(pool, sessions: list[str], n: int) -> bool:
    return await stored(pool, sessions) >= n


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
    await until(lambda: _at_least(pool, sessions, 200))

    view = await monitoring_view(core, service["name"])
    assert view["status"] == "running" and view["canary"]["windows"] == 60
    assert view["canary"]["estimated_balanced_accuracy"] < RULE_MIN_ESTIMATE
    assert view["champion"]["estimated_balanced_accuracy"] >= RULE_MIN_ESTIMATE
    assert view["verdict"] == "rollback"
    assert view["verdict_reasons"] == [
        f"estimated balanced accuracy {view['canary']['estimated_balanced_accuracy']:.3f} "
        f"(at least {RULE_MIN_ESTIMATE:.3f})"
    ]

    judge = CanaryJudge(core, MonitoringSettings(), pool=pool)
    await judge.open()
    try:
        ended = await judge.tick()
        assert await judge.tick() == []  # ended once
    finally:
        await judge.close()
    assert [(e["id"], e["status"], e["verdict"]) for e in ended] == [
        (started["id"], "rolled_back", "rollback")
    ]
    event = await next_canary_event(events, "canary_rolled_back")
    assert event["reason"].startswith("estimated balanced accuracy")
    await until(lambda: all_on(workers, "rolled_back"))

    await stream(channel, service["name"], sessions, 20, 10)
    await until(lambda: _at_least(pool, sessions, 300))
    await asyncio.sleep(0.5)
    async with pool.connection() as conn:
        switches = dict(
            await (
                await conn.execute(
                    "SELECT session_id, switch_seq FROM canary_sessions WHERE canary_id = %s "
                    "AND arm = 'canary'",
                    [started["id"]],
                )
            ).fetchall()
        )
        served = await (
            await conn.execute(
                "SELECT session_id, seq, model_version_id FROM predictions "
                "WHERE role = 'serving' AND session_id = ANY(%s)",
                [sessions],
            )
        ).fetchall()
    assert switches == {s: 20 for s in expected_canary}
    assert len(served) == len({(s, q) for s, q, _ in served}) == 300
    version = {(s, q): v for s, q, v in served}
    for s in sessions:
        assert [version[(s, q)] for q in range(30)] == [
            service["noise"] if s in expected_canary and q < 20 else service["champion"]
            for q in range(30)
        ], s
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
    await until(lambda: _at_least(pool, early, 10))

    rule = {"windows": 40, "min_estimated_balanced_accuracy": RULE_MIN_ESTIMATE}
    started = await start_canary(core, service["name"], {"ref": "2", "share": 0.3, "rule": rule})
    await until(lambda: all_on(workers, "running"))
    await stream(channel, service["name"], sessions + early, 10, 10)
    await stream(channel, service["name"], sessions, 0, 10)
    await until(lambda: _at_least(pool, sessions + early, 220))

    judge = CanaryJudge(core, MonitoringSettings(), pool=pool)
    await judge.open()
    try:
        ended = await judge.tick()
    finally:
        await judge.close()
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
    await until(lambda: _at_least(pool, sessions + early + later, 220 + 55 + 10))
    await asyncio.sleep(0.5)
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
    async with pool.connection() as conn:
        arm = await scalar(
            pool,
            "SELECT arm FROM canary_sessions WHERE canary_id = %s AND session_id = %s",
            [started["id"], early[0]],
        )
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
