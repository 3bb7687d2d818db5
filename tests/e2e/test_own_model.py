"""A user's own models on a real recording, end to end, as a user runs them.

Visual P300 (eeg-notebooks, subject 2, session 1): the first three runs fit, the last two
stream live. A plain user script (``examples/fit_xdawn_tangent_space.py``) fits pyRiemann's
XDAWN covariances + tangent space + logistic regression on the epochs a live session would
publish and saves it with skops; ``neurostream models push`` sends it to a real queue
manager over HTTP with the token and assigns it; ``neurostream produce`` replays the held-out
runs to a worker. The live path must reproduce the user's own offline scores: the same epochs
(seq <-> event code) and per-epoch scores within 1e-4 of the estimator's ``predict_proba``.
Its held-out ROC-AUC is printed beside shrinkage LDA's (``erp@1``) and ``erp@2``'s on the
same split. Then the project's EEGNet, exported to ONNX, goes the same way.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from neurostream import scoring
from neurostream.labelling import EventMapping
from neurostream.models.export import onnx_version
from neurostream.models.serving import ServingModel
from neurostream.models.training import train_model
from neurostream.recordings import read_recording
from neurostream.settings import CoreSettings
from producer.offline import LabelledEpochs, epochs_from_recording
from tests.factories import unique
from tests.live_support import cli, predicted, serving_row
from tests.recording_files import EEG_NOTEBOOKS
from workers.settings import WorkerSettings
from workers.worker import Worker

pytestmark = pytest.mark.e2e
FOLDER = EEG_NOTEBOOKS / "visual/P300/subject2/session1"
EVENTS = "target=2,nontarget=1"
SCRIPT = Path(__file__).parents[2] / "examples" / "fit_xdawn_tangent_space.py"


def runs() -> list[Path]:
    found = sorted(FOLDER.glob("*.csv"))
    if len(found) < 5:
        pytest.skip(f"the shared recordings are absent ({FOLDER})")
    return found


def offline(run: Path) -> LabelledEpochs:
    """The epochs the producer's live replay of ``run`` publishes (its default settings)."""
    return epochs_from_recording(read_recording(run), mapping=EventMapping.parse(EVENTS))


async def replay(core: CoreSettings, service: str, held_out: list[Path]) -> list[list[Any]]:
    """Stream each run live to one worker of ``service``; its stored (seq, marker, score)."""
    worker = Worker(core, WorkerSettings(service=service, metrics_port=0))
    await worker.start()
    stored = []
    try:
        for run in held_out:
            session_id = unique("own")
            story = cli(
                core, "produce", "--file", str(run), "--speed", "0", "--events", EVENTS,
                "--service", service, "--session-id", session_id,
            )  # fmt: skip
            n = len(offline(run).y)
            assert f"{n}/{n} windows confirmed" in story
            stored.append([list(r) for r in await predicted(core, session_id, n)])
    finally:
        await worker.close()
    return stored


def push(core: CoreSettings, qm: str, token: str, *args: str) -> str:
    return cli(core, "models", "push", *args, "--url", qm, "--token", token)


def check_live(stored: list[list[Any]], epochs: list[LabelledEpochs], scores: list[np.ndarray]):
    """The live rows are the offline epochs, each once, with the offline scores."""
    for rows, e, expected in zip(stored, epochs, scores, strict=True):
        assert [r[0] for r in rows] == e.seqs.tolist() == list(range(len(e.y)))
        assert [r[1] for r in rows] == e.codes.tolist()
        assert np.abs(np.array([r[2] for r in rows]) - expected).max() < 1e-4


async def test_a_users_pyriemann_pipeline_pushed_with_the_cli_serves_live(
    core: CoreSettings, qm: str, token: str, tmp_path: Path
) -> None:
    fit_runs, held_out = runs()[:3], runs()[3:]
    out = tmp_path / "model"
    script = [sys.executable, str(SCRIPT), *map(str, fit_runs), "--events", EVENTS]
    done = await asyncio.to_thread(
        subprocess.run, [*script, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "leave-one-run-out ROC-AUC" in done.stdout

    service, name = unique("own-xdawn"), unique("p300-xdawn")
    story = push(
        core, qm, token, str(out / "model.skops"), "--name", name,
        "--family", "sklearn-pipeline", "--pipeline", "raw@1",
        "--signature", str(out / "signature.json"), "--assign", service,
    )  # fmt: skip
    assert f"registered {name} v1" in story and service in story
    row = await serving_row(core, name)
    assert (row["family"], row["feature_pipeline"]) == ("sklearn-pipeline", "raw@1")
    assert row["input_spec"]["channels"] == ["TP9", "AF7", "AF8", "TP10"]

    # The user's own offline scores: their estimator, loaded as they saved it.
    path = out / "model.skops"
    estimator = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    target = list(estimator.classes_).index(1)
    epochs = [offline(run) for run in held_out]
    expected = [estimator.predict_proba(e.x.astype(np.float64))[:, target] for e in epochs]
    stored = await replay(core, service, held_out)
    check_live(stored, epochs, expected)

    # The same split through the project's own pipelines, offline.
    fit = [offline(run) for run in fit_runs]
    x, y = np.concatenate([e.x for e in fit]), np.concatenate([e.y for e in fit])
    y_held = np.concatenate([e.y for e in epochs])
    auc = {"XDAWN cov + TS + LR (user's, live)": np.concatenate([r for r in expected])}
    for label, pipeline in (("shrinkage LDA, erp@1", "erp@1"), ("shrinkage LDA, erp@2", "erp@2")):
        trained = train_model(
            "sklearn-lda", x, y, fit[0].fs, pipeline=pipeline, channels=fit[0].channels,
            geometry=fit[0].geometry, test_size=0,
        )  # fmt: skip
        model = ServingModel.from_row(trained.to_row(model_name="compare"))
        auc[label] = np.concatenate(
            [
                model.predict(e.x, e.fs, channels=e.channels, geometry=e.geometry).score
                for e in epochs
            ]
        )
    figures = {k: scoring.score(y_held, s, classes=[0, 1]) for k, s in auc.items()}
    for label, f in figures.items():  # the figures this test stands for (pytest -s)
        bacc = f["balanced_accuracy"]
        print(f"{label}: ROC-AUC {f['roc_auc']:.3f}, balanced accuracy {bacc:.3f}")
    assert figures["XDAWN cov + TS + LR (user's, live)"]["roc_auc"] > 0.5
    assert figures["XDAWN cov + TS + LR (user's, live)"]["n"] == len(y_held)


async def test_an_onnx_network_pushed_with_the_cli_serves_live(
    core: CoreSettings, qm: str, token: str, tmp_path: Path
) -> None:
    fit_runs, held_out = runs()[:3], runs()[3:4]
    fit = [offline(run) for run in fit_runs]
    x, y = np.concatenate([e.x for e in fit]), np.concatenate([e.y for e in fit])
    trained = onnx_version(
        train_model("torch-eegnet", x, y, fit[0].fs, channels=fit[0].channels, test_size=0)
    )
    (tmp_path / "eegnet.onnx").write_bytes(trained.artifact)
    (tmp_path / "signature.json").write_text(json.dumps(trained.input_spec))

    service, name = unique("own-onnx"), unique("p300-onnx")
    push(
        core, qm, token, str(tmp_path / "eegnet.onnx"), "--name", name, "--family", "onnx",
        "--pipeline", trained.feature_pipeline, "--signature", str(tmp_path / "signature.json"),
        "--feature-params", json.dumps(trained.feature_params),
        "--model-params", json.dumps(trained.model_params), "--assign", service,
    )  # fmt: skip
    row = await serving_row(core, name)
    assert row["family"] == "onnx" and row["sha256"] == trained.sha256
    model = ServingModel.from_row(row)  # onnxruntime, as the worker loads it
    epochs = [offline(run) for run in held_out]
    expected = [model.predict(e.x, e.fs, channels=e.channels).score for e in epochs]
    stored = await replay(core, service, held_out)
    check_live(stored, epochs, expected)
    held = scoring.score(np.concatenate([e.y for e in epochs]), expected[0], classes=[0, 1])
    print(f"EEGNet as ONNX, run 4: ROC-AUC {held['roc_auc']:.3f}")
