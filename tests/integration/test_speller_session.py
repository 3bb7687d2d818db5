"""A simulated speller session through the producer, against the real RabbitMQ and
PostgreSQL: epochs carry their trial and stimulus code, each trial's truth goes once on
``eeg.labels`` (its own key and kind header), the session row records the layout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aio_pika
import pytest

from neurostream import contract, topology
from neurostream.decisions import SpellerLayout
from neurostream.settings import CoreSettings
from producer.board import RecordingSource, record
from producer.session import run_session
from producer.settings import ProducerSettings
from tests.factories import unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speller") / "synthetic.brainflow.csv"
    record("synthetic", 2.0, path)
    return path


async def _drain(queue: aio_pika.abc.AbstractQueue) -> list[aio_pika.abc.AbstractIncomingMessage]:
    out = []
    idle = 0
    while idle < 10:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            idle += 1
            await asyncio.sleep(0.05)
            continue
        idle = 0
        out.append(message)
    return out


async def test_a_speller_session_publishes_trials_and_their_truth(
    core: CoreSettings, pool, recording: Path
) -> None:
    service = unique("spell")
    # 2 repetitions of 12 flashes at 0.25 s, then 1.5 s: 7.5 s a trial; 20 s hold 2 whole
    # trials and the start of a third
    settings = ProducerSettings(
        service=service, paradigm="speller", speller_repetitions=2, speller_text="NS",
        duration_s=20.0, session_id=unique("s"),
    )  # fmt: skip
    conn = await aio_pika.connect_robust(core.amqp_url)
    async with conn:
        channel = await conn.channel()
        exchanges = await topology.declare_exchanges(channel)
        labels = await channel.declare_queue(exclusive=True)
        await labels.bind(exchanges[topology.LABELS_EXCHANGE], routing_key="#")
        source = RecordingSource.from_file(recording, speed=0, loop=True)
        result = await run_session(core, settings, source=source)
        messages = await _drain(labels)
        windows = [
            contract.decode(m.body, m.headers)
            for m in await _drain(await channel.get_queue(topology.service_queue(service)))
        ]
        await channel.queue_delete(topology.service_queue(service))
        await channel.queue_delete(topology.dead_queue(service))

    trials = [m for m in messages if (m.headers or {}).get(contract.KIND_HEADER) == "trial"]
    truths = [contract.TrialTruth.decode(m.body) for m in trials]
    assert {m.routing_key for m in trials} == {f"trial.{service}.{settings.session_id}"}
    # "N" is row 3 (code 3), column 2 (code 8); "S" row 4 (code 4), column 1 (code 7)
    assert [(t.trial, t.targets, t.symbol) for t in truths] == [
        (0, [3, 8], "N"), (1, [4, 7], "S"), (2, [3, 8], "N"),
    ]  # fmt: skip
    assert result.trials == 3 and result.paradigm == "speller"

    assert len(windows) == result.epochs and all(w.header.trial is not None for w in windows)
    per_trial = {t: [w for w in windows if w.header.trial == t] for t in (0, 1)}
    for t, epochs in per_trial.items():
        assert sorted(w.header.marker or 0 for w in epochs) == sorted(list(range(1, 13)) * 2)
        # an epoch's label: 1 when its flash held the trial's symbol (2 repetitions x 2)
        assert [result.truth[w.header.seq] for w in epochs] == [
            int(w.header.marker in truths[t].targets) for w in epochs
        ]
        assert sum(result.truth[w.header.seq] for w in epochs) == 4
    epoch_labels = [json.loads(m.body) for m in messages if m not in trials]
    assert {b["seq"]: b["label"] for b in epoch_labels} == result.truth

    async with pool.connection() as db:
        (paradigm,) = await (
            await db.execute(
                "SELECT paradigm FROM sessions WHERE session_id = %s", [settings.session_id]
            )
        ).fetchone()
    assert paradigm["kind"] == "speller" and paradigm["repetitions"] == 2
    assert SpellerLayout.of(paradigm) == SpellerLayout.grid()
    assert (paradigm["soa_s"], paradigm["trial_s"]) == (0.25, 7.5)
