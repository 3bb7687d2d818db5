"""Bearer tokens: constant-time comparison, and no production start without a token."""

from __future__ import annotations

import ast
import inspect

import pytest
from pydantic import ValidationError

from neurostream import auth
from neurostream.settings import CoreSettings


def test_tokens_are_compared_in_constant_time() -> None:
    tree = ast.parse(inspect.getsource(auth.token_ok))
    calls = {
        f"{n.func.value.id}.{n.func.attr}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
    }
    assert "hmac.compare_digest" in calls
    assert not any(isinstance(n, ast.Compare) for n in ast.walk(tree))  # no ==
    assert auth.token_ok("a" * 20, "a" * 20) and not auth.token_ok("a" * 20, "b" * 20)


@pytest.mark.parametrize("token", [None, "", "short-token"])
def test_production_mode_refuses_to_start_without_a_long_token(
    token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEUROSTREAM_API_TOKEN", raising=False)
    with pytest.raises(ValidationError, match="NEUROSTREAM_API_TOKEN"):
        CoreSettings(mode="production", api_token=token, _env_file=None)


def test_production_mode_starts_with_a_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEUROSTREAM_MODE", "production")
    monkeypatch.setenv("NEUROSTREAM_API_TOKEN", "t" * 32)
    core = CoreSettings(_env_file=None)
    assert core.mode == "production" and core.api_token is not None


def test_dev_mode_has_no_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEUROSTREAM_API_TOKEN", raising=False)
    assert CoreSettings(_env_file=None).api_token is None
