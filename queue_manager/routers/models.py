"""Models and their versions: upload (validated before storing), list, get, download.

Artifacts live in ``model_versions.artifact`` (bytea), so no service needs a shared
filesystem; JSON responses never carry the bytes, ``.../artifact`` streams them in chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from neurostream import registry
from neurostream.auth import Writer
from queue_manager.deps import Policy, Pool, Settings
from queue_manager.schemas import INT32, NAME_PATTERN, ModelOut, VersionMetadata, VersionOut
from queue_manager.validation import validate_upload

router = APIRouter(prefix="/models", tags=["models"])
ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="Model name")]
VersionNo = Annotated[int, Path(ge=1, le=INT32, description="Version number")]
_404: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown model or version"}}


def _not_found(name: str, version: int | None = None) -> registry.NotFound:
    if version is None:
        return registry.NotFound(f"model {name!r} not found", field="model_name")
    return registry.NotFound(f"model {name!r} has no version {version}", field="version")


@router.get("", response_model=list[ModelOut])
async def list_models(pool: Pool) -> list[ModelOut]:
    async with pool.connection() as conn:
        return [ModelOut(**r) for r in await registry.list_models(conn)]


@router.get("/{name}", response_model=ModelOut, responses=_404)
async def get_model(name: ModelName, pool: Pool) -> ModelOut:
    async with pool.connection() as conn:
        row = await registry.get_model(conn, name)
    if row is None:
        raise _not_found(name)
    return ModelOut(**row)


@router.post(
    "/{name}/versions",
    response_model=VersionOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Writer],
    responses={413: {"description": "Upload larger than NEUROSTREAM_QM_MAX_UPLOAD_BYTES"}},
)
async def upload_version(
    name: ModelName,
    artifact: Annotated[UploadFile, File(description="Artifact bytes (skops or torch state)")],
    metadata: Annotated[
        str, Form(description="JSON object: family, feature_pipeline, input_spec, classes, ...")
    ],
    pool: Pool,
    policy: Policy,
) -> VersionOut:
    """Register the next version of ``name`` once the artifact loads like a worker's would."""
    try:
        meta = VersionMetadata.model_validate_json(metadata)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", "metadata", *e["loc"])} for e in exc.errors()]
        ) from exc
    data = await artifact.read()
    await validate_upload(name, meta, data, policy=policy)
    async with pool.connection() as conn:
        row = await registry.register_version(
            conn, model_name=name, artifact=data, **meta.model_dump(exclude={"sha256"})
        )
    return VersionOut(**row)


@router.get("/{name}/versions", response_model=list[VersionOut], responses=_404)
async def list_versions(name: ModelName, pool: Pool) -> list[VersionOut]:
    async with pool.connection() as conn:
        if await registry.get_model(conn, name) is None:
            raise _not_found(name)
        return [VersionOut(**r) for r in await registry.list_versions(conn, name)]


@router.get("/{name}/versions/{version}", response_model=VersionOut, responses=_404)
async def get_version(name: ModelName, version: VersionNo, pool: Pool) -> VersionOut:
    async with pool.connection() as conn:
        row = await registry.get_version(conn, name, version)
    if row is None:
        raise _not_found(name, version)
    return VersionOut(**row)


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **_404},
)
async def download_artifact(
    name: ModelName, version: VersionNo, pool: Pool, settings: Settings
) -> StreamingResponse:
    """The artifact bytes, streamed; ``ETag``/``X-Artifact-Sha256`` carry the hash."""
    async with pool.connection() as conn:
        row = await registry.get_version(conn, name, version)
    if row is None:
        raise _not_found(name, version)
    version_id, size, chunk = (
        int(row["id"]),
        int(row["artifact_size"]),
        settings.artifact_chunk_bytes,
    )

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, size, chunk):
            async with pool.connection() as conn:  # not held while the client reads
                data = await registry.read_artifact_chunk(conn, version_id, offset, chunk)
            yield data

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "ETag": f'"{row["sha256"]}"',
            "X-Artifact-Sha256": row["sha256"],
            "Content-Disposition": f'attachment; filename="{name}-{version}.bin"',
        },
    )
