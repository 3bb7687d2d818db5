"""The ``onnx`` family: EEGNet exported by the project, torch models exported elsewhere,
fixed-batch models served row by row, and the models an upload must refuse."""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from neurostream.errors import ArtifactError, ConfigError
from neurostream.features import get_pipeline
from neurostream.models import ServingModel, TrainedModel, sha256_hex, train_model
from neurostream.models.eegnet import TorchClassifier
from neurostream.models.export import eegnet_to_onnx, onnx_version
from neurostream.models.onnxnet import OnnxClassifier, load
from tests.factories import FS, synthetic_p300

N_CH, N_T = 4, 50  # the small "trained elsewhere" network's raw epochs [batch, 4, 50]


@pytest.fixture(scope="module")
def eegnet_version() -> TrainedModel:
    x, y = synthetic_p300(n=90, channels=N_CH, seed=3)
    labels = np.where(y == 1, 7, 3)  # a user's labels: no column is "class 1"
    return train_model("torch-eegnet", x, labels, FS, model_params={"epochs": 3}, seed=1)


def _export(module: nn.Module, rows: int, *, dynamic: bool) -> bytes:
    """What a user does elsewhere: ``torch.onnx.export`` of their own network."""
    example = torch.zeros(rows, N_CH, N_T)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic else None,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    data: bytes = program.model_proto.SerializeToString()
    return data


def _elsewhere_net(n_out: int = 3, *, softmax: bool = False) -> nn.Module:
    """Conv1d -> pool -> linear over raw ``[batch, channels, times]``, with BatchNorm
    statistics that are not the identity (as after training)."""
    torch.manual_seed(7)
    layers: list[nn.Module] = [
        nn.Conv1d(N_CH, 6, 9, padding=4),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.AvgPool1d(5),
        nn.Flatten(),
        nn.Linear(6 * (N_T // 5), n_out),
    ]
    if softmax:
        layers.append(nn.Softmax(dim=1))
    net = nn.Sequential(*layers)
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(16, N_CH, N_T) * 3 + 1)
    return net.eval()


def _torch_proba(net: nn.Module, X: np.ndarray, *, softmax: bool = True) -> np.ndarray:
    with torch.inference_mode():
        out = net(torch.from_numpy(np.asarray(X, np.float32).reshape(-1, N_CH, N_T)))
        return (torch.softmax(out, dim=1) if softmax else out).double().numpy()


@pytest.fixture(scope="module")
def elsewhere() -> nn.Module:
    return _elsewhere_net()


@pytest.fixture(scope="module")
def elsewhere_dynamic(elsewhere: nn.Module) -> bytes:
    return _export(elsewhere, 2, dynamic=True)


def _raw(n: int, seed: int = 0) -> np.ndarray:
    """Float64 raw epochs ``[n, c, t]``, as a raw feature pipeline hands them over."""
    return np.random.default_rng(seed).normal(0.0, 10.0, (n, N_CH, N_T))


# (a) the project's EEGNet ---------------------------------------------------------------


def test_exported_eegnet_gives_torchs_probabilities(eegnet_version: TrainedModel) -> None:
    tm = eegnet_version
    assert isinstance(tm.classifier, TorchClassifier)
    served = load(eegnet_to_onnx(tm.classifier), classes=tm.classes, model_params={})
    assert served.input_shape == ("batch", 1, N_CH, tm.model_params["n_times"])
    assert not served.fixed_batch and served.output_kind == "logits"
    x, _ = synthetic_p300(n=64, channels=N_CH, seed=11)
    feats = get_pipeline(tm.feature_pipeline).transform(x, FS, tm.feature_params)
    expected = tm.classifier.predict_proba(feats)
    got = served.predict_proba(feats)
    assert got.dtype == np.float64 and got.shape == (64, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.abs(got - 0.5).max() > 1e-3  # a trained model, not a constant


def test_onnx_version_keeps_everything_but_the_family(eegnet_version: TrainedModel) -> None:
    tm = eegnet_version
    ov = onnx_version(tm)
    assert ov.family == "onnx" and ov.artifact[:2] != b"PK" and ov.sha256 != tm.sha256
    assert (ov.feature_pipeline, ov.feature_params) == (tm.feature_pipeline, tm.feature_params)
    assert (ov.input_spec, ov.classes, ov.metrics) == (tm.input_spec, tm.classes, tm.metrics)
    assert ov.dataset_hash == tm.dataset_hash
    assert ov.model_params["output_kind"] == "logits" and ov.model_params["output"] == "logits"
    assert ov.model_params["exported_from"]["sha256"] == tm.sha256
    assert ov.model_params["positive_class"] == 7  # the torch family scores its greater label
    onnx.checker.check_model(onnx.load_from_string(ov.artifact))
    assert isinstance(ov.classifier, OnnxClassifier)
    reloaded = load(ov.artifact, classes=ov.classes, model_params=ov.model_params)
    feats = np.random.default_rng(2).normal(0, 10, (5, N_CH * tm.model_params["n_times"]))
    np.testing.assert_allclose(
        reloaded.predict_proba(feats), tm.classifier.predict_proba(feats), atol=1e-5, rtol=0
    )


def test_onnx_version_serves_from_its_registry_row(eegnet_version: TrainedModel) -> None:
    onnx_row = onnx_version(eegnet_version).to_row(model_name="p300-onnx", version=2, id=8)
    served = ServingModel.from_row(onnx_row)
    reference = ServingModel.from_row(eegnet_version.to_row(model_name="p300-eegnet", id=7))
    assert served.family == "onnx" and served.classes == [3, 7] == reference.classes
    x, _ = synthetic_p300(n=64, channels=N_CH, seed=12)
    got, expected = served.predict(x, FS), reference.predict(x, FS)
    np.testing.assert_allclose(got.proba, expected.proba, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.score, expected.score, atol=1e-5, rtol=0)
    assert set(got.predicted.tolist()) <= {3, 7}


def test_export_without_the_extra_says_what_to_install(
    eegnet_version: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs onnxscript.*neurostream\[onnx-export\]"):
        onnx_version(eegnet_version)


def test_only_eegnet_versions_export() -> None:
    x, y = synthetic_p300(n=30, channels=N_CH)
    lda = train_model("sklearn-lda", x, y, FS)
    with pytest.raises(ConfigError, match="only torch-eegnet versions export to ONNX"):
        onnx_version(lda)


# (b) a torch model trained elsewhere ----------------------------------------------------


def test_model_exported_elsewhere_predicts_like_torch(
    elsewhere: nn.Module, elsewhere_dynamic: bytes
) -> None:
    classes = [3, 7, 9]  # the user's labels, in the order of the network's columns
    served = load(elsewhere_dynamic, classes=classes, model_params={})
    assert served.classes == classes and served.input_shape[1:] == (N_CH, N_T)
    assert served.describe()["batch"] == "dynamic" and served.feature_size == N_CH * N_T
    X = _raw(37)
    expected = _torch_proba(elsewhere, X)
    np.testing.assert_allclose(served.predict_proba(X), expected, atol=1e-5, rtol=0)
    # Flat channel-major features (erp@1's layout) fold into the same epochs.
    flat = X.reshape(37, -1)
    np.testing.assert_allclose(served.predict_proba(flat), expected, atol=1e-5, rtol=0)
    assert served.predict_proba(X[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match=r"do not fit the ONNX input .*\(200 values per row\)"):
        served.predict_proba(_raw(2)[:, :, :40])


def test_model_exported_elsewhere_serves_raw_epochs_from_its_row(
    elsewhere: nn.Module, elsewhere_dynamic: bytes
) -> None:
    row = {
        "id": 5,
        "model_name": "user-cnn",
        "version": 1,
        "family": "onnx",
        "feature_pipeline": "raw@1",
        "feature_params": {"stream_filter": None},
        "model_params": {},
        "input_spec": {"fs": FS, "n_channels": N_CH, "n_samples": N_T, "kind": "epoch"},
        "classes": [3, 7, 9],
        "sha256": sha256_hex(elsewhere_dynamic),
        "artifact": elsewhere_dynamic,
    }
    model = ServingModel.from_row(row)
    x = _raw(20, seed=6).astype(np.float32)
    pred = model.predict(x, FS)
    expected = _torch_proba(elsewhere, x)
    np.testing.assert_allclose(pred.proba, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(pred.predicted, np.array([3, 7, 9])[expected.argmax(axis=1)])
    with pytest.raises(ArtifactError, match=r"has 3 columns, but the version has 2 classes"):
        ServingModel.from_row(row | {"classes": [3, 7]})


def test_classes_default_to_column_indices_for_inspection(elsewhere_dynamic: bytes) -> None:
    served = load(elsewhere_dynamic, classes=None, model_params={})
    assert served.classes == [0, 1, 2]
    assert served.describe()["output"]["shape"][1] == 3


def test_one_thread_per_replica(elsewhere_dynamic: bytes) -> None:
    options = load(elsewhere_dynamic, classes=None, model_params={}).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert str(options.execution_mode).endswith("ORT_SEQUENTIAL")


# (c) a fixed batch of one is looped -----------------------------------------------------


def test_fixed_batch_of_one_serves_a_batch_row_by_row(elsewhere: nn.Module) -> None:
    served = load(_export(elsewhere, 1, dynamic=False), classes=[0, 1, 2], model_params={})
    assert served.fixed_batch and served.input_shape == (1, N_CH, N_T)
    assert served.describe()["batch"] == 1
    X = _raw(64, seed=4)
    np.testing.assert_allclose(
        served.predict_proba(X), _torch_proba(elsewhere, X), atol=1e-5, rtol=0
    )


# (d) refusals ---------------------------------------------------------------------------


def _graph_model(
    inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], nodes: list
) -> bytes:
    graph = helper.make_graph(nodes, "user-model", inputs, outputs)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        ir_version=9,
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _sklearn_onnx_style(*, zipmap: bool) -> bytes:
    """What sklearn-onnx writes for a classifier: ``label`` (int64) first, then the
    probabilities, as a ZipMap sequence of maps unless converted with zipmap=False."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])
    w = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1.0, -1.0, 0.5, 0.0, -0.5, 2.0])
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [None])
    if zipmap:
        nodes.append(
            helper.make_node(
                "ZipMap",
                ["probabilities"],
                ["output_probability"],
                domain="ai.onnx.ml",
                classlabels_int64s=[0, 1],
            )
        )
        proba = helper.make_value_info(
            "output_probability",
            helper.make_sequence_type_proto(
                helper.make_map_type_proto(
                    TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
                )
            ),
        )
    else:
        proba = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph(nodes, "sklearn-style", [x], [label, proba], initializer=[w])
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        ir_version=9,
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_garbage_and_truncated_bytes_are_refused(elsewhere_dynamic: bytes) -> None:
    with pytest.raises(ArtifactError, match=r"not a loadable ONNX model \(17 bytes\)"):
        load(b"not an onnx model", classes=[0, 1, 2], model_params={})
    cut = elsewhere_dynamic[: len(elsewhere_dynamic) // 2]
    with pytest.raises(ArtifactError, match=rf"not a loadable ONNX model \({len(cut)} bytes\)"):
        load(cut, classes=[0, 1, 2], model_params={})


def test_fixed_batch_larger_than_one_is_refused(elsewhere: nn.Module) -> None:
    with pytest.raises(ArtifactError, match=r"\[8, 4, 50\]; its batch axis is fixed at 8") as e:
        load(_export(elsewhere, 8, dynamic=False), classes=[0, 1, 2], model_params={})
    assert e.value.hint is not None and "dynamic" in e.value.hint


def test_rank_five_input_is_refused() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 2, 4, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 80])
    data = _graph_model([x], [y], [helper.make_node("Flatten", ["x"], ["y"], axis=1)])
    with pytest.raises(
        ArtifactError,
        match=r"input 'x' is tensor\(float\) \[batch, 1, 2, 4, 10\]; need rank 2, 3 or 4",
    ):
        load(data, classes=list(range(80)), model_params={})


def test_integer_input_is_refused() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    data = _graph_model([x], [y], [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)])
    with pytest.raises(
        ArtifactError, match=r"input 'x' is tensor\(int64\) \[batch, 2\]; need a float tensor"
    ):
        load(data, classes=[0, 1], model_params={})


def test_double_input_is_fed_float64() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 2])
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    graph = helper.make_graph(nodes, "sum", [x], [y], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    served = load(model.SerializeToString(), classes=[1, 2], model_params={})
    X = np.array([[1.0 + 1e-9, 0.0, 0.0, 1.0, 0.0, 0.0]])  # 1 + 1e-9 is 1 in float32
    got = served.predict_proba(X)
    assert got[0, 0] - 0.5 == pytest.approx(2.5e-10, rel=1e-3)


def test_free_feature_axis_is_refused() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "features"])
    data = _graph_model([x], [y], [helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(ArtifactError, match=r"axes \[1\] are not fixed sizes"):
        load(data, classes=[0, 1], model_params={})


def test_output_width_must_match_the_classes(elsewhere_dynamic: bytes) -> None:
    with pytest.raises(
        ArtifactError, match=r"has 3 columns, but the version has 2 classes \[0, 1\]"
    ) as e:
        load(elsewhere_dynamic, classes=[0, 1], model_params={})
    assert e.value.field == "classes"


def test_sklearn_onnx_outputs(elsewhere_dynamic: bytes) -> None:
    plain = _sklearn_onnx_style(zipmap=False)
    # The first output is the int64 label: not scores.
    with pytest.raises(
        ArtifactError, match=r"output 'label' is tensor\(int64\) \[\?\]; need a float tensor"
    ):
        load(plain, classes=[0, 1], model_params={})
    # A named output the model lacks: the message lists what it has.
    with pytest.raises(
        ArtifactError,
        match=r"output names 'output_probability', but the ONNX model's outputs are "
        r"'label' tensor\(int64\) \[\?\], 'probabilities' tensor\(float\) \[\?, 2\]",
    ):
        load(plain, classes=[0, 1], model_params={"output": "output_probability"})
    # ZipMap's sequence of maps is refused with the conversion option that avoids it.
    with pytest.raises(ArtifactError, match=r"'output_probability' is seq\(map\(") as e:
        load(
            _sklearn_onnx_style(zipmap=True),
            classes=[0, 1],
            model_params={"output": "output_probability"},
        )
    assert e.value.hint is not None and "zipmap" in e.value.hint
    # Named correctly, the probabilities tensor serves.
    served = load(
        plain,
        classes=[5, 6],
        model_params={"output": "probabilities", "output_kind": "probabilities"},
    )
    X = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    z = X @ np.array([[1.0, -1.0], [0.5, 0.0], [-0.5, 2.0]])
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(served.predict_proba(X), expected, atol=1e-6)


def test_model_params_are_checked(elsewhere_dynamic: bytes) -> None:
    with pytest.raises(ArtifactError, match=r"unknown model_params \['output_knd'\]"):
        load(elsewhere_dynamic, classes=None, model_params={"output_knd": "logits"})
    with pytest.raises(ArtifactError, match="output_kind must be one of"):
        load(elsewhere_dynamic, classes=None, model_params={"output_kind": "scores"})


# (e) logits or probabilities ------------------------------------------------------------


def test_output_kind_logits_or_probabilities(elsewhere_dynamic: bytes) -> None:
    soft = _elsewhere_net(softmax=True)
    data = _export(soft, 2, dynamic=True)
    X = _raw(16, seed=9)
    expected = _torch_proba(soft, X, softmax=False)  # the network's own softmax
    served = load(data, classes=[0, 1, 2], model_params={"output_kind": "probabilities"})
    got = served.predict_proba(X)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    # Read as logits, the probabilities would be softmaxed again: flatter, still summing to 1.
    twice = load(data, classes=[0, 1, 2], model_params={"output_kind": "logits"}).predict_proba(X)
    np.testing.assert_allclose(twice.sum(axis=1), 1.0, atol=1e-9)
    assert np.abs(twice - 1 / 3).max() < np.abs(got - 1 / 3).max()
    # Logits declared as probabilities are caught on the zero probe.
    with pytest.raises(ArtifactError, match="output_kind is 'probabilities' but") as e:
        load(elsewhere_dynamic, classes=[0, 1, 2], model_params={"output_kind": "probabilities"})
    assert e.value.field == "model_params.output_kind"
