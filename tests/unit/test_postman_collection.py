"""The committed Postman collection is what the services' OpenAPI generates, and covers it."""

from __future__ import annotations

import json
import re

import pytest

from postman import generate, services


@pytest.fixture(scope="module")
def built() -> tuple[list[services.Service], dict]:
    svcs = services.load_all()
    return svcs, generate.collection(svcs)


def test_committed_files_equal_a_fresh_generation() -> None:
    for path, text in generate.build().items():
        assert path.exists(), f"{path.name} missing: run python -m postman.generate"
        assert path.read_text() == text, f"{path.name} is stale: run python -m postman.generate"


def _requests(folder: dict) -> list[dict]:
    return [item["request"] for item in folder["item"]]


def _template(svc: services.Service, method: str, path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\{\w+\\}", r"[^/?]+", re.escape(path))
    return re.compile(rf"^\{{\{{{svc.base_url_var}\}}\}}{pattern}(\?|$)")


def test_every_operation_of_every_service_appears(built) -> None:
    svcs, coll = built
    assert {f["name"] for f in coll["item"]} == {s.package for s in svcs}
    assert {"queue_manager", "ml_data_api", "retraining_api"} <= {s.package for s in svcs}
    for svc in svcs:
        folder = next(f for f in coll["item"] if f["name"] == svc.package)
        reqs = _requests(folder)
        for method, path in services.operations(svc.spec):
            rx = _template(svc, method, path)
            assert any(r["method"] == method and rx.match(r["url"]["raw"]) for r in reqs), (
                f"{svc.package}: {method} {path} is not in the collection"
            )


def test_every_request_asserts_its_status_and_writes_carry_bearer_auth(built) -> None:
    _, coll = built
    assert coll["info"]["schema"].endswith("/v2.1.0/collection.json")
    assert coll["auth"]["type"] == "bearer"
    assert coll["auth"]["bearer"][0]["value"] == "{{apiToken}}"
    for folder in coll["item"]:
        for item in folder["item"]:
            tests = next(e for e in item["event"] if e["listen"] == "test")["script"]["exec"]
            assert any("pm.response.code" in line for line in tests), item["name"]
            assert "auth" not in item["request"]  # inherits the collection's bearer


def test_environment_names_a_url_per_service_and_no_secret(built) -> None:
    svcs, _ = built
    env = generate.environment(svcs)
    values = {v["key"]: v["value"] for v in env["values"]}
    assert {s.base_url_var for s in svcs} <= set(values)
    assert values["apiToken"] == ""


def test_uploads_point_at_committed_fixtures(built) -> None:
    _, coll = built
    srcs = {
        field["src"]
        for folder in coll["item"]
        for item in folder["item"]
        for field in item["request"].get("body", {}).get("formdata", [])
        if field.get("type") == "file"
    }
    assert srcs
    for src in srcs:
        assert (generate.ROOT / src).is_file(), f"{src}: run python -m postman.generate"


def test_raw_json_bodies_parse_once_variables_are_filled(built) -> None:
    _, coll = built
    for folder in coll["item"]:
        for item in folder["item"]:
            body = item["request"].get("body", {})
            if body.get("mode") == "raw":
                json.loads(re.sub(r"\{\{\w+\}\}", "1", body["raw"]))
