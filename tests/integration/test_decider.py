"""The decider against the real RabbitMQ and PostgreSQL: decide, store, publish, take over.

Predictions are published as a worker publishes them: written to ``predictions`` first,
then a ``PredictionMessage`` on ``eeg.predictions``. The scores of a speller session's
flashes favour a known symbol; what the decider must decide is computed beside it with the
pure ``TrialEvidence`` (flashes in seq order, rules asked after each full repetition).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import numpy as np
import pytest
from pydantic import ValidationError

from neurostream import registry, topology
from neurostream.contract import DecisionMessage, GatedItem, PredictionItem, PredictionMessage
from neurostream.decisions import Calibration, SpellerLayout, TrialEvidence, parse_rules
from neurostream.models.training import train_model
from neurostream.results import PredictionRow, write_predictions
from neurostream.settings import CoreSettings
from tests.factories import FS as FS_TRAIN
from tests.factories import synthetic_p300, unique
from workers.__main__ import serve
from workers.decider import Decider, decide_dead_queue, declare_decider
from workers.settings import WorkerSettings

pytestmark = pytest.mark.integration

LAYOUT = SpellerLayout.grid(6, 6)
RULES = "fixed:10,posterior:0.9:10"
REPETITIONS = 10
VERSION = 2_000_000_007  # no such version: its flashes are read uncalibrated
FS, N_SAMPLES, TMIN, SOA = 250.0, 200, -0.1, 0.175
T0 = 1_700_000_000.0
PER_MESSAGE = 4  # flashes per prediction message (a worker's micro-batch)


@dataclass(frozen=True)
class Flash:
    seq: int
    trial: int
    code: int
    score: float | None  # None: gated
    version: int = VERSION

    @property
    def event_t(self) -> float:
        return T0 + self.seq * SOA

    def item(self) -> PredictionItem:
        assert self.score is not None
        return PredictionItem(
            seq=self.seq,
            model_version_id=self.version,
            predicted=int(self.score > 0.5),
            score=self.score,
            marker=self.code,
            t0=self.event_t + round(TMIN * FS) / FS,
            kind="epoch",
            fs=FS,
            n_samples=N_SAMPLES,
            tmin=TMIN,
            trial=self.trial,
        )


def speller_trials(targets: Sequence[str], seed: int, gated: Sequence[int] = ()) -> list[Flash]:
    """Every trial: ``REPETITIONS`` times each row and column code in a random order, the
    target symbol's row and column scored higher (noisy: some repetitions mislead).
    Flashes whose seq is in ``gated`` carry no score."""
    rng = np.random.default_rng(seed)
    flashes: list[Flash] = []
    for trial, symbol in enumerate(targets):
        wanted = set(LAYOUT.targets(LAYOUT.symbols.index(symbol)))
        for _ in range(REPETITIONS):
            for code in rng.permutation(LAYOUT.codes).tolist():
                mean = 0.62 if code in wanted else 0.38
                score = float(np.clip(rng.normal(mean, 0.17), 0.01, 0.99))
                seq = len(flashes)
                flashes.append(Flash(seq, trial, code, None if seq in gated else score))
    return flashes


@dataclass(frozen=True)
class Expected:
    trial: int
    rule: str
    symbol: str
    symbol_index: int
    posterior: float
    repetitions: int
    epochs: int
    evidence: dict[str, float]
    last_seq: int


def expected_decisions(
    flashes: Sequence[Flash], calibration: Calibration | None = None
) -> dict[tuple[int, str], Expected]:
    """What the decider must decide: each rule at the first full repetition it fires on."""
    out: dict[tuple[int, str], Expected] = {}
    rules = parse_rules(RULES)
    for trial in sorted({f.trial for f in flashes}):
        ev = TrialEvidence(LAYOUT, LAYOUT.target_prior, calibration=calibration)
        for f in sorted((f for f in flashes if f.trial == trial), key=lambda f: f.seq):
            before = ev.repetitions
            # At the precision predictions.score stores, as the decider adds it.
            score = None if f.score is None else float(np.float32(f.score))
            ev.add(f.code, score, seq=f.seq)
            if ev.repetitions == before:
                continue
            for rule in rules:
                if (trial, rule.name) not in out and rule.should_stop(ev):
                    index, posterior = ev.best()
                    out[(trial, rule.name)] = Expected(
                        trial,
                        rule.name,
                        LAYOUT.symbols[index],
                        index,
                        posterior,
                        ev.repetitions,
                        ev.epochs,
                        ev.evidence(),
                        f.seq,
                    )
    return out


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
async def deciders() -> AsyncIterator[list[Decider]]:
    started: list[Decider] = []
    yield started
    for d in started:
        await d.close()


async def start_decider(core: CoreSettings, service: str, started: list[Decider]) -> Decider:
    d = Decider(core, WorkerSettings(service=service, decision_rules=RULES, drain_timeout_s=10))
    await d.start()
    started.append(d)
    return d


async def register(pool: Any, service: str, paradigm: dict[str, Any] | None = None) -> str:
    session = unique("spell")
    if paradigm is None:
        paradigm = {"kind": "speller", "speller": LAYOUT.describe(), "repetitions": REPETITIONS}
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO sessions (session_id, service, board, fs, channels, paradigm) "
            "VALUES (%s, %s, 'synthetic', %s, '[]', %s)",
            [session, service, FS, json.dumps(paradigm)],
        )
    return session


class Decisions:
    """A subscriber of ``eeg.decisions`` for one service: what arrived, by (trial, rule)."""

    def __init__(self) -> None:
        self.received: list[DecisionMessage] = []

    async def bind(self, channel: Any, service: str) -> None:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(topology.DECISIONS_EXCHANGE, routing_key=f"{service}.#")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.received.append(DecisionMessage.decode(message.body))

    def of(self, session: str) -> dict[tuple[int, str], list[DecisionMessage]]:
        out: dict[tuple[int, str], list[DecisionMessage]] = {}
        for d in self.received:
            if d.session_id == session:
                out.setdefault((d.trial, d.rule), []).append(d)
        return out


async def feed(
    pool: Any, channel: Any, service: str, session: str, flashes: Sequence[Flash]
) -> int:
    """Write then publish the flashes as a worker does, ``PER_MESSAGE`` to a message; the
    number of messages published."""
    ex = await channel.get_exchange(topology.PREDICTIONS_EXCHANGE)
    n = 0
    for i in range(0, len(flashes), PER_MESSAGE):
        part = flashes[i : i + PER_MESSAGE]
        scored = [f for f in part if f.score is not None]
        rows = [
            PredictionRow(
                session_id=session,
                seq=f.seq,
                model_version_id=f.version,
                t0=f.item().t0,
                role="serving",
                kind="epoch",
                marker=f.code,
                predicted=int(f.score > 0.5),
                score=f.score,
                proba=[1 - f.score, f.score],
                sent_at=None,
                trial=f.trial,
            )
            for f in scored
            if f.score is not None
        ]
        async with pool.connection() as conn:
            await write_predictions(conn, service, "test-worker", rows)
            gated = [f for f in part if f.score is None]
            for f in gated:
                await conn.execute(
                    "INSERT INTO gated (session_id, seq, model_version_id, window_ts, service, "
                    "kind, marker, reason, channels, worker_id) VALUES "
                    "(%s, %s, %s, to_timestamp(%s), %s, 'epoch', %s, 'ptp', '{Pz}', 'w')",
                    [session, f.seq, f.version, f.event_t, service, f.code],
                )
        message = PredictionMessage(
            session_id=session,
            predictions=[f.item() for f in scored],
            gated=[
                GatedItem(seq=f.seq, trial=f.trial, marker=f.code, reason="ptp")
                for f in part
                if f.score is None
            ],
        )
        await ex.publish(aio_pika.Message(message.encode()), routing_key=f"{service}.{session}")
        n += 1
    return n


async def until(check: Callable[[], bool], wait_s: float = 30.0) -> None:
    deadline = time.monotonic() + wait_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def stored(pool: Any, session: str) -> dict[tuple[int, str], dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT trial, rule, service, symbol_index, symbol, codes, posterior, repetitions, "
            "epochs, model_version_ids, evidence, extract(epoch FROM last_event_at)::float8, "
            "extract(epoch FROM last_sample_at)::float8 FROM decisions WHERE session_id = %s",
            [session],
        )
        rows = await cur.fetchall()
    names = (
        "trial rule service symbol_index symbol codes posterior repetitions epochs "
        "model_version_ids evidence last_event_t last_sample_t"
    ).split()
    return {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in rows}


async def assert_decided(
    pool: Any,
    session: str,
    want: dict[tuple[int, str], Expected],
    flashes: Sequence[Flash],
    sub: Decisions | None = None,
) -> dict[tuple[int, str], dict[str, Any]]:
    """``decisions`` holds ``want`` for the session (and ``sub`` got each exactly once)."""
    rows = await stored(pool, session)
    assert rows.keys() == want.keys()
    for key, w in want.items():
        assert_matches(rows[key], w, flashes)
        if sub is not None:
            (published,) = sub.of(session)[key]
            assert_matches(published, w, flashes)
    return rows


def assert_matches(
    got: DecisionMessage | dict[str, Any], want: Expected, flashes: Sequence[Flash]
) -> None:
    d = got.model_dump() if isinstance(got, DecisionMessage) else got
    assert (d["symbol"], d["symbol_index"]) == (want.symbol, want.symbol_index)
    assert list(d["codes"]) == list(LAYOUT.targets(want.symbol_index))
    assert (d["repetitions"], d["epochs"]) == (want.repetitions, want.epochs)
    assert d["posterior"] == pytest.approx(want.posterior, rel=1e-5)
    assert d["evidence"].keys() == want.evidence.keys()
    for code, llr in want.evidence.items():
        assert d["evidence"][code] == llr  # exactly: a rebuilt trial adds the same floats
    assert list(d["model_version_ids"]) == [flashes[0].version]
    last = flashes[want.last_seq]
    if last.score is None:  # a gated flash carries no times
        assert d["last_event_t"] is None and d["last_sample_t"] is None
    else:
        assert d["last_event_t"] == pytest.approx(last.event_t, abs=1e-3)
        assert d["last_sample_t"] == pytest.approx(last.item().t0 + (N_SAMPLES - 1) / FS, abs=1e-3)


# -- tests ---------------------------------------------------------------------------------


async def test_a_decision_per_trial_and_rule_stored_with_its_evidence_and_published(
    core, pool, channel, deciders
) -> None:
    service = unique("spell")
    decider = await start_decider(core, service, deciders)
    sub = Decisions()
    await sub.bind(channel, service)
    session = await register(pool, service)
    other = await register(pool, service, {"kind": "oddball"})
    targets = ["H", "7", "_"]
    flashes = speller_trials(targets, seed=4, gated=(17, 130))
    want = expected_decisions(flashes)
    assert len(want) == 6
    # The dynamic rule is reached earlier than the fixed one, and both spell the targets.
    for trial, symbol in enumerate(targets):
        assert want[(trial, "fixed-10")].symbol == symbol
        assert want[(trial, "fixed-10")].repetitions == 10
    assert all(w.repetitions < 10 for k, w in want.items() if k[1].startswith("posterior"))
    sent = await feed(pool, channel, service, session, flashes)
    sent += await feed(pool, channel, service, other, speller_trials(["A"], seed=4)[:24])
    await until(lambda: decider.counters.messages == sent and len(sub.of(session)) == 6)

    rows = await assert_decided(pool, session, want, flashes, sub)
    assert {r["service"] for r in rows.values()} == {service}
    assert {p.service for (p,) in sub.of(session).values()} == {service}
    assert decider.counters.decisions == 6 and decider.counters.ignored == 6  # other's messages
    assert sub.of(other) == {} and await stored(pool, other) == {}

    # A worker's redelivered batch publishes its predictions again: nothing is decided twice.
    again = await feed(pool, channel, service, session, flashes[-40:])
    # Then a new session's trial: the decider publishes in order, so a duplicate decision
    # would reach the subscriber before the new session's.
    later = await register(pool, service)
    again += await feed(pool, channel, service, later, speller_trials(["B"], seed=8))
    await until(lambda: decider.counters.messages == sent + again and len(sub.of(later)) == 2)
    assert len(await stored(pool, session)) == 6
    assert {k: len(v) for k, v in sub.of(session).items()} == dict.fromkeys(want, 1)


async def test_malformed_messages_are_dead_lettered_with_a_reason(
    core, pool, channel, deciders
) -> None:
    service = unique("spell")
    decider = await start_decider(core, service, deciders)
    session = await register(pool, service)
    ex = await channel.get_exchange(topology.PREDICTIONS_EXCHANGE)
    nan = PredictionMessage(session_id=session, predictions=[]).model_dump()
    nan["predictions"] = [
        {**speller_trials(["A"], seed=0)[0].item().model_dump(mode="json"), "score": float("nan")}
    ]
    negative = json.loads(json.dumps(nan))
    negative["predictions"][0].update(score=0.5, trial=-1)
    bodies = [b"not json", json.dumps({"predictions": []}).encode(), json.dumps(nan).encode()]
    bodies.append(json.dumps(negative).encode())
    for i, body in enumerate(bodies):
        await ex.publish(
            aio_pika.Message(body, message_id=f"bad-{i}"), routing_key=f"{service}.{session}"
        )
    good = speller_trials(["A"], seed=0)
    sent = await feed(pool, channel, service, session, good)
    await until(lambda: decider.counters.messages == sent + 4)
    dead = await channel.declare_queue(
        decide_dead_queue(service), durable=True, arguments={"x-queue-type": "quorum"}
    )
    reasons: dict[str, str] = {}
    for _ in range(100):
        msg = await dead.get(no_ack=True, fail=False)
        if msg is None:
            if len(reasons) == 4:
                break
            await asyncio.sleep(0.05)
            continue
        reasons[str(msg.message_id)] = str(msg.headers[topology.REASON_HEADER])
    assert reasons.keys() == {"bad-0", "bad-1", "bad-2", "bad-3"}
    assert "prediction message" in reasons["bad-0"]
    assert "session_id" in reasons["bad-1"]
    assert "non-finite score" in reasons["bad-2"]
    assert "trial -1 outside" in reasons["bad-3"]
    assert decider.counters.rejected == 4
    # The decider lived on: the good trial is decided as if the bad messages never came.
    await assert_decided(pool, session, expected_decisions(good), good)


async def test_a_restarted_decider_decides_as_if_it_had_not_stopped(
    core, pool, channel, deciders
) -> None:
    service = unique("spell")
    sub = Decisions()
    await sub.bind(channel, service)
    session = await register(pool, service)
    flashes = speller_trials(["Q"], seed=5, gated=(40,))
    want = expected_decisions(flashes)
    posterior = next(w for k, w in want.items() if k[1].startswith("posterior"))
    # Stop after the dynamic rule fired, mid-way to the fixed rule's 10 repetitions.
    cut = (posterior.last_seq // PER_MESSAGE + 2) * PER_MESSAGE
    assert posterior.repetitions < 8 and cut < want[(0, "fixed-10")].last_seq - 24
    first = await start_decider(core, service, deciders)
    sent = await feed(pool, channel, service, session, flashes[:cut])
    await until(lambda: first.counters.messages == sent and len(sub.of(session)) == 1)
    await first.close()

    second = await start_decider(core, service, deciders)
    rest = await feed(pool, channel, service, session, flashes[cut:])
    await until(lambda: second.counters.messages == rest and len(sub.of(session)) == 2)
    assert second.counters.rebuilt == 1
    await assert_decided(pool, session, want, flashes, sub)  # stored ones not published again
    assert first.counters.decisions == 1 and second.counters.decisions == 1


async def test_two_deciders_on_one_service_decide_each_trial_once(
    core, pool, channel, deciders
) -> None:
    service = unique("spell")
    sub = Decisions()
    await sub.bind(channel, service)
    session = await register(pool, service)
    flashes = speller_trials(["K", "2"], seed=6)
    want = expected_decisions(flashes)
    a = await start_decider(core, service, deciders)
    b = await start_decider(core, service, deciders)
    # Trial 0 whole and trial 1 before any of its rules fires.
    first_rule = min(w.last_seq for k, w in want.items() if k[0] == 1)
    cut = (first_rule // PER_MESSAGE - 2) * PER_MESSAGE
    assert cut > REPETITIONS * len(LAYOUT.codes) + 12
    sent = await feed(pool, channel, service, session, flashes[:cut])
    await until(lambda: a.counters.messages + b.counters.messages == sent)
    await until(lambda: len(sub.of(session)) == 2)
    active, standby = (a, b) if a.counters.messages else (b, a)
    assert (active.counters.messages, standby.counters.messages) == (sent, 0)
    # The active one goes; the standby takes the queue over mid-trial.
    await active.close()
    rest = await feed(pool, channel, service, session, flashes[cut:])
    await until(lambda: standby.counters.messages == rest and len(sub.of(session)) == 4)
    await assert_decided(pool, session, want, flashes, sub)
    assert active.counters.decisions == 2 and standby.counters.decisions == 2


async def test_the_worker_process_runs_a_decider_beside_the_worker_until_sigterm(
    core, pool, channel
) -> None:
    service = unique("spell")
    sub = Decisions()
    await sub.bind(channel, service)
    session = await register(pool, service)
    settings = WorkerSettings(service=service, heartbeat_s=0.3, decision_rules=RULES)
    await declare_decider(channel, service)  # holds the predictions until the decider is up
    running = asyncio.create_task(serve(core, settings))
    flashes = speller_trials(["Z"], seed=9)
    await feed(pool, channel, service, session, flashes)
    await until(lambda: running.done() or len(sub.of(session)) == 2)
    assert not running.done()
    assert {d.symbol for (d,) in sub.of(session).values()} == {"Z"}
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's handler; the decider follows it
    worker = await asyncio.wait_for(running, 60)
    assert worker.stopping and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    # Nothing consumes the decider's queue any more: what comes now waits in it.
    sent = await feed(pool, channel, service, await register(pool, service), flashes[:8])

    # The test becomes the queue's single active consumer: the messages waited for it.
    queue = await declare_decider(channel, service)
    waiting: list[PredictionMessage] = []

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        waiting.append(PredictionMessage.decode(message.body))

    await queue.consume(take, no_ack=True)
    await until(lambda: len(waiting) == sent)
    assert [p.seq for m in waiting for p in m.predictions] == list(range(8))


async def test_flashes_are_read_through_their_versions_calibration(
    core, pool, channel, deciders
) -> None:
    """A version's Platt calibration (its metrics) turns each score into its likelihood
    ratio: the decisions are the calibrated reference's, not the raw one's."""
    x, y = synthetic_p300(channels=4, seed=2)
    trained = train_model("sklearn-lda", x, y, FS_TRAIN)
    calibration = Calibration(slope=0.4, intercept=-0.9, prior=1 / 6, n=200)
    trained = dataclasses.replace(
        trained, metrics=trained.metrics | {"calibration": calibration.describe()}
    )
    service = unique("spell")
    async with pool.connection() as conn:
        version = await registry.register_trained(
            conn, unique("calibrated"), trained, code_version="test"
        )
    version_id = int(version["id"])
    decider = await start_decider(core, service, deciders)
    session = await register(pool, service)
    flashes = [
        dataclasses.replace(f, version=version_id) for f in speller_trials(["K", "4"], seed=6)
    ]
    want = expected_decisions(flashes, calibration)
    raw = expected_decisions(flashes)
    assert want != raw  # calibration changes the evidence (and when the posterior stops)
    sent = await feed(pool, channel, service, session, flashes)
    await until(lambda: decider.counters.messages == sent and decider.counters.decisions == 4)
    await assert_decided(pool, session, want, flashes)


def test_bad_stopping_rules_are_refused_with_the_setting_named() -> None:
    assert WorkerSettings().decide and WorkerSettings().decision_rules == (
        "fixed:10,posterior:0.99:10"
    )
    for bad in ("fixed:0", "posterior:1.5:10", "sometimes", "fixed:10,fixed:10"):
        with pytest.raises(ValidationError, match="decision_rules") as err:
            WorkerSettings(decision_rules=bad)
        assert "fixed:N" in str(err.value)  # the message says how to write a rule
