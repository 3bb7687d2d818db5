"""A retrain job's challenger keeps how its champion's epochs were cut and gated.

A dataset's windows do not record their epoch geometry or the gate; the champion's
signature does. Retraining an ``erp@2`` champion (which reads the baseline from the
geometry) must work, carry the same geometry and gate, and leave gated epochs out.
"""

from __future__ import annotations

import numpy as np

from neurostream.datasets import Snapshot
from neurostream.gate import Gate
from neurostream.geometry import EpochGeometry
from neurostream.models.training import train_model
from retraining_api import retrain
from retraining_api.progress import JobProgress
from tests.factories import FS, synthetic_p300

CHANNELS = ["Fz", "Cz", "Pz", "Oz"]
GEOMETRY = EpochGeometry(-0.1, 0.7, (-0.1, 0.0), "1-30@4")


def _snapshot(x: np.ndarray, y: np.ndarray) -> Snapshot:
    meta = {"fs": FS, "channels": CHANNELS}
    return Snapshot(meta, x, y, [None] * len(y), [None] * len(y))


def test_an_erp2_champion_is_retrained_with_its_geometry_and_gate() -> None:
    x, y = synthetic_p300(240, channels=4, seed=1)
    gate = Gate(peak_to_peak_uv=100.0, flat_uv=0.5)
    champion = train_model(
        "sklearn-lda", x, y, FS, pipeline="erp@2", channels=CHANNELS, gate=gate,
        geometry=GEOMETRY,
    )  # fmt: skip
    row = champion.to_row(model_name="p300-erp2")
    train_x, train_y = synthetic_p300(240, channels=4, seed=2)
    train_x[:5, 2] += np.linspace(0, 400, train_x.shape[-1], dtype=np.float32)  # 400 µV drift
    spec = {
        "family": "sklearn-lda",
        "params": {"feature_pipeline": "erp@2"},
        "seed": 0,
        "validation_size": 0.2,
    }
    test_x, test_y = synthetic_p300(120, channels=4, seed=3)
    progress = JobProgress()
    outcome = retrain.run(
        spec, _snapshot(train_x, train_y), _snapshot(test_x, test_y), row, progress
    )
    challenger = outcome.trained.input_spec
    assert challenger["tmin"] == -0.1 and challenger["baseline"] == [-0.1, 0.0]
    assert challenger["filtered"] == "1-30@4"
    assert challenger["gate"] == {"peak_to_peak_uv": 100.0, "flat_uv": 0.5}
    _, logs, _ = progress.drain()
    assert any("5 of 240 left out" in message for _, message in logs)
    assert outcome.test["roc_auc"] > 0.9 and outcome.champion_test is not None
