"""A node of a three-node RabbitMQ cluster killed mid-session: clients fail over by themselves.

The service queue ``svc.<service>`` is a quorum queue with a member on every node. The
node that leads it is killed with SIGKILL while a producer session streams and two worker
processes consume; the producer (its confirm buffer resent), and the workers (their
consumers re-declared) move to another node through ``neurostream.broker.connect``, with
no restart. Then the node is booted again and rejoins. A unique key makes duplicate rows
impossible, so the checks count what happened instead: windows confirmed by the broker,
windows stored, deliveries marked redelivered, no-op inserts and producer resends, and
check that every confirmed window is stored once and nothing is stored that was not sent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import psycopg
import pytest

from neurostream import broker, topology
from neurostream.settings import CoreSettings
from producer.board import RecordingSource
from producer.publisher import WindowPublisher
from producer.session import SessionResult, run_session, session_publisher
from producer.settings import ProducerSettings
from tests.faults.conftest import (
    Counts,
    WorkerProc,
    counts,
    isolated_core,
    register_service,
    report,
    scalar,
    wait_stored,
)
from tests.faults.infra import OwnCluster

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

STORED = "SELECT count(*) FROM predictions WHERE session_id = %s"


def on_node(core: CoreSettings, cluster: OwnCluster, i: int) -> CoreSettings:
    """``core`` with the cluster's addresses rotated so that node ``i`` is tried first."""
    return core.model_copy(update={"amqp_url": cluster.url_from(i)})


async def declare_on(cluster: OwnCluster, i: int, service: str) -> int:
    """Declare the service's topology through node ``i`` (a new quorum queue's leader is
    the declaring node) and return the node that leads the queue."""
    connection = await broker.connect(cluster.node_url(i), name="test:declare")
    try:
        channel = await connection.channel()
        await topology.declare_exchanges(channel)
        await topology.declare_service(channel, service)
    finally:
        await connection.close()
    return await asyncio.to_thread(cluster.leader, topology.service_queue(service))


async def wait_connection(cluster: OwnCluster, name: str, among: list[int], timeout=30) -> int:
    """The node (of ``among``) that serves the client connection called ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in among:
            if name in await asyncio.to_thread(cluster.connections, i):
                return i
        await asyncio.sleep(0.2)
    raise AssertionError(f"no connection {name!r} on nodes {among}")


async def cluster_service(
    core: CoreSettings, cluster: OwnCluster, trained
) -> tuple[CoreSettings, str, str, int]:
    """The test's settings on its own cluster, a fresh service serving ``trained`` and its
    quorum queue declared through node 0: (settings, service, queue, the leader's node)."""
    assert core.api_token is not None
    ccore = isolated_core(core.database_url, cluster.url, core.api_token.get_secret_value())
    name = (await register_service(ccore.database_url, trained))["name"]
    leader = await declare_on(cluster, 0, name)
    return ccore, name, topology.service_queue(name), leader


@dataclass
class PublisherWatch:
    """Samples a session's publisher (its public counters) to time the fail-over."""

    publisher: WindowPublisher
    samples: list[tuple[float, int, bool]] = field(default_factory=list)

    async def run(self) -> None:
        p = self.publisher
        while True:
            self.samples.append((time.monotonic(), p.windows_confirmed, p.in_outage))
            await asyncio.sleep(0.01)

    def confirms_again_after(self, t_kill: float) -> tuple[float | None, float | None]:
        """Seconds from the kill to the publisher's outage and to its next confirm."""
        after = [s for s in self.samples if s[0] >= t_kill]
        down = next((s for s in after if s[2]), None)
        if down is None:
            return None, None
        again = next((s for s in after if s[0] > down[0] and s[1] > down[1]), None)
        return down[0] - t_kill, (again[0] - t_kill if again else None)


async def ledger(
    database_url: str, worker_procs, procs: list[WorkerProc], result: SessionResult
) -> tuple[dict[str, int], Counts, set[int]]:
    """Stop the workers, then read what ``check_ledger`` checks: their totals, the
    session's row counts and its stored seqs."""
    session_id = result.session_id
    await asyncio.to_thread(worker_procs.stop_all)
    totals = await worker_totals(database_url, procs)
    c = await counts(database_url, session_id, result.windows_confirmed)
    return totals, c, await stored_seqs(database_url, session_id)


def ledger_figures(result: SessionResult, c: Counts, totals: dict[str, int]) -> dict[str, int]:
    """The counts every fault's report starts with, from what ``ledger`` read."""
    return {
        "sent": result.windows_published,
        "confirmed": len(result.confirmed),
        "stored": c.distinct,
        "rows": c.rows,
        "redelivered": totals["redelivered"],
        "noop_inserts": totals["duplicates"],
        "resent": result.windows_resent,
        "processed": totals["processed"],
    }


async def db_clock(database_url: str) -> float:
    return float(await scalar(database_url, "SELECT extract(epoch FROM clock_timestamp())"))


async def store_times(database_url: str, session_id: str) -> list[float]:
    async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=5) as conn:
        rows = await (
            await conn.execute(
                "SELECT extract(epoch FROM predicted_at) FROM predictions "
                "WHERE session_id = %s ORDER BY predicted_at",
                [session_id],
            )
        ).fetchall()
    return [float(r[0]) for r in rows]


async def stored_seqs(database_url: str, session_id: str) -> set[int]:
    async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=5) as conn:
        rows = await (
            await conn.execute("SELECT seq FROM predictions WHERE session_id = %s", [session_id])
        ).fetchall()
    return {int(r[0]) for r in rows}


async def worker_totals(database_url: str, procs: list[WorkerProc]) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=5) as conn:
        row = await (
            await conn.execute(
                "SELECT sum(processed), sum(redelivered), sum(duplicates), sum(write_retries) "
                "FROM workers WHERE worker_id = ANY(%s)",
                [[p.worker_id for p in procs]],
            )
        ).fetchone()
    assert row is not None
    names = ("processed", "redelivered", "duplicates", "write_retries")
    return dict(zip(names, map(int, row), strict=True))


def check_ledger(result: SessionResult, c: Counts, seqs: set[int], totals: dict[str, int]) -> None:
    """Every confirmed window stored exactly once, nothing stored that was not sent, and
    every processed window either stored or a no-op insert of a redelivery or resend."""
    assert result.flushed
    assert len(result.confirmed) == result.windows_confirmed == result.windows_published
    assert c.rows == c.distinct == len(seqs)  # one row per window (one model version)
    assert c.duplicated == 0 and c.dead == 0
    assert all(seq in seqs for seq in result.confirmed)  # confirmed => stored
    assert seqs <= set(result.confirmed)  # stored => sent (and confirmed)
    assert result.first_seq is not None and result.last_seq is not None
    assert min(seqs) >= result.first_seq and max(seqs) <= result.last_seq
    assert totals["processed"] == c.rows + totals["duplicates"]
    assert totals["duplicates"] <= totals["redelivered"] + result.windows_resent


async def test_leader_node_killed_mid_session_fails_over_and_counts_add_up(
    core: CoreSettings, own_cluster: OwnCluster, lda16, recording, worker_procs
) -> None:
    ccore, name, queue, leader = await cluster_service(core, own_cluster, lda16)
    assert own_cluster.members(queue) == [0, 1, 2]
    other = (leader + 1) % 3

    on_leader = worker_procs.start(
        on_node(ccore, own_cluster, leader), name, prefetch=64, batch_max=16
    )
    on_other = worker_procs.start(
        on_node(ccore, own_cluster, other), name, prefetch=64, batch_max=16
    )
    procs = [on_leader, on_other]
    await worker_procs.wait_ready(ccore.database_url, procs)
    assert await wait_connection(own_cluster, f"worker:{on_leader.worker_id}", [leader]) == leader
    assert await wait_connection(own_cluster, f"worker:{on_other.worker_id}", [other]) == other

    settings = ProducerSettings(service=name, duration_s=450.0, seed=18)
    source = RecordingSource.from_file(recording, speed=30, loop=True)  # ~15 s of wall time
    pcore = on_node(ccore, own_cluster, leader)
    watch = PublisherWatch(session_publisher(pcore, settings))
    sampler = asyncio.create_task(watch.run())
    session = asyncio.create_task(
        run_session(pcore, settings, source=source, publisher=watch.publisher)
    )
    producer_name = f"producer:{settings.session_id}"
    assert await wait_connection(own_cluster, producer_name, [leader]) == leader
    while await scalar(ccore.database_url, STORED, [settings.session_id]) < 100:
        assert not session.done()
        await asyncio.sleep(0.05)

    before = await scalar(ccore.database_url, STORED, [settings.session_id])
    t_kill_db = await db_clock(ccore.database_url)
    t_kill = time.monotonic()
    await asyncio.to_thread(own_cluster.kill, leader)
    killed_mid_session = not session.done()
    live = [i for i in range(3) if i != leader]
    # Everyone moves to a live node by themselves; nothing is restarted.
    producer_node = await wait_connection(own_cluster, producer_name, live)
    worker_nodes = [
        await wait_connection(own_cluster, f"worker:{p.worker_id}", live) for p in procs
    ]
    new_leader = await asyncio.to_thread(own_cluster.leader, queue)
    result = await asyncio.wait_for(session, 150)
    sampler.cancel()
    c = await wait_stored(ccore.database_url, settings.session_id, result.windows_confirmed, 60)
    if c.distinct < result.windows_confirmed:
        print(own_cluster.queue_counts(queue))
        for p in procs:
            print(p.worker_id, p.tail(40))

    t_restart = time.monotonic()
    await asyncio.to_thread(own_cluster.restart, leader)
    restart_s = time.monotonic() - t_restart
    assert own_cluster.nodes[leader] in own_cluster.running_nodes(live[0])
    members_after = own_cluster.members(queue)
    online_after = await _wait_online(own_cluster, queue, 3)

    totals, c, seqs = await ledger(ccore.database_url, worker_procs, procs, result)
    times = [t - t_kill_db for t in await store_times(ccore.database_url, settings.session_id)]
    after = [t for t in times if t > 0]
    gaps = [b - a for a, b in zip([0.0, *after], after, strict=False)]
    outage_s, confirm_again_s = watch.confirms_again_after(t_kill)
    report(
        "cluster-leader-killed",
        **ledger_figures(result, c, totals),
        write_retries=totals["write_retries"],
        stored_before_kill=before,
        leader=leader,
        new_leader=new_leader,
        producer_moved_to=producer_node,
        workers_moved_to=worker_nodes,
        kill_to_producer_outage_s=_round(outage_s),
        kill_to_confirm_again_s=_round(confirm_again_s),
        kill_to_first_row_s=_round(after[0] if after else None),
        longest_store_gap_after_kill_s=_round(max(gaps) if gaps else None),
        restart_rejoin_s=round(restart_s, 1),
        startup_s=round(own_cluster.startup_s, 1),
    )
    assert killed_mid_session
    assert producer_node in live and all(n in live for n in worker_nodes)
    assert new_leader in live
    assert confirm_again_s is not None  # the producer confirmed again after the kill
    assert after, "nothing was stored after the kill"
    check_ledger(result, c, seqs, totals)
    assert result.windows_published > 500
    assert members_after == [0, 1, 2] and online_after == [0, 1, 2]
    for p in procs:
        assert p.proc.returncode == 0, p.tail()


async def test_worker_node_killed_with_unacked_windows_redelivers_them_once(
    core: CoreSettings, own_cluster: OwnCluster, lda16, recording, worker_procs
) -> None:
    ccore, name, queue, leader = await cluster_service(core, own_cluster, lda16)
    node = (leader + 1) % 3  # the worker's node: not the leader, so the queue stays up
    wp = worker_procs.start(on_node(ccore, own_cluster, node), name, prefetch=300, batch_max=32)
    await worker_procs.wait_ready(ccore.database_url, [wp])
    assert await wait_connection(own_cluster, f"worker:{wp.worker_id}", [node]) == node

    # A database that stalls the worker's inserts: it holds its deliveries unacked. The
    # lock is taken once the session's row exists: the producer's own schema migration
    # (at start-up) would wait behind it.
    settings = ProducerSettings(service=name, duration_s=40.0, seed=19)
    source = RecordingSource.from_file(recording, speed=30, loop=True)
    session = asyncio.create_task(
        run_session(on_node(ccore, own_cluster, leader), settings, source=source)
    )
    started = "SELECT count(*) FROM sessions WHERE session_id = %s"
    while not await scalar(ccore.database_url, started, [settings.session_id]):
        assert not session.done(), session.exception()
        await asyncio.sleep(0.05)
    lock = await psycopg.AsyncConnection.connect(ccore.database_url)
    try:
        await lock.execute("LOCK TABLE predictions IN SHARE MODE")
        result = await asyncio.wait_for(session, 120)
        held = await _wait_unacked(own_cluster, queue)
        await asyncio.to_thread(own_cluster.kill, node)
    finally:
        await lock.rollback()
        await lock.close()
    live = [i for i in range(3) if i != node]
    moved_to = await wait_connection(own_cluster, f"worker:{wp.worker_id}", live)
    c = await wait_stored(ccore.database_url, settings.session_id, result.windows_confirmed, 90)
    await asyncio.to_thread(own_cluster.restart, node)
    online_after = await _wait_online(own_cluster, queue, 3)
    totals, c, seqs = await ledger(ccore.database_url, worker_procs, [wp], result)
    report(
        "cluster-worker-node-killed",
        **ledger_figures(result, c, totals),
        unacked_at_kill=held["messages_unacknowledged"],
        ready_at_kill=held["messages_ready"],
        worker_node=node,
        moved_to=moved_to,
    )
    assert held["messages_unacknowledged"] > 0
    assert moved_to in live
    assert totals["redelivered"] >= 1
    check_ledger(result, c, seqs, totals)
    assert online_after == [0, 1, 2]
    assert wp.proc.returncode == 0, wp.tail()


async def _wait_unacked(cluster: OwnCluster, queue: str, timeout: float = 30) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        q = await asyncio.to_thread(cluster.queue_counts, queue)
        if q["messages_unacknowledged"] > 0 or time.monotonic() > deadline:
            return q
        await asyncio.sleep(0.3)


async def _wait_online(cluster: OwnCluster, queue: str, n: int, timeout: float = 30) -> list[int]:
    """The queue's online members, once ``n`` are (or when time runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        online = await asyncio.to_thread(cluster.online, queue)
        if len(online) >= n or time.monotonic() > deadline:
            return online
        await asyncio.sleep(0.5)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
