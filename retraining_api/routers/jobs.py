"""Retrain jobs: queued by a request, run by a runner outside it, polled by the client."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from neurostream import registry
from neurostream.auth import Writer
from retraining_api import store
from retraining_api.deps import Pool, RunnerDep
from retraining_api.schemas import (
    INT32,
    NAME_PATTERN,
    JobAccepted,
    JobCreate,
    JobDetail,
    JobOut,
    JobStatus,
    LogLine,
    TrialOut,
)
from retraining_api.validation import resolve_job

router = APIRouter(prefix="/jobs", tags=["jobs"])
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Job id")]
_404: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown job"}}


async def _job(pool: Pool, job_id: int) -> dict[str, Any]:
    async with pool.connection() as conn:
        row = await store.get(conn, job_id)
    if row is None:
        raise registry.NotFound(f"job {job_id} not found", field="job_id")
    return row


@router.post(
    "",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Writer],
    responses={
        404: {"description": "Unknown dataset, service"},
        422: {"description": "Bad values, or a family that cannot be retrained (an onnx champion)"},
    },
)
async def create_job(body: JobCreate, pool: Pool, runner: RunnerDep) -> JobAccepted:
    """Queue a retrain job; poll ``GET /jobs/{id}`` for progress, logs and the result.

    Without ``family`` the champion's family is retrained; a ``sklearn-pipeline`` job
    refits a clone of the champion's fitted estimator."""
    async with pool.connection() as conn:
        model_name, spec = await resolve_job(
            conn, body, model_name=body.model_name, service=body.service
        )
        row = await store.enqueue(
            conn, model_name=model_name, service=body.service, family=spec["family"], spec=spec
        )
    if runner is not None:
        runner.wake()
    return JobAccepted(job_id=row["id"], status=row["status"])


@router.get("", response_model=list[JobOut])
async def list_jobs(
    pool: Pool,
    model_name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32)] = 0,
) -> list[JobOut]:
    """Newest first."""
    async with pool.connection() as conn:
        rows = await store.list_jobs(
            conn, model_name=model_name, status=status, limit=limit, offset=offset
        )
    return [JobOut(**r) for r in rows]


@router.get("/{job_id}", response_model=JobDetail, responses=_404)
async def get_job(
    job_id: JobId, pool: Pool, log_lines: Annotated[int, Query(ge=0, le=5000)] = 500
) -> JobDetail:
    """Status, progress (0..1), the last log lines and, when succeeded, the result."""
    row = await _job(pool, job_id)
    async with pool.connection() as conn:
        lines = await store.logs(conn, job_id, log_lines)
    return JobDetail(**row, logs=[LogLine(**line) for line in lines])


@router.get("/{job_id}/trials", response_model=list[TrialOut], responses=_404)
async def list_trials(job_id: JobId, pool: Pool) -> list[TrialOut]:
    """The job's hyperparameter-search trials (child runs), in order."""
    await _job(pool, job_id)
    async with pool.connection() as conn:
        return [TrialOut(**r) for r in await store.trials(conn, job_id)]


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    dependencies=[Writer],
    responses={**_404, 409: {"description": "Already finished"}},
)
async def cancel_job(job_id: JobId, pool: Pool) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next checkpoint."""
    async with pool.connection() as conn:
        row = await store.request_cancel(conn, job_id)
    if row is None:
        raise registry.NotFound(f"job {job_id} not found", field="job_id")
    if row["status"] in ("succeeded", "failed"):
        raise registry.Conflict(f"job {job_id} already {row['status']}", field="job_id")
    return JobOut(**row)
