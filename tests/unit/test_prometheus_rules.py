"""The operators' alert rules (deploy/prometheus/rules) under ``promtool``: they parse, the
compose config that loads them is valid, and each alert fires on its input series in
deploy/prometheus/tests while a service scaled to zero with an empty queue stays quiet.

``promtool`` comes with Debian's ``prometheus`` package (scripts/setup installs it); the
workers dashboard's queries run against a real Prometheus in
tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy/prometheus"
GRAFANA = ROOT / "deploy/grafana/provisioning"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install prometheus (scripts/setup)"
)
ALERTS = {
    "NeurostreamQueueDepthGrowing",
    "NeurostreamWorkerHeartbeatsMissing",
    "NeurostreamDeadLetterRate",
    "NeurostreamWriteRetries",
    "NeurostreamModelRefused",
    "NeurostreamDriftAlert",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "rules/neurostream.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_each_alert_says_how_long_how_bad_and_what_to_do() -> None:
    found = rules()
    assert {r["alert"] for r in found} == ALERTS
    for rule in found:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, rule["alert"]


def test_every_alert_has_a_case_that_fires_it() -> None:
    doc = yaml.safe_load((PROM / "tests/neurostream_test.yml").read_text())
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == ALERTS


@needs_promtool
def test_promtool_checks_the_rules_and_the_config_that_loads_them() -> None:
    checked = promtool("check", "rules", "rules/neurostream.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 1 rule files found" in config.stdout


@needs_promtool
def test_promtool_fires_each_alert_on_its_input_series() -> None:
    tested = promtool("test", "rules", "tests/neurostream_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout and "FAILED" not in tested.stdout


def test_the_dashboard_reads_the_provisioned_prometheus_datasource() -> None:
    doc = yaml.safe_load((GRAFANA / "datasources/prometheus.yml").read_text())
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus"
    dash = json.loads((GRAFANA / "dashboards/neurostream-workers.json").read_text())
    used = {p["datasource"]["uid"] for p in dash["panels"]}
    used |= {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]}
    assert used == {source["uid"]}
    pg = yaml.safe_load((GRAFANA / "datasources/postgres.yml").read_text())
    assert source["uid"] not in {s["uid"] for s in pg["datasources"]}
    # Provisioned from the same folder as the drift dashboards, with a uid of its own.
    other = json.loads((GRAFANA / "dashboards/neurostream-monitoring.json").read_text())
    assert dash["uid"] != other["uid"]
