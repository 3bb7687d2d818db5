"""Schemathesis against every service's OpenAPI schema, each app running its lifespan.

Each app is served by uvicorn on a free port against the test session's scratch database
(and vhost). Generated requests, valid and invalid, must never get a 5xx, every response
must match the documented schema, and every 4xx must carry a JSON ``detail``.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from neurostream.settings import CoreSettings
from tests.faults.infra import free_port

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]
MAX_EXAMPLES = 20


class Served:
    """An app under uvicorn in a thread, lifespan included."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), "the app failed to start"
            assert time.monotonic() < deadline, "the app did not start in 60 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _apps(core: CoreSettings) -> dict[str, Callable[[], Any]]:
    def factory(module: str, settings_module: str, settings_cls: str, **kw: Any) -> Any:
        app_mod = importlib.import_module(f"{module}.app")
        settings = getattr(importlib.import_module(settings_module), settings_cls)(**kw)
        return app_mod.create_app(core, settings)

    return {
        "queue_manager": lambda: factory(
            "queue_manager",
            "queue_manager.settings",
            "QueueManagerSettings",
            max_upload_bytes=256 * 1024,
        ),
        "ml_data_api": lambda: factory(
            "ml_data_api",
            "ml_data_api.settings",
            "DataApiSettings",
            consumers=False,
            max_upload_bytes=256 * 1024,
        ),
        "retraining_api": lambda: factory(
            "retraining_api",
            "retraining_api.settings",
            "RetrainingSettings",
            runner_enabled=False,
        ),
        "monitoring_api": lambda: factory(
            "monitoring_api", "monitoring_api.settings", "MonitoringSettings", evaluator=False
        ),
    }


def error_has_detail(ctx: Any, response: Any, case: Any) -> bool | None:
    """A client error says what was wrong: JSON with a ``detail``."""
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(
                f"{response.status_code} without a JSON body: {response.text[:200]!r}"
            ) from None
        assert isinstance(body, dict) and body.get("detail"), f"no detail in {body!r}"
    return None


CHECKS = [not_a_server_error, response_schema_conformance, error_has_detail]


@pytest.fixture(
    scope="module", params=["queue_manager", "ml_data_api", "retraining_api", "monitoring_api"]
)
def served(request: pytest.FixtureRequest, core: CoreSettings) -> Iterator[tuple[str, Served]]:
    name = request.param
    try:
        app = _apps(core)[name]()
    except ImportError as exc:  # a service that does not exist yet
        pytest.skip(f"{name} not importable: {exc}")
    with Served(app) as s:
        yield name, s


def fuzz(op: Any, mode: GenerationMode, call: Callable[[Any], None]) -> str | None:
    """Run ``call`` on generated cases of one operation; the first failure, described."""
    failure: list[str] = []

    @given(case=op.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: keep the suite fast
        database=None,
    )
    def run(case: Any) -> None:
        try:
            call(case)
        except AssertionError as exc:  # schemathesis' FailureGroup is one too
            failure.append(f"{op.label} [{mode.value}]: {exc}\n  {case.as_curl_command()}")
            raise

    try:
        run()
    except AssertionError:
        return failure[-1] if failure else f"{op.label}: failed"
    except Unsatisfiable:  # nothing to negate in an operation without parameters
        if mode is GenerationMode.NEGATIVE:
            return None
        return f"{op.label} [{mode.value}]: cannot generate cases"
    except Exception as exc:
        return f"{op.label} [{mode.value}]: cannot generate: {exc!r}"
    return None


def test_no_5xx_and_responses_match_the_schema(
    served: tuple[str, Served], core: CoreSettings
) -> None:
    name, s = served
    assert core.api_token is not None
    spec = httpx.get(f"{s.base_url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    auth = {"Authorization": f"Bearer {core.api_token.get_secret_value()}"}

    statuses: Counter[int] = Counter()

    def call(case: Any) -> None:
        response = case.call_and_validate(
            base_url=s.base_url, headers=auth, checks=CHECKS, timeout=30
        )
        statuses[response.status_code] += 1

    failures: list[str] = []
    n_ops = 0
    t0 = time.monotonic()
    for result in schema.get_all_operations():
        op = result.ok()  # type: ignore[union-attr]  # schemathesis: Ok | Err; an Err raises here
        n_ops += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = fuzz(op, mode, call)
            if failure:
                failures.append(failure)
    print(
        f"\nFUZZ {name}: {n_ops} operations x 2 modes x <= {MAX_EXAMPLES} examples, "
        f"{sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}, "
        f"{len(failures)} failing, {time.monotonic() - t0:.0f} s"
    )
    assert not failures, "\n\n".join(failures)
