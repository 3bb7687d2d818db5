"""The scorer: headline metrics, the majority baseline and every edge case, with values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from neurostream import scoring

# A P300 session: 14 % targets (70 of 500).
Y_P300 = np.array([1] * 70 + [0] * 430)


def test_always_non_target_scores_chance_not_its_accuracy() -> None:
    constant = np.tile([0.9, 0.1], (500, 1))  # the same ranking for every window
    m = scoring.score(Y_P300, constant, classes=[0, 1])
    assert list(m)[:2] == ["roc_auc", "balanced_accuracy"]
    assert m["balanced_accuracy"] == 0.5 and m["roc_auc"] == 0.5
    assert m["accuracy"] == pytest.approx(0.86) and m["accuracy_chance"] == pytest.approx(0.86)
    assert m["f1"] == 0.0 and m["mcc"] == 0.0
    assert m["confusion_matrix"] == [[430, 0], [70, 0]] and m["n"] == 500
    labels_only = scoring.score(Y_P300, predicted=np.zeros(500, int))
    assert labels_only["roc_auc"] is None and labels_only["balanced_accuracy"] == 0.5


def test_a_detector_below_chance_accuracy_can_still_be_good() -> None:
    # The session from the issue: accuracy 0.852 under the 0.860 of "always non-target".
    predicted = np.array([1] * 56 + [0] * 14 + [1] * 60 + [0] * 370)
    m = scoring.score(Y_P300, predicted=predicted)
    assert m["accuracy"] == pytest.approx(0.852) and m["accuracy_chance"] == pytest.approx(0.86)
    assert m["balanced_accuracy"] == pytest.approx((56 / 70 + 370 / 430) / 2)  # 0.830


def test_perfect_and_inverted_rankings() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    perfect = scoring.score(y, p, classes=[0, 1])
    assert (perfect["roc_auc"], perfect["balanced_accuracy"], perfect["mcc"]) == (1.0, 1.0, 1.0)
    assert perfect["f1"] == 1.0 and perfect["accuracy_chance"] == pytest.approx(0.6)
    inverted = scoring.score(y, 1 - p, classes=[0, 1])
    assert (inverted["roc_auc"], inverted["balanced_accuracy"], inverted["mcc"]) == (0.0, 0.0, -1.0)


def test_values_on_a_small_binary_case() -> None:
    y = [0, 0, 1, 1, 1, 0]
    predicted = [0, 1, 1, 1, 0, 0]
    m = scoring.score(y, [0.1, 0.6, 0.9, 0.8, 0.4, 0.2], predicted=predicted)
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["mcc"] == pytest.approx(1 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)


def test_two_columns_a_positive_column_and_served_labels_agree() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    matrix = scoring.score(y, np.column_stack([1 - p1, p1]), classes=[0, 1])
    column = scoring.score(y, p1, classes=[0, 1])
    served = scoring.score(y, p1, predicted=(p1 >= 0.5).astype(int))
    assert matrix == column == served
    assert matrix["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    # Served labels win over the argmax: a worker's thresholded decision is what is scored.
    strict = scoring.score(y, p1, predicted=(p1 >= 0.9).astype(int))
    assert strict["roc_auc"] == matrix["roc_auc"]
    assert strict["confusion_matrix"] != matrix["confusion_matrix"]


def test_one_class_has_no_roc_auc_but_a_balanced_accuracy() -> None:
    m = scoring.score([0, 0, 0, 0], [0.2, 0.7, 0.1, 0.3], classes=[0, 1])
    assert m["roc_auc"] is None
    assert m["balanced_accuracy"] == 0.75 and m["accuracy"] == 0.75
    assert m["accuracy_chance"] == 1.0 and m["confusion_matrix"] == [[3, 1], [0, 0]]
    alone = scoring.score([1, 1], predicted=[1, 1])  # classes seen: just one
    assert alone["roc_auc"] is None and alone["balanced_accuracy"] == 1.0
    assert alone["classes"] == [1] and alone["mcc"] == 0.0


def test_labels_that_are_not_zero_and_one() -> None:
    y = np.array([1, 1, 2, 2, 1, 2])  # nontarget=1, target=2: the positive is 2
    p_target = np.array([0.2, 0.6, 0.7, 0.9, 0.1, 0.4])
    m = scoring.score(y, np.column_stack([1 - p_target, p_target]), classes=[1, 2])
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 2, p_target))
    assert m["confusion_matrix"] == [[2, 1], [1, 2]] and m["classes"] == [1, 2]
    assert m["f1"] == pytest.approx(skm.f1_score(y, np.where(p_target >= 0.5, 2, 1), pos_label=2))
    named = scoring.score(["a", "b", "b"], predicted=["a", "b", "a"])
    assert named["classes"] == ["a", "b"] and named["balanced_accuracy"] == 0.75


def test_multi_class_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    classes = [3, 5, 7]
    y = rng.choice(classes, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * (y[:, None] == np.array(classes))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = np.array(classes)[proba.argmax(axis=1)]
    m = scoring.score(y, proba, classes=classes)
    want_auc = skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
    assert m["roc_auc"] == pytest.approx(want_auc)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert m["f1"] == pytest.approx(skm.f1_score(y, predicted, average="macro"))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, predicted))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, predicted, labels=classes).tolist()
    missing = scoring.score(y[y != 7], proba[y != 7], classes=classes)
    assert missing["roc_auc"] is None and missing["balanced_accuracy"] is not None


def test_empty_input() -> None:
    m = scoring.score([], [], classes=[0, 1])
    assert m["n"] == 0 and m["confusion_matrix"] == [[0, 0], [0, 0]]
    assert all(m[k] is None for k in ("roc_auc", "balanced_accuracy", "accuracy", "f1", "mcc"))
    assert scoring.score([], predicted=[])["accuracy_chance"] is None


def test_from_confusion_takes_expected_counts() -> None:
    m = scoring.from_confusion(np.array([[8.5, 1.5], [0.5, 1.5]]), [0, 1])
    assert m["balanced_accuracy"] == pytest.approx((8.5 / 10 + 1.5 / 2) / 2)
    assert m["accuracy"] == pytest.approx(10 / 12)
    assert m["accuracy_chance"] == pytest.approx(10 / 12)
    assert m["n"] == 12 and m["confusion_matrix"] == [[8.5, 1.5], [0.5, 1.5]]


def test_inputs_that_cannot_be_scored_say_why() -> None:
    with pytest.raises(ValueError, match="give classes|need the classes"):
        scoring.score([0, 1], [[0.4, 0.6], [0.3, 0.7]])
    with pytest.raises(ValueError, match=r"labels \[2\] are not in classes"):
        scoring.score([0, 2], [0.1, 0.9], classes=[0, 1])
    with pytest.raises(ValueError, match="shape"):
        scoring.score([0, 1, 1], [0.1, 0.9], classes=[0, 1])
    with pytest.raises(ValueError, match="3 columns for 2 classes"):
        scoring.score([0, 1], np.full((2, 3), 1 / 3), classes=[0, 1])
    with pytest.raises(ValueError, match="give proba"):
        scoring.score([0, 1])
