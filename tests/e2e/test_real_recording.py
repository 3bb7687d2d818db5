"""Real recordings end to end, as a user runs them: train with one command, replay live.

For each session of ``../shared/data/eeg-notebooks`` (muse-lsl runs with their own marker
codes): ``neurostream train`` fits on the first runs from their own markers
(leave-one-run-out CV, refit on all of them) and assigns the model to a fresh service;
``neurostream produce`` replays the remaining runs at speed 0 through RabbitMQ to a worker,
which writes predictions to PostgreSQL. The live path must reproduce the offline one
exactly: the same epochs (count, seq <-> event code) and the same scores as the training
code's own scoring of the files, to 1e-4. The version records the artifact gate training
used (100 µV peak-to-peak): the epochs it rejects are left out on both sides, the same ones
(stored in ``gated`` live, with no prediction). Visual P300 (runs 1–3 -> 4–5), auditory P300
(1–4 -> 5–6), and SSVEP (two flicker classes, band power 1–4 s after onset; 1–4 -> 5–6).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from neurostream import scoring
from neurostream.labelling import EventMapping
from neurostream.models.serving import ServingModel
from neurostream.recordings import read_recording
from neurostream.settings import CoreSettings
from producer.offline import epochs_from_recording
from producer.settings import ProducerSettings
from tests.factories import unique
from tests.live_support import cli, fetch, predicted, serving_row
from tests.recording_files import EEG_NOTEBOOKS
from workers.settings import WorkerSettings
from workers.worker import Worker

P300 = "target=2,nontarget=1"
SSVEP_BANDS = '{"bands": {"f20": [15, 25], "f30": [25, 35]}}'  # eeg-notebooks' SSVEP filters
pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Case:
    folder: str
    n_train: int  # the first runs train, the rest stream live
    events: str
    train_args: tuple[str, ...] = ()
    epoch_args: tuple[str, ...] = ()  # the epoch window, the same for train and produce
    tmin: float = -0.1
    tmax: float = 0.7
    chance_floor: float = 0.5  # held-out ROC-AUC above chance (erp@1 is weak on these)

    @property
    def runs(self) -> list[Path]:
        return sorted((EEG_NOTEBOOKS / self.folder).glob("*.csv"))


CASES = {
    "visual-p300": Case("visual/P300/subject2/session1", 3, P300),
    # erp@2: epochs cut from the producer's causally filtered stream (1-30 Hz), no
    # per-epoch filter; the worker reads the baseline from each window's geometry
    "visual-p300-erp2": Case(
        "visual/P300/subject2/session1", 3, P300, train_args=("--pipeline", "erp@2")
    ),
    "auditory-p300": Case("auditory/P300/subject1/session1", 4, P300),
    "ssvep": Case(
        "visual/SSVEP/subject1/session1",
        4,
        "30hz=1,20hz=2",
        train_args=("--pipeline", "bandpower@1", "--feature-params", SSVEP_BANDS),
        epoch_args=("--tmin", "1", "--tmax", "4"),
        tmin=1.0,
        tmax=4.0,
        chance_floor=0.65,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_train_on_the_first_runs_then_the_live_replay_of_the_rest_matches_offline(
    core: CoreSettings, name: str
) -> None:
    case = CASES[name]
    runs = case.runs
    if len(runs) < case.n_train + 1:
        pytest.skip(f"the shared recordings are absent ({EEG_NOTEBOOKS / case.folder})")
    service, model_name = unique(name), unique(f"{name}-lda")
    train = ["train", "--events", case.events, "--service", service, "--model-name", model_name]
    files = [a for run in runs[: case.n_train] for a in ("--file", str(run))]
    story = cli(core, *train, *case.train_args, *case.epoch_args, *files)
    assert "leave-one-run-out" in story
    row = await serving_row(core, model_name)
    assert row["input_spec"]["channels"] == ["TP9", "AF7", "AF8", "TP10"]  # AUX not EEG
    # the geometry the epochs were cut with, recorded once with the version
    assert row["input_spec"]["filtered"] == "1-30@4"
    if "erp@2" in case.train_args:
        assert row["feature_pipeline"] == "erp@2"
        assert row["feature_params"]["stream_filter"] == "1-30@4"
    assert row["metrics"]["cv"]["scheme"] == "leave-one-run-out"
    model = ServingModel.from_row(row)

    mapping = EventMapping.parse(case.events)
    worker = Worker(core, WorkerSettings(service=service, metrics_port=0))
    await worker.start()
    truth: list[np.ndarray] = []
    live: list[np.ndarray] = []
    try:
        for run in runs[case.n_train :]:
            session_id = unique("replay")
            summary = cli(
                core, "produce", "--file", str(run), "--speed", "0", "--events", case.events,
                *case.epoch_args, "--service", service, "--session-id", session_id,
            )  # fmt: skip
            settings = ProducerSettings(
                file=str(run),
                speed=0,
                events=case.events,
                service=service,
                epoch_tmin=case.tmin,
                epoch_tmax=case.tmax,
            )
            offline = epochs_from_recording(read_recording(Path(run)), settings, mapping)
            n = len(offline.y)
            assert f"{n}/{n} windows confirmed" in summary
            verdict = model.check_gate(offline.x, offline.fs, channels=offline.channels)
            assert verdict is not None  # `neurostream train` gates by default
            keep = ~verdict.rejected
            got = await predicted(core, session_id, int(keep.sum()))
            # The same epoch set: every event of the file at the same seq, once, either
            # scored or gated with its reason, as the offline gate decides.
            assert offline.seqs.tolist() == list(range(n))
            assert [r[0] for r in got] == offline.seqs[keep].tolist()
            assert [r[1] for r in got] == offline.codes[keep].tolist()
            query = "SELECT seq, reason FROM gated WHERE session_id = %s ORDER BY seq"
            for _ in range(100):  # the last batch may be gated epochs only
                gated = await fetch(core, query, [session_id])
                if len(gated) >= int((~keep).sum()):
                    break
                await asyncio.sleep(0.1)
            assert [g[0] for g in gated] == offline.seqs[~keep].tolist()
            assert [g[1] for g in gated] == [r for r in verdict.reasons if r is not None]
            scores = np.array([r[2] for r in got])
            x = offline.x[keep]
            expected = model.predict(
                x, offline.fs, channels=offline.channels, geometry=offline.geometry
            ).score
            assert np.abs(scores - expected).max() < 1e-4
            print(f"{name} {Path(run).name}: {len(gated)} of {n} epochs gated")
            truth.append(offline.y[keep])
            live.append(scores)
    finally:
        await worker.close()

    y, s = np.concatenate(truth), np.concatenate(live)
    held_out = scoring.score(y, s, classes=[0, 1])
    assert held_out["n"] == len(y) == sum(len(t) for t in truth) and 0 < int(y.sum()) < len(y)
    print(  # the figures this test stands for (pytest -s shows them)
        f"{name}: held-out runs {case.n_train + 1}-{len(runs)}: ROC-AUC {held_out['roc_auc']:.3f}, "
        f"balanced accuracy {held_out['balanced_accuracy']:.3f}"
    )
    assert held_out["roc_auc"] is not None and held_out["roc_auc"] > case.chance_floor
