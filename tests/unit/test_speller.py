"""The simulated row/column speller: schedule, P300 on the target's row and column, trials
through the Cutter, and decisions that get better with repetitions."""

from __future__ import annotations

import numpy as np
import pytest

from neurostream.decisions import (
    FixedRepetitions,
    PosteriorThreshold,
    SpellerLayout,
    StoppingRule,
    TrialEvidence,
)
from neurostream.errors import ConfigError
from neurostream.models.serving import ServingModel
from neurostream.models.training import train_model
from producer.board import Chunk, RecordingSource
from producer.offline import simulate_epochs, simulate_speller
from producer.session import Cutter
from producer.settings import ProducerSettings
from producer.speller import SpellerParadigm

FS = 250.0
CHANNELS = ("Fz", "Cz", "Pz", "Oz")
LAYOUT = SpellerLayout.grid()


def speller(**kw: object) -> SpellerParadigm:
    return SpellerParadigm(FS, CHANNELS, LAYOUT, weights={"Pz": 1.0}, **kw)  # type: ignore[arg-type]


def test_each_repetition_flashes_every_row_and_column_once_then_the_trial_pauses() -> None:
    p = speller(repetitions=3, soa_s=0.2, trial_pause_s=1.0, seed=4)
    flashes = p.flashes(0, p.onset(2, 0) + 1)
    first, second = [f for f in flashes if f.trial == 0], [f for f in flashes if f.trial == 1]
    assert len(first) == len(second) == 36 and flashes[-1].trial == 2
    for reps in (first[:12], first[12:24], first[24:]):
        assert sorted(f.code for f in reps) == list(range(1, 13))
    assert [f.code for f in first[:12]] != [f.code for f in first[12:24]]  # fresh order
    gaps = np.diff([f.index for f in first])
    assert set(gaps.tolist()) == {50}  # 0.2 s at 250 Hz
    # the last flash of a trial, then 0.2 s + the 1 s pause to the next trial's first
    assert second[0].index - first[-1].index == 50 + 250
    assert p.trial_s == pytest.approx(36 * 0.2 + 1.0)
    # 2 of 12 flashes per repetition are targets: the symbol's row and column
    targets = {f.code for f in first if f.target}
    assert len([f for f in first if f.target]) == 6
    assert LAYOUT.symbol_of(targets) == p.target(0)


def test_the_text_is_spelled_in_order_and_a_random_target_is_seeded() -> None:
    p = speller(text="HI")
    assert [p.truth(t) for t in range(3)] == [([2, 8], "H"), ([2, 9], "I"), ([2, 8], "H")]
    assert (p.label_of(8, 0), p.label_of(2, 1), p.label_of(3, 0)) == (1, 1, 0)
    a, b, c = speller(seed=5), speller(seed=5), speller(seed=6)
    assert [a.target(t) for t in range(20)] == [b.target(t) for t in range(20)]
    assert [a.target(t) for t in range(20)] != [c.target(t) for t in range(20)]
    with pytest.raises(ConfigError, match="'!'") as info:
        speller(text="HI!")
    assert info.value.field == "speller_text"


def test_the_p300_follows_the_target_row_and_column_only() -> None:
    p = speller(amplitude_uv=5.0, text="P", repetitions=2)
    n = p.onset(1, 0)
    out, markers, trials = p.apply(np.zeros((len(CHANNELS), n), np.float32), 0)
    onsets = np.flatnonzero(markers)
    assert set(markers[onsets].tolist()) == set(range(1, 13)) and len(onsets) == 24
    assert set(trials[onsets].tolist()) == {0} and (trials[markers == 0] == -1).all()
    expected = np.zeros(n, np.float32)
    for i in onsets[np.isin(markers[onsets], [3, 10])]:  # "P": third row, fourth column
        span = min(len(p.p300.waveform), n - i)
        expected[i : i + span] += p.p300.waveform[:span]
    np.testing.assert_allclose(out[2], expected, atol=1e-5)  # Pz: the targets' peaks
    assert expected.max() >= 5.0 and np.allclose(out[[0, 1, 3]], 0.0)


def test_same_seed_same_output_whatever_the_chunking() -> None:
    data = np.random.default_rng(0).normal(size=(len(CHANNELS), 6000)).astype(np.float32)
    whole = speller(seed=2, noise_uv=3.0, repetitions=2).apply(data, 0)
    p = speller(seed=2, noise_uv=3.0, repetitions=2)
    parts = [p.apply(data[:, a : a + 97], a) for a in range(0, 6000, 97)]
    for k in range(3):
        np.testing.assert_allclose(
            np.concatenate([q[k] for q in parts], axis=-1), whole[k], atol=1e-5
        )


def test_the_cutter_puts_each_epoch_in_its_trial_with_its_code_and_label() -> None:
    settings = ProducerSettings(
        session_id="spell", paradigm="speller", speller_repetitions=2, speller_text="AB",
        filter_l_freq=None, filter_h_freq=None,
    )  # fmt: skip
    cutter = Cutter(settings, FS, CHANNELS, paradigm="speller")
    assert cutter.speller is not None and cutter.paradigm is None
    n = cutter.speller.onset(2, 0)
    chunk = Chunk(np.zeros((len(CHANNELS), n), np.float32), np.arange(n) / FS, np.zeros(n))
    epochs = cutter.push(chunk)
    assert len(epochs) == 48 and [w.header.seq for w in epochs] == list(range(48))
    assert [w.header.trial for w in epochs] == [0] * 24 + [1] * 24
    labels = {(w.header.trial, w.header.marker): cutter.label_of(w) for w in epochs}
    # "A" is row 1 (code 1) and column 1 (code 7); "B" row 1 and column 2 (code 8)
    assert {k for k, v in labels.items() if v == 1} == {(0, 1), (0, 7), (1, 1), (1, 8)}
    assert cutter.speller.soa_s == settings.soa_s  # the oddball's timing by default


def _quiet() -> RecordingSource:
    """The synthetic board's layout, flat: only the paradigm's noise and P300s."""
    return RecordingSource(np.zeros((32, 1000)), board="synthetic", speed=0, loop=True)


def _decide(
    scores: np.ndarray, codes: np.ndarray, trials: np.ndarray, truth: dict[int, int],
    rules: list[StoppingRule],
) -> dict[str, list[tuple[bool, int]]]:  # fmt: skip
    """What a decider does, offline: per trial and rule, (correct, repetitions) of its decision."""
    out: dict[str, list[tuple[bool, int]]] = {r.name: [] for r in rules}
    for trial, target in truth.items():
        evidence = TrialEvidence(LAYOUT, LAYOUT.target_prior)
        pending, seen = list(rules), 0
        for i in np.flatnonzero(trials == trial):
            evidence.add(int(codes[i]), float(scores[i]))
            if evidence.repetitions == seen:
                continue  # rules are asked once a repetition completes
            seen = evidence.repetitions
            for rule in [r for r in pending if r.should_stop(evidence)]:
                out[rule.name].append((evidence.best()[0] == target, seen))
                pending.remove(rule)
    return out


def test_decisions_improve_with_repetitions_and_a_dynamic_rule_stops_sooner() -> None:
    """An LDA trained on the simulated oddball serves the simulated speller: decision
    accuracy rises with repetitions far above chance (1/36), and a posterior threshold
    matches ten fixed repetitions' accuracy with fewer repetitions on average."""
    train = simulate_epochs(ProducerSettings(paradigm="oddball", seed=1), _quiet(), 300)
    trained = train_model(
        "sklearn-lda", train.x, train.y, train.fs, seed=1, geometry=train.geometry
    )
    model = ServingModel.from_row(trained.to_row(model_name="lda"))
    spell = simulate_speller(ProducerSettings(paradigm="speller", seed=3), _quiet(), 30)
    assert spell.trials.max() == 29 and len(spell.y) == 30 * 10 * 12
    scores = model.predict(spell.x, spell.fs, channels=spell.channels, geometry=spell.geometry)
    truth = {
        t: LAYOUT.symbol_of(spell.codes[(spell.trials == t) & (spell.y == 1)].tolist())
        for t in range(30)
    }
    assert None not in truth.values()
    fixed: list[StoppingRule] = [FixedRepetitions(k) for k in range(1, 11)]
    dynamic = PosteriorThreshold(0.999, max_repetitions=10)
    decided = _decide(scores.score, spell.codes, spell.trials, truth, [*fixed, dynamic])  # type: ignore[arg-type]
    accuracy = [np.mean([c for c, _ in decided[r.name]]) for r in fixed]
    # measured: 0.63 0.87 0.97 0.97 0.97 1.0 1.0 1.0 1.0 1.0 over 30 trials
    assert 1 / 36 < accuracy[0] < 0.9
    assert accuracy[0] < accuracy[2] <= accuracy[9] and accuracy[9] >= 0.95
    dyn = decided[dynamic.name]
    dyn_accuracy, dyn_reps = np.mean([c for c, _ in dyn]), np.mean([r for _, r in dyn])
    # measured: 1.0 at 2.6 repetitions on average
    assert len(dyn) == 30 and dyn_accuracy >= accuracy[9] and dyn_reps < 5
