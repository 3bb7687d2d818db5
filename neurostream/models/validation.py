"""Cross-validation: how well a family on a feature pipeline scores on epochs it never saw.

``neurostream train`` leads with **leave-one-run-out** folds (a run is one recording
file): epochs of one run overlap in time and share its electrode contact and the
subject's state that day, so shuffled folds put near-copies of a test epoch in the
training part and report more than a new run will see. Stratified, shuffled k-fold is
computed beside it only to compare with published figures, which mostly use it. With a
single run, the folds are contiguous blocks in time (unshuffled k-fold), the closest a
single run comes to "a later stretch of data".

Features are computed once over every window before splitting: each pipeline in
``neurostream.features`` is a per-window transform with no fitted state, so this leaks
nothing and only the classifier is fitted per fold. Scores come from the one scorer
(``neurostream.scoring``), per fold (mean ± sd over folds) and pooled over the
out-of-fold predictions. Pure: arrays in, JSON-ready summaries out.

::

    v = validate_runs("sklearn-lda", x, y, fs, groups=run_of_each_epoch)
    v.headline.scheme                  # "leave-one-run-out" (or "blocked-kfold")
    v.metrics()                        # {"roc_auc": .., "cv": {...}, "cv_kfold": {...}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from neurostream import scoring
from neurostream.errors import ConfigError
from neurostream.features import get_pipeline
from neurostream.geometry import EpochGeometry
from neurostream.models.families import check_family
from neurostream.models.training import calibrate, fit_classifier, stream_params

LEAVE_ONE_RUN_OUT: Final = "leave-one-run-out"
STRATIFIED_KFOLD: Final = "stratified-kfold"
BLOCKED_KFOLD: Final = "blocked-kfold"
SCHEMES: Final = (LEAVE_ONE_RUN_OUT, STRATIFIED_KFOLD, BLOCKED_KFOLD)
_FOLD_METRICS: Final = ("roc_auc", "balanced_accuracy", "accuracy", "accuracy_chance")


@dataclass(frozen=True)
class Fold:
    """One split: indices into the epochs; ``test_group`` names the run held out."""

    index: int
    train: np.ndarray = field(repr=False)
    test: np.ndarray = field(repr=False)
    test_group: str


def folds(
    scheme: str,
    y: np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    *,
    k: int = 5,
    seed: int = 0,
) -> list[Fold]:
    """The splits of ``scheme`` over epochs ``y`` (in time order within each run).

    ``leave-one-run-out`` needs ``groups`` (the run of each epoch, two runs or more);
    ``stratified-kfold`` shuffles with ``seed`` (k lowered to the rarest class's count);
    ``blocked-kfold`` cuts k contiguous blocks in the given order."""
    from sklearn.model_selection import KFold, LeaveOneGroupOut, StratifiedKFold

    labels = np.asarray(y)
    n = labels.shape[0]
    index = np.zeros((n, 1))
    if scheme == LEAVE_ONE_RUN_OUT:
        if groups is None:
            raise ConfigError(f"{scheme} needs the run of each epoch (groups=)", field="groups")
        g = np.asarray([str(v) for v in groups])
        if g.shape != (n,):
            raise ValueError(f"groups has shape {g.shape}, expected ({n},)")
        if np.unique(g).size < 2:
            raise ConfigError(
                f"{scheme} needs two runs or more, got {np.unique(g).tolist()}",
                field="groups",
                hint=f"with one run use {BLOCKED_KFOLD}",
            )
        splits = LeaveOneGroupOut().split(index, labels, g)
        return [Fold(i, tr, te, str(g[te[0]])) for i, (tr, te) in enumerate(splits)]
    if k < 2:
        raise ConfigError(f"k-fold needs k >= 2, got {k}", field="k")
    if scheme == STRATIFIED_KFOLD:
        rarest = int(np.unique(labels, return_counts=True)[1].min()) if n else 0
        k_used = min(k, rarest)
        if k_used < 2:
            raise ConfigError(
                f"{scheme} needs >= 2 epochs of every class, the rarest has {rarest}",
                field="y",
            )
        cv = StratifiedKFold(n_splits=k_used, shuffle=True, random_state=seed)
        return [
            Fold(i, tr, te, f"fold {i + 1}/{k_used}")
            for i, (tr, te) in enumerate(cv.split(index, labels))
        ]
    if scheme == BLOCKED_KFOLD:
        if n < k:
            raise ConfigError(f"{scheme} needs >= {k} epochs, got {n}", field="y")
        return [
            Fold(i, tr, te, f"block {i + 1}/{k}")
            for i, (tr, te) in enumerate(KFold(n_splits=k, shuffle=False).split(index))
        ]
    raise ConfigError(
        f"unknown cross-validation scheme {scheme!r}; known: {SCHEMES}", field="scheme"
    )


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    got = [v for v in values if v is not None]
    if not got:
        return None, None
    sd = float(np.std(got, ddof=1)) if len(got) > 1 else 0.0
    return float(np.mean(got)), sd


@dataclass(frozen=True)
class CrossValidation:
    """Per-fold scores and the pooled out-of-fold score of one scheme."""

    scheme: str
    classes: list[int]
    folds: list[dict[str, Any]]
    pooled: dict[str, Any]
    proba: np.ndarray = field(repr=False)  # out-of-fold [n, k], columns like ``classes``
    seed: int = 0
    labels: np.ndarray | None = field(default=None, repr=False)  # the epochs' classes

    def mean_sd(self, metric: str) -> tuple[float | None, float | None]:
        """Mean and sample sd of ``metric`` over the folds where it is defined."""
        return _mean_sd([f.get(metric) for f in self.folds])

    def summary(self) -> dict[str, Any]:
        """JSON for a model version's metrics: headline mean ± sd, pooled, per fold."""
        out: dict[str, Any] = {"scheme": self.scheme, "n_folds": len(self.folds)}
        for m in scoring.HEADLINE:
            mean, sd = self.mean_sd(m)
            out[m] = mean
            out[f"{m}_sd"] = sd
        out["pooled"] = {
            key: self.pooled.get(key)
            for key in (*_FOLD_METRICS, "f1", "mcc", "n", "classes", "confusion_matrix")
        }
        out["seed"] = self.seed
        out["folds"] = self.folds
        return out


def cross_validate(
    family: str,
    windows: np.ndarray,
    y: np.ndarray,
    fs: float,
    *,
    scheme: str,
    groups: Sequence[Any] | np.ndarray | None = None,
    k: int = 5,
    seed: int = 0,
    pipeline: str = "erp@1",
    feature_params: Mapping[str, Any] | None = None,
    model_params: Mapping[str, Any] | None = None,
    geometry: EpochGeometry | None = None,
) -> CrossValidation:
    """Fit ``family`` on each fold's training part and score its held-out part.

    ``windows`` are ``[n, channels, samples]`` (µV) with the channels the model will be
    trained on; every training part must hold every class (a run without one of them
    cannot be held out alone: a ``ConfigError`` names it)."""
    check_family(family)
    x = np.asarray(windows, dtype=np.float32)
    labels = np.asarray(y).astype(np.int64)
    if x.ndim != 3 or labels.shape != (x.shape[0],):
        raise ValueError(f"windows {x.shape} and labels {labels.shape} do not match")
    classes = [int(c) for c in np.unique(labels)]
    if len(classes) < 2:
        raise ConfigError(f"cross-validation needs two classes, got {classes}", field="y")
    splits = folds(scheme, labels, groups, k=k, seed=seed)
    pipe = get_pipeline(pipeline)
    fparams = stream_params(pipe.key, feature_params, geometry)
    reason = pipe.check_geometry(fparams, geometry)
    if reason:
        raise ConfigError(reason, field="geometry")
    X = pipe.transform(x, fs, fparams, geometry)
    proba = np.full((len(labels), len(classes)), np.nan)
    rows: list[dict[str, Any]] = []
    for fold in splits:
        y_train = labels[fold.train]
        missing = sorted(set(classes) - set(y_train.tolist()))
        if missing:
            raise ConfigError(
                f"{scheme}: without {fold.test_group} the training epochs hold no class "
                f"{missing}; every class must occur outside each held-out part",
                field="groups",
            )
        clf, _ = fit_classifier(
            family, X[fold.train], y_train, classes, x.shape[1], model_params, seed
        )
        p = clf.predict_proba(X[fold.test])
        proba[fold.test] = p
        score = scoring.score(labels[fold.test], p, classes=classes)
        counts = np.unique(labels[fold.test], return_counts=True)
        rows.append(
            {
                "fold": fold.index,
                "test": fold.test_group,
                "n_train": int(fold.train.size),
                "n_test": int(fold.test.size),
                "test_counts": {str(int(c)): int(n) for c, n in zip(*counts, strict=True)},
                **{m: score[m] for m in _FOLD_METRICS},
            }
        )
    pooled = scoring.score(labels, proba, classes=classes)
    return CrossValidation(scheme, classes, rows, pooled, proba, seed, labels)


@dataclass(frozen=True)
class Validation:
    """The headline scheme (leave-one-run-out, or blocked k-fold on one run) and, beside
    it for comparison with published figures, stratified shuffled k-fold."""

    headline: CrossValidation
    kfold: CrossValidation

    def metrics(self) -> dict[str, Any]:
        """A model version's ``metrics``: the headline's fold means first, then both schemes."""
        head = self.headline.summary()
        metrics: dict[str, Any] = {
            "roc_auc": head["roc_auc"],
            "balanced_accuracy": head["balanced_accuracy"],
            "validation": self.headline.scheme,
            "n": self.headline.pooled.get("n"),
            "classes": self.headline.classes,
            "cv": head,
            "cv_kfold": self.kfold.summary(),
        }
        cv = self.headline
        if cv.labels is not None:  # the out-of-fold scores: what the refitted model will see
            calibration = calibrate(cv.proba, cv.labels, cv.classes)
            if calibration is not None:
                metrics["calibration"] = calibration.describe()
        return metrics


def validate_runs(
    family: str,
    windows: np.ndarray,
    y: np.ndarray,
    fs: float,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    k: int = 5,
    seed: int = 0,
    pipeline: str = "erp@1",
    feature_params: Mapping[str, Any] | None = None,
    model_params: Mapping[str, Any] | None = None,
    geometry: EpochGeometry | None = None,
) -> Validation:
    """Leave-one-run-out when ``groups`` hold two runs or more, else blocked k-fold; and
    stratified k-fold (shuffled with ``seed``) beside it."""
    runs = 0 if groups is None else len({str(g) for g in groups})
    headline = LEAVE_ONE_RUN_OUT if runs >= 2 else BLOCKED_KFOLD
    common: dict[str, Any] = {
        "k": k,
        "seed": seed,
        "pipeline": pipeline,
        "feature_params": feature_params,
        "model_params": model_params,
        "geometry": geometry,
    }
    return Validation(
        headline=cross_validate(family, windows, y, fs, scheme=headline, groups=groups, **common),
        kfold=cross_validate(family, windows, y, fs, scheme=STRATIFIED_KFOLD, **common),
    )
