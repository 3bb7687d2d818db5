"""Settings of the monitoring service (prefix ``NEUROSTREAM_MON_``), read once at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitoringSettings(BaseSettings):
    """Where the API listens, how the background evaluator slides, how webhooks retry."""

    model_config = SettingsConfigDict(
        env_prefix="NEUROSTREAM_MON_", env_file=".env", extra="ignore"
    )

    host: str = Field("127.0.0.1", description="Interface uvicorn binds.")
    port: int = Field(8002, ge=1, le=65535)
    evaluator: bool = Field(
        True, description="Run the drift and alert evaluator inside the API process."
    )
    evaluate_every_s: float = Field(10.0, gt=0, description="Evaluator period.")
    canary_judge: bool = Field(
        True,
        description="Apply each running canary's rule (promote or roll back) inside the API "
        "process; GET /services/{name}/canary shows the verdict either way.",
    )
    canary_every_s: float = Field(5.0, gt=0, description="Canary rule period.")
    close_timeout_s: float = Field(
        10.0, gt=0, description="At shutdown, how long a pass in progress may finish."
    )
    current_window_s: float = Field(
        30.0, gt=0, description="Sliding current window (data time) compared with the reference."
    )
    reference_s: float = Field(
        30.0,
        gt=0,
        description="Default reference of a service without one set: the first seconds of "
        "its latest session.",
    )
    min_windows: int = Field(20, ge=2, description="Fewest windows per side for a drift test.")
    max_windows: int = Field(20_000, ge=2, description="Most windows loaded per side.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise level (Bonferroni).")
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Share of drifted features above which a service drifts."
    )
    mmd_max_n: int = Field(500, ge=2, description="Rows per side in the MMD kernel.")
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_retries: int = Field(3, ge=1, description="Attempts per webhook call.")
    webhook_backoff_s: float = Field(0.5, ge=0, description="First retry delay (doubles).")
    page_max: int = Field(5000, ge=1, description="Most rows a list endpoint returns.")
    log_level: str = "info"
