"""Hyperparameter search with Optuna's TPE sampler; every trial is a recorded child run.

Trials are scored on the training dataset's stratified validation split (``train_model``'s
hold-out), never on the testing dataset, so the test comparison with the champion stays
unbiased. The search space is small and named: LDA shrinkage, EEGNet learning rate and
dropout, and the ``erp`` band edges. A ``sklearn-pipeline`` (a user's estimator) has no
space neurostream could name, so it is refused (``families.NO_SEARCH``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna

from neurostream.errors import InvalidRequest
from neurostream.models.families import SKLEARN_LDA, TRAINABLE
from neurostream.models.training import TrainedModel, train_model
from retraining_api import families
from retraining_api.progress import JobProgress

optuna.logging.set_verbosity(optuna.logging.WARNING)


def suggest(
    trial: optuna.Trial, family: str, pipeline: str, params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(feature_params, model_params) of a trial: the request's, with searched keys drawn."""
    feature_params = dict(params.get("feature_params") or {})
    model_params = dict(params.get("model_params") or {})
    if pipeline.startswith("erp@"):
        feature_params["l_freq"] = trial.suggest_float("l_freq", 0.1, 2.0, log=True)
        feature_params["h_freq"] = trial.suggest_float("h_freq", 8.0, 30.0)
    if family == SKLEARN_LDA:
        model_params["shrinkage"] = trial.suggest_float("shrinkage", 1e-3, 0.99, log=True)
    else:
        model_params["lr"] = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        model_params["dropout"] = trial.suggest_float("dropout", 0.1, 0.6)
    return feature_params, model_params


def _score(metrics: Mapping[str, Any]) -> float:
    auc = metrics.get("roc_auc")
    return float(auc) if auc is not None and math.isfinite(auc) else 0.5


def run_search(
    spec: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    fs: float,
    progress: JobProgress,
    *,
    span: tuple[float, float],
) -> tuple[TrainedModel, dict[str, Any]]:
    """Best model of ``spec['search']['trials']`` TPE trials and a summary of the search."""
    family, params, seed = spec["family"], spec["params"], int(spec["seed"])
    if family not in TRAINABLE:
        raise InvalidRequest(families.NO_SEARCH, field="search")
    pipeline = str(params.get("feature_pipeline") or families.DEFAULT_PIPELINE)
    n_trials = int(spec["search"]["trials"])
    best: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        progress.checkpoint()
        feature_params, model_params = suggest(trial, family, pipeline, params)
        trained = train_model(
            family,
            x,
            y,
            fs,
            pipeline=pipeline,
            feature_params=feature_params,
            model_params=model_params,
            seed=seed,
            test_size=float(spec["validation_size"]),
        )
        value = _score(trained.metrics)
        trial.set_user_attr("metrics", trained.metrics)
        if not best or value > best["value"]:
            best.update(value=value, trained=trained, number=trial.number)
        return value

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        duration = trial.duration.total_seconds() if trial.duration else None
        state = trial.state.name.lower()
        progress.trial(
            {
                "number": trial.number,
                "state": state,
                "params": trial.params,
                "value": trial.value,
                "metrics": trial.user_attrs.get("metrics", {}),
                "duration_s": duration,
            }
        )
        value = f"{trial.value:.4f}" if trial.value is not None else "n/a"
        done = (trial.number + 1) / n_trials
        progress.set(
            span[0] + (span[1] - span[0]) * done,
            f"trial {trial.number} {state}: validation roc_auc {value} params {trial.params}",
        )
        if progress.cancelled.is_set():
            study.stop()

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    started = time.perf_counter()
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=spec["search"].get("timeout_s"),
        catch=(ValueError, np.linalg.LinAlgError),
        callbacks=[record],
    )
    progress.checkpoint()
    if not best:
        raise ValueError("no search trial completed; see the trials for their errors")
    summary = {
        "trials": len(study.trials),
        "completed": sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
        "best_trial": best["number"],
        "best_value": best["value"],
        "best_params": study.trials[best["number"]].params,
        "sampler": "TPESampler",
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return best["trained"], summary
