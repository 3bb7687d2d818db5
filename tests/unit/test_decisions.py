"""The decision core: a speller's layout, evidence accumulation, stopping rules, Wolpaw ITR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurostream.decisions import (
    SCORE_CLIP,
    Calibration,
    FixedRepetitions,
    PosteriorThreshold,
    SpellerLayout,
    TrialEvidence,
    itr_bits_per_min,
    log_likelihood_ratio,
    parse_rules,
    seconds_per_selection,
    wolpaw_bits,
)
from neurostream.errors import ConfigError

LAYOUT = SpellerLayout.grid()


def _repetition(
    evidence: TrialEvidence, targets: tuple[int, ...], hit: float = 0.9, miss: float | None = None
) -> None:
    """One flash of every code: ``hit`` on the targets, ``miss`` (``1 - hit``) on the others."""
    for code in evidence.layout.codes:
        evidence.add(code, hit if code in targets else (1 - hit if miss is None else miss))


def test_the_default_grid_is_the_classic_six_by_six() -> None:
    assert "".join(LAYOUT.symbols) == "ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789_"
    assert LAYOUT.row_codes == (1, 2, 3, 4, 5, 6) and LAYOUT.col_codes == (7, 8, 9, 10, 11, 12)
    assert LAYOUT.codes == tuple(range(1, 13))
    assert LAYOUT.target_prior == pytest.approx(1 / 6)
    # symbol 2*6+3 = "P" sits on the third row (code 3) and fourth column (code 10)
    assert LAYOUT.targets(15) == (3, 10) and LAYOUT.symbols[15] == "P"
    assert LAYOUT.symbol_of([10, 3]) == 15
    assert LAYOUT.symbol_of([3]) is None and LAYOUT.symbol_of([3, 4]) is None
    assert LAYOUT.symbol_of([3, 10, 11]) is None
    with pytest.raises(IndexError):
        LAYOUT.targets(36)


def test_a_layout_survives_the_session_row() -> None:
    small = SpellerLayout.grid(2, 3, "abcdef")
    assert small.col_codes == (3, 4, 5) and small.target_prior == pytest.approx(0.4)
    stored = {"kind": "speller", "speller": small.describe(), "repetitions": 5}
    assert SpellerLayout.of(stored) == small
    assert SpellerLayout.of(small.describe()) == small
    with pytest.raises(ConfigError, match="no speller layout"):
        SpellerLayout.of({"kind": "oddball"})
    with pytest.raises(ConfigError, match="needs 6 symbols"):
        SpellerLayout.grid(2, 3, "abc")
    with pytest.raises(ConfigError, match="distinct"):
        SpellerLayout(1, 2, ("a", "b"), (1,), (1, 2))


def test_the_log_likelihood_ratio_divides_out_the_prior_odds() -> None:
    assert log_likelihood_ratio(1 / 6, 1 / 6) == pytest.approx(0.0)
    # logit(0.5) - logit(1/6) = 0 - ln(1/5)
    assert log_likelihood_ratio(0.5, 1 / 6) == pytest.approx(math.log(5))
    assert log_likelihood_ratio(0.9, 0.5) == pytest.approx(math.log(9))
    # a certain score is clipped, so it stays finite and bounded
    capped = math.log((1 - SCORE_CLIP) / SCORE_CLIP) - math.log(1 / 5)
    assert log_likelihood_ratio(1.0, 1 / 6) == pytest.approx(capped)
    assert log_likelihood_ratio(0.0, 1 / 6) == pytest.approx(-math.log(9999) + math.log(5))
    with pytest.raises(ValueError, match="prior"):
        log_likelihood_ratio(0.5, 0.0)


def test_no_evidence_is_a_uniform_posterior() -> None:
    evidence = TrialEvidence(LAYOUT, LAYOUT.target_prior)
    np.testing.assert_allclose(evidence.posterior(), np.full(36, 1 / 36))
    assert evidence.repetitions == 0 and evidence.epochs == 0


def test_evidence_on_a_row_and_a_column_picks_their_crossing() -> None:
    evidence = TrialEvidence(LAYOUT, LAYOUT.target_prior)
    evidence.add(3, 0.9)  # row index 2
    evidence.add(10, 0.9)  # column index 3
    # each flash: LLR a = logit(0.9) - logit(1/6) = ln 45; the crossing has 2a, its row and
    # column's 10 other symbols a, the other 25 none: 45^2 / (45^2 + 10*45 + 25) = 0.81
    index, posterior = evidence.best()
    assert index == 2 * 6 + 3
    assert posterior == pytest.approx(0.81)
    assert evidence.posterior().sum() == pytest.approx(1.0)
    assert evidence.log_posterior()[index] == pytest.approx(math.log(0.81))
    assert evidence.evidence()["3"] == pytest.approx(math.log(45))
    assert evidence.evidence()["1"] == 0.0 and len(evidence.evidence()) == 12


def test_repetitions_count_complete_rounds_gated_flashes_included() -> None:
    evidence = TrialEvidence(LAYOUT, LAYOUT.target_prior)
    _repetition(evidence, (3, 10))
    for code in LAYOUT.codes[:-1]:
        evidence.add(code, 0.5, seq=100 + code)
    assert evidence.repetitions == 1 and evidence.epochs == 23
    assert evidence.add(12, None, seq=200)  # gated: counted, no evidence
    assert evidence.repetitions == 2 and evidence.epochs == 24
    assert evidence.evidence()["12"] == pytest.approx(log_likelihood_ratio(0.1, 1 / 6))
    # a redelivered flash and an unknown code add nothing
    assert not evidence.add(1, 0.99, seq=101)
    assert not evidence.add(99, 0.99)
    assert evidence.epochs == 24


def test_a_fixed_rule_stops_at_its_repetition() -> None:
    rule = FixedRepetitions(3)
    evidence = TrialEvidence(LAYOUT, LAYOUT.target_prior)
    stops = []
    for _ in range(3):
        _repetition(evidence, (3, 10))
        stops.append(rule.should_stop(evidence))
    assert stops == [False, False, True] and rule.name == "fixed-3"


def test_a_posterior_rule_stops_early_when_sure_and_at_its_maximum_when_not() -> None:
    rule = PosteriorThreshold(0.95, min_repetitions=2, max_repetitions=4)
    assert rule.name == "posterior-0.95-max4"
    sure = TrialEvidence(LAYOUT, LAYOUT.target_prior)
    _repetition(sure, (3, 10), hit=0.95)
    assert sure.best()[1] > 0.95 and not rule.should_stop(sure)  # not before min
    _repetition(sure, (3, 10), hit=0.95)
    assert rule.should_stop(sure)
    unsure = TrialEvidence(LAYOUT, LAYOUT.target_prior)
    stops = []
    for _ in range(4):
        # targets barely above the prior (1/6), the others at it: little evidence
        _repetition(unsure, (3, 10), hit=0.2, miss=1 / 6)
        stops.append(rule.should_stop(unsure))
    index, posterior = unsure.best()
    assert (
        index == 15
        and posterior == pytest.approx(0.107, abs=0.001)
        and stops
        == [
            False,
            False,
            False,
            True,
        ]
    )


def test_rules_parse_from_settings_text() -> None:
    fixed, dynamic = parse_rules("fixed:10, posterior:0.95:10")
    assert fixed == FixedRepetitions(10)
    assert dynamic == PosteriorThreshold(0.95, min_repetitions=1, max_repetitions=10)
    assert [r.name for r in parse_rules("posterior:0.9:8:2")] == ["posterior-0.9-max8"]
    assert parse_rules("posterior:0.9:8:2")[0] == PosteriorThreshold(0.9, 2, 8)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "at least one"),
        ("fixed:10,fixed:10", "each once"),
        ("fixed:ten", "'fixed:ten'"),
        ("fixed:0", "at least 1 repetition"),
        ("posterior:1.5:10", "lies in"),
        ("posterior:0.9:2:5", "min"),
        ("bayes:3", "'bayes:3'"),
    ],
)
def test_bad_rules_are_a_config_error(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        parse_rules(text)
    assert info.value.field == "decision_rules" and "fixed:N" in (info.value.hint or "")


def test_wolpaw_bits_per_selection() -> None:
    assert wolpaw_bits(36, 1.0) == pytest.approx(math.log2(36))  # 5.17 bits
    # the textbook two-class case: 1 + .9 log2 .9 + .1 log2 .1
    assert wolpaw_bits(2, 0.9) == pytest.approx(0.531004, abs=1e-6)
    # 36 symbols at 90%: log2 36 + .9 log2 .9 + .1 log2(.1 / 35)
    assert wolpaw_bits(36, 0.9) == pytest.approx(4.188001, abs=1e-6)
    assert wolpaw_bits(36, 1 / 36) == 0.0 and wolpaw_bits(36, 0.0) == 0.0
    with pytest.raises(ValueError, match="classes"):
        wolpaw_bits(1, 1.0)


def test_itr_in_bits_per_minute() -> None:
    assert itr_bits_per_min(36, 1.0, 10.0) == pytest.approx(6 * math.log2(36))  # 31.0
    assert itr_bits_per_min(36, 0.9, 30.0) == pytest.approx(2 * 4.188001, abs=1e-5)
    with pytest.raises(ValueError, match="positive"):
        itr_bits_per_min(36, 0.9, 0.0)
    # 10 repetitions of 12 flashes every 175 ms, then a 1.5 s pause: 22.5 s
    assert seconds_per_selection(LAYOUT, 10, 0.175, 1.5) == pytest.approx(22.5)


def test_platt_calibration_undoes_an_overconfident_classifier() -> None:
    """Scores whose log-odds are twice too sure are fitted back to slope ~1/2, and a
    calibrated flash's LLR is the calibrated log-odds less the prior's."""
    rng = np.random.default_rng(0)
    truth = rng.random(4000) < 1 / 6
    # two unit-variance Gaussians at -1 and +1: the true log-odds is 2x plus the prior's
    x = np.where(truth, 1.0, -1.0) + rng.normal(0, 1.0, truth.size)
    true_logit = 2 * x + np.log(1 / 5)
    calibrated_p = 1 / (1 + np.exp(-true_logit))
    overconfident = 1 / (1 + np.exp(-2 * true_logit))
    cal = Calibration.fit(overconfident, truth)
    assert cal is not None and cal.slope == pytest.approx(1 / 2, rel=0.1)
    assert cal.prior == pytest.approx(truth.mean()) and cal.n == truth.size
    p = 0.9
    assert cal.llr(p) == pytest.approx(
        cal.slope * math.log(p / (1 - p)) + cal.intercept - math.log(cal.prior / (1 - cal.prior))
    )
    # the calibrated probabilities: no longer crowded at 0 and 1
    refit = Calibration.fit(calibrated_p, truth)
    assert refit is not None and refit.slope == pytest.approx(1.0, rel=0.1)
    assert Calibration.of({"calibration": cal.describe()}) == cal
    assert Calibration.of({}) is None and Calibration.of({"calibration": {"slope": 1}}) is None
    assert Calibration.fit(np.full(50, 0.3), np.zeros(50, bool)) is None  # one class


def test_calibrated_evidence_sums_the_calibrated_ratios() -> None:
    layout = SpellerLayout.grid()
    cal = Calibration(slope=0.5, intercept=-1.0, prior=1 / 6, n=100)
    raw = TrialEvidence(layout, layout.target_prior)
    calibrated = TrialEvidence(layout, layout.target_prior, calibration=cal)
    for ev in (raw, calibrated):
        ev.add(3, 0.99)
        ev.add(3, 0.2)
    assert calibrated.evidence()["3"] == pytest.approx(cal.llr(0.99) + cal.llr(0.2))
    assert raw.evidence()["3"] == pytest.approx(
        log_likelihood_ratio(0.99, 1 / 6) + log_likelihood_ratio(0.2, 1 / 6)
    )
    assert abs(calibrated.evidence()["3"]) < abs(raw.evidence()["3"])


def test_training_stores_the_calibration_of_its_held_out_scores() -> None:
    from neurostream.models.training import train_model
    from tests.factories import FS, synthetic_p300

    x, y = synthetic_p300(n=400, channels=4, seed=3)
    trained = train_model("sklearn-lda", x, y, FS)
    cal = Calibration.of(trained.metrics)
    assert cal is not None and cal.n == 80 and 0 < cal.slope
    assert trained.metrics["calibration"]["method"] == "platt"
