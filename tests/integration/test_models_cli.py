"""``neurostream models ...`` against a real queue manager over HTTP, with a token.

The queue manager (the session's ``qm`` fixture) runs under uvicorn in a thread on a free
port, against the test session's scratch PostgreSQL database and RabbitMQ vhost; the
commands run as the
installed console script in a subprocess with only ``--url``/``--token`` (or the
environment) pointing them at it, as they would against a remote deployment. What the
commands print is checked against what the API then holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import onnxruntime
import pytest
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from neurostream import registry
from neurostream.models.serving import ServingModel
from neurostream.models.training import TrainedModel, train_model
from tests.factories import FS, synthetic_p300, unique

pytestmark = pytest.mark.integration
NEUROSTREAM = Path(sys.executable).with_name("neurostream")
CHANNELS = ["TP9", "AF7", "AF8", "TP10"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lda() -> TrainedModel:
    x, y = synthetic_p300()
    return train_model("sklearn-lda", x, y, FS)


@pytest.fixture(scope="module")
def eegnet() -> TrainedModel:
    x, y = synthetic_p300()
    return train_model("torch-eegnet", x, y, FS, model_params={"epochs": 2})


def neurostream(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEUROSTREAM_")}
    return subprocess.run(
        [str(NEUROSTREAM), *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def api(qm: str, path: str) -> Any:
    resp = httpx.get(f"{qm}{path}", timeout=30)
    resp.raise_for_status()
    return resp.json()


def write_lda(tmp_path: Path, lda: TrainedModel) -> tuple[Path, Path]:
    artifact, signature = tmp_path / "lda.skops", tmp_path / "signature.json"
    artifact.write_bytes(lda.artifact)
    signature.write_text(json.dumps(lda.input_spec))
    return artifact, signature


def push_lda(qm: str, token: str, tmp_path: Path, lda: TrainedModel, name: str, *extra: str):
    artifact, signature = write_lda(tmp_path, lda)
    return neurostream(
        *("models", "push", str(artifact), "--name", name, "--family", "sklearn-lda"),
        *("--pipeline", "erp@1", "--signature", str(signature)),
        *("--feature-params", json.dumps(lda.feature_params)),
        *("--model-params", json.dumps(lda.model_params)),
        *("--url", qm, "--token", token),
        *extra,
        cwd=tmp_path,
    )


def test_push_list_alias_assign_over_http(qm, token, lda, tmp_path):
    name, service = unique("cli-lda"), unique("svc")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"cv": {"roc_auc": 0.875, "balanced_accuracy": 0.8125}}))
    first = push_lda(
        qm, token, tmp_path, lda, name,
        *("--metrics", str(metrics), "--alias", "champion", "--assign", service),
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    sha = hashlib.sha256(lda.artifact).hexdigest()
    assert 1000 < len(lda.artifact) < 1_000_000  # shown in kB
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"registered {name} v1 (version id ")
    assert lines[0].endswith(
        f"): sklearn-lda on erp@1, {len(lda.artifact) / 1000:.1f} kB, sha256 {sha}"
    )
    assert lines[1] == "  signature: 4 ch x 200 samples at 250 Hz, uV"
    assert lines[2] == "  alias champion -> v1"
    assert lines[3].startswith(f"  service {service} (created) now serves {name}:champion")
    assert lines[4] == f"next: stream to it with `neurostream produce --service {service}`"

    version = api(qm, f"/models/{name}/versions/1")
    assert version["sha256"] == sha and version["artifact_size"] == len(lda.artifact)
    assert version["metrics"] == {"cv": {"roc_auc": 0.875, "balanced_accuracy": 0.8125}}
    assert version["feature_params"] == lda.feature_params
    assert version["input_spec"]["n_samples"] == 200
    svc = api(qm, f"/services/{service}")
    assert (svc["model_name"], svc["model_ref"]) == (name, "champion")
    assert svc["serving_version_id"] == version["id"]

    second = push_lda(qm, token, tmp_path, lda, name)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == (
        f"next: neurostream models alias {name} champion 2, then "
        f"neurostream models assign SERVICE champion --model {name}"
    )

    listed = neurostream("models", "list", "--url", qm, cwd=tmp_path)  # reads need no token
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name))
    assert row.split() == [name, "sklearn-lda", "2", "v2", "champion=v1"]

    detail = neurostream("models", "list", "--name", name, "--url", qm, cwd=tmp_path)
    assert detail.returncode == 0, detail.stderr
    out = detail.stdout.splitlines()
    assert out[0] == f"{name}: 2 version(s)"  # newest first
    assert out[1].startswith("  v2  sklearn-lda on erp@1  ")
    assert out[3] == "      metrics: no metrics"
    assert out[4].startswith("  v1 [champion]  sklearn-lda on erp@1  ")
    assert out[4].endswith(f"{len(lda.artifact) / 1000:.1f} kB  sha256 {sha[:12]}")
    assert out[5] == "      signature: 4 ch x 200 samples at 250 Hz, uV"
    assert out[6] == "      metrics: cv roc_auc 0.875  cv balanced_accuracy 0.812"

    moved = neurostream(
        "models", "alias", name, "champion", "2", "--url", qm, "--token", token, cwd=tmp_path
    )
    assert moved.returncode == 0, moved.stderr
    v2 = api(qm, f"/models/{name}/versions/2")
    assert moved.stdout.splitlines() == [
        f"{name}: champion -> v2 (version id {v2['id']}); services following it told: {service}"
    ]
    assert api(qm, f"/services/{service}")["serving_version_id"] == v2["id"]

    # The token from the environment, the URL from NEUROSTREAM_QM_URL.
    assigned = neurostream(
        "models", "assign", service, "1", "--model", name, "--shadow", "champion",
        cwd=tmp_path,
        env={"NEUROSTREAM_QM_URL": qm, "NEUROSTREAM_API_TOKEN": token},
    )  # fmt: skip
    assert assigned.returncode == 0, assigned.stderr
    assert assigned.stdout.splitlines() == [
        f"  service {service} now serves {name}:1 (version id {version['id']}), shadow "
        f"{name}:champion (version id {v2['id']})"
    ]
    svc = api(qm, f"/services/{service}")
    assert (svc["model_ref"], svc["shadow_ref"]) == ("1", "champion")
    assert (svc["serving_version_id"], svc["shadow_version_id"]) == (version["id"], v2["id"])


def test_a_wrong_token_is_refused_with_the_servers_401(qm, lda, tmp_path):
    name = unique("cli-auth")
    result = push_lda(qm, "not-the-token", tmp_path, lda, name)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: the queue manager refused POST /models/{name}/versions (401): "
        "authorization: invalid bearer token",
        "hint: pass --token or set NEUROSTREAM_API_TOKEN to the token the queue manager was "
        "started with",
    ]
    assert httpx.get(f"{qm}/models/{name}").status_code == 404  # nothing was stored


def test_a_garbage_artifact_is_refused_with_the_servers_422(qm, token, lda, tmp_path):
    name = unique("cli-garbage")
    garbage, signature = tmp_path / "garbage.skops", tmp_path / "sig.json"
    garbage.write_bytes(b"this is not a skops file")
    signature.write_text(json.dumps(lda.input_spec))
    result = neurostream(
        "models", "push", str(garbage), "--name", name, "--family", "sklearn-lda",
        "--pipeline", "erp@1", "--signature", str(signature), "--url", qm, "--token", token,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    error = result.stderr.splitlines()[0]
    assert error.startswith(
        f"error: the queue manager refused POST /models/{name}/versions (422): artifact: "
    )
    assert "artifact" in error.split("(422): ", 1)[1][len("artifact: ") :]
    assert "Traceback" not in result.stderr
    assert httpx.get(f"{qm}/models/{name}").status_code == 404


def test_a_bad_signature_is_the_servers_field_error(qm, token, lda, tmp_path):
    name = unique("cli-sig")
    artifact, _ = write_lda(tmp_path, lda)
    result = neurostream(
        "models", "push", str(artifact), "--name", name, "--family", "sklearn-lda",
        "--pipeline", "erp@1", "--fs", "250", "--channels", "TP9,AF7,AF8,TP10",
        "--n-samples", "200", "--tmin", "0.7", "--tmax", "-0.1", "--url", qm, "--token", token,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"error: the queue manager refused POST /models/{name}/versions (422): "
        "metadata.input_spec.tmin: input_spec.tmin (0.7) must be before tmax (-0.1)"
    )


def test_no_signature_is_refused_before_anything_is_sent(tmp_path):
    (tmp_path / "m.skops").write_bytes(b"x")
    result = neurostream(
        "models", "push", str(tmp_path / "m.skops"), "--name", "m", "--family", "onnx",
        "--pipeline", "raw@1", "--fs", "250", "--url", f"http://127.0.0.1:{free_port()}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: the signature lacks n_channels, n_samples: a worker matches windows to it",
        "hint: give --channels --n-samples, or --signature FILE with those keys",
    ]


def test_an_unreachable_queue_manager_is_named(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = neurostream("models", "list", "--url", url, cwd=tmp_path)
    assert result.returncode == 1
    error, hint = result.stderr.splitlines()
    assert error.startswith(f"error: cannot reach the queue manager at {url}: ")
    assert hint == (
        "hint: start it with `neurostream queue-manager`, or point --url / NEUROSTREAM_QM_URL at it"
    )


def test_import_mlflow_registers_a_skops_pipeline_on_raw_epochs(qm, token, tmp_path):
    """A pyRiemann pipeline logged the safe way comes in as sklearn-pipeline on raw@1."""
    x, y = synthetic_p300(n=90, seed=3)
    model = make_pipeline(Covariances("oas"), TangentSpace(), LogisticRegression())
    model.fit(x.astype(np.float64), y)
    folder = tmp_path / "mlflow-model"
    trusted = ["pyriemann.estimation.Covariances", "pyriemann.tangentspace.TangentSpace"]
    mlflow_sklearn.save_model(
        model, str(folder), serialization_format="skops", skops_trusted_types=trusted
    )
    name = unique("cli-mlflow")
    result = neurostream(
        "models", "import-mlflow", str(folder), "--name", name, "--pipeline", "raw@1",
        "--fs", "250", "--channels", ",".join(CHANNELS), "--n-samples", "200",
        "--tmin", "-0.1", "--tmax", "0.7", "--url", qm, "--token", token,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    skops_bytes = (folder / "model.skops").read_bytes()
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"MLflow model {folder}: sklearn flavor (model.skops, ")
    assert lines[0].endswith(") -> family sklearn-pipeline")
    assert lines[1] == f"  skops types it was logged to trust: {', '.join(trusted)}"
    assert lines[2].startswith(f"registered {name} v1 (version id ")
    assert lines[2].endswith(
        f"sklearn-pipeline on raw@1, {len(skops_bytes) / 1000:.1f} kB, "
        f"sha256 {hashlib.sha256(skops_bytes).hexdigest()}"
    )
    assert lines[3] == (
        "  signature: 4 ch (TP9, AF7, AF8, TP10) x 200 samples at 250 Hz, -0.10..+0.70 s, uV"
    )
    version = api(qm, f"/models/{name}/versions/1")
    assert (version["family"], version["feature_pipeline"]) == ("sklearn-pipeline", "raw@1")
    assert version["input_spec"]["channels"] == CHANNELS
    assert version["metrics"]["lineage"]["source"] == "mlflow"
    assert version["metrics"]["lineage"]["artifact_file"] == "model.skops"
    assert version["sha256"] == hashlib.sha256(skops_bytes).hexdigest()


def test_import_mlflow_refuses_a_pickle_before_any_upload(tmp_path):
    x, y = synthetic_p300(n=30)
    model = LogisticRegression().fit(x.reshape(len(x), -1), y)
    folder = tmp_path / "pickled"
    mlflow_sklearn.save_model(model, str(folder), serialization_format="pickle")
    result = neurostream(
        "models", "import-mlflow", str(folder), "--name", "m", "--pipeline", "raw@1",
        "--fs", "250", "--channels", ",".join(CHANNELS), "--n-samples", "200",
        "--url", f"http://127.0.0.1:{free_port()}",  # never contacted
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    error, hint = result.stderr.splitlines()
    assert error == (
        f"error: {folder} is a scikit-learn model MLflow saved with pickle (model.pkl); "
        "neurostream never loads a pickle (unpickling runs any code it holds)"
    )
    assert hint.startswith("hint: re-log it with skops: mlflow.sklearn.log_model(model, name=")
    assert "serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS" in hint


def test_services_input_declares_what_the_producer_streams(qm, token, tmp_path):
    service = unique("svc-input")
    auth = ("--url", qm, "--token", token)
    declared = neurostream(
        "services", "input", service, "--channels", ",".join(CHANNELS), "--fs", "256",
        "--tmin", "-0.1", "--tmax", "0.7", "--filter", "1-30", *auth,
        cwd=tmp_path,
    )  # fmt: skip
    assert declared.returncode == 0, declared.stderr
    assert declared.stdout.splitlines() == [
        f"service {service} (created) streams channels TP9,AF7,AF8,TP10, fs 256.0, tmin -0.1, "
        "tmax 0.7, filtered 1-30@4"
    ]
    assert api(qm, f"/services/{service}")["input"] == {
        "channels": CHANNELS,
        "fs": 256.0,
        "n_samples": None,
        "kind": None,
        "tmin": -0.1,
        "tmax": 0.7,
        "baseline": None,
        "filtered": "1-30@4",
    }
    cleared = neurostream("services", "input", service, "--clear", *auth, cwd=tmp_path)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.splitlines() == [
        f"service {service}: no declared input; any version may be assigned"
    ]
    assert api(qm, f"/services/{service}")["input"] is None


# --- export-onnx --------------------------------------------------------------------------


def push_eegnet(qm: str, token: str, tmp_path: Path, eegnet: TrainedModel, name: str):
    artifact, signature = tmp_path / "eegnet.pt", tmp_path / "eegnet-signature.json"
    artifact.write_bytes(eegnet.artifact)
    signature.write_text(json.dumps(eegnet.input_spec))
    metrics = tmp_path / "eegnet-metrics.json"
    metrics.write_text(json.dumps(eegnet.metrics))
    return neurostream(
        *("models", "push", str(artifact), "--name", name, "--family", "torch-eegnet"),
        *("--pipeline", eegnet.feature_pipeline, "--signature", str(signature)),
        *("--feature-params", json.dumps(eegnet.feature_params)),
        *("--model-params", json.dumps(eegnet.model_params)),
        *("--classes", "0,1", "--metrics", str(metrics), "--url", qm, "--token", token),
        cwd=tmp_path,
    )


async def served(pool, version_id: int) -> ServingModel:
    async with pool.connection() as conn:
        row = await registry.fetch_version(conn, version_id)
    assert row is not None
    return ServingModel.from_row(row)


async def test_export_onnx_registers_an_onnx_version_serving_the_same_probabilities(
    qm, token, eegnet, pool, tmp_path
):
    name, service = unique("cli-eegnet"), unique("svc-onnx")
    pushed = push_eegnet(qm, token, tmp_path, eegnet, name)
    assert pushed.returncode == 0, pushed.stderr
    result = neurostream(
        "models", "export-onnx", name, "1", "--alias", "onnx", "--assign", service,
        "--url", qm, "--token", token,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    v1, v2 = api(qm, f"/models/{name}/versions/1"), api(qm, f"/models/{name}/versions/2")
    lines = result.stdout.splitlines()
    head = (
        f"exported {name} v1 (torch-eegnet on erp@1, {len(eegnet.artifact) / 1000:.1f} kB) "
        f"to ONNX: {v2['artifact_size'] / 1000:.1f} kB, max |p_torch - p_onnx| "
    )
    assert lines[0].startswith(head) and lines[0].endswith(" on 64 random epochs")
    assert float(lines[0][len(head) :].split()[0]) <= 1e-5
    assert lines[1].startswith(f"registered {name} v2 (version id {v2['id']}): onnx on erp@1, ")
    assert lines[2] == "  signature: 4 ch x 200 samples at 250 Hz, uV"
    assert lines[3] == "  alias onnx -> v2"
    assert lines[4].startswith(f"  service {service} (created) now serves {name}:onnx")
    assert lines[5] == f"next: stream to it with `neurostream produce --service {service}`"

    assert (v2["family"], v2["feature_pipeline"]) == ("onnx", "erp@1")
    for key in ("feature_params", "input_spec", "classes", "metrics", "dataset_hash"):
        assert v2[key] == v1[key], key
    assert v2["metrics"]["roc_auc"] == eegnet.metrics["roc_auc"]
    assert v2["model_params"]["exported_from"] == {
        "family": "torch-eegnet",
        "sha256": v1["sha256"],
        "model_params": eegnet.model_params,
    }
    assert v2["model_params"]["positive_class"] == 1
    assert api(qm, f"/services/{service}")["serving_version_id"] == v2["id"]

    torch_model, onnx_model = await served(pool, v1["id"]), await served(pool, v2["id"])
    windows, _ = synthetic_p300(n=48, seed=7)
    p_torch, p_onnx = torch_model.predict(windows, FS), onnx_model.predict(windows, FS)
    np.testing.assert_allclose(p_onnx.proba, p_torch.proba, rtol=0, atol=1e-5)
    np.testing.assert_allclose(p_onnx.score, p_torch.score, rtol=0, atol=1e-5)
    assert np.array_equal(p_onnx.predicted, p_torch.predicted)
    assert 0.0 < p_torch.score.min() < p_torch.score.max() < 1.0  # not a constant output


def test_export_onnx_push_registers_under_another_name(qm, token, eegnet, tmp_path):
    name, other = unique("cli-eegnet"), unique("cli-onnx")
    assert push_eegnet(qm, token, tmp_path, eegnet, name).returncode == 0
    result = neurostream(
        "models", "export-onnx", name, "1", "--push", other, "--url", qm, "--token", token,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith(f"registered {other} v1 ")
    assert result.stdout.splitlines()[-1] == (
        f"next: neurostream models alias {other} champion 1, then "
        f"neurostream models assign SERVICE champion --model {other}"
    )
    assert api(qm, f"/models/{other}/versions/1")["family"] == "onnx"
    assert [v["version"] for v in api(qm, f"/models/{name}/versions")] == [1]


def test_export_onnx_out_writes_a_file_onnxruntime_runs(qm, token, eegnet, tmp_path):
    name = unique("cli-eegnet")
    assert push_eegnet(qm, token, tmp_path, eegnet, name).returncode == 0
    out = tmp_path / "export" / "eegnet.onnx"
    out.parent.mkdir()
    result = neurostream(
        "models", "export-onnx", name, "1", "--out", str(out), "--url", qm, cwd=tmp_path
    )  # reads need no token
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    signature = out.parent / "signature.json"
    lines = result.stdout.splitlines()
    assert lines[1] == (
        f"wrote {out} ({len(data) / 1000:.1f} kB, sha256 {hashlib.sha256(data).hexdigest()}) "
        f"and {signature}"
    )
    assert json.loads(signature.read_text()) == eegnet.input_spec
    assert [v["version"] for v in api(qm, f"/models/{name}/versions")] == [1]  # nothing pushed

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.shape[1:]) == ("epochs", [1, 4, 80])
    x = np.random.default_rng(2).normal(0, 10, (5, 1, 4, 80)).astype(np.float32)
    (logits,) = session.run(None, {"epochs": x})
    p_onnx = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p_torch = eegnet.classifier.predict_proba(x.reshape(5, -1))
    np.testing.assert_allclose(p_onnx, p_torch, rtol=0, atol=1e-5)

    # The printed next step registers the file as it is.
    command = shlex.split(lines[-1].removeprefix("next: "))
    command[command.index("NAME")] = unique("cli-onnx-file")
    assert command[:3] == ["neurostream", "models", "push"]
    pushed = neurostream(*command[1:], "--url", qm, "--token", token, cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith(f"registered {command[command.index('--name') + 1]} v1 ")


def test_export_onnx_refuses_a_version_that_is_not_eegnet(qm, token, lda, tmp_path):
    name = unique("cli-lda")
    assert push_lda(qm, token, tmp_path, lda, name).returncode == 0
    result = neurostream(
        "models", "export-onnx", name, "1", "--url", qm, "--token", token, cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stdout == ""
    error, hint = result.stderr.splitlines()
    assert error == (
        f"error: {name} v1 is family sklearn-lda; only torch-eegnet versions export to ONNX"
    )
    assert hint.startswith("hint: export other models with their own tools (skl2onnx")
    assert [v["version"] for v in api(qm, f"/models/{name}/versions")] == [1]


def test_export_onnx_out_and_push_contradict(tmp_path):
    result = neurostream(
        "models", "export-onnx", "m", "1", "--out", str(tmp_path / "m.onnx"), "--push", "n",
        "--url", f"http://127.0.0.1:{free_port()}",  # never contacted
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "error: --out writes a file; --push, --alias and --assign register a version"
    )
