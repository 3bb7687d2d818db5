"""Dataset snapshots: create from sessions or uploaded rows, list, get, export.

Uploads live on their own router so the app can cap their body size (413 before the body
is read whole); snapshot creation itself is ``neurostream.datasets``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import StreamingResponse
from psycopg_pool import AsyncConnectionPool

from ml_data_api import export, queries, upload
from ml_data_api.deps import Pool, Settings
from ml_data_api.errors import NotFound
from ml_data_api.schemas import (
    NAME_PATTERN,
    DatasetFromSessions,
    DatasetOut,
    DatasetUpload,
    Kind,
)
from neurostream import datasets
from neurostream.auth import Writer

router = APIRouter(prefix="/datasets", tags=["datasets"])
uploads = APIRouter(prefix="/datasets", tags=["datasets"])
DatasetId = Annotated[int, Path(ge=1, le=2**31 - 1)]
_404: dict[int | str, dict[str, Any]] = {404: {"description": "No such dataset"}}
Chunks = AsyncIterator[list[export.Row]]
_413: dict[int | str, dict[str, Any]] = {
    413: {"description": "Body larger than NEUROSTREAM_DATA_MAX_UPLOAD_BYTES"}
}


@router.post("", response_model=DatasetOut, status_code=201, dependencies=[Writer])
async def create_from_sessions(body: DatasetFromSessions, pool: Pool) -> DatasetOut:
    """Snapshot the labelled epoch windows of sessions as the next version of ``name``."""
    async with pool.connection() as conn:
        known = await queries.known_sessions(conn, body.session_ids)
        for i, sid in enumerate(body.session_ids):
            if sid not in known:
                raise NotFound(f"session {sid!r} does not exist", field=f"session_ids.{i}")
        row = await datasets.snapshot_from_sessions(
            conn,
            name=body.name,
            kind=body.kind,
            session_ids=body.session_ids,
            description=body.description,
            base_dataset_id=body.base_dataset,
        )
    return DatasetOut(**row)


@uploads.post(
    "/upload", response_model=DatasetOut, status_code=201, dependencies=[Writer], responses=_413
)
async def upload_rows(body: DatasetUpload, pool: Pool) -> DatasetOut:
    """Snapshot rows sent as JSON (windows as nested lists)."""
    x, y = upload.rows_to_arrays(body.rows)
    return await _store(
        pool,
        name=body.name,
        kind=body.kind,
        windows=x,
        labels=y,
        fs=body.fs,
        channels=body.channels,
        description=body.description,
        source={"upload": "json"},
        session_ids=[r.session_id for r in body.rows],
        seqs=[r.seq for r in body.rows],
    )


@uploads.post(
    "/upload/npz", response_model=DatasetOut, status_code=201, dependencies=[Writer], responses=_413
)
async def upload_npz(
    pool: Pool,
    settings: Settings,
    file: Annotated[UploadFile, File(description=".npz with x [n, c, s] and integer y [n]")],
    name: Annotated[str, Form(pattern=NAME_PATTERN)],
    kind: Annotated[Kind, Form()],
    fs: Annotated[float, Form(gt=0, le=100_000, allow_inf_nan=False)],
    channels: Annotated[str, Form(description="JSON list or comma-separated names")],
    description: Annotated[str, Form(max_length=2000)] = "",
) -> DatasetOut:
    """Snapshot an uploaded ``.npz`` (read with ``allow_pickle=False``)."""
    names = upload.parse_channels(channels)
    data = await file.read()
    x, y = upload.load_npz(data, max_unpacked=4 * settings.max_upload_bytes)
    return await _store(
        pool,
        name=name,
        kind=kind,
        windows=x,
        labels=y,
        fs=fs,
        channels=names,
        description=description,
        source={"upload": "npz", "filename": file.filename or ""},
    )


@router.get("", response_model=list[DatasetOut])
async def list_datasets(
    pool: Pool, name: Annotated[str | None, Query(max_length=128)] = None
) -> list[DatasetOut]:
    async with pool.connection() as conn:
        return [DatasetOut(**r) for r in await datasets.list_datasets(conn, name)]


@router.get("/{dataset_id}", response_model=DatasetOut, responses=_404)
async def get_dataset(dataset_id: DatasetId, pool: Pool) -> DatasetOut:
    async with pool.connection() as conn:
        row = await datasets.get_dataset_by_id(conn, dataset_id)
    if row is None:
        raise _missing(dataset_id)
    return DatasetOut(**row)


@router.get(
    "/{dataset_id}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}}, **_404},
)
async def export_dataset(
    dataset_id: DatasetId,
    pool: Pool,
    settings: Settings,
    format: Literal["csv", "parquet"] = "csv",
) -> StreamingResponse:
    """The snapshot's rows, streamed from the database in chunks."""
    async with pool.connection() as conn:
        meta = await datasets.get_dataset_by_id(conn, dataset_id)
    if meta is None:
        raise _missing(dataset_id)
    filename = f"{meta['name']}-v{meta['version']}.{format}"
    chunks = _chunks(pool, dataset_id, settings.export_chunk_rows)
    if format == "csv":
        body = _csv(meta, chunks)
        media = "text/csv; charset=utf-8"
    else:
        body = _parquet(meta, chunks)
        media = "application/vnd.apache.parquet"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Content-Hash": meta["content_hash"],
    }
    return StreamingResponse(body, media_type=media, headers=headers)


async def _chunks(
    pool: AsyncConnectionPool, dataset_id: int, size: int
) -> AsyncIterator[list[export.Row]]:
    async with pool.connection() as conn, conn.cursor(name="dataset_export") as cur:
        await cur.execute(
            "SELECT idx, session_id, seq, label, data FROM dataset_rows "
            "WHERE dataset_id = %s ORDER BY idx",
            [dataset_id],
        )
        while rows := await cur.fetchmany(size):
            yield rows


async def _csv(meta: dict[str, Any], chunks: Chunks) -> AsyncIterator[bytes]:
    yield export.csv_header(meta["channels"], meta["n_samples"]).encode()
    async for rows in chunks:
        yield export.csv_chunk(rows).encode()


async def _parquet(meta: dict[str, Any], chunks: Chunks) -> AsyncIterator[bytes]:
    encoder = export.ParquetEncoder(meta)
    async for rows in chunks:
        if part := encoder.write(rows):
            yield part
    yield encoder.close()


def _missing(dataset_id: int) -> NotFound:
    return NotFound(f"dataset {dataset_id} does not exist", field="dataset_id")


async def _store(pool: AsyncConnectionPool, **snapshot: Any) -> DatasetOut:
    """``create_snapshot``; its ``InvalidRequest`` answers 422 naming the field."""
    async with pool.connection() as conn:
        row = await datasets.create_snapshot(conn, **snapshot)
    return DatasetOut(**row)
