"""The artifact gate: per-epoch reasons naming the channel at fault, the thresholds a
version records, and a loose electrode found over a whole run (and dropped by name)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from neurostream.errors import ArtifactError, ConfigError
from neurostream.gate import Gate, GateReport, Tally
from neurostream.labelling import EventMapping
from neurostream.models.serving import ServingModel
from neurostream.models.training import train_model
from neurostream.recordings import Recording
from producer.offline import epochs_from_recording
from tests.factories import FS, synthetic_p300
from tests.recording_files import MUSE_CHANNELS, loose_electrode

P300 = EventMapping.parse("target=2,nontarget=1")


def recording(data: np.ndarray, events: list[tuple[int, int]], fs: float = 256.0) -> Recording:
    n = data.shape[1]
    return Recording(
        path=Path("loose.csv"),
        format="csv",
        channels=MUSE_CHANNELS,
        fs=fs,
        data=data,
        times=np.arange(n) / fs,
        events=np.asarray(events, dtype=np.int64).reshape(-1, 2),
    )


def test_reasons_name_the_channel_and_the_amplitude_and_clean_epochs_pass() -> None:
    x = np.zeros((4, 4, 200), np.float32)
    x[:] = np.sin(np.linspace(0, 20, 200)) * 10  # 20 µV peak-to-peak everywhere: clean
    x[1, 1, 50] = 412.0  # AF7 spikes: peak-to-peak 412 - (-10)
    x[2, 3] = 0.05 * np.sin(np.linspace(0, 20, 200))  # TP10 flat
    x[3, 0, 10], x[3, 2, 10] = 150.0, 300.0  # two channels at once, the worst named first
    verdict = Gate().check(x, MUSE_CHANNELS)
    assert verdict.rejected.tolist() == [False, True, True, True]
    reasons = verdict.reasons
    assert reasons[0] is None
    assert reasons[1] == "peak-to-peak 422 µV on AF7 > 100 µV"
    assert reasons[2] == "flat TP10 (std 0.035 µV)"
    assert reasons[3] == "peak-to-peak 310 µV on AF8, 160 µV on TP9 > 100 µV"
    assert verdict.offenders(3) == ("TP9", "AF8")
    assert verdict.offenders(0) == ()


def test_the_gate_ignores_offsets_and_either_check_can_be_off() -> None:
    x, _ = synthetic_p300(n=20, seed=3)
    shifted = x + 5000.0  # a DC offset of 5 mV: peak-to-peak and std do not see it
    assert not Gate().check(shifted, ["a", "b", "c", "d"]).rejected.any()
    flat = np.zeros_like(x)
    assert Gate().check(flat, ["a", "b", "c", "d"]).rejected.all()
    assert not Gate(flat_uv=None).check(flat, ["a", "b", "c", "d"]).rejected.any()
    assert not Gate(peak_to_peak_uv=None).check(x * 100, ["a", "b", "c", "d"]).rejected.any()


def test_gate_settings_round_trip_and_bad_values_are_refused() -> None:
    gate = Gate(peak_to_peak_uv=80, flat_uv=1)
    assert gate.to_spec() == {"peak_to_peak_uv": 80.0, "flat_uv": 1.0}
    assert Gate.from_spec(gate.to_spec()) == gate
    assert Gate.from_spec(None) is None
    with pytest.raises(ConfigError, match="must be positive"):
        Gate(peak_to_peak_uv=0)
    with pytest.raises(ConfigError, match="unknown keys"):
        Gate.from_spec({"reject": 100})


def test_cli_defaults_are_the_gate_defaults() -> None:
    from launcher.cli import train

    params = inspect.signature(train).parameters
    assert params["reject_uv"].default == Gate().peak_to_peak_uv == 100.0
    assert params["flat_uv"].default == Gate().flat_uv == 0.5


def test_a_loose_electrode_is_named_in_every_reason_and_found_bad_for_the_run() -> None:
    data, events = loose_electrode(60.0)
    epochs = epochs_from_recording(recording(data, events), mapping=P300)
    assert len(epochs.y) == 59
    verdict = Gate().check(epochs.x, epochs.channels)
    assert verdict.rejected.sum() == 59
    assert all(r is not None and r.endswith("µV on AF7 > 100 µV") for r in verdict.reasons)

    tally = Tally(Gate(), epochs.channels)
    for i in range(0, 59, 7):  # as a session cuts them, a few at a time
        tally.add(epochs.x[i : i + 7])
    report = tally.report()
    assert (report.epochs, report.rejected, report.share) == (59, 59, 1.0)
    assert report.per_channel == {"TP9": 0, "AF7": 59, "AF8": 0, "TP10": 0}
    assert report.most and [b.name for b in report.bad] == ["AF7"]
    (bad,) = report.bad
    assert (bad.offending_share, bad.rejected_share, bad.alone) == (1.0, 1.0, 59)
    assert 40 < bad.std_ratio < 60  # 390 µV against 8 µV
    line = report.summary()
    assert line.startswith(
        "gate (peak-to-peak > 100 µV, std < 0.5 µV): 59 of 59 epochs would be rejected (100%)"
    )
    assert "AF7 in 100% of them" in line
    assert line.endswith("drop it with --drop-channels AF7 (59 epochs come back)")


def test_dropping_the_bad_channel_by_name_brings_the_epochs_back() -> None:
    data, events = loose_electrode(60.0, blinks=(3, 10))
    dropped = recording(data, events).pick(["TP9", "AF8", "TP10"])
    epochs = epochs_from_recording(dropped, mapping=P300)
    report = Tally(Gate(), epochs.channels)
    verdict = report.add(epochs.x)
    assert np.flatnonzero(verdict.rejected).tolist() == [3, 10]  # only the blinks are left
    assert verdict.reasons[3] is not None and "on AF8 > 100 µV" in verdict.reasons[3]
    result = report.report()
    assert (result.epochs, result.rejected, result.bad) == (59, 2, ())
    assert not result.most
    assert "per channel: AF8 2" in result.line()


def test_ordinary_channels_of_different_amplitude_are_not_bad() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (200, 4, 205)) * np.array([8.0, 3.0, 3.5, 8.0])[None, :, None]
    offending = np.zeros((200, 4), bool)
    offending[:30, 0] = True  # an SSVEP-like run: a fifth of the epochs, spread
    offending[10:40, 3] = True
    report = GateReport.of(Gate(), MUSE_CHANNELS, offending, x.std(axis=2))
    assert report.bad == () and report.rejected == 40


def test_a_version_records_its_gate_and_serves_with_it() -> None:
    x, y = synthetic_p300(n=60, seed=2)
    names = ["Fz", "Cz", "Pz", "Oz"]
    trained = train_model("sklearn-lda", x, y, FS, channels=names, gate=Gate(peak_to_peak_uv=90))
    assert trained.input_spec["gate"] == {"peak_to_peak_uv": 90.0, "flat_uv": 0.5}
    model = ServingModel.from_row(trained.to_row(model_name="m"))
    assert model.gate == Gate(peak_to_peak_uv=90)
    window = x[:3].copy()
    window[1, 2, 7] = 500.0
    # Matched by name like predict: the window's rows reordered, an extra one ignored.
    order = ["Oz", "Pz", "AUX", "Cz", "Fz"]
    rows = [names.index(n) if n in names else None for n in order]
    stacked = np.stack(
        [window[:, r] if r is not None else np.full_like(window[:, 0], 1e4) for r in rows], 1
    )
    verdict = model.check_gate(stacked, FS, channels=order)
    assert verdict is not None and verdict.rejected.tolist() == [False, True, False]
    assert verdict.offenders(1) == ("Pz",)
    plain = train_model("sklearn-lda", x, y, FS, channels=names)
    assert "gate" not in plain.input_spec
    assert ServingModel.from_row(plain.to_row(model_name="m")).check_gate(x, FS) is None
    bad = trained.to_row(model_name="m") | {
        "input_spec": trained.input_spec | {"gate": {"peak_to_peak_uv": -1}}
    }
    with pytest.raises(ArtifactError, match="peak_to_peak_uv must be positive"):
        ServingModel.from_row(bad)
