"""Settings of the ML data service (prefix ``NEUROSTREAM_DATA_``), read once at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DataApiSettings(BaseSettings):
    """Where the API listens, how much it accepts and how its consumers batch."""

    model_config = SettingsConfigDict(
        env_prefix="NEUROSTREAM_DATA_", env_file=".env", extra="ignore"
    )

    host: str = Field("127.0.0.1", description="Interface uvicorn binds.")
    port: int = Field(8001, ge=1, le=65535)
    consumers: bool = Field(
        True,
        description="Run the ground-truth collector and window archiver inside the API process "
        "(set false when they run alone with `python -m ml_data_api.ingest`).",
    )
    max_upload_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest dataset upload (whole body); larger ones get 413 before they are "
        "read whole. An .npz may decompress to at most 4x this.",
    )
    max_label_items: int = Field(10_000, ge=1, description="Most items in one POST /labels.")
    page_max: int = Field(1000, ge=1, description="Largest page of a list endpoint.")
    export_chunk_rows: int = Field(500, ge=1, description="Rows per chunk of a streamed export.")
    archiver_prefetch: int = Field(500, ge=1, description="Unacked windows the archiver holds.")
    collector_prefetch: int = Field(200, ge=1, description="Unacked labels the collector holds.")
    drain_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long the consumers' close() waits for the batches already received "
        "to be written and acked; what is left then is redelivered.",
    )
    log_level: str = "info"
