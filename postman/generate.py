"""Build the Postman collection (v2.1) and environment from every service's OpenAPI.

``python -m postman.generate`` rewrites ``postman/neurostream.postman_collection.json`` and
``postman/neurostream.postman_environment.json`` (and the upload fixtures when missing).
One folder per service, every path + method; flows in ``postman.flows`` order requests so
ids created early (service, model version, dataset, job, trigger) feed later ones. Bearer
auth comes from the environment's ``apiToken``. ``--check`` exits 1 if the committed files
differ from what the code generates.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from postman import examples, fixtures, services
from postman.flows import COLLECTION_PREREQUEST, FLOWS, PATH_DEFAULTS, Step

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ROOT / "postman" / "neurostream.postman_collection.json"
ENVIRONMENT = ROOT / "postman" / "neurostream.postman_environment.json"
SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
VARIABLES = (
    "runId",
    "serviceName",
    "modelName",
    "trainSet",
    "testSet",
    "version",
    "challengerVersion",
    "sessionId",
    "datasetId",
    "jobId",
    "cancelJobId",
    "triggerId",
    "dataService",
    "sessionStart",
    "sessionEnd",
    "ruleId",
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def path_value(path: str, param: str) -> str:
    for (prefix, name), value in PATH_DEFAULTS.items():
        if name == param and path.startswith(prefix):
            return value
    return "{{" + _camel(param) + "}}"


def generic_step(spec: dict[str, Any], method: str, path: str) -> Step:
    """A request for an operation no flow names: documented example body, 2xx expected."""
    op = spec["paths"][path][method.lower()]
    query = {
        p["name"]: str(examples.example(spec, p.get("schema", {})))
        for p in op.get("parameters", [])
        if p["in"] == "query" and p.get("required")
    }
    body = None
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = examples.example(spec, content["application/json"].get("schema", {}))
    return Step(method, path, op.get("summary") or f"{method} {path}", query=query, body=body)


def _success_codes(op: dict[str, Any]) -> tuple[int, ...]:
    codes = sorted(int(c) for c in op.get("responses", {}) if c.isdigit() and c.startswith("2"))
    return tuple(codes[:1]) or (200,)


def _response_schema(op: dict[str, Any], code: int) -> dict[str, Any] | None:
    content = op.get("responses", {}).get(str(code), {}).get("content", {})
    return content.get("application/json", {}).get("schema")


def _tests(spec: dict[str, Any], op: dict[str, Any], step: Step) -> list[str]:
    expect = step.expect or _success_codes(op)
    lines = [
        f"pm.test('status is {' or '.join(map(str, expect))}', () => "
        f"pm.expect(pm.response.code).to.be.oneOf({list(expect)}));"
    ]
    kind, keys = examples.required_keys(spec, _response_schema(op, expect[0]))
    if step.check_fields and keys:
        keys_js = json.dumps(keys)
        if kind == "object":
            lines.append(
                f"pm.test('response fields', () => pm.expect(pm.response.json())"
                f".to.include.keys({keys_js}));"
            )
        else:
            lines += [
                "pm.test('an array of records', () => {",
                "  const items = pm.response.json();",
                "  pm.expect(items).to.be.an('array');",
                f"  items.forEach(i => pm.expect(i).to.include.keys({keys_js}));",
                "});",
            ]
    return lines + step.tests


def _url(service: services.Service, step: Step) -> dict[str, Any]:
    path = step.path
    for param in re.findall(r"{(\w+)}", step.path):
        value = step.path_vars.get(param) or path_value(step.path, param)
        path = path.replace("{" + param + "}", value)
    segments = [s for s in path.split("/") if s]
    raw = "{{" + service.base_url_var + "}}" + path
    url: dict[str, Any] = {
        "raw": raw,
        "host": ["{{" + service.base_url_var + "}}"],
        "path": segments,
    }
    if step.query:
        url["raw"] += "?" + "&".join(f"{k}={v}" for k, v in step.query.items())
        url["query"] = [{"key": k, "value": v} for k, v in step.query.items()]
    return url


def _body(step: Step) -> dict[str, Any] | None:
    if step.form is not None:
        return {"mode": "formdata", "formdata": step.form}
    if step.body is None:
        return None
    raw = step.body if isinstance(step.body, str) else json.dumps(step.body, indent=2)
    return {"mode": "raw", "raw": raw, "options": {"raw": {"language": "json"}}}


def _item(service: services.Service, step: Step) -> dict[str, Any]:
    op = service.spec["paths"][step.path][step.method.lower()]
    request: dict[str, Any] = {
        "method": step.method,
        "header": [{"key": "Accept", "value": "application/json"}],
        "url": _url(service, step),
        "description": (op.get("description") or op.get("summary") or "").strip(),
    }
    body = _body(step)
    if body is not None:
        request["body"] = body
        if body["mode"] == "raw":
            request["header"].append({"key": "Content-Type", "value": "application/json"})
    events = [
        {
            "listen": "test",
            "script": {"type": "text/javascript", "exec": _tests(service.spec, op, step)},
        }
    ]
    if step.prerequest:
        events.insert(
            0,
            {
                "listen": "prerequest",
                "script": {"type": "text/javascript", "exec": step.prerequest},
            },
        )
    return {"name": step.name, "event": events, "request": request}


def steps_for(service: services.Service) -> list[Step]:
    """The service's flow, then a generic step for every operation the flow leaves out."""
    flow = FLOWS.get(service.package, [])
    ops = services.operations(service.spec)
    unknown = [s.key for s in flow if s.key not in ops]
    if unknown:
        raise ValueError(f"{service.package}: flow names operations the API lacks: {unknown}")
    covered = {s.key for s in flow}
    return flow + [generic_step(service.spec, m, p) for m, p in ops if (m, p) not in covered]


def collection(svcs: list[services.Service]) -> dict[str, Any]:
    folders = [
        {
            "name": svc.package,
            "description": f"{svc.title} (`python -m {svc.package}`, port {svc.port}).",
            "item": [_item(svc, step) for step in steps_for(svc)],
        }
        for svc in svcs
    ]
    return {
        "info": {
            "name": "neurostream",
            "description": "Every endpoint of every neurostream service, generated from "
            "their OpenAPI by `python -m postman.generate`. Run it with newman: see README.",
            "schema": SCHEMA_URL,
        },
        "auth": {
            "type": "bearer",
            "bearer": [{"key": "token", "value": "{{apiToken}}", "type": "string"}],
        },
        "event": [
            {
                "listen": "prerequest",
                "script": {"type": "text/javascript", "exec": COLLECTION_PREREQUEST},
            }
        ],
        "variable": [{"key": k, "value": ""} for k in VARIABLES],
        "item": folders,
    }


def environment(svcs: list[services.Service]) -> dict[str, Any]:
    values = [
        {"key": svc.base_url_var, "value": f"http://127.0.0.1:{svc.port}", "enabled": True}
        for svc in svcs
    ]
    values.append({"key": "apiToken", "value": "", "type": "secret", "enabled": True})
    return {
        "name": "neurostream (local)",
        "values": values,
        "_postman_variable_scope": "environment",
    }


def render(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def build() -> dict[Path, str]:
    svcs = services.load_all()
    return {COLLECTION: render(collection(svcs)), ENVIRONMENT: render(environment(svcs))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run python -m postman.generate)")
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    for path in fixtures.ensure(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
