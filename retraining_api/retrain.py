"""The CPU part of a retrain job: train (or search), then score challenger and champion.

Pure over arrays and a registry row, run in a worker thread by the runner: no database,
no event loop. Both models are scored on the same testing dataset by the same scorer
(``neurostream.scoring``), so the comparison is like for like.

A ``sklearn-pipeline`` job refits a clone of the champion's fitted estimator (loaded under
the operator's artifact policy) on the training snapshot, reading the champion's channels,
units and window kind; ``retraining_api.families`` says which jobs may.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neurostream import errors, scoring
from neurostream.datasets import Snapshot
from neurostream.gate import Gate
from neurostream.geometry import EpochGeometry
from neurostream.models.artifacts import DEFAULT_POLICY, ArtifactPolicy
from neurostream.models.families import SKLEARN_PIPELINE, PipelineClassifier
from neurostream.models.serving import ServingModel
from neurostream.models.signature import Signature
from neurostream.models.training import TrainedModel, evaluate, train_model
from neurostream.registry import version_label
from retraining_api import families
from retraining_api.progress import JobProgress
from retraining_api.search import run_search

METRICS = scoring.COMPARED


@dataclass(frozen=True)
class Outcome:
    trained: TrainedModel
    validation: dict[str, Any]
    test: dict[str, Any]
    champion_test: dict[str, Any] | None
    champion_note: str | None
    search: dict[str, Any] | None


def _load_champion(
    row: Mapping[str, Any], policy: ArtifactPolicy
) -> tuple[ServingModel | None, str | None]:
    """The champion as it serves, or None and why it does not load."""
    try:
        return ServingModel.from_row(row, policy=policy), None
    except Exception as exc:  # a champion that no longer loads is reported, not fatal
        return None, f"champion {version_label(row)} cannot be loaded: {exc}"


def _score_champion(
    champion: ServingModel, test: Snapshot, progress: JobProgress
) -> tuple[dict[str, Any] | None, str | None]:
    """The champion's test metrics, or None and why it cannot score this dataset."""
    label = champion.label
    fs = float(test.meta["fs"])
    reason = champion.check_input(test.x.shape[1], test.x.shape[2], fs)
    if reason:
        return None, f"champion {label} cannot score the testing dataset: {reason}"
    metrics = evaluate(champion, test.x, test.y, fs=fs)
    progress.log(f"champion {label} test roc_auc {metrics['roc_auc']}")
    return metrics, None


def _refit(
    spec: Mapping[str, Any],
    row: Mapping[str, Any] | None,
    champion: ServingModel | None,
    note: str | None,
    progress: JobProgress,
) -> dict[str, Any]:
    """``train_model``'s arguments that make a ``sklearn-pipeline`` challenger the
    champion's model refitted: a clone of its fitted estimator, reading its channels, units
    and window kind. The champion must still be a sklearn-pipeline reading the pipeline the
    job was queued for (its alias may have moved since)."""
    families.job_family(SKLEARN_PIPELINE, row, model_name=str(row["model_name"]) if row else "")
    assert row is not None  # job_family refuses a refit without a champion
    queued = spec["params"].get("feature_pipeline")
    if queued != row["feature_pipeline"]:
        raise errors.Conflict(
            f"champion {version_label(row)} reads {row['feature_pipeline']}, the job was queued "
            f"for {queued}: the champion changed since; resubmit the job",
            field="family",
        )
    if champion is None:
        raise errors.ArtifactError(f"{note}: there is no estimator to refit", field="family")
    if not isinstance(champion.classifier, PipelineClassifier):  # its family says it is one
        raise errors.ArtifactError(
            f"champion {version_label(row)} holds no estimator", field="family"
        )
    estimator = champion.classifier.estimator
    steps = getattr(estimator, "steps", None) or [("", estimator)]
    shown = " + ".join(type(step).__name__ for _, step in steps)
    progress.log(f"refitting a clone of champion {version_label(row)}'s {shown}")
    signature = champion.signature
    return {
        "estimator": estimator,
        "units": signature.units,
        "kind": signature.kind or "epoch",
        "pick_channels": list(signature.channels) if signature.channels else None,
    }


def _inherited(
    champion_row: Mapping[str, Any] | None,
) -> tuple[EpochGeometry | None, Gate | None]:
    """The champion's epoch geometry and artifact gate, which the challenger keeps: a
    dataset's windows do not record how they were cut, the version that served them does
    (``erp@2`` needs the geometry, and a challenger must gate as the champion did)."""
    if champion_row is None or not champion_row.get("input_spec"):
        return None, None
    spec = dict(champion_row["input_spec"])
    try:
        geometry = Signature.from_spec(spec).geometry
    except Exception:  # an old or odd spec: train as before, without one
        geometry = None
    return geometry, Gate.from_spec(spec.get("gate"))


def run(
    spec: Mapping[str, Any],
    train: Snapshot,
    test: Snapshot,
    champion_row: Mapping[str, Any] | None,
    progress: JobProgress,
    *,
    policy: ArtifactPolicy = DEFAULT_POLICY,  # ArtifactPolicy.from_settings(core)
) -> Outcome:
    """Train the challenger on ``train`` and score it and the champion on ``test``."""
    fs = float(train.meta["fs"])
    params = spec["params"]
    family = str(spec["family"])
    champion, note = _load_champion(champion_row, policy) if champion_row else (None, None)
    refit: dict[str, Any] = {}
    if family == SKLEARN_PIPELINE:
        refit = _refit(spec, champion_row, champion, note, progress)
    progress.set(0.1, f"training {family} on {len(train.y)} windows")
    search: dict[str, Any] | None = None
    if spec.get("search"):  # run_search refuses a sklearn-pipeline
        trained, search = run_search(spec, train.x, train.y, fs, progress, span=(0.1, 0.8))
        progress.log(f"best trial {search['best_trial']}: {search['best_params']}")
    else:
        progress.checkpoint()
        geometry, gate = _inherited(champion_row)
        x, y = train.x, train.y
        channels = train.meta.get("channels") or None
        if not channels:
            refit.pop("pick_channels", None)  # unnamed rows are matched by count
        if gate is not None and channels:
            # Gated epochs are left out of training data, as `neurostream train` does.
            keep = ~gate.check(x, channels).rejected
            progress.log(f"gate {gate.to_spec()}: {int((~keep).sum())} of {len(y)} left out")
            x, y = x[keep], y[keep]
        trained = train_model(
            family,
            x,
            y,
            fs,
            pipeline=str(params.get("feature_pipeline") or families.DEFAULT_PIPELINE),
            feature_params=params.get("feature_params") or {},
            model_params=params.get("model_params") or {},
            seed=int(spec["seed"]),
            test_size=float(spec["validation_size"]),
            channels=channels,
            gate=gate,
            geometry=geometry,
            **refit,
        )
    progress.set(0.8, f"validation roc_auc {trained.metrics['roc_auc']}")
    progress.checkpoint()
    test_metrics = evaluate(trained, test.x, test.y, fs=float(test.meta["fs"]))
    progress.set(0.85, f"challenger test roc_auc {test_metrics['roc_auc']}")
    champion_test: dict[str, Any] | None = None
    if champion is not None:
        champion_test, note = _score_champion(champion, test, progress)
    if note:
        progress.log(note, "warning")
    progress.set(0.9)
    progress.checkpoint()
    return Outcome(trained, trained.metrics, test_metrics, champion_test, note, search)


def compare(test: Mapping[str, Any], champion_test: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metric -> {challenger, champion, delta}: the side-by-side table of the result."""
    table: dict[str, Any] = {}
    for m in METRICS:
        a = test.get(m)
        b = champion_test.get(m) if champion_test else None
        delta = a - b if a is not None and b is not None else None
        table[m] = {"challenger": a, "champion": b, "delta": delta}
    table["confusion_matrix"] = {
        "challenger": test.get("confusion_matrix"),
        "champion": champion_test.get("confusion_matrix") if champion_test else None,
    }
    return table


def promote_decision(
    rule: Mapping[str, Any] | None,
    test: Mapping[str, Any],
    champion_test: Mapping[str, Any] | None,
    has_champion: bool,
) -> tuple[bool, str]:
    """(promote?, why): no rule -> never; no champion -> always; else the metric margin."""
    if not rule:
        return False, "no promote rule in the request; promote with POST /models/{name}/promote"
    metric, margin = str(rule["metric"]), float(rule["min_improvement"])
    if not has_champion:
        return True, "there is no champion yet"
    new = test.get(metric)
    if new is None:
        return False, f"challenger {metric} is undefined on the testing dataset"
    old = champion_test.get(metric) if champion_test else None
    if old is None:
        return True, f"the champion has no {metric} on the testing dataset"
    verdict = new - old >= margin
    sign = ">=" if verdict else "<"
    return verdict, f"{metric} {new:.4f} - {old:.4f} = {new - old:+.4f} {sign} {margin}"
