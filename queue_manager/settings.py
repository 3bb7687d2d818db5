"""Settings of the queue manager service (prefix ``NEUROSTREAM_QM_``), read once at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class QueueManagerSettings(BaseSettings):
    """Where the API listens and how much it accepts."""

    model_config = SettingsConfigDict(env_prefix="NEUROSTREAM_QM_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface uvicorn binds.")
    port: int = Field(8000, ge=1, le=65535)
    max_upload_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest model upload (whole multipart body); larger ones get 413 before "
        "they are read whole.",
    )
    worker_heartbeat_s: float = Field(
        2.0,
        gt=0,
        description="Workers' heartbeat period; a worker silent for 3 periods is 'stale'.",
    )
    artifact_chunk_bytes: int = Field(
        1024 * 1024, ge=4096, description="Chunk size when streaming an artifact out."
    )
    log_level: str = "info"
