"""The CBPE-style label-free estimate: close to what the scorer measures once labels come."""

from __future__ import annotations

import numpy as np
import pytest

from neurostream import scoring
from neurostream.estimation import estimate, expected_accuracy, expected_roc_auc


def test_cbpe_estimate_is_close_to_the_true_scores_on_calibrated_scores() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(2, 2, 20_000)  # calibrated by construction: y ~ Bernoulli(p)
    y = (rng.random(p.size) < p).astype(int)
    true = scoring.score(y, p, classes=[0, 1])
    assert expected_accuracy(p) == pytest.approx(true["accuracy"], abs=0.01)
    out = estimate(p)
    assert out["estimated"] is True and out["calibrated"] is False and out["n"] == p.size
    assert list(out)[3:5] == ["expected_roc_auc", "expected_balanced_accuracy"]
    assert out["expected_accuracy"] == pytest.approx(true["accuracy"], abs=0.01)
    assert out["expected_balanced_accuracy"] == pytest.approx(true["balanced_accuracy"], abs=0.01)
    assert out["expected_roc_auc"] == pytest.approx(true["roc_auc"], abs=0.01)
    assert out["expected_accuracy_chance"] == pytest.approx(true["accuracy_chance"], abs=0.01)


def test_cbpe_sees_that_always_non_target_is_chance_on_rare_targets() -> None:
    rng = np.random.default_rng(2)
    p = rng.beta(1, 6, 20_000)  # ~14 % targets; 1.6 % of the scores reach 0.5
    y = (rng.random(p.size) < p).astype(int)
    true = scoring.score(y, p, classes=[0, 1])
    out = estimate(p)
    assert out["expected_accuracy_chance"] == pytest.approx(6 / 7, abs=0.01)
    assert out["expected_accuracy"] == pytest.approx(true["accuracy"], abs=0.01)
    assert out["expected_balanced_accuracy"] == pytest.approx(true["balanced_accuracy"], abs=0.01)
    assert out["expected_accuracy"] > 0.85 and out["expected_balanced_accuracy"] < 0.55


def test_expected_roc_auc_of_certain_scores_is_the_measured_one() -> None:
    s = np.array([0.1, 0.4, 0.4, 0.8, 0.9])
    y = np.array([0, 1, 0, 0, 1])  # calibrated to certainty: the labels themselves
    assert expected_roc_auc(s, y.astype(float)) == pytest.approx(scoring.roc_auc(y, s, [0, 1]))
    assert expected_roc_auc(s, np.zeros(5)) is None  # no expected positives
    assert expected_roc_auc(np.array([]), np.array([])) is None


def test_cbpe_calibrates_overconfident_scores_on_labelled_data() -> None:
    rng = np.random.default_rng(1)
    p_true = rng.beta(2, 2, 8000)
    y = (rng.random(p_true.size) < p_true).astype(int)
    over = np.clip(0.5 + 1.8 * (p_true - 0.5), 0.0, 1.0)  # overconfident model scores
    true = scoring.score(y[4000:], over[4000:], classes=[0, 1])
    naive = expected_accuracy(over)
    out = estimate(over[4000:], over[:4000], y[:4000])
    assert out["calibrated"] is True
    assert abs(out["expected_accuracy"] - true["accuracy"]) < 0.02 < abs(naive - true["accuracy"])
    assert out["expected_balanced_accuracy"] == pytest.approx(true["balanced_accuracy"], abs=0.02)
    # Labels 1/2 instead of 0/1 calibrate the same way (the larger class is positive).
    relabelled = estimate(over[4000:], over[:4000], y[:4000] + 1)
    assert relabelled["expected_accuracy"] == pytest.approx(out["expected_accuracy"])


def test_multi_class_rows_and_empty_input() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    out = estimate(proba)
    assert out["expected_accuracy"] == pytest.approx((0.7 + 0.8 + 0.4) / 3)
    support = proba.sum(axis=0)  # expected windows per class
    hits = np.array([0.7, 0.8, 0.4])
    assert out["expected_balanced_accuracy"] == pytest.approx(np.mean(hits / support))
    assert out["expected_roc_auc"] is None
    empty = estimate(np.array([]))
    assert empty["n"] == 0 and empty["expected_accuracy"] is None
