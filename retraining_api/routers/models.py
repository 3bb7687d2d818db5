"""Model-level actions of retraining: promotion between aliases and explainability."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query

from neurostream import datasets, registry
from neurostream.auth import Writer
from neurostream.models.artifacts import ArtifactError
from neurostream.models.serving import ServingModel
from retraining_api.deps import Notify, Pool, Settings
from retraining_api.importance import permutation_by_channel, sample_rows
from retraining_api.promotion import move_alias
from retraining_api.schemas import (
    DATASET_REF_PATTERN,
    INT32,
    NAME_PATTERN,
    ImportanceOut,
    PromoteIn,
    PromoteOut,
)
from retraining_api.validation import InvalidRequest, dataset_label, resolve_dataset

router = APIRouter(prefix="/models/{name}", tags=["models"])
ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="Model name")]


@router.post(
    "/promote",
    response_model=PromoteOut,
    dependencies=[Writer],
    responses={404: {"description": "Unknown model or alias"}},
)
async def promote(name: ModelName, body: PromoteIn, pool: Pool, notify: Notify) -> PromoteOut:
    """Point ``to_alias`` (champion) at ``from_alias``'s version; following services swap."""
    async with pool.connection() as conn:
        moved = await move_alias(conn, name, body.from_alias, body.to_alias)
    published = await notify.services(moved["services_notified"], "promote")
    return PromoteOut(**moved, event_published=published)


@router.get(
    "/versions/{version}/importance",
    response_model=ImportanceOut,
    responses={404: {"description": "Unknown model, version or dataset"}},
)
async def importance(
    name: ModelName,
    version: Annotated[int, Path(ge=1, le=INT32)],
    pool: Pool,
    settings: Settings,
    dataset: Annotated[
        str, Query(pattern=DATASET_REF_PATTERN, description="Dataset id, name or name@version")
    ],
    repeats: Annotated[int, Query(ge=1, le=50)] = 5,
    seed: Annotated[int, Query(ge=0, le=INT32)] = 0,
) -> ImportanceOut:
    """Permutation importance (ROC-AUC drop) per channel and per feature position."""
    async with pool.connection() as conn:
        meta = await registry.get_version(conn, name, version)
        if meta is None:
            if await registry.get_model(conn, name) is None:
                raise registry.NotFound(f"model {name!r} not found", field="name")
            raise registry.NotFound(f"model {name!r} has no version {version}", field="version")
        row = await registry.fetch_version(conn, meta["id"])
        ds = await resolve_dataset(conn, dataset, field="dataset")
        snap = await datasets.load_snapshot(conn, ds["id"])
    assert row is not None
    try:
        model = await asyncio.to_thread(ServingModel.from_row, row)
    except ArtifactError as exc:
        raise InvalidRequest(f"model version cannot be loaded: {exc}", field="version") from exc
    if model.pipeline.raw:
        raise InvalidRequest(
            f"{name}:{version} reads raw epochs ({model.feature_pipeline}): importance per "
            "feature position needs a feature pipeline; it is not available for this version",
            field="version",
        )
    fs = float(ds["fs"])
    reason = model.check_input(snap.x.shape[1], snap.x.shape[2], fs)
    if reason:
        raise InvalidRequest(
            f"{dataset_label(ds)} does not fit the model: {reason}", field="dataset"
        )
    if len(set(snap.y.tolist())) < 2:
        raise InvalidRequest(
            f"{dataset_label(ds)} has one class; ROC-AUC needs two", field="dataset"
        )
    rows = sample_rows(snap.y, settings.importance_max_rows, seed)
    result = await asyncio.to_thread(
        permutation_by_channel,
        model,
        snap.x[rows],
        snap.y[rows],
        fs,
        list(ds["channels"]) or [f"ch{i}" for i in range(snap.x.shape[1])],
        repeats=repeats,
        seed=seed,
    )
    return ImportanceOut(
        model_name=name,
        version=version,
        dataset_id=ds["id"],
        dataset=dataset_label(ds),
        rows=len(rows),
        repeats=repeats,
        **result,
    )
