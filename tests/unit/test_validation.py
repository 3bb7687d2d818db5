"""Cross-validation (``neurostream.models.validation``): folds that hold runs out whole,
chance on a signal-free dataset, and the refit on every epoch that ``train`` registers."""

from __future__ import annotations

import numpy as np
import pytest

from neurostream.errors import ConfigError
from neurostream.features import get_pipeline
from neurostream.models.families import fit_lda
from neurostream.models.training import train_model
from neurostream.models.validation import (
    BLOCKED_KFOLD,
    LEAVE_ONE_RUN_OUT,
    STRATIFIED_KFOLD,
    cross_validate,
    folds,
    validate_runs,
)

FS = 100.0


def epochs(
    n_per_run: int = 120, runs: int = 3, *, signal: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``runs`` runs of 4-channel epochs [-0.1, 0.7) s, a third targets with a bump at 300 ms
    of ``signal`` µV (0: nothing to find)."""
    rng = np.random.default_rng(seed)
    n = n_per_run * runs
    t = np.arange(int(0.8 * FS)) / FS - 0.1
    y = (rng.random(n) < 1 / 3).astype(np.int64)
    y[:2], y[n_per_run : n_per_run + 2] = 1, 1  # every run holds both classes
    x = rng.normal(0, 5, (n, 4, t.size)).astype(np.float32)
    x[y == 1] += (signal * np.exp(-((t - 0.3) ** 2) / (2 * 0.05**2))).astype(np.float32)
    groups = np.repeat([f"run{i + 1}.csv" for i in range(runs)], n_per_run)
    return x, y, groups


def test_leave_one_run_out_holds_each_run_out_whole_and_never_mixes_runs() -> None:
    _, y, groups = epochs(runs=4)
    splits = folds(LEAVE_ONE_RUN_OUT, y, groups)
    assert [f.test_group for f in splits] == ["run1.csv", "run2.csv", "run3.csv", "run4.csv"]
    for fold in splits:
        assert set(groups[fold.test]) == {fold.test_group}
        assert fold.test_group not in set(groups[fold.train])
        assert fold.train.size + fold.test.size == y.size
    assert sorted(np.concatenate([f.test for f in splits]).tolist()) == list(range(y.size))


def test_one_run_is_not_enough_for_leave_one_run_out() -> None:
    _, y, groups = epochs(runs=1)
    with pytest.raises(ConfigError, match="two runs or more") as exc:
        folds(LEAVE_ONE_RUN_OUT, y, groups)
    assert BLOCKED_KFOLD in (exc.value.hint or "")


def test_blocked_kfold_cuts_contiguous_blocks_in_time() -> None:
    _, y, _ = epochs(runs=1)
    splits = folds(BLOCKED_KFOLD, y, k=5)
    assert len(splits) == 5
    for fold in splits:
        assert np.array_equal(fold.test, np.arange(fold.test[0], fold.test[-1] + 1))
    assert np.concatenate([f.test for f in splits]).tolist() == list(range(y.size))


def test_stratified_kfold_is_seeded_and_keeps_k_within_the_rarest_class() -> None:
    _, y, _ = epochs()
    a = folds(STRATIFIED_KFOLD, y, k=5, seed=3)
    b = folds(STRATIFIED_KFOLD, y, k=5, seed=3)
    assert all(np.array_equal(f.test, g.test) for f, g in zip(a, b, strict=True))
    assert not np.array_equal(a[0].test, np.arange(a[0].test.size))  # shuffled
    rare = np.array([0, 0, 0, 0, 1, 1, 1])
    assert len(folds(STRATIFIED_KFOLD, rare, k=5)) == 3


def test_a_signal_free_dataset_scores_chance() -> None:
    x, y, groups = epochs(n_per_run=200, signal=0.0, seed=1)
    v = validate_runs("sklearn-lda", x, y, FS, groups=groups)
    assert v.headline.scheme == LEAVE_ONE_RUN_OUT and v.kfold.scheme == STRATIFIED_KFOLD
    for cv in (v.headline, v.kfold):
        mean, _ = cv.mean_sd("roc_auc")
        assert mean is not None and abs(mean - 0.5) < 0.08
        assert abs(cv.pooled["roc_auc"] - 0.5) < 0.08
        bacc, _ = cv.mean_sd("balanced_accuracy")
        assert bacc is not None and abs(bacc - 0.5) < 0.08


def test_a_p300_is_found_and_the_summary_is_the_registry_shape() -> None:
    x, y, groups = epochs(signal=4.0)
    metrics = validate_runs("sklearn-lda", x, y, FS, groups=groups).metrics()
    cv = metrics["cv"]
    assert metrics["validation"] == cv["scheme"] == LEAVE_ONE_RUN_OUT
    assert metrics["roc_auc"] == cv["roc_auc"] > 0.8
    assert cv["n_folds"] == 3 and len(cv["folds"]) == 3
    assert {f["test"] for f in cv["folds"]} == {"run1.csv", "run2.csv", "run3.csv"}
    assert sum(f["n_test"] for f in cv["folds"]) == cv["pooled"]["n"] == len(y)
    assert cv["roc_auc_sd"] >= 0 and cv["pooled"]["roc_auc"] > 0.8
    assert metrics["cv_kfold"]["scheme"] == STRATIFIED_KFOLD
    assert metrics["cv_kfold"]["n_folds"] == 5


def test_without_runs_the_headline_is_blocked_kfold() -> None:
    x, y, _ = epochs(runs=1, signal=4.0)
    v = validate_runs("sklearn-lda", x, y, FS, groups=None)
    assert v.headline.scheme == BLOCKED_KFOLD and len(v.headline.folds) == 5


def test_a_run_that_holds_a_whole_class_cannot_be_held_out_alone() -> None:
    x, y, groups = epochs()
    y = np.where(groups == "run2.csv", 2, y)  # class 2 only in run 2
    with pytest.raises(
        ConfigError, match=r"without run2.csv the training epochs hold no class \[2\]"
    ):
        cross_validate("sklearn-lda", x, y, FS, scheme=LEAVE_ONE_RUN_OUT, groups=groups)


def test_test_size_zero_fits_on_every_epoch() -> None:
    x, y, _ = epochs(signal=4.0)
    trained = train_model("sklearn-lda", x, y, FS, test_size=0)
    assert trained.metrics["n"] == 0 and trained.metrics["roc_auc"] is None
    pipe = get_pipeline("erp@1")
    X = pipe.transform(x, FS, trained.feature_params)
    on_all = fit_lda(X, y, trained.model_params)
    assert np.allclose(trained.classifier.predict_proba(X), on_all.predict_proba(X))
    held_out = train_model("sklearn-lda", x, y, FS, test_size=0.2)
    assert held_out.metrics["n"] == round(0.2 * len(y))
    assert not np.allclose(held_out.classifier.predict_proba(X), on_all.predict_proba(X))
