"""Model families, artifacts, serving and training on a synthetic P300."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from neurostream.errors import ConfigError
from neurostream.features import UnknownPipeline
from neurostream.models import (
    FAMILIES,
    ArtifactError,
    ServingModel,
    TrainedModel,
    dump,
    evaluate,
    load,
    sha256_hex,
    train_model,
)
from neurostream.models.families import fit_lda

FS = 250.0
N_CH, N_S = 8, 200  # 0.8 s epochs starting 0.1 s before the stimulus


def p300_epochs(n: int = 300, seed: int = 0, amp: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Noise epochs; targets (1 in 4) carry a Gaussian bump 300 ms after onset."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_S) / FS - 0.1
    y = (np.arange(n) % 4 == 0).astype(np.int64)
    rng.shuffle(y)
    x = rng.normal(0.0, 10.0, (n, N_CH, N_S)) + rng.normal(0.0, 20.0, (n, N_CH, 1))
    weights = np.linspace(0.3, 1.0, N_CH)[:, None]
    x[y == 1] += amp * weights * np.exp(-0.5 * ((t - 0.3) / 0.06) ** 2)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return p300_epochs()


@pytest.fixture(scope="module")
def lda(data: tuple[np.ndarray, np.ndarray]) -> TrainedModel:
    return train_model("sklearn-lda", *data, FS, seed=1)


@pytest.fixture(scope="module")
def eegnet(data: tuple[np.ndarray, np.ndarray]) -> TrainedModel:
    return train_model("torch-eegnet", *data, FS, model_params={"epochs": 8}, seed=1)


def _row(tm: TrainedModel, **changes: Any) -> dict[str, Any]:
    return tm.to_row(model_name="p300-lda", version=3, id=42) | changes


def test_families() -> None:
    assert FAMILIES == {"sklearn-lda", "torch-eegnet", "sklearn-pipeline", "onnx"}


def test_lda_separates_synthetic_p300(
    lda: TrainedModel, data: tuple[np.ndarray, np.ndarray]
) -> None:
    m = lda.metrics
    assert m["roc_auc"] > 0.9 and m["balanced_accuracy"] > 0.75
    assert list(m)[:2] == ["roc_auc", "balanced_accuracy"]  # the scorer's headline
    assert set(m) >= {"accuracy", "accuracy_chance", "f1", "mcc", "confusion_matrix"}
    assert np.sum(m["confusion_matrix"]) == m["n"] == 60  # 20 % stratified hold-out
    support = np.sum(m["confusion_matrix"], axis=1)
    assert m["accuracy_chance"] == pytest.approx(support.max() / 60)
    assert lda.classes == [0, 1]
    assert lda.input_spec == {
        "fs": FS,
        "n_channels": N_CH,
        "n_samples": N_S,
        "kind": "epoch",
        "channels": None,  # trained without names: matched by count
        "tmin": None,
        "tmax": None,
        "units": "uV",
    }
    assert lda.sha256 == sha256_hex(lda.artifact)
    assert lda.dataset_hash == train_model("sklearn-lda", *data, FS).dataset_hash
    fresh = p300_epochs(200, seed=7)
    assert evaluate(lda, *fresh)["roc_auc"] > 0.9


def test_chance_level_without_signal() -> None:
    x, y = p300_epochs(200, seed=3, amp=0.0)
    assert train_model("sklearn-lda", x, y, FS).metrics["roc_auc"] < 0.75


def test_serving_round_trip_gives_identical_probabilities(lda: TrainedModel) -> None:
    model = ServingModel.from_row(_row(lda))
    assert model.label == "p300-lda:3" and model.version_id == 42
    x, _ = p300_epochs(64, seed=5)
    pred = model.predict(x, FS)
    direct = lda.classifier.predict_proba(model.features(x, FS))
    np.testing.assert_array_equal(pred.proba, direct)
    np.testing.assert_array_equal(pred.score, pred.proba[:, 1])
    np.testing.assert_array_equal(pred.predicted, np.argmax(pred.proba, axis=1))
    assert pred.predicted.shape == (64,) and pred.proba.shape == (64, 2)
    again = load(lda.artifact, "sklearn-lda", sha256=lda.sha256, model_params={})
    np.testing.assert_array_equal(again.predict_proba(model.features(x, FS)), pred.proba)


def test_serving_accepts_json_text_columns_and_memoryview(lda: TrainedModel) -> None:
    import json

    row = _row(lda, artifact=memoryview(lda.artifact), input_spec=json.dumps(lda.input_spec))
    assert ServingModel.from_row(row).predict(np.zeros((0, N_CH, N_S)), FS).proba.shape == (0, 2)


def test_check_input_names_the_mismatch(lda: TrainedModel) -> None:
    model = ServingModel.from_row(_row(lda))
    assert model.check_input(N_CH, N_S, FS) is None
    assert "channels" in (model.check_input(4, N_S, FS) or "")
    assert "samples" in (model.check_input(N_CH, 100, FS) or "")
    assert "fs" in (model.check_input(N_CH, N_S, 256.0) or "")
    with pytest.raises(ValueError, match="channels"):
        model.predict(np.zeros((2, 4, N_S), np.float32), FS)


def test_tampered_artifact_is_refused(lda: TrainedModel) -> None:
    tampered = bytearray(lda.artifact)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load(bytes(tampered), "sklearn-lda", sha256=lda.sha256, model_params={})
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        ServingModel.from_row(_row(lda, artifact=bytes(tampered)))


def test_skops_refuses_untrusted_types(data: Any) -> None:
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    est = make_pipeline(FunctionTransformer(_identity), fit_lda(x, y, {}).estimator).fit(x, y)
    blob = sio.dumps(est)
    assert any("_identity" in t for t in sio.get_untrusted_types(data=blob))
    with pytest.raises(ArtifactError, match="untrusted types"):
        load(blob, "sklearn-lda", sha256=sha256_hex(blob), model_params={})
    with pytest.raises(ArtifactError, match="skops"):
        load(b"not a zip", "sklearn-lda", sha256=sha256_hex(b"not a zip"), model_params={})


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def test_unknown_pipeline_or_family_is_refused(lda: TrainedModel) -> None:
    with pytest.raises(UnknownPipeline):
        ServingModel.from_row(_row(lda, feature_pipeline="erp@7"))
    with pytest.raises(ArtifactError, match="family"):
        ServingModel.from_row(_row(lda, family="xgboost"))
    with pytest.raises(ArtifactError, match="classes"):
        ServingModel.from_row(_row(lda, classes=[1, 2]))
    with pytest.raises(ArtifactError, match="input_spec"):
        ServingModel.from_row(_row(lda, input_spec={**lda.input_spec, "n_samples": 100}))


def test_eegnet_trains_and_round_trips(eegnet: TrainedModel) -> None:
    assert eegnet.metrics["roc_auc"] > 0.8
    assert eegnet.model_params["n_times"] == 80 and eegnet.model_params["n_channels"] == N_CH
    model = ServingModel.from_row(_row(eegnet, model_name="p300-eegnet"))
    x, _ = p300_epochs(64, seed=5)
    pred = model.predict(x, FS)
    np.testing.assert_allclose(pred.proba.sum(axis=1), 1.0, rtol=1e-6)
    direct = eegnet.classifier.predict_proba(model.features(x, FS))
    np.testing.assert_array_equal(pred.proba, direct)


def test_torch_load_is_weights_only(eegnet: TrainedModel) -> None:
    import torch

    buf = io.BytesIO()
    torch.save({"payload": _Evil()}, buf)
    blob = buf.getvalue()
    with pytest.raises(ArtifactError, match="weights-only"):
        load(blob, "torch-eegnet", sha256=sha256_hex(blob), model_params=eegnet.model_params)
    assert not _Evil.loaded
    wrong = {**eegnet.model_params, "F2": 8}
    with pytest.raises(ArtifactError, match="does not fit"):
        load(eegnet.artifact, "torch-eegnet", sha256=eegnet.sha256, model_params=wrong)


class _Evil:
    loaded = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Evil._mark, ())

    @staticmethod
    def _mark() -> None:
        _Evil.loaded = True


def test_dump_matches_family(eegnet: TrainedModel) -> None:
    assert dump(eegnet.classifier, "torch-eegnet")[:2] == b"PK"  # torch zip format
    with pytest.raises(ValueError, match="family"):
        dump(eegnet.classifier, "keras")


def test_training_input_is_validated() -> None:
    x, y = p300_epochs(40)
    with pytest.raises(ValueError, match="2 classes"):
        train_model("sklearn-lda", x, np.zeros(40, np.int64), FS)
    with pytest.raises(ValueError, match="shape"):
        train_model("sklearn-lda", x, y[:10], FS)
    with pytest.raises(ValueError, match="unknown model_params"):
        train_model("sklearn-lda", x, y, FS, model_params={"shrinkag": 0.1})


def test_sklearn_only_use_does_not_import_torch() -> None:
    code = (
        "import sys, neurostream.models as m, neurostream.features;"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


NAMES = [f"E{i}" for i in range(N_CH)]


@pytest.fixture(scope="module")
def named(data: tuple[np.ndarray, np.ndarray]) -> TrainedModel:
    return train_model("sklearn-lda", *data, FS, seed=1, channels=NAMES, tmin=-0.1, tmax=0.7)


def test_training_records_the_signature(named: TrainedModel, lda: TrainedModel) -> None:
    assert named.input_spec == {
        "fs": FS,
        "n_channels": N_CH,
        "n_samples": N_S,
        "kind": "epoch",
        "channels": NAMES,
        "tmin": -0.1,
        "tmax": 0.7,
        "units": "uV",
    }
    # Names change what serving matches on, not the model: same data, same fit.
    assert named.dataset_hash == lda.dataset_hash and named.metrics == lda.metrics


def test_serving_matches_channels_by_name(named: TrainedModel) -> None:
    model = ServingModel.from_row(_row(named))
    x, _ = p300_epochs(32, seed=5)
    ordered = model.predict(x, FS, channels=NAMES).proba
    np.testing.assert_array_equal(model.predict(x, FS).proba, ordered)  # no names: by order
    perm = np.random.default_rng(0).permutation(N_CH)
    aux = np.random.default_rng(1).normal(0, 50, (32, 1, N_S)).astype(np.float32)
    shuffled = np.concatenate([x[:, perm], aux], axis=1)
    names = [NAMES[i] for i in perm] + ["AUX"]
    np.testing.assert_allclose(model.predict(shuffled, FS, channels=names).proba, ordered, 0, 1e-12)
    assert evaluate(named, shuffled, np.zeros(32), channels=names)["n"] == 32
    with pytest.raises(ValueError, match="lacks channel E3 "):
        model.predict(x[:, [0, 1, 2, 4, 5, 6, 7]], FS, channels=[n for n in NAMES if n != "E3"])
    assert model.check_input(names, N_S, FS) is None
    assert model.check_input(NAMES, N_S, 256.0) == (
        f"window fs 256.0 Hz, expected {FS} Hz (model p300-lda:3)"
    )


def test_admissions_are_cached_per_channel_tuple(named: TrainedModel) -> None:
    model = ServingModel.from_row(_row(named))
    first = model.admit(tuple(reversed(NAMES)), N_S, FS)
    assert model.admit(list(reversed(NAMES)), N_S, FS) is first  # one mapping per shape
    assert first.index is not None and first.index.tolist() == list(range(N_CH))[::-1]


def test_training_drops_and_picks_channels_by_name(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    dropped = train_model("sklearn-lda", x, y, FS, channels=NAMES, drop_channels=["E7"])
    assert dropped.input_spec["channels"] == NAMES[:7] and dropped.input_spec["n_channels"] == 7
    picked = train_model("sklearn-lda", x, y, FS, channels=NAMES, pick_channels=["E5", "E2"])
    assert picked.input_spec["channels"] == ["E5", "E2"]
    direct = train_model("sklearn-lda", x[:, [5, 2]], y, FS, channels=["E5", "E2"])
    assert picked.dataset_hash == direct.dataset_hash and picked.metrics == direct.metrics
    # The dropped-channel model still serves windows carrying every channel.
    model = ServingModel.from_row(_row(dropped))
    full = model.predict(x[:16], FS, channels=NAMES).proba
    np.testing.assert_array_equal(full, model.predict(x[:16, :7], FS).proba)
    with pytest.raises(ConfigError, match="no channel Fz") as info:
        train_model("sklearn-lda", x, y, FS, channels=NAMES, drop_channels=["Fz"])
    assert info.value.field == "drop_channels"
    with pytest.raises(ConfigError, match="pass channels="):
        train_model("sklearn-lda", x, y, FS, drop_channels=["E7"])
    with pytest.raises(ConfigError, match="before tmax") as info:
        train_model("sklearn-lda", x, y, FS, tmin=0.5, tmax=0.1)
    assert info.value.field == "tmin"
