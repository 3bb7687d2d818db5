"""The model registry over the queue manager's HTTP API, for commands run anywhere.

``neurostream models ...`` talks to a queue manager that may run on another machine, so
it goes through the API (bearer token and all) rather than the database the way
``neurostream train`` does. ``RegistryClient`` is a thin, typed wrapper over ``httpx``:
each method is one endpoint and returns the API's own response model
(``queue_manager.schemas``), so a field renamed on the server is caught here. Every
non-2xx answer becomes an error of ``neurostream.errors`` carrying the server's
``detail`` and a hint (401/403: the token; 404/409/422: what was refused), and a server
that cannot be reached is an ``Unavailable`` naming the URL, so the command line prints
one ``error:`` line instead of an httpx traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from neurostream.errors import (
    ArtifactError,
    ConfigError,
    Conflict,
    InvalidRequest,
    NeurostreamError,
    NotFound,
    RequestError,
    Unavailable,
)
from neurostream.settings import CoreSettings
from queue_manager.schemas import (
    AliasSetOut,
    AssignmentOut,
    ModelOut,
    ServiceOut,
    VersionOut,
)

__all__ = ["ClientSettings", "RegistryClient"]

_M = TypeVar("_M", bound=BaseModel)
_START = "start it with `neurostream queue-manager`, or point --url / NEUROSTREAM_QM_URL at it"


class ClientSettings(BaseSettings):
    """Where the queue manager is for commands that use its API (prefix ``NEUROSTREAM_QM_``,
    shared with the queue manager's own settings; the token is ``CoreSettings.api_token``)."""

    model_config = SettingsConfigDict(env_prefix="NEUROSTREAM_QM_", env_file=".env", extra="ignore")

    url: str = Field("http://127.0.0.1:8000", description="Base URL of the queue manager API.")
    timeout_s: float = Field(
        120.0, gt=0, description="Per-request timeout; an upload is validated before it answers."
    )


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip() or resp.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    return json.dumps(detail if detail is not None else body)


def _error(resp: httpx.Response) -> NeurostreamError:
    """The error of the tree that a refusal stands for, with the server's words in it."""
    where = f"{resp.request.method} {resp.request.url.path}"
    message = f"the queue manager refused {where} ({resp.status_code}): {_detail(resp)}"
    status = resp.status_code
    if status in (401, 403):
        return ConfigError(
            message,
            field="api_token",
            status=status,
            hint="pass --token or set NEUROSTREAM_API_TOKEN to the token the queue manager "
            "was started with",
        )
    if status == 404:
        return NotFound(message, hint="`neurostream models list` shows what is registered")
    if status == 409:
        return Conflict(message)
    if status in (400, 413, 422):
        return InvalidRequest(message, status=status)
    if status >= 500:
        return Unavailable(
            message,
            status=status,
            hint="the queue manager's log says why (its database or broker may be down)",
        )
    return RequestError(message, status=status)


class RegistryClient:
    """The registry endpoints of one queue manager; use as a context manager (it closes the
    connection pool). ``transport`` is for tests that serve an app in process."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url: str = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: httpx.Client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    @classmethod
    def from_settings(
        cls,
        core: CoreSettings,
        settings: ClientSettings,
        *,
        url: str | None = None,
        token: str | None = None,
    ) -> RegistryClient:
        """A client for ``url`` (default ``settings.url``) with ``token`` (default the
        services' ``NEUROSTREAM_API_TOKEN``); flags win over settings."""
        secret: SecretStr | None = core.api_token
        return cls(
            url or settings.url,
            token=token or (secret.get_secret_value() if secret else None),
            timeout_s=settings.timeout_s,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            why = str(exc) or type(exc).__name__
            raise Unavailable(
                f"cannot reach the queue manager at {self.base_url}: {why}", hint=_START
            ) from exc
        if resp.is_error:
            raise _error(resp)
        return resp

    def _one(self, model: type[_M], method: str, path: str, **kwargs: Any) -> _M:
        return model.model_validate(self._send(method, path, **kwargs).json())

    def _many(self, model: type[_M], path: str) -> list[_M]:
        return [model.model_validate(row) for row in self._send("GET", path).json()]

    # --- models and versions -------------------------------------------------------------

    def list_models(self) -> list[ModelOut]:
        return self._many(ModelOut, "/models")

    def get_model(self, name: str) -> ModelOut:
        return self._one(ModelOut, "GET", f"/models/{name}")

    def list_versions(self, name: str) -> list[VersionOut]:
        return self._many(VersionOut, f"/models/{name}/versions")

    def get_version(self, name: str, version: int) -> VersionOut:
        return self._one(VersionOut, "GET", f"/models/{name}/versions/{version}")

    def download_artifact(self, name: str, version: int) -> bytes:
        """The version's artifact bytes, refused (``ArtifactError``) unless they hash to the
        ``X-Artifact-Sha256`` the server sent with them."""
        resp = self._send("GET", f"/models/{name}/versions/{version}/artifact")
        data = resp.content
        expected = resp.headers.get("X-Artifact-Sha256", "")
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, expected.lower()):
            raise ArtifactError(
                f"the artifact of {name} v{version} arrived as {len(data)} bytes hashing to "
                f"{actual}, but the server sent sha256 {expected or '(none)'}",
                hint="download it again; a proxy may have altered it",
            )
        return data

    def push(self, name: str, artifact: bytes, metadata: Mapping[str, Any]) -> VersionOut:
        """Upload the next version of ``name``; the server loads it as a worker would first
        and refuses (422) what would not serve."""
        return self._one(
            VersionOut,
            "POST",
            f"/models/{name}/versions",
            files={"artifact": (f"{name}.bin", artifact, "application/octet-stream")},
            data={"metadata": json.dumps(dict(metadata))},
        )

    def set_alias(self, name: str, alias: str, version: int) -> AliasSetOut:
        """Point ``alias`` at ``version``; services following it are told to swap."""
        return self._one(
            AliasSetOut, "PUT", f"/models/{name}/aliases/{alias}", json={"version": version}
        )

    # --- services ------------------------------------------------------------------------

    def get_service(self, name: str) -> ServiceOut | None:
        try:
            return self._one(ServiceOut, "GET", f"/services/{name}")
        except NotFound:
            return None

    def ensure_service(self, name: str) -> tuple[ServiceOut, bool]:
        """The service, created when missing (an existing one keeps its description);
        the flag says whether it was created."""
        found = self.get_service(name)
        if found is not None:
            return found, False
        return self._one(ServiceOut, "POST", "/services", json={"name": name}), True

    def set_service_input(
        self, name: str, service_input: Mapping[str, Any] | None
    ) -> tuple[ServiceOut, bool]:
        """Declare (None: clear) what the service streams, keeping its description; the
        flag says whether the service was created. A version it serves that the input
        cannot meet makes the server refuse (409)."""
        found = self.get_service(name)
        body = {
            "description": found.description if found else "",
            "input": dict(service_input) if service_input is not None else None,
        }
        return self._one(ServiceOut, "PUT", f"/services/{name}", json=body), found is None

    def assign(
        self, service: str, model_name: str, ref: str, shadow_ref: str | None = None
    ) -> AssignmentOut:
        """Make ``service`` serve ``model_name`` at ``ref`` (a version number or alias)."""
        body = {"model_name": model_name, "ref": ref, "shadow_ref": shadow_ref}
        return self._one(AssignmentOut, "PUT", f"/services/{service}/assign", json=body)
