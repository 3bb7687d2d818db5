"""``neurostream.models.compat``: a service's declared input against a model's signature."""

from __future__ import annotations

from typing import Any

import pytest

from neurostream.errors import ConfigError
from neurostream.features import get_pipeline
from neurostream.models.compat import ServiceInput, mismatches, version_mismatch
from neurostream.models.signature import Signature

SPEC: dict[str, Any] = {
    "fs": 256.0,
    "n_channels": 2,
    "n_samples": 205,
    "kind": "epoch",
    "channels": ["Fz", "Cz"],
    "tmin": -0.1,
    "tmax": 0.7,
}
MUSE = ["TP9", "AF7", "AF8", "TP10"]


def _row(pipeline: str = "erp@1", **spec: Any) -> dict[str, Any]:
    return {
        "model_name": "x",
        "version": 3,
        "input_spec": {**SPEC, **spec},
        "feature_pipeline": pipeline,
        "feature_params": {},
    }


def test_missing_channels_are_named() -> None:
    declared = ServiceInput.from_mapping({"channels": MUSE})
    reasons = mismatches(Signature.from_spec(SPEC), declared, model="x:3", service="p300")
    assert reasons == ["service 'p300' streams TP9, AF7, AF8, TP10; model x:3 needs Fz, Cz"]


def test_every_mismatch_is_listed_and_undeclared_keys_are_allowed() -> None:
    declared = ServiceInput.from_mapping(
        {"channels": ["Cz", "Fz", "AUX"], "fs": 250.0, "tmin": 0.0, "tmax": 0.8}
    )
    assert mismatches(Signature.from_spec(SPEC), declared, model="x:3", service="s") == [
        "service 's' streams at 250 Hz; model x:3 was trained at 256 Hz",
        "service 's' sends windows of 200 samples (0..0.8 s); model x:3 needs 205",
        "service 's' cuts epochs from +0 s around the event; model x:3 was trained on epochs "
        "from -0.1 s",
    ]
    # Channels reordered with an extra one meet the model (workers match by name); an
    # input that declares nothing, or only what matches, meets anything.
    for raw in ({"channels": ["Cz", "AUX", "Fz"]}, None, {"fs": 256}, {"tmin": -0.1}):
        assert mismatches(Signature.from_spec(SPEC), ServiceInput.from_mapping(raw)) == []


def test_a_window_length_from_tmin_tmax_uses_the_models_fs_when_the_service_gives_none() -> None:
    signature = Signature.from_spec(SPEC)
    assert mismatches(signature, ServiceInput.from_mapping({"tmin": -0.1, "tmax": 0.7})) == []
    short = ServiceInput.from_mapping({"tmin": -0.1, "tmax": 0.6})
    (reason,) = mismatches(signature, short, model="x:3")
    # round(0.6 * 256) - round(-0.1 * 256) = 154 + 26, as the producer's Windower cuts it
    assert (
        reason
        == "service 'service' sends windows of 180 samples (-0.1..0.6 s); model x:3 needs 205"
    )


def test_a_tmin_within_half_a_sample_is_the_same_epoch() -> None:
    signature = Signature.from_spec(SPEC)
    near = ServiceInput.from_mapping({"tmin": -0.1 + 0.4 / 256, "n_samples": 205})
    assert mismatches(signature, near) == []


@pytest.mark.parametrize("pipeline", ["erp@2", "raw@1"])
def test_the_stream_filter_is_checked_when_the_pipeline_needs_one(pipeline: str) -> None:
    try:
        get_pipeline(pipeline)
    except Exception:
        pytest.skip(f"{pipeline} is not in this code base")
    row = _row(pipeline)
    ok = ServiceInput.from_mapping({"filtered": "1-30"})  # read as 1-30@4
    assert version_mismatch(row, ok, service="p300") is None
    for declared, came in (({"filtered": "none"}, "unfiltered"), ({"filtered": "1-40"}, "1-40@4")):
        reason = version_mismatch(row, ServiceInput.from_mapping(declared), service="p300")
        assert reason is not None
        assert reason.startswith(f"service 'p300' declares its stream {came}; model x:3: ")
        assert "1-30@4" in reason
    # Not declared: unknown, so allowed; erp@1 takes epochs of any stream.
    assert version_mismatch(row, ServiceInput.from_mapping({"fs": 256}), service="p") is None
    assert (
        version_mismatch(_row(), ServiceInput.from_mapping({"filtered": "none"}), service="p")
        is None
    )


def test_a_model_without_names_is_matched_by_count() -> None:
    row = _row(channels=None)
    assert (
        version_mismatch(row, ServiceInput.from_mapping({"channels": ["A", "B"]}), service="s")
        is None
    )
    reason = version_mismatch(row, ServiceInput.from_mapping({"channels": MUSE}), service="s")
    assert reason == (
        "service 's' streams 4 channels; model x:3 needs 2 (it records no names, so windows "
        "are matched by count)"
    )


def test_rows_that_cannot_be_read_are_left_to_the_worker() -> None:
    declared = ServiceInput.from_mapping({"channels": MUSE})
    assert version_mismatch({**_row(), "input_spec": {"fs": -1}}, declared, service="s") is None
    unknown = version_mismatch(_row("nope@9"), declared, service="s")
    assert unknown is not None and "needs Fz, Cz" in unknown  # the signature is still checked


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"channels": ["Fz", "Fz"]}, "input.channels"),
        ({"channels": "Fz,Cz"}, "input.channels"),
        ({"fs": -256}, "input.fs"),
        ({"fs": float("nan")}, "input.fs"),
        ({"fs": True}, "input.fs"),
        ({"n_samples": 2.5}, "input.n_samples"),
        ({"tmin": 0.7, "tmax": -0.1}, "input.tmax"),
        ({"fs": 256, "tmin": -0.1, "tmax": 0.7, "n_samples": 200}, "input.n_samples"),
        ({"baseline": [0, 0]}, "input.baseline"),
        ({"baseline": [0, "x"]}, "input.baseline"),
        ({"filtered": 30}, "input.filtered"),
        ({"filtered": "30 Hz"}, "input.filtered"),
        ({"kind": "stream"}, "input.kind"),
        ({"montage": "10-20"}, "input.montage"),
        ([1, 2], "input"),
    ],
)
def test_a_bad_input_names_its_key(raw: Any, field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        ServiceInput.from_mapping(raw)
    assert refused.value.field == field


def test_the_stored_json_holds_the_declared_keys_only() -> None:
    declared = ServiceInput.from_mapping({"fs": 256, "filtered": "NONE", "baseline": (-0.1, 0)})
    assert declared.to_json() == {"fs": 256.0, "baseline": [-0.1, 0.0], "filtered": "none"}
    assert ServiceInput.from_mapping(declared.to_json()) == declared
    assert not ServiceInput.from_mapping({}).declared
