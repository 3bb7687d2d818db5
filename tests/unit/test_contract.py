"""The window contract: round trip and every way a window can be rejected."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurostream.contract import (
    SCHEMA_VERSION,
    ContractError,
    DecisionMessage,
    GatedItem,
    PredictionItem,
    PredictionMessage,
    TrialTruth,
    WindowKind,
    decode,
    encode,
    make_window,
    message_id,
    trial_key,
)
from neurostream.geometry import EpochGeometry
from tests.conftest import window_factory


def test_round_trip_preserves_data_and_header() -> None:
    w = window_factory(seq=7, marker=1)
    body, headers = encode(w, sent_at=123.5)
    assert len(body) == 16 * 200 * 4
    assert headers["schema"] == SCHEMA_VERSION and headers["sent_at"] == "123.5"
    out = decode(body, headers)
    np.testing.assert_array_equal(out.data, w.data)
    assert out.data.dtype == np.float32 and out.data.shape == (16, 200)
    assert out.header.seq == 7 and out.header.marker == 1
    assert out.header.kind is WindowKind.EPOCH
    assert out.header.message_id == message_id("s-test", 7) == "s-test:7"


def test_body_is_little_endian_c_order_float32() -> None:
    data = np.arange(6, dtype=np.float64).reshape(2, 3)
    w = make_window(data, session_id="s", seq=0, t0=0.0, fs=100, channels=["a", "b"])
    body, _ = encode(w)
    assert body == np.arange(6, dtype="<f4").tobytes()


def test_times_keep_microsecond_precision_through_amqp_tables() -> None:
    from pamqp.decode import field_table
    from pamqp.encode import field_table as encode_table

    w = make_window(
        np.zeros((1, 2)), session_id="s", seq=0, t0=1795425792.123456, fs=255.9, channels=["a"]
    )
    body, headers = encode(w, sent_at=1795425792.654321)
    _, wire = field_table(encode_table(headers))
    out = decode(body, wire)
    assert out.header.t0 == 1795425792.123456 and out.header.fs == 255.9
    assert out.header.sent_at == 1795425792.654321


def test_headers_as_bytes_are_accepted() -> None:
    body, headers = encode(window_factory())
    as_bytes = {
        k: (v.encode() if isinstance(v, str) else [c.encode() for c in v] if k == "channels" else v)
        for k, v in headers.items()
    }
    assert decode(body, as_bytes).header.channels[0] == "ch0"


def test_channel_names_mixing_str_and_bytes_all_come_out_str() -> None:
    body, headers = encode(window_factory(n_channels=3))
    headers = {**headers, "channels": ("ch0", b"ch1", bytearray(b"ch2")), "session_id": b"s-x"}
    header = decode(body, headers).header
    assert header.channels == ("ch0", "ch1", "ch2")
    assert header.session_id == "s-x"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b, h: (b[:-4], h), "needs"),  # truncated body
        (lambda b, h: (b + b"\0\0\0\0", h), "needs"),  # wrong shape
        (lambda b, h: (b, {**h, "schema": 99}), "unknown schema version 99"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "schema"}), "missing header"),
        (lambda b, h: (b, {**h, "fs": -1.0}), "'fs'"),
        (lambda b, h: (b, {**h, "fs": math.nan}), "'fs'"),
        (lambda b, h: (b, {**h, "seq": -3}), "'seq'"),
        (lambda b, h: (b, {**h, "session_id": "a b;drop"}), "'session_id'"),
        (lambda b, h: (b, {**h, "kind": "weird"}), "'kind'"),
    ],
)
def test_malformed_windows_are_rejected_with_a_reason(mutate, needle) -> None:
    body, headers = encode(window_factory(seq=3))
    bad_body, bad_headers = mutate(body, headers)
    with pytest.raises(ContractError) as err:
        decode(bad_body, bad_headers)
    assert needle in err.value.reason


def test_nan_and_inf_are_rejected_with_session_and_seq() -> None:
    w = window_factory(seq=4)
    for bad in (np.nan, np.inf):
        data = w.data.copy()
        data[3, 10] = bad
        body, headers = encode(
            make_window(data, session_id="s", seq=4, t0=0, fs=250, channels=w.header.channels)
        )
        with pytest.raises(ContractError) as err:
            decode(body, headers)
        assert err.value.reason == "data contains NaN or Inf"
        assert (err.value.session_id, err.value.seq) == ("s", 4)


def test_size_limit_checked_before_parsing() -> None:
    body, headers = encode(window_factory())
    with pytest.raises(ContractError, match="exceeds the 100-byte limit"):
        decode(body, headers, max_bytes=100)


def test_expected_fs_mismatch() -> None:
    body, headers = encode(window_factory(fs=250))
    with pytest.raises(ContractError, match="does not match the service's 500"):
        decode(body, headers, expected_fs=500)
    assert decode(body, headers, expected_fs=250.0).header.fs == 250.0


def test_make_window_refuses_channel_mismatch() -> None:
    with pytest.raises(ContractError, match="does not match 3 channels"):
        make_window(np.zeros((2, 4)), session_id="s", seq=0, t0=0, fs=1, channels=["a", "b", "c"])


def test_epoch_geometry_travels_in_optional_headers() -> None:
    geometry = EpochGeometry(-0.1, None, (-0.1, 0.0), "1-30@4")
    w = make_window(
        np.zeros((2, 10)), session_id="g", seq=3, t0=1.0, fs=256.0, channels=["a", "b"],
        kind="epoch", marker=2, geometry=geometry,
    )  # fmt: skip
    body, headers = encode(w)
    assert (headers["tmin"], headers["baseline"], headers["filtered"]) == (
        "-0.1", ["-0.1", "0.0"], "1-30@4"
    )  # fmt: skip
    assert decode(body, headers).header.geometry == geometry
    # a producer that predates the headers: the window decodes, without a geometry
    old = {k: v for k, v in headers.items() if k not in ("tmin", "baseline", "filtered")}
    assert decode(body, old).header.geometry is None
    # a sliding window from a filtered stream carries only the filter
    s = make_window(np.zeros((2, 10)), session_id="g", seq=4, t0=1.0, fs=256.0,
                    channels=["a", "b"], filtered="1-30@4")  # fmt: skip
    sb, sh = encode(s)
    assert "tmin" not in sh and decode(sb, sh).header.filtered == "1-30@4"


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"baseline": ["0.0", "-0.1"]}, "baseline"), ({"tmin": "nan"}, "tmin")],
)
def test_a_bad_geometry_header_is_a_contract_error(change: dict, needle: str) -> None:
    w = window_factory(seq=1, marker=1)
    body, headers = encode(w)
    with pytest.raises(ContractError, match=needle):
        decode(body, {**headers, **change})


def test_trial_travels_in_an_optional_header() -> None:
    w = make_window(
        np.zeros((2, 10)), session_id="t", seq=5, t0=1.0, fs=250.0, channels=["a", "b"],
        kind="epoch", marker=7, trial=3,
    )  # fmt: skip
    body, headers = encode(w)
    assert headers["trial"] == 3
    assert decode(body, headers).header.trial == 3
    # an older producer: no header, no trial; a non-trial window sends none
    old = {k: v for k, v in headers.items() if k != "trial"}
    assert decode(body, old).header.trial is None
    assert "trial" not in encode(window_factory(seq=1))[1]
    with pytest.raises(ContractError, match="trial"):
        decode(body, {**headers, "trial": -1})


def test_a_prediction_message_carries_trials_and_gated_epochs() -> None:
    message = PredictionMessage(
        session_id="s",
        predictions=[
            PredictionItem(
                seq=4,
                model_version_id=2,
                predicted=1,
                score=0.8,
                marker=3,
                t0=10.0,
                kind=WindowKind.EPOCH,
                trial=1,
            )  # fmt: skip
        ],
        gated=[GatedItem(seq=5, trial=1, marker=9, reason="peak-to-peak 400 uV on Pz")],
    )
    back = PredictionMessage.decode(message.encode())
    assert back == message
    assert back.predictions[0].trial == 1 and back.gated[0].marker == 9
    # a body from a worker before trials: no "trial", no "gated"
    old = PredictionMessage.decode(
        b'{"session_id": "s", "predictions": [{"seq": 1, "model_version_id": 2, '
        b'"predicted": 0, "score": 0.1, "t0": 1.0, "kind": "epoch"}]}'
    )
    assert old.gated == [] and old.predictions[0].trial is None


def test_trial_truth_and_decision_round_trip() -> None:
    truth = TrialTruth(session_id="s-1", trial=2, targets=[3, 10], symbol="P")
    assert TrialTruth.decode(truth.encode()) == truth and truth.source == "paradigm"
    assert trial_key("p300", "s-1") == "trial.p300.s-1"
    decision = DecisionMessage(
        session_id="s-1", service="p300", trial=2, rule="fixed-10", symbol_index=15,
        symbol="P", codes=[3, 10], posterior=0.97, repetitions=10, epochs=120,
        model_version_ids=[4], last_event_t=1_700_000_000.123456, last_sample_t=None,
        decided_at=1_700_000_000.5, evidence={"3": 12.5, "10": 9.25},
    )  # fmt: skip
    back = DecisionMessage.decode(decision.encode())
    assert back == decision and back.last_event_t == 1_700_000_000.123456


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"session_id": "s", "trial": 0, "targets": []}', "targets"),
        (b'{"session_id": "s", "trial": -1, "targets": [1, 7]}', "trial"),
        (b"not json", "body"),
    ],
)
def test_a_bad_trial_truth_is_a_contract_error(body: bytes, needle: str) -> None:
    with pytest.raises(ContractError, match=f"invalid trial truth '{needle}"):
        TrialTruth.decode(body)


def test_a_decision_posterior_outside_zero_one_is_refused() -> None:
    with pytest.raises(ContractError, match="posterior"):
        DecisionMessage.decode(
            b'{"session_id": "s", "service": "p", "trial": 0, "rule": "fixed-1", '
            b'"symbol_index": 0, "symbol": "A", "codes": [1, 7], "posterior": 1.5, '
            b'"repetitions": 1, "epochs": 12, "model_version_ids": [1], '
            b'"decided_at": 1.0, "evidence": {}}'
        )
