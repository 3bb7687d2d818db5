"""Bearer-token authorisation of write endpoints, shared by every service's API.

Each service's ``create_app`` stores its ``CoreSettings`` on ``app.state.core`` (see
``neurostream.api.service_app``); write routes depend on ``require_writer``. With a token
configured, the request must carry ``Authorization: Bearer <token>`` (compared in constant
time). In dev mode without a token, writes are allowed from loopback clients only;
production refuses to start without a token (``CoreSettings``).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from neurostream.settings import CoreSettings

_bearer = HTTPBearer(auto_error=False, description="API token from NEUROSTREAM_API_TOKEN.")


def _is_loopback(host: str | None) -> bool:
    if host in {"localhost", "testclient"}:
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_ok(presented: str, expected: str) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte."""
    return hmac.compare_digest(presented.encode(), expected.encode())


async def require_writer(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a write without the configured bearer token (401)."""
    core: CoreSettings = request.app.state.core
    unauthorised = {"WWW-Authenticate": "Bearer"}
    if core.api_token is None:
        if core.mode == "dev" and _is_loopback(request.client.host if request.client else None):
            return
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="authorization: no API token is configured; writes are only open to "
            "localhost in dev mode (set NEUROSTREAM_API_TOKEN)",
            headers=unauthorised,
        )
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="authorization: missing 'Authorization: Bearer <token>' header",
            headers=unauthorised,
        )
    if not token_ok(credentials.credentials, core.api_token.get_secret_value()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="authorization: invalid bearer token",
            headers=unauthorised,
        )


Writer = Depends(require_writer)
