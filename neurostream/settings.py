"""Settings shared by every service, read once at start-up and passed down.

Every service builds one ``CoreSettings`` (prefix ``NEUROSTREAM_``) at its edge and
its own service settings (``NEUROSTREAM_<SERVICE>_``). No other module reads
``os.environ``. Defaults work on a developer's machine with the local PostgreSQL
and RabbitMQ; production mode refuses to start without an explicit API token.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from neurostream import broker
from neurostream.errors import ConfigError


class CoreSettings(BaseSettings):
    """Where the store and the broker are, and how writes are authorised."""

    model_config = SettingsConfigDict(env_prefix="NEUROSTREAM_", env_file=".env", extra="ignore")

    mode: Literal["dev", "production"] = "dev"
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/neurostream",
        description="libpq URL of the PostgreSQL/TimescaleDB database.",
    )
    amqp_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/",
        description="RabbitMQ URL, vhost included. A cluster: several hosts, "
        "amqp://u:p@rabbit-0:5672,rabbit-1:5672,rabbit-2:5672/vhost (or several URLs "
        "separated by commas); each part connects to the first that answers and fails over "
        "to the next when its node goes away.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token for write endpoints. In dev mode a missing token means "
        "writes are open on localhost only; production refuses to start without one.",
    )
    max_window_bytes: int = Field(
        4 * 1024 * 1024, description="Largest window body accepted by decode (bytes)."
    )
    db_pool_max: int = 8
    trusted_modules: list[str] = Field(
        default_factory=list,
        description='Extra module prefixes (JSON list, e.g. ["mylab.decoding"]) whose '
        "classes a sklearn-pipeline artifact may hold, beyond scikit-learn, NumPy, SciPy, "
        "pyRiemann and mne.decoding. Risk: loading an artifact runs a trusted class's "
        "constructor and __setstate__, so trust only modules you have reviewed; functions "
        "and system modules (os, subprocess, builtins, ...) stay refused whatever is set.",
    )
    max_artifact_bytes: int = Field(
        64 * 1024 * 1024, description="Largest model artifact loaded or accepted (bytes)."
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_addresses(cls, value: str) -> str:
        try:
            broker.addresses(value)
        except ConfigError as exc:  # pydantic reports ValueErrors under the field's name
            raise ValueError(exc.message) from exc
        return value

    @model_validator(mode="after")
    def _production_needs_token(self) -> CoreSettings:
        if self.mode == "production" and (
            self.api_token is None or len(self.api_token.get_secret_value()) < 16
        ):
            raise ValueError(
                "NEUROSTREAM_API_TOKEN must be set (>= 16 characters) when "
                "NEUROSTREAM_MODE=production"
            )
        return self
