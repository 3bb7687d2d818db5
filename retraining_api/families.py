"""Which family a retrain job trains, and what a refit takes from its champion.

``sklearn-lda`` and ``torch-eegnet`` are fitted from scratch, as they always were. A
``sklearn-pipeline`` (a user's estimator, e.g. pyRiemann's XdawnCovariances + TangentSpace
+ LogisticRegression on ``raw@1``) is refitted: a clone of the champion's fitted estimator
learns the training snapshot, reading what the champion read (its feature pipeline and
parameters), so the challenger is the same model on newer data. There is nothing to clone
without a ``sklearn-pipeline`` champion. An ``onnx`` network was trained elsewhere and
cannot be refitted here. A request that names no family retrains the champion's.

Pure (a request's values and a registry row in, a family or an ``InvalidRequest`` out), so
the API refuses up front and the runner, which sees the champion as it is when the job
runs, refuses with the same sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from neurostream.errors import InvalidRequest
from neurostream.models.families import ONNX, SKLEARN_PIPELINE, TRAINABLE
from neurostream.registry import version_label

# The families a job can produce: those fitted here, and the champion's estimator refitted.
TRAINED_HERE: Final = TRAINABLE | {SKLEARN_PIPELINE}
DEFAULT_PIPELINE: Final = "erp@1"
# What a refit's request may set in model_params: the estimator's hyperparameters are the
# champion's; its labels are learnt from the snapshot (the service's classes, no class_map).
REFIT_MODEL_PARAMS: Final = frozenset({"positive_class"})
_TRAINABLE = " or ".join(sorted(TRAINABLE))
ONNX_REFUSED: Final = (
    "an ONNX network is trained outside neurostream and cannot be refitted here: export a "
    "new one and push it with `neurostream models push`, or name family "
    f"{_TRAINABLE} to train one here"
)
NO_SEARCH: Final = (
    f"hyperparameter search is not available for {SKLEARN_PIPELINE}: neurostream has no "
    "search space for a user's estimator; leave out 'search' to refit the champion's "
    "estimator with its own hyperparameters, or tune it where it was built and push it "
    "with `neurostream models push`"
)


def job_family(
    requested: str | None, champion: Mapping[str, Any] | None, *, model_name: str
) -> str:
    """The family a job trains: the request's, else the champion's; ``InvalidRequest``
    (``field="family"``) for one that cannot be trained here."""
    held = str(champion["family"]) if champion is not None else None
    if requested == ONNX or (requested is None and held == ONNX):
        whose = f"champion {version_label(champion)} is onnx: " if champion and held == ONNX else ""
        raise InvalidRequest(whose + ONNX_REFUSED, field="family")
    if requested is None:
        if champion is None:
            raise InvalidRequest(
                f"model {model_name!r} has no champion whose family a job would retrain: "
                f"name a family ({_TRAINABLE})",
                field="family",
            )
        requested = held
    if requested == SKLEARN_PIPELINE and held != SKLEARN_PIPELINE:
        has = "it has no champion"
        if champion:
            has = f"its champion {version_label(champion)} is {held}"
        raise InvalidRequest(
            f"a {SKLEARN_PIPELINE} job refits a clone of the champion's fitted estimator, and "
            f"model {model_name!r} has no estimator to clone ({has}): push a fitted estimator "
            "with `neurostream models push` and promote it to champion, or name family "
            f"{_TRAINABLE}",
            field="family",
        )
    if requested not in TRAINED_HERE:
        raise InvalidRequest(
            f"family {requested!r} cannot be trained by a job; known: {sorted(TRAINED_HERE)}",
            field="family",
        )
    assert requested is not None
    return requested


def refit_params(champion: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A ``sklearn-pipeline`` refit's params: the champion's feature pipeline, its feature
    params under the request's, and its ``positive_class`` unless the request sets one."""
    pipeline = str(champion["feature_pipeline"])
    asked = params.get("feature_pipeline")
    if asked is not None and asked != pipeline:
        raise InvalidRequest(
            f"a {SKLEARN_PIPELINE} refit reads what champion {version_label(champion)} reads, "
            f"{pipeline} (its estimator was built for it), not {asked}: leave "
            "params.feature_pipeline out",
            field="params.feature_pipeline",
        )
    model_params = dict(params.get("model_params") or {})
    unknown = sorted(set(model_params) - REFIT_MODEL_PARAMS)
    if unknown:
        raise InvalidRequest(
            f"{SKLEARN_PIPELINE}: model_params {unknown} cannot be set on a refit; known: "
            f"{sorted(REFIT_MODEL_PARAMS)} (the estimator keeps the champion's "
            "hyperparameters and learns the service's classes from the training labels; to "
            "change it, fit a new one and push it with `neurostream models push`)",
            field="params.model_params",
        )
    held = dict(champion.get("model_params") or {})
    kept = {k: v for k, v in held.items() if k in REFIT_MODEL_PARAMS}
    return {
        "feature_pipeline": pipeline,
        "feature_params": dict(champion.get("feature_params") or {})
        | dict(params.get("feature_params") or {}),
        "model_params": kept | model_params,
    }
