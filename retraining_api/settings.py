"""Settings of the retraining API (prefix ``NEUROSTREAM_RT_``), read once at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetrainingSettings(BaseSettings):
    """Where the API listens and how its job runner paces itself."""

    model_config = SettingsConfigDict(env_prefix="NEUROSTREAM_RT_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface uvicorn binds.")
    port: int = Field(8003, ge=1, le=65535)
    runner_enabled: bool = Field(
        True, description="Run jobs in this process; false makes a replica that only serves HTTP."
    )
    max_concurrent_jobs: int = Field(
        1, ge=1, le=16, description="Jobs this process runs at once (each uses one CPU thread)."
    )
    poll_s: float = Field(1.0, gt=0, description="How often an idle runner looks for jobs.")
    heartbeat_s: float = Field(
        2.0, gt=0, description="How often a running job's heartbeat, progress and logs are saved."
    )
    stale_after_s: float = Field(
        30.0,
        gt=0,
        description="A 'running' job whose heartbeat is older than this was interrupted (its "
        "runner died) and is marked failed; keep it well above heartbeat_s.",
    )
    trigger_check_s: float = Field(5.0, gt=0, description="How often triggers are evaluated.")
    drain_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long shut-down waits for running jobs to stop at a checkpoint; a job "
        "still running then is cancelled and recorded as interrupted.",
    )
    importance_max_rows: int = Field(
        2000, ge=10, description="Rows of a dataset permutation importance uses at most."
    )
    log_level: str = "info"
