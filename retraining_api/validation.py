"""Refuse a retrain request before it is queued: what can be checked up front is a 4xx.

Dataset refs are resolved to ids here (so a queued job is reproducible even if newer
snapshots appear), feature and model parameters are checked against the pipeline and the
family, and the two datasets must share a montage. The family is the request's or the
champion's (``retraining_api.families``); a ``sklearn-pipeline`` refit's feature pipeline
and parameters are the champion's, and the stored spec records what the job will use.
Errors are the core tree's (``neurostream.errors``), so every API maps them alike: unknown
things 404, bad values 422.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection

from neurostream import datasets, errors, registry
from neurostream.features import UnknownPipeline, get_pipeline
from neurostream.models.families import FLAT_ONLY, SKLEARN_LDA, SKLEARN_PIPELINE, lda_params
from retraining_api import families
from retraining_api.promotion import CHAMPION
from retraining_api.schemas import DATASET_REF_PATTERN, INT32, JobSpec


class InvalidRequest(errors.InvalidRequest):
    """A value that cannot work (422); ``field`` names it."""


def parse_dataset_ref(ref: str | int, field: str) -> tuple[str | None, int | None]:
    """``7`` -> (None, 7) an id; ``"p300@2"`` -> ("p300", 2); ``"p300"`` -> ("p300", None)."""
    if isinstance(ref, int) and 0 < ref <= INT32:
        return None, ref
    if not isinstance(ref, str) or not re.match(DATASET_REF_PATTERN, ref):
        raise InvalidRequest(f"{ref!r} is not a dataset id, name or name@version", field=field)
    if ref.isdigit():
        return None, int(ref)
    name, _, version = ref.partition("@")
    return name, int(version) if version else None


async def resolve_dataset(
    conn: AsyncConnection[Any], ref: str | int, *, field: str
) -> dict[str, Any]:
    """The dataset row a ref names; ``NotFound`` naming ``field`` otherwise."""
    name, number = parse_dataset_ref(ref, field)
    if name is None:
        row = await datasets.get_dataset_by_id(conn, int(number or 0))
    else:
        row = await datasets.get_dataset(conn, name, number)
    if row is None:
        raise registry.NotFound(f"dataset {ref!r} not found", field=field)
    return row


def dataset_label(row: Mapping[str, Any]) -> str:
    return f"{row['name']}@{row['version']}"


def check_params(family: str, params: Mapping[str, Any]) -> None:
    """Pipeline known, feature and model parameter keys valid for it and the family."""
    try:
        pipe = get_pipeline(str(params.get("feature_pipeline") or families.DEFAULT_PIPELINE))
    except UnknownPipeline as exc:
        raise InvalidRequest(str(exc), field="params.feature_pipeline") from None
    if pipe.raw and family in FLAT_ONLY:
        raise InvalidRequest(
            f"{family} reads flat feature vectors and {pipe.key} gives raw epochs: use a "
            "feature pipeline (erp@1, erp@2, bandpower@1)",
            field="params.feature_pipeline",
        )
    try:
        pipe.resolve(params.get("feature_params") or {})  # type: ignore[attr-defined]
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="params.feature_params") from None
    model_params = dict(params.get("model_params") or {})
    if family == SKLEARN_PIPELINE:
        unknown = sorted(set(model_params) - families.REFIT_MODEL_PARAMS)
        positive = model_params.get("positive_class")
        if unknown or isinstance(positive, bool) or not isinstance(positive, int | None):
            raise InvalidRequest(
                f"{SKLEARN_PIPELINE}: model_params {model_params} cannot be used on a refit: "
                "only positive_class (an integer class) may be set",
                field="params.model_params",
            )
        return
    if family == SKLEARN_LDA:
        try:
            lda_params(model_params)
        except ValueError as exc:
            raise InvalidRequest(str(exc), field="params.model_params") from None
        return
    from neurostream.models import eegnet  # torch: only for EEGNet requests

    known = set(eegnet.DEFAULTS) | {"n_channels", "n_times", "n_classes", "classes"}
    unknown = sorted(set(model_params) - known)
    if unknown:
        raise InvalidRequest(
            f"torch-eegnet: unknown model_params {unknown}; known: {sorted(eegnet.DEFAULTS)}",
            field="params.model_params",
        )


def _check_training(row: Mapping[str, Any], field: str) -> None:
    counts = {k: int(v) for k, v in dict(row.get("label_counts") or {}).items()}
    if len(counts) < 2 or min(counts.values()) < 2:
        raise InvalidRequest(
            f"dataset {dataset_label(row)} needs >= 2 classes with >= 2 rows each to train, "
            f"has label counts {counts}",
            field=field,
        )


async def champion_of(conn: AsyncConnection[Any], model_name: str) -> dict[str, Any] | None:
    """The metadata (no artifact) of the version the model's champion alias points at."""
    alias = await registry.get_alias(conn, model_name, CHAMPION)
    if alias is None:
        return None
    return await registry.get_version(conn, model_name, int(alias["version"]))


async def resolve_training(
    conn: AsyncConnection[Any], spec: JobSpec, model_name: str
) -> tuple[str, dict[str, Any]]:
    """(family, params) a job trains with, checked against the model's champion now."""
    champion = await champion_of(conn, model_name)
    family = families.job_family(spec.family, champion, model_name=model_name)
    params = spec.params.model_dump(mode="json")
    if family == SKLEARN_PIPELINE:
        assert champion is not None  # job_family refuses a refit without one
        if spec.search is not None:
            raise InvalidRequest(families.NO_SEARCH, field="search")
        params = families.refit_params(champion, params)
    else:
        params["feature_pipeline"] = params["feature_pipeline"] or families.DEFAULT_PIPELINE
    check_params(family, params)
    return family, params


async def resolve_job(
    conn: AsyncConnection[Any],
    spec: JobSpec,
    *,
    model_name: str | None,
    service: str | None,
    training_override: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """(model name, the spec to store) for a request; raises 404/422 errors naming fields."""
    if service is not None:
        svc = await registry.get_service(conn, service)
        if svc is None:
            raise registry.NotFound(f"service {service!r} not found", field="service")
        if model_name is None:
            model_name = svc["model_name"]
            if model_name is None:
                raise InvalidRequest(
                    f"service {service!r} serves no model yet; give model_name", field="service"
                )
    assert model_name is not None
    family, params = await resolve_training(conn, spec, model_name)
    train_ref = training_override if training_override is not None else spec.training_dataset
    train = await resolve_dataset(conn, train_ref, field="training_dataset")
    test = await resolve_dataset(conn, spec.testing_dataset, field="testing_dataset")
    if train["kind"] != "training":
        raise InvalidRequest(
            f"dataset {dataset_label(train)} is a {train['kind']} dataset", field="training_dataset"
        )
    if test["kind"] != "testing":
        raise InvalidRequest(
            f"dataset {dataset_label(test)} is a {test['kind']} dataset", field="testing_dataset"
        )
    _check_training(train, "training_dataset")
    shape = ("n_channels", "n_samples", "fs")
    if tuple(train[k] for k in shape) != tuple(test[k] for k in shape):
        raise InvalidRequest(
            f"dataset {dataset_label(test)} has (channels, samples, fs) "
            f"{tuple(test[k] for k in shape)} but training dataset {dataset_label(train)} has "
            f"{tuple(train[k] for k in shape)}",
            field="testing_dataset",
        )
    stored = spec.model_dump(mode="json") | {
        "family": family,
        "params": params,
        "training_dataset": dataset_label(train),
        "testing_dataset": dataset_label(test),
        "training_dataset_id": int(train["id"]),
        "testing_dataset_id": int(test["id"]),
    }
    return model_name, stored
