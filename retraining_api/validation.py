"""Refuse a retrain request before it is queued: what can be checked up front is a 4xx.

Dataset refs are resolved to ids here (so a queued job is reproducible even if newer
snapshots appear), feature and model parameters are checked against the pipeline and the
family, and the two datasets must share a montage. Errors are the core tree's
(``neurostream.errors``), so every API maps them alike: unknown things 404, bad values 422.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection

from neurostream import datasets, errors, registry
from neurostream.features import UnknownPipeline, get_pipeline
from neurostream.models.families import SKLEARN_LDA, lda_params
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
        pipe = get_pipeline(str(params.get("feature_pipeline", "erp@1")))
    except UnknownPipeline as exc:
        raise InvalidRequest(str(exc), field="params.feature_pipeline") from None
    try:
        pipe.resolve(params.get("feature_params") or {})  # type: ignore[attr-defined]
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="params.feature_params") from None
    model_params = dict(params.get("model_params") or {})
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
    check_params(spec.family, spec.params.model_dump())
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
        "training_dataset": dataset_label(train),
        "testing_dataset": dataset_label(test),
        "training_dataset_id": int(train["id"]),
        "testing_dataset_id": int(test["id"]),
    }
    return model_name, stored
