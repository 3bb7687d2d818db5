"""docker-compose.yml as `docker-compose config` resolves it (no Docker engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = (
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "NEUROSTREAM_API_TOKEN",
    "GRAFANA_ADMIN_PASSWORD",
)
HTTP = {"queue_manager": 8000, "ml_data_api": 8001, "monitoring_api": 8002, "retraining_api": 8003}


def _example_env() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def _config(env_file: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: scripts/setup installs it")
        pytest.skip("docker-compose not installed (scripts/setup installs it)")
    return subprocess.run(
        [exe, "-f", "docker-compose.yml", "--env-file", str(env_file), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in _example_env()},
    )


@pytest.fixture(scope="module")
def config() -> dict:
    proc = _config(ROOT / ".env.example")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_every_part_is_a_service(config: dict) -> None:
    assert {
        "timescaledb",
        "rabbitmq",
        "workers",
        "producer",
        "prometheus",
        "grafana",
        *HTTP,
    } <= set(config["services"])
    assert config["services"]["timescaledb"]["image"].startswith("timescale/timescaledb")
    assert config["services"]["rabbitmq"]["image"] == "rabbitmq:3-management"
    for name in ("timescaledb", "rabbitmq"):
        assert "test" in config["services"][name]["healthcheck"]


def test_workers_run_as_replicas_with_metrics_on_a_fixed_port(config: dict) -> None:
    workers = config["services"]["workers"]
    assert workers["deploy"]["replicas"] == 2
    assert workers["environment"]["NEUROSTREAM_WORKER_METRICS_PORT"] == "9100"
    assert "ports" not in workers and "container_name" not in workers  # scalable
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["workers"]["dns_sd_configs"][0]["names"] == ["workers"]
    assert jobs["workers"]["dns_sd_configs"][0]["port"] == 9100
    targets = set(jobs["services"]["static_configs"][0]["targets"])
    assert targets == {f"{name}:{port}" for name, port in HTTP.items()}


def test_services_listen_on_their_ports_in_production_mode(config: dict) -> None:
    prefixes = {
        "queue_manager": "QM",
        "ml_data_api": "DATA",
        "monitoring_api": "MON",
        "retraining_api": "RT",
    }
    for name, port in HTTP.items():
        svc = config["services"][name]
        env = svc["environment"]
        assert env["NEUROSTREAM_MODE"] == "production"
        assert env[f"NEUROSTREAM_{prefixes[name]}_HOST"] == "0.0.0.0"
        assert env[f"NEUROSTREAM_{prefixes[name]}_PORT"] == str(port)
        assert svc["command"][:2] == ["python", "-m"] and svc["command"][2] == name
    producer = config["services"]["producer"]["environment"]
    assert producer["NEUROSTREAM_PRODUCER_BOARD"] == "synthetic"
    grafana = config["services"]["grafana"]["volumes"]
    assert any(
        str(v).startswith(str(ROOT / "deploy/grafana/provisioning"))
        or "deploy/grafana/provisioning" in str(v)
        for v in grafana
    )


def test_secrets_come_only_from_the_env_file(config: dict) -> None:
    example = _example_env()
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for key in SECRETS:
        assert example[key] not in compose_text, f"{key} is hard-coded in docker-compose.yml"
        assert f"${{{key}:?" in compose_text, f"{key} must be required with ${{{key}:?...}}"
    # ...and the resolved config carries the values from the env file.
    core = config["services"]["queue_manager"]["environment"]
    assert core["NEUROSTREAM_API_TOKEN"] == example["NEUROSTREAM_API_TOKEN"]
    assert example["POSTGRES_PASSWORD"] in core["NEUROSTREAM_DATABASE_URL"]


def test_a_missing_secret_fails_loudly(tmp_path: Path) -> None:
    env = tmp_path / "incomplete.env"
    env.write_text(
        "".join(f"{k}={v}\n" for k, v in _example_env().items() if k != "POSTGRES_PASSWORD")
    )
    proc = _config(env)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr
