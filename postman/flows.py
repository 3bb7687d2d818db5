"""The order and data of the collection's requests: flows that create what later requests use.

Each service has an ordered list of ``Step``s naming an OpenAPI operation (``METHOD path``)
with the body, path values and extra test lines it needs. Ids created along the way go into
collection variables set by test scripts (``pm.collectionVariables.set``). An operation of a
service that no step names still gets a generic request (``generate.generic_step``), so a
new endpoint appears in the collection at once; ``tests/unit/test_postman.py`` fails if the
committed collection was not regenerated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# A small model every upload uses: 4 channels x 200 samples at 250 Hz, erp@1 features.
FS, CHANNELS, SAMPLES = 250.0, ["Fz", "Cz", "Pz", "Oz"], 200
MODEL_FIXTURE = "postman/fixtures/model-sklearn-lda.skops"
NPZ_FIXTURE = "postman/fixtures/dataset.npz"
MODEL_METADATA = {
    "family": "sklearn-lda",
    "feature_pipeline": "erp@1",
    "input_spec": {"fs": FS, "n_channels": len(CHANNELS), "n_samples": SAMPLES},
    "classes": [0, 1],
    "code_version": "postman",
}

# What the Postman service declares it streams: what the uploaded model was trained on.
SERVICE_INPUT = {"channels": CHANNELS, "fs": FS, "n_samples": SAMPLES, "kind": "epoch"}

# Run-unique names, so the collection can run again against the same database.
COLLECTION_PREREQUEST = [
    "if (!pm.collectionVariables.get('runId')) {",
    "  const run = Date.now().toString(36);",
    "  pm.collectionVariables.set('runId', run);",
    "  pm.collectionVariables.set('serviceName', 'pm-svc-' + run);",
    "  pm.collectionVariables.set('modelName', 'pm-model-' + run);",
    "  pm.collectionVariables.set('trainSet', 'pm-train-' + run);",
    "  pm.collectionVariables.set('testSet', 'pm-test-' + run);",
    "}",
]

# Rows of a synthetic ERP data set (a P300-like bump on label 1), made by a seeded PRNG in
# the pre-request script, so the collection stays small and the upload stays realistic.
ROWS_SCRIPT = [
    "let s = 12345;",
    "const rnd = () => {",
    "  s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648 - 0.5; };",
    f"const rows = []; const nCh = {len(CHANNELS)}, nS = {SAMPLES}, fs = {FS};",
    "for (let i = 0; i < 40; i++) {",
    "  const label = i % 2; const data = [];",
    "  for (let c = 0; c < nCh; c++) { const ch = [];",
    "    for (let t = 0; t < nS; t++) {",
    "      const bump = label ? 8 * Math.exp(-Math.pow((t / fs - 0.35) / 0.07, 2) / 2) : 0;",
    "      ch.push(Math.round((10 * rnd() + bump) * 100) / 100); }",
    "    data.push(ch); }",
    "  rows.push({data: data, label: label}); }",
    "pm.variables.set('uploadRows', JSON.stringify(rows));",
]


@dataclass
class Step:
    """One request of the collection: an OpenAPI operation plus what the flow needs."""

    method: str
    path: str
    name: str
    path_vars: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON value, or a raw string with {{variables}}
    form: list[dict[str, str]] | None = None
    expect: tuple[int, ...] | None = None  # default: the operation's documented 2xx
    tests: list[str] = field(default_factory=list)
    prerequest: list[str] = field(default_factory=list)
    check_fields: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def _set(var: str, expr: str) -> str:
    return f"pm.collectionVariables.set('{var}', {expr});"


def _eq(what: str, expr: str, var: str) -> str:
    return f"pm.test('{what}', () => pm.expect({expr}).to.eql(pm.variables.get('{var}')));"


def _ops(service: str) -> list[Step]:
    return [
        Step(
            "GET",
            "/health",
            f"{service}: health",
            tests=["pm.test('healthy', () => pm.expect(pm.response.json().status).to.eql('ok'));"],
        ),
        Step(
            "GET",
            "/metrics",
            f"{service}: Prometheus metrics",
            tests=[
                "pm.test('exposes request counters', () => "
                "pm.expect(pm.response.text()).to.include('neurostream_http_requests_total'));"
            ],
        ),
    ]


def _upload_version(name: str, var: str) -> Step:
    return Step(
        "POST",
        "/models/{name}/versions",
        name,
        form=[
            {"key": "artifact", "type": "file", "src": MODEL_FIXTURE},
            {"key": "metadata", "type": "text", "value": json.dumps(MODEL_METADATA)},
        ],
        tests=[
            "const v = pm.response.json();",
            _set(var, "v.version"),
            "pm.test('sha256 recorded', () => pm.expect(v.sha256).to.match(/^[0-9a-f]{64}$/));",
            _eq("model name", "v.model_name", "modelName"),
        ],
    )


def _alias(alias: str, var: str) -> Step:
    return Step(
        "PUT",
        "/models/{name}/aliases/{alias}",
        f"Point {alias} at a version",
        path_vars={"alias": alias},
        body=f'{{"version": {{{{{var}}}}}}}',
        tests=[
            f"pm.test('{alias} moved', () => pm.expect(pm.response.json().version)"
            f".to.eql(Number(pm.variables.get('{var}'))));"
        ],
    )


def _session_fallback(list_expr: str, attr: str) -> list[str]:
    """Adopt a session from a listing when none was given (``--env-var sessionId=...``)."""
    return [
        f"const found = {list_expr};",
        "if (!pm.variables.get('sessionId') && found.length) {",
        f"  {_set('sessionId', f'found[0].{attr}')}",
        "}",
        "pm.test('a session is known (stream one first)', () => "
        "pm.expect(pm.variables.get('sessionId')).to.be.a('string').and.not.empty);",
    ]


QUEUE_MANAGER = [
    *_ops("queue manager"),
    Step(
        "POST",
        "/services",
        "Create a service that declares its input",
        body={
            "name": "{{serviceName}}",
            "description": "created by the Postman collection",
            "input": SERVICE_INPUT,
        },
        tests=[
            _eq("service name", "pm.response.json().name", "serviceName"),
            "pm.test('input declared', () => pm.expect(pm.response.json().input.channels)"
            f".to.eql({json.dumps(CHANNELS)}));",
        ],
    ),
    Step(
        "GET",
        "/services",
        "List services",
        tests=[
            "pm.test('lists the new service', () => pm.expect(pm.response.json().map(s => s.name))"
            ".to.include(pm.variables.get('serviceName')));"
        ],
    ),
    Step(
        "GET",
        "/services/{name}",
        "Get the service",
        tests=[_eq("service name", "pm.response.json().name", "serviceName")],
    ),
    Step(
        "PUT",
        "/services/{name}",
        "Update the service description",
        body={"description": "updated by the Postman collection"},
        tests=[
            "pm.test('description updated', () => pm.expect(pm.response.json().description)"
            ".to.eql('updated by the Postman collection'));"
        ],
    ),
    _upload_version("Upload a model version (multipart)", "version"),
    _upload_version("Upload a second version (the challenger)", "challengerVersion"),
    Step(
        "GET",
        "/models",
        "List models",
        tests=[
            "pm.test('lists the model', () => pm.expect(pm.response.json().map(m => m.name))"
            ".to.include(pm.variables.get('modelName')));"
        ],
    ),
    Step(
        "GET",
        "/models/{name}",
        "Get the model",
        tests=[_eq("model name", "pm.response.json().name", "modelName")],
    ),
    Step(
        "GET",
        "/models/{name}/versions",
        "List the model's versions",
        tests=["pm.test('two versions', () => pm.expect(pm.response.json().length).to.eql(2));"],
    ),
    Step(
        "GET",
        "/models/{name}/versions/{version}",
        "Get a version",
        tests=[
            "pm.test('version number', () => pm.expect(pm.response.json().version)"
            ".to.eql(Number(pm.variables.get('version'))));"
        ],
    ),
    Step(
        "GET",
        "/models/{name}/versions/{version}/artifact",
        "Download the artifact",
        tests=[
            "pm.test('artifact bytes', () => pm.expect(pm.response.responseSize).to.be.above(0));"
        ],
    ),
    _alias("champion", "version"),
    _alias("challenger", "challengerVersion"),
    _alias("staging", "version"),
    Step(
        "GET",
        "/models/{name}/aliases",
        "List aliases",
        tests=[
            "pm.test('champion and challenger', () => pm.expect(pm.response.json()"
            ".map(a => a.alias)).to.include.members(['champion', 'challenger']));"
        ],
    ),
    Step(
        "GET",
        "/models/{name}/aliases/{alias}",
        "Get the champion alias",
        path_vars={"alias": "champion"},
    ),
    Step(
        "DELETE",
        "/models/{name}/aliases/{alias}",
        "Delete an alias",
        path_vars={"alias": "staging"},
    ),
    Step(
        "PUT",
        "/services/{name}/assign",
        "Assign the champion to the service",
        body={"model_name": "{{modelName}}", "ref": "champion"},
    ),
    Step(
        "POST",
        "/services/{name}/assign",
        "Assign with a shadow challenger",
        body={"model_name": "{{modelName}}", "ref": "champion", "shadow_ref": "challenger"},
    ),
    Step(
        "PUT",
        "/services/{name}/canary",
        "Start a canary: the challenger on 30 % of new sessions",
        body={
            "model_name": "{{modelName}}",
            "ref": "challenger",
            "share": 0.3,
            "rule": {"windows": 200, "min_estimated_balanced_accuracy": 0.6},
        },
        tests=[
            "const c = pm.response.json();",
            "pm.test('running on 30 %', () => "
            "pm.expect([c.status, c.share]).to.eql(['running', 0.3]));",
            "pm.test('the challenger', () => pm.expect(c.version)"
            ".to.eql(Number(pm.variables.get('challengerVersion'))));",
        ],
    ),
    Step(
        "GET",
        "/services/{name}/canary",
        "Get the canary",
        tests=["pm.test('running', () => pm.expect(pm.response.json().status).to.eql('running'));"],
    ),
    Step(
        "DELETE",
        "/services/{name}/canary",
        "Roll the canary back by hand",
        tests=[
            "pm.test('rolled back', () => pm.expect(pm.response.json().status)"
            ".to.eql('rolled_back'));"
        ],
    ),
    Step(
        "PUT",
        "/services/{name}",
        "Declare an input the served model cannot meet (409)",
        body={"input": {**SERVICE_INPUT, "fs": 2 * FS}},
        expect=(409,),
        check_fields=False,
        tests=[
            "pm.test('the mismatch is named', () => pm.expect(pm.response.json().detail)"
            f".to.include('was trained at {FS:g} Hz'));"
        ],
    ),
    Step(
        "GET",
        "/workers",
        "List workers",
        tests=["pm.test('an array', () => pm.expect(pm.response.json()).to.be.an('array'));"],
    ),
    Step(
        "GET",
        "/jobs",
        "List prediction jobs",
        query={"limit": "5"},
        tests=_session_fallback("pm.response.json().items", "session_id"),
    ),
    Step(
        "GET",
        "/sessions/{session_id}/summary",
        "Summarise a session",
        tests=[_eq("session id", "pm.response.json().session_id", "sessionId")],
    ),
    Step("POST", "/services", "Create a throwaway service", body={"name": "{{serviceName}}-tmp"}),
    Step(
        "DELETE",
        "/services/{name}",
        "Delete the throwaway service",
        path_vars={"name": "{{serviceName}}-tmp"},
    ),
]

_UPLOAD = (
    '{{"name": "{{{{{var}}}}}", "kind": "{kind}", "fs": '
    + str(FS)
    + ', "channels": '
    + json.dumps(CHANNELS)
    + ', "description": "synthetic ERP rows from the Postman collection", '
    '"rows": {{{{uploadRows}}}}}}'
)

ML_DATA_API = [
    *_ops("ml data api"),
    Step(
        "GET",
        "/sessions",
        "List sessions",
        query={"limit": "20"},
        tests=_session_fallback("pm.response.json().filter(s => s.labelled > 0)", "session_id"),
    ),
    Step(
        "GET",
        "/sessions/{session_id}",
        "Get a session",
        tests=[
            _eq("session id", "pm.response.json().session_id", "sessionId"),
            "const sess = pm.response.json();",
            _set("dataService", "sess.service"),
            _set("sessionStart", "sess.started_at || new Date(Date.now() - 3600e3).toISOString()"),
            _set("sessionEnd", "sess.ended_at || new Date().toISOString()"),
        ],
    ),
    Step(
        "GET",
        "/predictions",
        "Predictions of the session",
        query={"session_id": "{{sessionId}}", "limit": "10"},
    ),
    Step(
        "GET",
        "/windows",
        "Archived windows of the session",
        query={"session_id": "{{sessionId}}", "limit": "5", "include_data": "false"},
    ),
    Step(
        "POST",
        "/labels",
        "Post ground-truth labels",
        body=[{"session_id": "{{sessionId}}", "seq": 0, "label": 0, "source": "postman"}],
        tests=["pm.test('stored', () => pm.expect(pm.response.json().stored).to.be.at.least(0));"],
    ),
    Step(
        "GET",
        "/labels",
        "Labels of the session",
        query={"session_id": "{{sessionId}}", "limit": "10"},
    ),
    Step(
        "POST",
        "/datasets",
        "Snapshot a dataset from labelled sessions",
        body={
            "name": "pm-sessions-{{runId}}",
            "kind": "training",
            "session_ids": ["{{sessionId}}"],
        },
        tests=["pm.test('rows', () => pm.expect(pm.response.json().n_rows).to.be.above(0));"],
    ),
    Step(
        "POST",
        "/datasets/upload",
        "Upload a training dataset (JSON rows)",
        body=_UPLOAD.format(var="trainSet", kind="training"),
        prerequest=ROWS_SCRIPT,
        tests=["pm.test('40 rows', () => pm.expect(pm.response.json().n_rows).to.eql(40));"],
    ),
    Step(
        "POST",
        "/datasets/upload",
        "Upload a testing dataset (JSON rows)",
        body=_UPLOAD.format(var="testSet", kind="testing"),
        prerequest=ROWS_SCRIPT,
        tests=["pm.test('40 rows', () => pm.expect(pm.response.json().n_rows).to.eql(40));"],
    ),
    Step(
        "POST",
        "/datasets/upload/npz",
        "Upload a dataset (.npz, multipart)",
        form=[
            {"key": "file", "type": "file", "src": NPZ_FIXTURE},
            {"key": "name", "type": "text", "value": "pm-npz-{{runId}}"},
            {"key": "kind", "type": "text", "value": "training"},
            {"key": "fs", "type": "text", "value": str(FS)},
            {"key": "channels", "type": "text", "value": ",".join(CHANNELS)},
        ],
        tests=[_set("datasetId", "pm.response.json().id")],
    ),
    Step(
        "GET",
        "/datasets",
        "List datasets",
        query={"name": "{{trainSet}}"},
        tests=["pm.test('one version', () => pm.expect(pm.response.json().length).to.eql(1));"],
    ),
    Step(
        "GET",
        "/datasets/{dataset_id}",
        "Get a dataset",
        tests=[
            "pm.test('id', () => pm.expect(pm.response.json().id)"
            ".to.eql(Number(pm.variables.get('datasetId'))));"
        ],
    ),
    Step(
        "GET",
        "/datasets/{dataset_id}/export",
        "Export a dataset (CSV)",
        query={"format": "csv"},
        tests=[
            "pm.test('csv', () => pm.expect(pm.response.text().split('\\n').length)"
            ".to.be.above(1));"
        ],
    ),
]

_JOB = {
    "family": "sklearn-lda",
    "training_dataset": "{{trainSet}}",
    "testing_dataset": "{{testSet}}",
    "model_name": "{{modelName}}",
    "service": "{{serviceName}}",
}

RETRAINING_API = [
    *_ops("retraining api"),
    Step(
        "POST",
        "/jobs",
        "Start a retraining job",
        body=_JOB,
        tests=[_set("jobId", "pm.response.json().job_id")],
    ),
    Step(
        "GET",
        "/jobs",
        "List jobs of the model",
        query={"model_name": "{{modelName}}"},
        tests=[
            "pm.test('the job', () => pm.expect(pm.response.json().map(j => j.id))"
            ".to.include(Number(pm.variables.get('jobId'))));"
        ],
    ),
    Step(
        "GET",
        "/jobs/{job_id}",
        "Get the job",
        tests=[
            "pm.test('id', () => pm.expect(pm.response.json().id)"
            ".to.eql(Number(pm.variables.get('jobId'))));"
        ],
    ),
    Step(
        "GET",
        "/jobs/{job_id}/trials",
        "Trials of the job",
        tests=["pm.test('an array', () => pm.expect(pm.response.json()).to.be.an('array'));"],
    ),
    Step(
        "POST",
        "/jobs",
        "Start a job to cancel",
        body={**_JOB, "seed": 1},
        tests=[_set("cancelJobId", "pm.response.json().job_id")],
    ),
    Step(
        "POST",
        "/jobs/{job_id}/cancel",
        "Cancel the job",
        path_vars={"job_id": "{{cancelJobId}}"},
        expect=(200, 409),
        check_fields=False,
        tests=[
            "if (pm.response.code === 200) {",
            "  pm.test('cancelled', () => pm.expect(pm.response.json().id)"
            ".to.eql(Number(pm.variables.get('cancelJobId'))));",
            "} else {",
            "  pm.test('already finished', () => pm.expect(pm.response.json().detail)"
            ".to.be.a('string'));",
            "}",
        ],
    ),
    Step(
        "POST",
        "/models/{name}/promote",
        "Promote the challenger",
        body={"from_alias": "challenger", "to_alias": "champion"},
        tests=[_eq("model", "pm.response.json().model_name", "modelName")],
    ),
    Step(
        "GET",
        "/models/{name}/versions/{version}/importance",
        "Permutation importance",
        query={"dataset": "{{testSet}}", "repeats": "2"},
    ),
    Step(
        "POST",
        "/triggers",
        "Create a (disabled) schedule trigger",
        body={
            "model_name": "{{modelName}}",
            "service": "{{serviceName}}",
            "kind": "schedule",
            "every_s": 86400,
            "enabled": False,
            "job": {
                "family": "sklearn-lda",
                "training_dataset": "{{trainSet}}",
                "testing_dataset": "{{testSet}}",
            },
        },
        tests=[_set("triggerId", "pm.response.json().id")],
    ),
    Step(
        "GET",
        "/triggers",
        "List triggers",
        tests=[
            "pm.test('the trigger', () => pm.expect(pm.response.json().map(t => t.id))"
            ".to.include(Number(pm.variables.get('triggerId'))));"
        ],
    ),
    Step("GET", "/triggers/{trigger_id}", "Get the trigger"),
    Step("DELETE", "/triggers/{trigger_id}", "Delete the trigger"),
]

_RANGE = {"current_start": "{{sessionStart}}", "current_end": "{{sessionEnd}}"}
_SVC = {"service": "{{dataService}}"}
_RULE = {
    "name": "pm-rule-{{runId}}",
    "service": "{{dataService}}",
    "metric": "drift_share",
    "comparison": ">",
    "threshold": 0.9,
    "window_s": 60,
    "enabled": False,
}

# Monitoring reads the streamed session's service (``dataService``, from the ML data API).
MONITORING_API = [
    *_ops("monitoring api"),
    Step("GET", "/drift/references/{service}", "Get the drift reference"),
    Step(
        "PUT",
        "/drift/references/{service}",
        "Use the session as the reference",
        body={"start": "{{sessionStart}}", "end": "{{sessionEnd}}"},
        tests=["pm.test('range', () => pm.expect(pm.response.json().kind).to.eql('range'));"],
    ),
    Step(
        "GET",
        "/drift/evaluate",
        "Evaluate drift of a time range",
        query={**_SVC, **_RANGE},
        tests=[
            "pm.test('compared windows', () => pm.expect(pm.response.json().n_current)"
            ".to.be.above(0));"
        ],
    ),
    Step("GET", "/drift/report", "Drift report (JSON)", query={**_SVC, **_RANGE}),
    Step(
        "GET",
        "/drift/report.html",
        "Drift report (HTML)",
        query={**_SVC, **_RANGE},
        tests=["pm.test('html', () => pm.expect(pm.response.text()).to.include('<'));"],
    ),
    Step("POST", "/drift/evaluate/{service}", "Evaluate now and store the metrics"),
    Step("GET", "/drift/metrics", "Stored drift metrics", query=_SVC),
    Step("GET", "/predictions/distribution", "Prediction distribution", query=_SVC),
    Step("GET", "/performance", "Performance against ground truth", query=_SVC),
    Step("GET", "/quality/sessions/{session_id}", "Data quality of the session"),
    Step(
        "POST",
        "/alerts/rules",
        "Create a (disabled) alert rule",
        body=_RULE,
        tests=[_set("ruleId", "pm.response.json().id")],
    ),
    Step(
        "GET",
        "/alerts/rules",
        "List alert rules",
        tests=[
            "pm.test('the rule', () => pm.expect(pm.response.json().map(r => r.id))"
            ".to.include(Number(pm.variables.get('ruleId'))));"
        ],
    ),
    Step("GET", "/alerts/rules/{rule_id}", "Get the rule"),
    Step(
        "PUT",
        "/alerts/rules/{rule_id}",
        "Update the rule",
        body={**_RULE, "threshold": 0.95},
        tests=["pm.test('threshold', () => pm.expect(pm.response.json().threshold).to.eql(0.95));"],
    ),
    Step("GET", "/alerts", "Alerts of the service", query=_SVC),
    Step("DELETE", "/alerts/rules/{rule_id}", "Delete the rule"),
    Step("GET", "/overview", "Overview of the service", query=_SVC),
    Step(
        "GET",
        "/services/{name}/canary",
        "Canary against champion (its latest; 404 when it never ran one)",
        expect=(200, 404),
        check_fields=False,
        tests=[
            "const r = pm.response.json();",
            "if (pm.response.code === 404) {",
            "  pm.test('names the missing canary', () => pm.expect(r.detail)"
            ".to.include('has no canary'));",
            "} else {",
            "  pm.test('both arms and a verdict', () => pm.expect(r)"
            ".to.include.keys('canary', 'champion', 'verdict', 'verdict_reasons'));",
            "}",
        ],
    ),
    Step(
        "GET",
        "/dashboard",
        "Dashboard (HTML)",
        check_fields=False,
        tests=["pm.test('html', () => pm.expect(pm.response.text()).to.include('<'));"],
    ),
]

FLOWS: dict[str, list[Step]] = {
    "monitoring_api": MONITORING_API,
    "queue_manager": QUEUE_MANAGER,
    "ml_data_api": ML_DATA_API,
    "retraining_api": RETRAINING_API,
}

# Path parameters -> the variable (or literal) a request uses when its step names none.
PATH_DEFAULTS = {
    ("/services/", "name"): "{{serviceName}}",
    ("/models/", "name"): "{{modelName}}",
    ("", "version"): "{{version}}",
    ("", "alias"): "champion",
    ("", "session_id"): "{{sessionId}}",
    ("", "dataset_id"): "{{datasetId}}",
    ("", "job_id"): "{{jobId}}",
    ("", "trigger_id"): "{{triggerId}}",
    ("", "service"): "{{dataService}}",
    ("", "rule_id"): "{{ruleId}}",
}
