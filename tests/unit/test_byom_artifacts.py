"""Bring your own model: user pipelines saved with skops, loaded under the class allow-list.

Hostile artifacts (``tests.hostile_artifacts``) are refused with an ``ArtifactError`` that
names what they reference, and nothing in them runs; real pyRiemann, ``mne.decoding`` and
scikit-learn pipelines serve exactly their own probabilities, through their own
``classes_``, in the units they were fitted on.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from mne.decoding import CSP, Vectorizer
from scipy.special import expit, softmax
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from neurostream.errors import ArtifactError, ConfigError
from neurostream.models import artifacts
from neurostream.models.artifacts import ArtifactPolicy, under
from neurostream.models.serving import ServingModel
from neurostream.models.training import train_model
from neurostream.settings import CoreSettings
from tests import hostile_artifacts as hostile

FS = hostile.FS
CHANNELS = list(hostile.CHANNELS)


def _load(blob: bytes, policy: ArtifactPolicy = artifacts.DEFAULT_POLICY, **params: Any) -> Any:
    return artifacts.load(
        blob,
        "sklearn-pipeline",
        sha256=hashlib.sha256(blob).hexdigest(),
        model_params=params,
        policy=policy,
    )


def _row(
    blob: bytes, *, classes: list[int] | None = None, units: str = "uV", **model_params: Any
) -> dict[str, Any]:
    x, _ = hostile.p300_epochs()
    fitted = hostile.FittedPipeline(blob, None, x, np.zeros(len(x), np.int64))
    metadata = fitted.metadata(**model_params)
    metadata["input_spec"]["units"] = units
    if classes is not None:
        metadata["classes"] = classes
    return {
        "id": 1,
        "model_name": "byom",
        "version": 1,
        **metadata,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "artifact": blob,
    }


@pytest.fixture(scope="module")
def xdawn() -> hostile.FittedPipeline:
    return hostile.xdawn_pipeline_artifact()


@pytest.fixture(scope="module")
def epochs() -> tuple[np.ndarray, np.ndarray]:
    return hostile.p300_epochs()


# --- hostile artifacts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (hostile.eval_reference, r"builtins\.eval \(a builtin, never loaded\)"),
        (
            hostile.unlisted_class,
            r"tests\.hostile_artifacts\.Smuggled \(its module is not trusted\)",
        ),
        (hostile.allowed_function_param, r"numpy\.log \(a ufunc, not a class\)"),
        (hostile.truncated, "not a readable skops artifact"),
    ],
)
def test_hostile_artifacts_are_refused(make: Any, words: str) -> None:
    blob = make()
    with pytest.raises(ArtifactError, match=words) as info:
        _load(blob)
    assert info.value.field == "artifact"
    if "readable" not in words:
        assert "NEUROSTREAM_TRUSTED_MODULES" in (info.value.hint or "")
    with pytest.raises(ArtifactError, match=words):  # the same at swap and upload time
        ServingModel.from_row(_row(blob))


def test_os_system_artifact_is_refused_and_never_runs(tmp_path: Any) -> None:
    # The artifact is a real exploit: trusted by skops, loading it runs the command.
    control = tmp_path / "control"
    exploit = hostile.os_system_reference(f"touch {control}")
    sio.loads(exploit, trusted=sio.get_untrusted_types(data=exploit))
    assert control.exists()
    marker = tmp_path / "pwned"
    blob = hostile.os_system_reference(f"touch {marker}")
    with pytest.raises(ArtifactError, match=r"(posix|nt)\.system \(a system module") as info:
        _load(blob, ArtifactPolicy(trusted_modules=("tests",)))
    assert "untrusted types" in info.value.message
    with pytest.raises(ArtifactError, match="system"):
        ServingModel.from_row(_row(blob))
    assert not marker.exists()


def test_size_is_checked_before_anything_else() -> None:
    blob = hostile.oversized()
    assert len(blob) >= 100 * 1024 * 1024
    with pytest.raises(ArtifactError, match=f"{len(blob)} bytes, more than the 67108864"):
        artifacts.load(blob, "sklearn-pipeline", sha256="0" * 64, model_params={})
    small = ArtifactPolicy(max_bytes=1000)
    with pytest.raises(ArtifactError, match="more than the 1000 allowed"):
        _load(hostile.eval_reference(), small)


def test_an_operator_can_trust_a_module(epochs: Any) -> None:
    blob = hostile.unlisted_class()
    clf = _load(blob, ArtifactPolicy(trusted_modules=("tests.hostile_artifacts",)))
    assert clf.classes == [0, 1] and clf.score_kind == "proba"
    # Trusting a module does not trust its functions, nor a sibling module.
    with pytest.raises(ArtifactError, match="not trusted"):
        _load(blob, ArtifactPolicy(trusted_modules=("tests.hostile",)))
    core = CoreSettings(trusted_modules=["tests.hostile_artifacts"], max_artifact_bytes=10**6)
    assert ArtifactPolicy.from_settings(core) == ArtifactPolicy(("tests.hostile_artifacts",), 10**6)


@pytest.mark.parametrize(
    "name", ["os", "os.path", "subprocess", "builtins", "importlib.util", "a b"]
)
def test_system_modules_can_never_be_trusted(name: str) -> None:
    with pytest.raises(ConfigError, match="trusted_modules") as info:
        ArtifactPolicy(trusted_modules=(name,))
    assert info.value.field == "trusted_modules"


def test_prefixes_match_on_dotted_boundaries() -> None:
    assert under("mne.decoding.csp", ("mne.decoding",))
    assert under("mne.decoding", ("mne.decoding",))
    assert not under("mne.io.base", ("mne.decoding",))
    assert not under("mnefoo", ("mne",))
    assert not under("sklearnx.base", artifacts.ALLOWED_MODULES)


def test_lda_artifacts_keep_their_narrower_allow_list(xdawn: hostile.FittedPipeline) -> None:
    # sklearn-lda loads scikit-learn, NumPy and SciPy classes only, as before.
    with pytest.raises(ArtifactError, match=r"pyriemann\.estimation\.XdawnCovariances"):
        artifacts.load(
            xdawn.artifact,
            "sklearn-lda",
            sha256=hashlib.sha256(xdawn.artifact).hexdigest(),
            model_params={},
        )


# --- pipelines that serve ----------------------------------------------------------


def test_pyriemann_pipeline_serves_its_own_probabilities(xdawn: hostile.FittedPipeline) -> None:
    model = ServingModel.from_row(_row(xdawn.artifact))
    assert model.classifier.score_kind == "proba"  # type: ignore[attr-defined]
    x = xdawn.x[:12]
    want = xdawn.estimator.predict_proba(x.astype(np.float64))
    got = model.predict(x[:, ::-1], FS, channels=CHANNELS[::-1])  # matched by name
    np.testing.assert_array_equal(got.proba, want)
    np.testing.assert_array_equal(got.score, want[:, 1])
    np.testing.assert_array_equal(got.predicted, xdawn.estimator.predict(x.astype(np.float64)))


def test_mne_decoding_pipeline_serves(epochs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = epochs
    est = make_pipeline(CSP(n_components=2), LinearDiscriminantAnalysis())
    est.fit(x.astype(np.float64), y)
    model = ServingModel.from_row(_row(sio.dumps(est)))
    got = model.predict(x, FS, channels=CHANNELS)
    np.testing.assert_array_equal(got.proba, est.predict_proba(x.astype(np.float64)))


def test_string_classes_need_a_class_map(epochs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = epochs
    labels = np.where(y == 1, "Target", "NonTarget")  # MOABB's labels
    est = make_pipeline(Vectorizer(), LogisticRegression()).fit(x.astype(np.float64), labels)
    blob = sio.dumps(est)
    with pytest.raises(ArtifactError, match="class_map") as info:
        ServingModel.from_row(_row(blob))
    assert info.value.field == "model_params.class_map"
    with pytest.raises(ArtifactError, match="missing"):
        ServingModel.from_row(_row(blob, class_map={"Target": 1}))
    model = ServingModel.from_row(_row(blob, class_map={"Target": 1, "NonTarget": 0}))
    got = model.predict(x, FS, channels=CHANNELS)
    want = est.predict_proba(x.astype(np.float64))
    np.testing.assert_array_equal(got.score, want[:, list(est.classes_).index("Target")])
    np.testing.assert_array_equal(got.predicted == 1, est.predict(x) == "Target")


def test_reversed_classes_score_the_target_column(epochs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = epochs
    labels = np.where(y == 1, "a_target", "b_nontarget")  # sorts target first
    est = make_pipeline(Vectorizer(), LogisticRegression()).fit(x.astype(np.float64), labels)
    cmap = {"a_target": 1, "b_nontarget": 0}
    with pytest.raises(ArtifactError, match=r"\[1, 0\] != row classes \[0, 1\]"):
        ServingModel.from_row(_row(sio.dumps(est), class_map=cmap))
    model = ServingModel.from_row(_row(sio.dumps(est), classes=[1, 0], class_map=cmap))
    got = model.predict(x, FS, channels=CHANNELS)
    want = est.predict_proba(x.astype(np.float64))
    np.testing.assert_array_equal(got.score, want[:, 0])  # column 0 is the target here
    np.testing.assert_array_equal(got.predicted, np.where(est.predict(x) == "a_target", 1, 0))
    assert abs(np.corrcoef(got.score, y)[0, 1]) > 0.5 and np.mean(got.score[y == 1]) > 0.5


def test_positive_class_picks_the_scored_column(xdawn: hostile.FittedPipeline) -> None:
    model = ServingModel.from_row(_row(xdawn.artifact, positive_class=0))
    got = model.predict(xdawn.x, FS, channels=CHANNELS)
    np.testing.assert_array_equal(got.score, got.proba[:, 0])
    with pytest.raises(ArtifactError, match="positive_class 2 is not one of"):
        ServingModel.from_row(_row(xdawn.artifact, positive_class=2))
    with pytest.raises(ArtifactError, match="unknown model_params"):
        ServingModel.from_row(_row(xdawn.artifact, clas_map={}))


def test_svc_without_probabilities_scores_through_decision_function(
    epochs: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = epochs
    x64 = x.astype(np.float64)
    est = make_pipeline(Vectorizer(), SVC()).fit(x64, y)  # MOABB's SVC: no probability
    assert not hasattr(est, "predict_proba")
    model = ServingModel.from_row(_row(sio.dumps(est)))
    assert model.classifier.score_kind == "decision"  # type: ignore[attr-defined]
    got = model.predict(x, FS, channels=CHANNELS)
    np.testing.assert_allclose(got.score, expit(est.decision_function(x64)), rtol=1e-12)
    np.testing.assert_array_equal(got.predicted, est.predict(x64))
    # Three classes: a softmax over the one-vs-rest decision values.
    y3 = np.arange(len(y)) % 3
    est3 = make_pipeline(Vectorizer(), SVC()).fit(x64, y3)
    model3 = ServingModel.from_row(_row(sio.dumps(est3), classes=[0, 1, 2]))
    got3 = model3.predict(x, FS, channels=CHANNELS)
    np.testing.assert_allclose(got3.proba, softmax(est3.decision_function(x64), axis=1))


def test_volts_pipeline_scores_microvolt_windows_as_volts(
    epochs: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = epochs  # µV, float32 as on the wire
    volts = x.astype(np.float64) * 1e-6
    from pyriemann.estimation import XdawnCovariances
    from pyriemann.tangentspace import TangentSpace

    est = make_pipeline(XdawnCovariances(nfilter=2), TangentSpace(), LogisticRegression())
    est.fit(volts, y)  # as on MNE's epochs.get_data()
    want = est.predict_proba(volts)[:, 1]
    model = ServingModel.from_row(_row(sio.dumps(est), units="V"))
    assert model.signature.units == "V" and model.signature.scale == 1e-6
    np.testing.assert_allclose(model.predict(x, FS, channels=CHANNELS).score, want, rtol=1e-9)
    wrong = ServingModel.from_row(_row(sio.dumps(est), units="\u00b5V")).predict(x, FS).score
    assert np.max(np.abs(wrong - want)) > 0.1  # declared µV, it scores other numbers
    assert np.mean(want[y == 1]) > 0.7 > np.mean(want[y == 0]) + 0.4  # and volts separate


# --- training and retraining -------------------------------------------------------


def test_train_model_refuses_families_that_arrive_fitted(
    epochs: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = epochs
    for family in ("onnx", "sklearn-pipeline"):
        with pytest.raises(ConfigError, match="sklearn-lda, torch-eegnet") as info:
            train_model(family, x, y, FS)
        assert info.value.field == "family"


def test_a_pipeline_champion_is_refitted_from_a_clone(xdawn: hostile.FittedPipeline) -> None:
    champion = ServingModel.from_row(_row(xdawn.artifact))
    x, y = hostile.p300_epochs(seed=1)
    trained = train_model(
        "sklearn-pipeline",
        x,
        y,
        FS,
        pipeline="raw@1",
        feature_params={"stream_filter": None},
        channels=CHANNELS,
        estimator=champion.classifier.estimator,  # type: ignore[attr-defined]
        test_size=0.25,
    )
    assert trained.classifier.estimator is not xdawn.estimator  # type: ignore[attr-defined]
    assert trained.classes == [0, 1] and trained.metrics["roc_auc"] > 0.8
    model = ServingModel.from_row(trained.to_row(model_name="byom", version=2))
    est = trained.classifier.estimator  # type: ignore[attr-defined]
    np.testing.assert_array_equal(
        model.predict(x, FS, channels=CHANNELS).proba, est.predict_proba(x.astype(np.float64))
    )
