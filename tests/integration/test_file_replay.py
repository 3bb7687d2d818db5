"""A real recording streamed through the real broker into the real store, with its labels.

The muse-lsl CSV of the visual P300 run 1 (``../shared/data/eeg-notebooks``, 194 events:
170 non-targets = code 1, 24 targets = code 2) is replayed at speed 0: once, with no
simulated paradigm, its own markers as epochs. With ``--events`` every epoch arrives in
PostgreSQL labelled through the ML data API's collector and archiver (``Ingest``), and the
stored windows are the offline epochs ``neurostream train`` fits on, bit for bit and at
the same seqs. Record-only sessions are archived without reaching the service queue.
Everything runs in the session's scratch database and vhost (``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import numpy as np
import psycopg
import pytest

from ml_data_api.ingest import Ingest
from ml_data_api.settings import DataApiSettings
from neurostream import contract, topology
from neurostream.geometry import EpochGeometry
from neurostream.labelling import EventMapping
from neurostream.recordings import read_recording
from neurostream.settings import CoreSettings
from producer.offline import epochs_from_recording
from producer.session import run_session
from producer.settings import ProducerSettings
from tests.recording_files import EEG_NOTEBOOKS

RUN1 = EEG_NOTEBOOKS / "visual/P300/subject2/session1/data_2017-02-09-18.12.53.csv"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not RUN1.exists(), reason=f"the shared recordings are absent ({RUN1} not found)"
    ),
]
NEUROSTREAM = [sys.executable, "-m", "launcher"]
P300 = "target=2,nontarget=1"


@pytest.fixture
def service() -> str:
    return f"replay-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def ingest(core: CoreSettings) -> AsyncIterator[Ingest]:
    consumers = Ingest(core, DataApiSettings(drain_timeout_s=5.0))
    await consumers.start()
    yield consumers
    await consumers.close()


async def rows(core: CoreSettings, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(core.database_url) as db:
        cur = await db.execute(query, params)
        return await cur.fetchall()


async def stored(core: CoreSettings, session_id: str, windows: int, labels: int) -> None:
    """Wait until the consumers stored ``windows`` windows and ``labels`` labels."""
    for _ in range(600):
        (counts,) = await rows(
            core,
            "SELECT (SELECT count(*) FROM windows WHERE session_id = %(s)s), "
            "(SELECT count(*) FROM labels WHERE session_id = %(s)s)",
            {"s": session_id},
        )
        if counts == (windows, labels):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"stored {counts}, expected ({windows}, {labels})")


async def drain(core: CoreSettings, queue_name: str) -> list[contract.Window]:
    connection = await aio_pika.connect_robust(core.amqp_url)
    out = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            window = contract.decode(message.body, message.headers)
            sent_at = float(message.headers["sent_at"])  # type: ignore[arg-type]
            last = window.header.t0 + (window.header.n_samples - 1) / window.header.fs
            assert last <= sent_at, "a sample stamped after it was published"
            out.append(window)
    return out


async def queued(core: CoreSettings, service: str) -> int:
    """Messages in the service queue (declaring it, empty, if nothing did)."""
    connection = await aio_pika.connect_robust(core.amqp_url)
    async with connection:
        queue = await topology.declare_service(await connection.channel(), service)
        assert queue.declaration_result.message_count is not None
        return queue.declaration_result.message_count


def test_produce_file_with_defaults_neither_simulates_nor_loops(
    core: CoreSettings, service: str
) -> None:
    session_id = f"cli-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")}
    env |= {"NEUROSTREAM_DATABASE_URL": core.database_url, "NEUROSTREAM_AMQP_URL": core.amqp_url}
    args = ["produce", "--file", str(RUN1), "--speed", "0", "--service", service]
    result = subprocess.run(
        [*NEUROSTREAM, *args, "--session-id", session_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = result.stdout
    assert f"session {session_id} ({service}): file:csv {RUN1} at speed 0, paradigm none" in summary
    assert "194/194 windows confirmed, 194 epochs, 0 labels" in summary
    assert "epochs per code: 1: 170, 2: 24" in summary

    rec = read_recording(RUN1)
    windows = asyncio.run(drain(core, topology.service_queue(service)))
    windows.sort(key=lambda w: w.header.seq)
    assert [w.header.seq for w in windows] == list(range(194))  # once: no loop
    assert all(w.header.kind is contract.WindowKind.EPOCH for w in windows)
    assert [w.header.marker for w in windows] == rec.events[:, 1].tolist()  # no simulation
    assert windows[0].header.channels == ("TP9", "AF7", "AF8", "TP10")
    (row,) = asyncio.run(
        rows(
            core,
            "SELECT board, fs, paradigm, source, windows_confirmed FROM sessions "
            "WHERE session_id = %s",
            [session_id],
        )
    )
    board, fs, paradigm, source, confirmed = row
    assert (board, fs, confirmed) == ("file:csv", 256.0, 194)
    assert paradigm["kind"] == "none"
    # the epoch geometry, recorded once with the session: the causal 1-30 Hz stream filter
    assert paradigm["epoch"] == {
        "tmin": -0.1, "tmax": 0.7, "baseline": [-0.1, 0.0], "filter": "1-30@4"
    }  # fmt: skip
    assert windows[0].header.geometry == EpochGeometry(-0.1, None, (-0.1, 0.0), "1-30@4")
    assert source["file"] == str(RUN1) and source["format"] == "csv"
    assert (source["speed"], source["loop"], source["dropped"]) == (0.0, False, ["Right AUX"])
    assert source["events_in_file"] == {"1": 170, "2": 24}


async def test_with_events_the_epochs_arrive_labelled_as_the_offline_epochs(
    core: CoreSettings, ingest: Ingest, service: str
) -> None:
    settings = ProducerSettings(file=str(RUN1), speed=0, events=P300, service=service)
    result = await run_session(core, settings)
    assert result.windows_confirmed == result.labels_confirmed == result.epochs == 194
    assert result.classes == {"nontarget": 170, "target": 24} and result.unmapped == {}
    await stored(core, settings.session_id, 194, 194)

    got = await rows(
        core,
        "SELECT w.seq, w.marker, l.label, l.source, w.data, "
        "extract(epoch FROM w.stored_at)::float8 - extract(epoch FROM w.window_ts)::float8 "
        "- (w.n_samples - 1) / w.fs, w.service "
        "FROM windows w JOIN labels l USING (session_id, seq) WHERE w.session_id = %s "
        "ORDER BY w.seq",
        [settings.session_id],
    )
    rec = read_recording(RUN1)
    offline = epochs_from_recording(rec, settings, EventMapping.parse(P300))
    assert [r[0] for r in got] == offline.seqs.tolist() == list(range(194))
    assert [r[1] for r in got] == offline.codes.tolist() == rec.events[:, 1].tolist()
    assert [r[2] for r in got] == offline.y.tolist() == [int(r[1] == 2) for r in got]
    assert {r[3] for r in got} == {"recording"} and {r[6] for r in got} == {service}
    stored_x = np.stack([np.frombuffer(r[4], "<f4").reshape(4, 205) for r in got])
    np.testing.assert_array_equal(stored_x, offline.x)  # live == offline, bit for bit
    assert min(r[5] for r in got) >= -1e-3  # no sample stamped after it was stored
    assert await queued(core, service) == 194  # a serving session feeds the workers


async def test_record_only_archives_with_labels_and_reports_unmapped_codes(
    core: CoreSettings, ingest: Ingest, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ProducerSettings(
        file=str(RUN1), speed=0, events="target=2", record_only=True, service=service
    )
    with caplog.at_level("WARNING", logger="producer.session"):
        result = await run_session(core, settings)
    assert result.epochs == result.labels_confirmed == result.windows_confirmed == 24
    assert result.unmapped == {1: 170} and result.codes == {2: 24}
    assert any("unmapped codes (no epoch cut): 1: 170" in line for line in result.summary())
    assert any("cut no epoch: 1: 170" in r.getMessage() for r in caplog.records)
    await stored(core, settings.session_id, 24, 24)
    services = await rows(
        core, "SELECT DISTINCT service FROM windows WHERE session_id = %s", [settings.session_id]
    )
    assert services == [(service,)]
    assert await queued(core, service) == 0  # nothing piled up for a worker
