"""A P300 speller session end to end: flashes in, symbols out.

The synthetic board's simulated row/column speller (6×6, five repetitions per trial,
spelling 48 symbols) streams through RabbitMQ to a worker serving an LDA trained on the
simulated oddball; the decider beside it accumulates each trial's evidence and decides
once per stopping rule (fixed 1..5 repetitions, and a posterior threshold); the decisions
are stored with their evidence, published on ``eeg.decisions``, pushed on the producer's
LSL decisions outlet, and scored by the monitoring API against the trials' truth (which
the ML data API's collector stores). What must hold: decision accuracy rises with the
repetitions and is far above chance (1/36) by the last; the dynamic rule (posteriors
through the version's Platt calibration) reaches the fixed rule's accuracy with fewer
repetitions on average.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import aio_pika
import numpy as np
import pylsl
import pytest

from ml_data_api.app import create_app as create_data_api
from ml_data_api.settings import DataApiSettings
from monitoring_api.app import create_app as create_monitoring
from monitoring_api.settings import MonitoringSettings
from neurostream import contract, registry, topology
from neurostream.decisions import SpellerLayout
from neurostream.models.training import train_model
from neurostream.settings import CoreSettings
from producer.board import RecordingSource
from producer.offline import simulate_epochs
from producer.outlet import decision_source_id
from producer.session import run_session
from producer.settings import ProducerSettings
from tests.factories import app_client, served, unique
from tests.live_support import fetch
from workers.decider import Decider
from workers.settings import WorkerSettings
from workers.worker import Worker

pytestmark = pytest.mark.e2e

TEXT = "NEUROSTREAM_SPELLS_P3_UP" * 2
REPETITIONS = 5
RULES = ",".join([*(f"fixed:{k}" for k in range(1, REPETITIONS + 1)), "posterior:0.99:5"])
DYNAMIC = "posterior-0.99-max5"  # the workers' default threshold


def quiet_board() -> RecordingSource:
    """The synthetic board's layout, flat: only the paradigm's noise and P300s (as the
    simulated training session adds them), replayed as fast as it is read."""
    return RecordingSource(np.zeros((32, 1000)), board="synthetic", speed=0, loop=True)


@pytest.fixture
async def collector(core: CoreSettings) -> AsyncIterator[None]:
    """The ML data API with its consumers: it stores the trials' truth (``trials``)."""
    with served(create_data_api(core, DataApiSettings(consumers=True)), "ML data API"):
        yield


async def test_a_speller_session_spells_better_with_repetitions_and_stops_sooner(
    core: CoreSettings, pool, collector: None
) -> None:
    service, model = unique("speller"), unique("speller-lda")
    train = simulate_epochs(ProducerSettings(paradigm="oddball", seed=1), quiet_board(), 300)
    trained = train_model(
        "sklearn-lda", train.x, train.y, train.fs, seed=1, geometry=train.geometry
    )
    async with pool.connection() as conn:
        await registry.register_trained(conn, model, trained, code_version="test")
        await registry.create_service(conn, service)
        await registry.assign(conn, service, model, "1")
    session_id = unique("spell")
    layout = SpellerLayout.grid()
    trial_s = REPETITIONS * len(layout.codes) * 0.25 + 1.5
    settings = ProducerSettings(
        service=service, session_id=session_id, paradigm="speller", seed=3,
        speller_repetitions=REPETITIONS, speller_text=TEXT, results_lsl=True,
        duration_s=len(TEXT) * trial_s + 1.0,
    )  # fmt: skip
    worker_settings = WorkerSettings(service=service, metrics_port=0, decision_rules=RULES)
    worker, decider = Worker(core, worker_settings), Decider(core, worker_settings)

    got_lsl: list[list[float]] = []
    done = threading.Event()

    def listen() -> None:  # the speller application's side
        found = pylsl.resolve_byprop("source_id", decision_source_id(session_id), 1, 30)
        assert found, "the decisions outlet never appeared"
        inlet = pylsl.StreamInlet(found[0], processing_flags=0)
        inlet.open_stream(10)
        while not done.is_set():
            sample, _ = inlet.pull_sample(0.2)
            if sample is not None:
                got_lsl.append(sample)

    conn = await aio_pika.connect_robust(core.amqp_url)
    channel = await conn.channel()
    exchanges = await topology.declare_exchanges(channel)
    over_amqp = await channel.declare_queue(exclusive=True)
    await over_amqp.bind(exchanges[topology.DECISIONS_EXCHANGE], f"{service}.{session_id}")
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    n_rules = len(RULES.split(","))
    expected = len(TEXT) * n_rules
    try:
        await worker.start()
        await decider.start()
        result = await run_session(core, settings, source=quiet_board())
        for _ in range(300):
            rows = await fetch(
                core,
                "SELECT trial, rule, symbol, repetitions, evidence, posterior FROM decisions "
                "WHERE session_id = %s ORDER BY trial, rule",
                [session_id],
            )
            if len(rows) >= expected:
                break
            await asyncio.sleep(0.1)
    finally:
        await decider.close()
        await worker.close()
        done.set()
        thread.join(10)
    messages = []
    while (m := await over_amqp.get(no_ack=True, fail=False)) is not None:
        messages.append(contract.DecisionMessage.decode(m.body))
    await conn.close()

    assert result.trials == len(TEXT)
    assert len(rows) == expected  # one decision per trial and rule
    # evidence stored: every flashed code's summed log-likelihood ratio
    assert all(set(r[4]) == {str(c) for c in layout.codes} for r in rows)
    assert {(m.trial, m.rule) for m in messages} == {(r[0], r[1]) for r in rows}
    assert len(got_lsl) == expected and result.decisions_pushed == expected
    assert sorted(int(s[0]) for s in got_lsl) == sorted(r[0] for r in rows)

    truth = {t: TEXT[t] for t in range(len(TEXT))}
    by_rule: dict[str, list[tuple[bool, int]]] = {}
    for trial, rule, symbol, repetitions, _, _ in rows:
        by_rule.setdefault(rule, []).append((symbol == truth[trial], repetitions))
    accuracy = [np.mean([c for c, _ in by_rule[f"fixed-{k}"]]) for k in range(1, 6)]
    dyn_accuracy = float(np.mean([c for c, _ in by_rule[DYNAMIC]]))
    dyn_reps = float(np.mean([r for _, r in by_rule[DYNAMIC]]))
    assert 1 / 36 < accuracy[0] < accuracy[-1] and accuracy[-1] >= 0.9
    assert np.mean(accuracy[:2]) < np.mean(accuracy[3:])
    # the dynamic rule (calibrated posteriors) reaches five fixed repetitions' accuracy,
    # within one trial, with fewer repetitions on average
    assert dyn_accuracy >= accuracy[-1] - 1 / len(TEXT) and dyn_reps < REPETITIONS - 1

    # the monitoring API scores them against the trials' truth the collector stored
    for _ in range(100):
        if len(
            await fetch(core, "SELECT 1 FROM trials WHERE session_id = %s", [session_id])
        ) >= len(TEXT):
            break
        await asyncio.sleep(0.1)
    async with app_client(create_monitoring(core, MonitoringSettings())) as client:
        bci = (await client.get("/bci", params={"session_id": session_id})).json()
    shown = {r["rule"]: r for r in bci["rows"]}
    assert shown["fixed-5"]["accuracy"] == pytest.approx(accuracy[-1])
    assert shown[DYNAMIC]["accuracy"] == pytest.approx(dyn_accuracy)
    assert shown[DYNAMIC]["mean_repetitions"] == pytest.approx(dyn_reps)
    assert shown[DYNAMIC]["bits_per_min"] > shown["fixed-5"]["bits_per_min"] > 0
    print(
        "\nspeller (6x6, 48 symbols): accuracy by repetitions "
        + " ".join(f"{a:.2f}" for a in accuracy)
        + f"; {DYNAMIC}: {dyn_accuracy:.2f} at {dyn_reps:.2f} repetitions on average; ITR "
        f"fixed-5 {shown['fixed-5']['bits_per_min']:.1f}, dynamic "
        f"{shown[DYNAMIC]['bits_per_min']:.1f} bits/min"
    )
