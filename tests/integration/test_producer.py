"""The producer against the real RabbitMQ and PostgreSQL, outages included.

Each test uses its own service name (queues deleted afterwards) and the module a scratch
database (dropped afterwards). Broker outages are simulated with a TCP proxy in front of
RabbitMQ that can cut every connection, so the shared broker keeps running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from neurostream import contract, topology
from neurostream.db import ensure_database
from neurostream.settings import CoreSettings
from producer.board import RecordingSource, record
from producer.publisher import WindowPublisher
from producer.session import run_session
from producer.settings import ProducerSettings
from producer.windowing import Windower
from tests.factories import TcpProxy

pytestmark = pytest.mark.integration
AMQP = CoreSettings().amqp_url


class _FormatNow(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = record.getMessage(), None
        return True


@pytest.fixture(autouse=True)
def _eager_aio_pika_logs() -> Iterator[None]:
    """aio-pika logs callbacks whose repr breaks after they ran; format them at emit time."""
    logger, flt = logging.getLogger("aio_pika"), _FormatNow()
    for handler_logger in (logger, logging.getLogger("aio_pika.tools")):
        handler_logger.addFilter(flt)
    yield
    for handler_logger in (logger, logging.getLogger("aio_pika.tools")):
        handler_logger.removeFilter(flt)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    url = make_conninfo(
        CoreSettings().database_url, dbname=f"ns_test_producer_{uuid.uuid4().hex[:8]}"
    )
    ensure_database(url)
    yield url
    admin = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        name = str(conninfo_to_dict(url)["dbname"])
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seconds of SYNTHETIC_BOARD, captured once and replayed fast by every test."""
    path = tmp_path_factory.mktemp("producer") / "synthetic.brainflow.csv"
    record("synthetic", 3.0, path)
    return path


@pytest.fixture
async def service() -> AsyncIterator[str]:
    name = f"test-producer-{uuid.uuid4().hex[:10]}"
    yield name
    conn = await aio_pika.connect_robust(AMQP)
    async with conn:
        channel = await conn.channel()
        for queue in (topology.service_queue(name), topology.dead_queue(name), f"{name}.labels"):
            await channel.queue_delete(queue)


async def drain(
    queue_name: str, *, idle_s: float = 1.0
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything in a queue until it stays empty for ``idle_s``."""
    conn = await aio_pika.connect_robust(AMQP)
    out = []
    async with conn:
        channel = await conn.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        empty_since = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - empty_since < idle_s:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            out.append(message)
            empty_since = asyncio.get_running_loop().time()
    return out


def decode_all(messages: list[aio_pika.abc.AbstractIncomingMessage]) -> list[contract.Window]:
    windows = []
    for m in messages:
        window = contract.decode(m.body, m.headers, expected_fs=250.0)
        assert m.message_id == window.header.message_id
        assert m.content_type == contract.CONTENT_TYPE
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        windows.append(window)
    return windows


async def test_session_publishes_gap_free_confirmed_windows_and_labels(
    database_url: str, recording: Path, service: str
) -> None:
    core = CoreSettings(database_url=database_url)
    settings = ProducerSettings(service=service, duration_s=30.0)
    conn = await aio_pika.connect_robust(AMQP)
    async with conn:
        channel = await conn.channel()
        labels = await channel.declare_queue(f"{service}.labels")
        exchanges = await topology.declare_exchanges(channel)
        await labels.bind(exchanges[topology.LABELS_EXCHANGE], routing_key=settings.session_id)
        source = RecordingSource.from_file(recording, speed=0, loop=True)
        result = await run_session(core, settings, source=source)
        label_bodies = [json.loads(m.body) for m in await drain(labels.name, idle_s=0.5)]

    assert result.windows_confirmed == result.windows_published > 0
    assert (result.first_seq, result.last_seq) == (0, result.windows_published - 1)
    windows = decode_all(await drain(topology.service_queue(service)))
    assert sorted(w.header.seq for w in windows) == list(range(result.windows_published))
    epochs = [w for w in windows if w.header.kind is contract.WindowKind.EPOCH]
    assert len(epochs) == result.epochs == len(result.truth) > 100
    assert all(w.data.shape == (16, 200) and w.header.marker in (1, 2) for w in epochs)
    assert {w.header.seq: int(w.header.marker == 1) for w in epochs} == result.truth
    assert {b["seq"]: b["label"] for b in label_bodies} == result.truth
    assert {b["source"] for b in label_bodies} == {"paradigm"}

    async with await psycopg.AsyncConnection.connect(database_url) as db:
        cur = await db.execute(
            "SELECT service, fs, channels, ended_at IS NOT NULL, windows_confirmed, paradigm "
            "FROM sessions WHERE session_id = %s",
            [settings.session_id],
        )
        row = await cur.fetchone()
    assert row is not None
    assert row[:2] == (service, 250.0) and row[2][4] == "Pz"
    assert row[3:5] == (True, result.windows_confirmed)
    assert row[5]["kind"] == "oddball"


async def test_broker_outage_buffers_and_resends_without_gaps(
    database_url: str, recording: Path, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy()
    await proxy.start()
    core = CoreSettings(database_url=database_url, amqp_url=proxy.url)
    settings = ProducerSettings(service=service, duration_s=60.0, paradigm="none", sliding=True)
    source = RecordingSource.from_file(recording, speed=40, loop=True)  # 60 s of data in 1.5 s

    async def outage() -> None:
        await asyncio.sleep(0.5)
        await proxy.cut()
        await asyncio.sleep(1.5)
        await proxy.start()

    with caplog.at_level(logging.WARNING, logger="producer.publisher"):
        outage_task = asyncio.create_task(outage())
        result = await run_session(core, settings, source=source)
        await outage_task

    assert any("buffering" in r.getMessage() for r in caplog.records)
    assert any("resending" in r.getMessage() for r in caplog.records)
    assert result.windows_confirmed == result.windows_published == 119
    windows = decode_all(await drain(topology.service_queue(service)))
    seqs = [w.header.seq for w in windows]
    assert sorted(set(seqs)) == list(range(119))  # duplicates allowed, gaps not


async def test_full_buffer_blocks_the_producer_instead_of_dropping(
    recording: Path, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy()
    await proxy.start()
    publisher = WindowPublisher(proxy.url, service, buffer_max=10)
    await publisher.start()
    source = RecordingSource.from_file(recording, speed=0, loop=True)
    source.start()
    windower = Windower(session_id="outage", fs=source.fs, channels=source.channels)
    windows: list[contract.Window] = []
    while len(windows) < 15:
        chunk = source.read()
        assert chunk is not None
        windows += windower.push(chunk.data, chunk.timestamps)
    await proxy.cut()

    async def produce() -> None:
        for w in windows[:15]:
            await publisher.publish_window(w)

    with caplog.at_level(logging.WARNING, logger="producer.publisher"):
        task = asyncio.create_task(produce())
        await asyncio.sleep(1.0)
        assert not task.done() and publisher.buffered == 10
        assert any(r.levelno == logging.ERROR and "full" in r.getMessage() for r in caplog.records)
        await proxy.start()
        await asyncio.wait_for(task, 30)
        assert await publisher.flush(30)
    assert publisher.windows_confirmed == 15
    await publisher.close()


async def test_stop_event_ends_the_session_with_everything_confirmed(
    database_url: str, recording: Path, service: str
) -> None:
    core = CoreSettings(database_url=database_url)
    settings = ProducerSettings(service=service)  # no duration: runs until stopped
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    source = RecordingSource.from_file(recording, speed=20, loop=True)
    result = await asyncio.wait_for(run_session(core, settings, source=source, stop=stop), 30)
    assert result.windows_published > 10
    assert result.windows_confirmed == result.windows_published
    windows = decode_all(await drain(topology.service_queue(service)))
    assert sorted(w.header.seq for w in windows) == list(range(result.windows_published))


async def test_live_synthetic_board(database_url: str, service: str) -> None:
    core = CoreSettings(database_url=database_url)
    settings = ProducerSettings(service=service, board="synthetic", duration_s=2.0, sliding=True)
    result = await asyncio.wait_for(run_session(core, settings), 30)
    assert result.fs == 250.0 and len(result.channels) == 16 and result.channels[0] == "Fz"
    assert result.windows_confirmed == result.windows_published >= 3
