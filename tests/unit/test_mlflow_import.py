"""Reading MLflow models as MLflow itself writes them (mlflow-skinny ``save_model``): the
skops and ONNX artifacts are picked with their family, pickles are refused with the way to
re-log them, and nothing is unpickled on the way."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import mlflow
import mlflow.onnx as mlflow_onnx
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skops.io as sio
from mlflow.models import infer_signature
from onnx import TensorProto, helper, numpy_helper
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from launcher.mlflow_import import MLMODEL, import_source, read_model_dir, resolve
from neurostream.errors import ArtifactError, ConfigError


@pytest.fixture(scope="module")
def fitted() -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = (np.arange(40) % 2).astype(np.int64)
    x[y == 1] += 1.0
    return make_pipeline(StandardScaler(), LinearDiscriminantAnalysis()).fit(x, y), x


def test_skops_sklearn_model_is_read_as_sklearn_pipeline_with_its_bytes(fitted, tmp_path):
    model, x = fitted
    folder = tmp_path / "skops-model"
    mlflow_sklearn.save_model(
        model,
        str(folder),
        serialization_format=mlflow_sklearn.SERIALIZATION_FORMAT_SKOPS,
        signature=infer_signature(x, model.predict(x)),
    )
    got = read_model_dir(folder)
    assert (got.flavor, got.family, got.artifact_file) == (
        "sklearn",
        "sklearn-pipeline",
        "model.skops",
    )
    assert got.artifact == (folder / "model.skops").read_bytes()
    assert got.input_schema == "tensor float32 [-1, 8]"
    assert got.lineage()["input_schema"] == "tensor float32 [-1, 8]"
    assert got.lineage()["source"] == "mlflow" and got.lineage()["flavor"] == "sklearn"
    # The bytes are a skops file whose types skops trusts: what the registry will load.
    assert sio.get_untrusted_types(data=got.artifact) == []
    restored = sio.loads(got.artifact)
    assert np.array_equal(restored.predict(x), model.predict(x))


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_pickled_sklearn_model_is_refused_with_the_relog_call(fitted, tmp_path, fmt):
    model, x = fitted
    folder = tmp_path / fmt
    mlflow_sklearn.save_model(
        model, str(folder), serialization_format=fmt, signature=infer_signature(x)
    )
    with pytest.raises(ArtifactError) as err:
        read_model_dir(folder, source=f"models:/eeg-{fmt}/3")
    msg, hint = err.value.message, err.value.hint or ""
    assert msg.startswith(f"models:/eeg-{fmt}/3 is a scikit-learn model MLflow saved with {fmt}")
    assert "never loads a pickle" in msg and "(MLflow input: tensor float32 [-1, 8])" in msg
    assert "serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS" in hint
    assert "skops_trusted_types=[...]" in hint and "mlflow.onnx" in hint


def test_a_pickle_is_never_unpickled(tmp_path):
    """An MLmodel that claims skops over a pickle is read as bytes only: no code runs."""
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps(Boom()))
    (folder / MLMODEL).write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: pickle\n"
    )
    with pytest.raises(ArtifactError, match="saved with pickle"):
        read_model_dir(folder)
    (folder / MLMODEL).write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: skops\n"
    )
    got = read_model_dir(folder)  # read, not loaded: the queue manager's skops load refuses it
    assert got.artifact == (folder / "model.pkl").read_bytes()
    assert not marker.exists()


def test_old_mlflow_without_a_serialization_format_is_a_pickle(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(b"\x80\x04N.")
    (folder / MLMODEL).write_text("flavors:\n  sklearn:\n    pickled_model: model.pkl\n")
    with pytest.raises(ArtifactError, match="saved with pickle"):
        read_model_dir(folder)


def test_pyfunc_only_and_pytorch_models_are_refused(tmp_path):
    folder = tmp_path / "pyfunc"
    folder.mkdir()
    (folder / MLMODEL).write_text(
        "flavors:\n  python_function:\n    cloudpickle_version: 3.0.0\n"
        "    python_model: python_model.pkl\n  pytorch:\n    model_data: data\n"
    )
    with pytest.raises(ArtifactError) as err:
        read_model_dir(folder)
    assert "has MLflow flavor(s) python_function, pytorch" in err.value.message
    assert "torch.onnx.export" in err.value.message
    assert "SERIALIZATION_FORMAT_SKOPS" in (err.value.hint or "")


def test_an_mlmodel_pointing_outside_its_folder_is_refused(tmp_path):
    (tmp_path / "secret.skops").write_bytes(b"x")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / MLMODEL).write_text(
        "flavors:\n  sklearn:\n    pickled_model: ../secret.skops\n"
        "    serialization_format: skops\n"
    )
    with pytest.raises(ArtifactError, match="outside the model folder"):
        read_model_dir(folder)


def _onnx_model(n_in: int):
    w = np.arange(n_in * 2, dtype=np.float32).reshape(n_in, 2) / (n_in * 2)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model, w


def test_onnx_model_is_read_as_family_onnx(tmp_path):
    model, _ = _onnx_model(4)  # 32 bytes of weights: kept inside model.onnx
    folder = tmp_path / "onnx"
    mlflow_onnx.save_model(model, str(folder))
    got = read_model_dir(folder)
    assert (got.flavor, got.family, got.artifact_file) == ("onnx", "onnx", "model.onnx")
    assert got.artifact == (folder / "model.onnx").read_bytes()


def test_onnx_external_weights_are_folded_into_one_artifact(tmp_path):
    model, w = _onnx_model(800)  # 6.4 kB of weights: MLflow stores them beside it
    folder = tmp_path / "onnx-big"
    mlflow_onnx.save_model(model, str(folder))
    beside = [p.name for p in folder.iterdir() if p.suffix == ".data"]
    assert len(beside) == 1, "MLflow kept the weights inside model.onnx; the test needs them out"
    got = read_model_dir(folder)
    assert len(got.artifact) > 6400 > (folder / "model.onnx").stat().st_size
    # Served from the bytes alone, as a worker would, it computes x @ W.
    session = ort.InferenceSession(got.artifact, providers=["CPUExecutionProvider"])
    x = np.ones((3, 800), dtype=np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ w, rtol=1e-5)


def test_a_folder_without_mlmodel_and_a_missing_path_say_what_to_give(tmp_path):
    with pytest.raises(ConfigError, match="not an MLflow model folder"):
        read_model_dir(tmp_path)
    with pytest.raises(ConfigError, match="no MLflow model folder at"):
        resolve(str(tmp_path / "nope"), tmp_path)


def test_runs_and_models_uris_are_downloaded_through_mlflow(fitted, tmp_path, monkeypatch):
    """A local file store stands in for the tracking server (MLflow's own test setup)."""
    model, x = fitted
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)  # whatever MLflow writes by default lands here
    store = f"file://{tmp_path / 'mlruns'}"
    mlflow.set_tracking_uri(store)
    try:
        with mlflow.start_run() as run:
            info = mlflow_sklearn.log_model(
                LogisticRegression().fit(x, (np.arange(40) % 2)),
                name="model",
                serialization_format="skops",
            )
        mlflow.register_model(info.model_uri, "eeg-lr")
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # MLflow's default again
    by_run = import_source(f"runs:/{run.info.run_id}/model", tmp_path / "a", tracking_uri=store)
    by_name = import_source("models:/eeg-lr/1", tmp_path / "b", tracking_uri=store)
    assert by_run.family == by_name.family == "sklearn-pipeline"
    assert hashlib.sha256(by_run.artifact).digest() == hashlib.sha256(by_name.artifact).digest()
    assert by_run.run_id == run.info.run_id
    with pytest.raises(ConfigError, match="MLflow could not fetch models:/no-such-model/1"):
        import_source("models:/no-such-model/1", tmp_path / "c", tracking_uri=store)
