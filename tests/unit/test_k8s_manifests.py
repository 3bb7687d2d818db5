"""The Kubernetes manifests (deploy/k8s) render, validate against their schemas and agree
with the code.

Every overlay is rendered with ``kubectl kustomize``; each built-in object is validated by
kubernetes-validate against Kubernetes 1.30 in strict mode (an unknown field fails), each
KEDA object by ``deploy/k8s/validate-keda.cjs`` with ``@kubernetes-models/keda``. Then the
values: probes on the ports the services listen on, commands as in docker-compose.yml, env
names that the pydantic settings read, the ScaledObject on the workers and their queue, and
no placeholder secret in production. No cluster is needed; without kubectl or node the
test skips and says which is missing (a missing npm package fails: `npm ci` installs it).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from ml_data_api.settings import DataApiSettings
from monitoring_api.settings import MonitoringSettings
from neurostream import topology
from neurostream.settings import CoreSettings
from producer.settings import ProducerSettings
from queue_manager.settings import QueueManagerSettings
from retraining_api.settings import RetrainingSettings
from workers.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
K8S_VERSION = "1.30"
PLACEHOLDER = "REPLACE_ME"
KEDA_SCRIPT = K8S / "validate-keda.cjs"

# Deployment name -> (compose service, settings class, its env prefix for HOST/PORT).
APIS: dict[str, tuple[str, type[BaseSettings]]] = {
    "queue-manager": ("queue_manager", QueueManagerSettings),
    "ml-data-api": ("ml_data_api", DataApiSettings),
    "monitoring-api": ("monitoring_api", MonitoringSettings),
    "retraining-api": ("retraining_api", RetrainingSettings),
}
SETTINGS: tuple[type[BaseSettings], ...] = (
    CoreSettings,
    QueueManagerSettings,
    DataApiSettings,
    MonitoringSettings,
    RetrainingSettings,
    WorkerSettings,
    ProducerSettings,
)

Obj = dict[str, Any]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: the manifests cannot be rendered/validated")
    return path


def _render(overlay: str) -> list[Obj]:
    out = subprocess.run(
        [_tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    )
    return [o for o in yaml.safe_load_all(out.stdout) if o]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {overlay: _render(overlay) for overlay in OVERLAYS}


def _keda(objects: list[Obj]) -> list[dict[str, Any]]:
    """Run the node validator over ``objects``; its per-object results."""
    node = _tool("node")
    if not (ROOT / "node_modules" / "@kubernetes-models" / "keda").is_dir():
        pytest.fail("node_modules lacks @kubernetes-models/keda: run `npm ci` (package-lock.json)")
    out = subprocess.run(
        [node, str(KEDA_SCRIPT)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    results: list[dict[str, Any]] = json.loads(out.stdout)
    assert out.returncode == (0 if all(r["ok"] for r in results) else 1), out.stderr
    return results


def _of(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _is_keda(obj: Obj) -> bool:
    return str(obj["apiVersion"]).startswith("keda.sh/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_the_whole_system(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    kinds = sorted(o["kind"] for o in objects)
    expected = {
        "ConfigMap": 1,
        "Deployment": 5,
        "Job": 1,
        "PodDisruptionBudget": 5,
        "ScaledObject": 1,
        "Service": 5,
        "TriggerAuthentication": 1,
        "Secret": 1 if overlay == "dev" else 0,
    }
    assert {k: kinds.count(k) for k in expected} == expected
    assert len(objects) == sum(expected.values())
    assert {o["metadata"]["namespace"] for o in objects} == {
        "neurostream-dev" if overlay == "dev" else "neurostream"
    }
    assert set(_of(objects, "Deployment")) == {*APIS, "workers"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_objects_validate_strictly(rendered: dict[str, list[Obj]], overlay: str) -> None:
    standard = [o for o in rendered[overlay] if not _is_keda(o)]
    for obj in standard:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert len(standard) == (18 if overlay == "dev" else 17)


def test_kubernetes_validate_rejects_an_unknown_field_and_a_wrong_type(
    rendered: dict[str, list[Obj]],
) -> None:
    deployment = _of(rendered["production"], "Deployment")["workers"]
    unknown = copy.deepcopy(deployment)
    _container(unknown)["livenesProbe"] = {"httpGet": {"path": "/health", "port": 9100}}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(unknown, K8S_VERSION, strict=True)
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="three"):
        kubernetes_validate.validate(wrong, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_objects_validate_against_kedas_schema(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    results = _keda([o for o in rendered[overlay] if _is_keda(o)])
    assert [(r["kind"], r["name"], r["ok"]) for r in results] == [
        ("ScaledObject", "workers", True),
        ("TriggerAuthentication", "workers-rabbitmq", True),
    ]


def test_keda_validator_rejects_a_broken_scaled_object(rendered: dict[str, list[Obj]]) -> None:
    good = _of(rendered["production"], "ScaledObject")["workers"]
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["minReplicaCount"] = "three"
    number_value = copy.deepcopy(good)
    number_value["spec"]["triggers"][0]["metadata"]["value"] = 500  # KEDA wants strings
    no_target = copy.deepcopy(good)
    del no_target["spec"]["scaleTargetRef"]
    results = _keda([good, wrong_type, number_value, no_target])
    assert [r["ok"] for r in results] == [True, False, False, False]
    assert "minReplicaCount must be integer" in results[1]["error"]
    assert "metadata/value must be string" in results[2]["error"]
    assert "scaleTargetRef" in results[3]["error"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_services_use_the_ports_the_services_listen_on(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployments, services = _of(objects, "Deployment"), _of(objects, "Service")
    config = _of(objects, "ConfigMap")["neurostream-settings"]["data"]
    ports: dict[str, int] = {}
    for name, (_, cls) in APIS.items():
        container = _container(deployments[name])
        prefix = cls.model_config["env_prefix"]
        env = _env(container)
        ports[name] = int(env[f"{prefix}PORT"])
        assert ports[name] == cls.model_fields["port"].default  # 8000..8003, as compose
        assert env[f"{prefix}HOST"] == "0.0.0.0"
    ports["workers"] = int(config["NEUROSTREAM_WORKER_METRICS_PORT"])
    assert ports == {
        "queue-manager": 8000,
        "ml-data-api": 8001,
        "monitoring-api": 8002,
        "retraining-api": 8003,
        "workers": 9100,
    }
    for name, port in ports.items():
        container = _container(deployments[name])
        (declared,) = container["ports"]
        assert declared["containerPort"] == port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert (get["path"], get["port"]) == ("/health", declared["name"]), (name, probe)
        (service_port,) = services[name]["spec"]["ports"]
        assert (service_port["port"], service_port["targetPort"]) == (port, declared["name"])
        assert services[name]["spec"]["selector"] == {"app.kubernetes.io/name": name}
    assert services["workers"]["spec"]["clusterIP"] == "None"  # one DNS record per replica


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_has_resources_probes_and_a_locked_down_security_context(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    pods = [(d["spec"]["template"], True) for d in _of(objects, "Deployment").values()]
    pods += [(j["spec"]["template"], False) for j in _of(objects, "Job").values()]
    assert len(pods) == 6
    for pod, serves in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert (sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, False)
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"/tmp", "/home/neurostream"}
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, container["name"]
        if serves:
            assert {"readinessProbe", "livenessProbe"} <= set(container)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_and_env_are_what_compose_runs(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    objects = rendered[overlay]
    deployments = _of(objects, "Deployment")
    config = _of(objects, "ConfigMap")["neurostream-settings"]["data"]
    secret_keys = {"NEUROSTREAM_API_TOKEN", "NEUROSTREAM_DATABASE_URL", "NEUROSTREAM_AMQP_URL"}
    for name, compose_name in {**{k: v[0] for k, v in APIS.items()}, "workers": "workers"}.items():
        container = _container(deployments[name])
        assert container["command"] == compose[compose_name]["command"]
        k8s_env = set(_env(container)) | set(config) | secret_keys
        assert set(compose[compose_name]["environment"]) <= k8s_env, name
        refs = [next(iter(e.values()))["name"] for e in container["envFrom"]]
        assert refs == ["neurostream-settings", "neurostream-secrets"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_env_name_is_a_settings_field(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    names = set(_of(objects, "ConfigMap")["neurostream-settings"]["data"])
    for secret in _of(objects, "Secret").values():
        names |= {k for k in secret["stringData"] if not k.startswith("KEDA_")}
    for deployment in _of(objects, "Deployment").values():
        names |= set(_env(_container(deployment)))

    def read_by(name: str) -> list[str]:
        return [
            cls.__name__
            for cls in SETTINGS
            if name.startswith(prefix := cls.model_config["env_prefix"])
            and name[len(prefix) :].lower() in cls.model_fields
        ]

    unread = sorted(n for n in names if not read_by(n))
    assert unread == []
    assert read_by("NEUROSTREAM_WORKER_SERVICE") == ["WorkerSettings"]
    assert read_by("NEUROSTREAM_QM_PROT") == []  # a typo is caught
    # ConfigMap 6, Secret 3 (dev only), HOST and PORT of 4 APIs, the workers' service.
    assert len(names) == (18 if overlay == "dev" else 15)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_object_scales_the_workers_on_their_queue(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    workers = _of(objects, "Deployment")["workers"]
    service = _env(_container(workers))["NEUROSTREAM_WORKER_SERVICE"]
    assert service == "p300"
    # The service is visible where alerts and dashboards select on it.
    assert workers["metadata"]["labels"]["neurostream.io/service"] == service
    assert workers["spec"]["template"]["metadata"]["labels"]["neurostream.io/service"] == service
    assert "replicas" not in workers["spec"]  # KEDA's HPA owns it
    scaled = _of(objects, "ScaledObject")["workers"]["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "workers",
    }
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    meta = trigger["metadata"]
    assert meta["queueName"] == topology.service_queue(service) == "svc.p300"
    assert (meta["mode"], meta["protocol"], int(meta["value"])) == ("QueueLength", "http", 1500)
    # A replica's own prefetch must not read as a queue to scale for.
    assert int(meta["value"]) > WorkerSettings().prefetch
    auth = _of(objects, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"], ref["key"]) == (
        "host",
        "neurostream-secrets",
        "KEDA_RABBITMQ_HOST",
    )
    job = _container(_of(objects, "Job")["neurostream-bootstrap"])
    assert job["command"] == ["neurostream", "train", "--service", service]
    if overlay == "dev":
        host = _of(objects, "Secret")["neurostream-secrets"]["stringData"][ref["key"]]
        assert host.startswith("http://") and host.endswith(":15672/") and "," not in host
        # Scale-to-zero: idle -> 0; KEDA refuses idleReplicaCount >= minReplicaCount.
        counts = (scaled["idleReplicaCount"], scaled["minReplicaCount"], scaled["maxReplicaCount"])
        assert counts == (0, 1, 2)
        assert scaled["cooldownPeriod"] == 600
    else:
        assert "idleReplicaCount" not in scaled
        assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (3, 20)


def test_production_is_production_mode_with_no_placeholder_and_a_pinned_image(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["production"]
    assert PLACEHOLDER not in json.dumps(objects)
    assert _of(objects, "Secret") == {}  # created from the secret store, never rendered
    config = _of(objects, "ConfigMap")["neurostream-settings"]["data"]
    assert config["NEUROSTREAM_MODE"] == "production"
    assert not [k for k in config if any(w in k for w in ("TOKEN", "URL", "PASSWORD"))]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {
        c["image"]
        for kind in ("Deployment", "Job")
        for o in _of(objects, kind).values()
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"registry.example.org/neurostream:{version}"}
    pdbs = {n: p["spec"] for n, p in _of(objects, "PodDisruptionBudget").items()}
    assert {n: s.get("minAvailable") for n, s in pdbs.items()} == {
        "queue-manager": 1,
        "ml-data-api": 1,
        "retraining-api": 1,
        "workers": 2,
        "monitoring-api": None,  # one replica (its evaluator): minAvailable 1 would block drains
    }
    assert pdbs["monitoring-api"]["maxUnavailable"] == 1
    replicas = {n: d["spec"].get("replicas") for n, d in _of(objects, "Deployment").items()}
    assert replicas == {
        "queue-manager": 2,
        "ml-data-api": 2,
        "retraining-api": 2,
        "monitoring-api": 1,
        "workers": None,
    }
    workers = _container(_of(objects, "Deployment")["workers"])["resources"]
    assert workers["requests"] == workers["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_dev_secret_is_a_template_production_mode_refuses(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["dev"]
    assert _of(objects, "ConfigMap")["neurostream-settings"]["data"]["NEUROSTREAM_MODE"] == "dev"
    values = _of(objects, "Secret")["neurostream-secrets"]["stringData"]
    assert sorted(k for k, v in values.items() if PLACEHOLDER in v) == sorted(values)
    token = values["NEUROSTREAM_API_TOKEN"]
    CoreSettings(mode="dev", api_token=token)
    with pytest.raises(ValueError, match="NEUROSTREAM_API_TOKEN must be set"):
        CoreSettings(mode="production", api_token=token)
