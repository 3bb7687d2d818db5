"""Pure helpers of ml_data_api and neurostream.datasets: no broker, no database."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from ml_data_api import export
from ml_data_api.archiver import window_params
from ml_data_api.collector import LabelEvent, dedupe, parse_label
from ml_data_api.errors import Invalid
from ml_data_api.routers.production import page
from ml_data_api.routers.sessions import by_model_version, duration_s, score
from ml_data_api.schemas import UploadRow
from ml_data_api.upload import load_npz, parse_channels, rows_to_arrays
from neurostream.contract import make_window
from neurostream.datasets import check_arrays
from neurostream.errors import InvalidRequest


def _x(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 3, (n, 2, 4)).astype(np.float32)


# --- neurostream.datasets.check_arrays -----------------------------------------------------


def test_check_arrays_normalises() -> None:
    x, y = check_arrays(
        _x().astype(np.float64), np.array([0.0, 1, 0, 1, 1]), fs=250, channels=["a", "b"]
    )
    assert x.dtype == np.dtype("<f4") and y.dtype == np.dtype("<i8")


@pytest.mark.parametrize(
    ("x", "y", "fs", "channels", "field"),
    [
        (np.zeros((2, 3)), np.zeros(2), 250, ["a", "b"], "windows"),
        (np.zeros((0, 2, 3)), np.zeros(0), 250, ["a", "b"], "windows"),
        (np.full((1, 2, 3), np.nan), np.zeros(1), 250, ["a", "b"], "windows"),
        (np.zeros((2, 2, 3)), np.zeros(3), 250, ["a", "b"], "labels"),
        (np.zeros((2, 2, 3)), np.array([0.5, 1]), 250, ["a", "b"], "labels"),
        (np.zeros((2, 2, 3)), np.array([2**40, 1]), 250, ["a", "b"], "labels"),
        (np.zeros((2, 2, 3)), np.zeros(2), 0, ["a", "b"], "fs"),
        (np.zeros((2, 2, 3)), np.zeros(2), 250, ["a"], "channels"),
        (np.array([[["x"]]]), np.zeros(1), 250, ["a"], "windows"),
    ],
)
def test_check_arrays_refuses(
    x: np.ndarray, y: np.ndarray, fs: float, channels: list[str], field: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_arrays(x, y, fs=fs, channels=channels)
    assert info.value.field == field and info.value.status == 422
    assert not info.value.message.startswith(f"{field}:")  # the field is not in the message


# --- uploads -------------------------------------------------------------------------------


def test_rows_to_arrays() -> None:
    x = _x(3)
    got_x, got_y = rows_to_arrays([UploadRow(data=w.tolist(), label=i) for i, w in enumerate(x)])
    np.testing.assert_array_equal(got_x, x)
    assert got_y.tolist() == [0, 1, 2]
    with pytest.raises(Invalid, match="1.data|every window"):
        rows_to_arrays([UploadRow(data=[[1.0, 2.0]], label=0), UploadRow(data=[[1.0]], label=0)])
    with pytest.raises(Invalid):
        rows_to_arrays([UploadRow(data=[[1e39]], label=0)])


def test_load_npz_guards() -> None:
    buf = io.BytesIO()
    np.savez(buf, x=_x(), y=np.arange(5))
    x, y = load_npz(buf.getvalue(), max_unpacked=10**6)
    np.testing.assert_array_equal(x, _x())
    with pytest.raises(Invalid, match="unpacks to"):
        load_npz(buf.getvalue(), max_unpacked=100)
    pickled = io.BytesIO()
    np.savez(pickled, x=np.array([{}], dtype=object), y=np.arange(1))
    with pytest.raises(Invalid) as exc:
        load_npz(pickled.getvalue(), max_unpacked=10**6)
    assert exc.value.field == "file"
    missing = io.BytesIO()
    np.savez(missing, x=_x())
    with pytest.raises(Invalid, match="missing"):
        load_npz(missing.getvalue(), max_unpacked=10**6)
    with pytest.raises(Invalid, match="zip"):
        load_npz(b"not a zip", max_unpacked=10**6)
    odd = io.BytesIO()
    with zipfile.ZipFile(odd, "w") as zf:
        zf.writestr("x.npy", b"garbage")
        zf.writestr("y.npy", b"garbage")
    with pytest.raises(Invalid, match="must be .npy arrays"):
        load_npz(odd.getvalue(), max_unpacked=10**6)


def test_parse_channels() -> None:
    assert parse_channels('["Fz", "Cz"]') == ["Fz", "Cz"]
    assert parse_channels(" Fz, Cz ") == ["Fz", "Cz"]
    for bad in ["[1, 2]", "[", "Fz,,Cz", ""]:
        with pytest.raises(Invalid):
            parse_channels(bad)


# --- export --------------------------------------------------------------------------------


def _export_rows(x: np.ndarray) -> list[export.Row]:
    return [(i, None if i % 2 else "s1", i, i % 2, x[i].tobytes()) for i in range(len(x))]


def test_csv_round_trip_is_exact() -> None:
    x = _x(4) * np.float32(1e-7) + np.float32(1 / 3)
    text = export.csv_header(["a", "b"], 4) + export.csv_chunk(_export_rows(x)[:2])
    text += export.csv_chunk(_export_rows(x)[2:]) + export.csv_chunk([])
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == [
        "idx",
        "session_id",
        "seq",
        "label",
        *[f"{c}_{i}" for c in "ab" for i in range(4)],
    ]
    got = np.array([[float(v) for v in r[4:]] for r in table[1:]], dtype=np.float32)
    np.testing.assert_array_equal(got.reshape(x.shape), x)
    assert [r[1] for r in table[1:]] == ["s1", "", "s1", ""]


def test_parquet_round_trip() -> None:
    x = _x(5)
    meta = {"name": "d", "version": 1, "n_channels": 2, "n_samples": 4, "channels": ["a", "b"]}
    rows = _export_rows(x)
    data = b"".join(export.parquet_bytes(meta, [rows[:2], [], rows[2:]]))
    table = pq.read_table(io.BytesIO(data))
    got_x, got_y = export.read_parquet_arrays(table)
    np.testing.assert_array_equal(got_x, x)
    assert got_y.tolist() == [0, 1, 0, 1, 0]
    assert table.column("session_id").to_pylist()[:2] == ["s1", None]


# --- consumers -----------------------------------------------------------------------------


def test_parse_label() -> None:
    event = parse_label(b'{"session_id": "s-1", "seq": 3, "label": 1, "extra": true}')
    assert event == LabelEvent(session_id="s-1", seq=3, label=1, source="paradigm")
    for body, field in [
        (b"nope", "body"),
        (b'{"session_id": "s", "seq": "3", "label": 1}', "seq"),
        (b'{"session_id": "s", "seq": -1, "label": 1}', "seq"),
        (b'{"session_id": "a b", "seq": 1, "label": 1}', "session_id"),
        (b'{"session_id": "s", "seq": 1}', "label"),
    ]:
        with pytest.raises(Invalid) as info:
            parse_label(body)
        assert info.value.field == field


def test_dedupe_keeps_last() -> None:
    a = LabelEvent(session_id="s", seq=1, label=0)
    b = LabelEvent(session_id="s", seq=1, label=1)
    c = LabelEvent(session_id="s", seq=2, label=0)
    assert dedupe([a, c, b]) == [b, c]


def test_window_params() -> None:
    w = make_window(
        _x(1)[0],
        session_id="s",
        seq=4,
        t0=10.5,
        fs=250.0,
        channels=["a", "b"],
        kind="epoch",
        marker=2,
    )
    p = window_params([("p300", w)])
    assert (p["s"], p["q"], p["t0"], p["sv"], p["k"], p["mk"]) == (
        ["s"],
        [4],
        [10.5],
        ["p300"],
        ["epoch"],
        [2],
    )
    assert (p["c"], p["n"], p["ch"]) == ([2], [4], ['["a", "b"]'])
    assert p["d"][0] == w.data.tobytes()


# --- routers' pure parts -------------------------------------------------------------------


def test_page() -> None:
    assert page([{"a": 1}, {"a": 2}, {"a": 3}], 2, 10) == ([{"a": 1}, {"a": 2}], 12)
    assert page([{"a": 1}], 2, 0) == ([{"a": 1}], None)


def test_session_score_per_model_version_leads_with_roc_auc_and_balanced_accuracy() -> None:
    rows = [(1, 1, [0.2, 0.8], 1), (1, 0, [0.7, 0.3], 0), (2, 1, [0.4, 0.6], 0)]
    out = by_model_version(rows)
    assert out[0] == {
        "model_version_id": 1,
        "roc_auc": 1.0,
        "balanced_accuracy": 1.0,
        "accuracy": 1.0,
        "accuracy_chance": 0.5,
        "n": 2,
    }
    assert list(out[0])[1:3] == ["roc_auc", "balanced_accuracy"]
    one_class = out[1]  # version 2 saw only non-targets, and called one a target
    assert one_class["roc_auc"] is None and one_class["balanced_accuracy"] == 0.0
    overall = out[-1]
    assert overall["model_version_id"] is None and overall["accuracy"] == pytest.approx(2 / 3)
    assert overall["balanced_accuracy"] == pytest.approx(0.75)  # recalls 1/2 and 1
    assert overall["accuracy_chance"] == pytest.approx(2 / 3) and overall["roc_auc"] == 1.0
    assert score([]) == {
        "roc_auc": None,
        "balanced_accuracy": None,
        "accuracy": None,
        "accuracy_chance": None,
        "n": 0,
    }
    ragged = score([(1, 1, [0.9, 0.1], 1), (1, 0, [1.0], 0)])  # probabilities unusable
    assert ragged["roc_auc"] is None and ragged["balanced_accuracy"] == 1.0


def test_duration() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    registered = {"started_at": t, "ended_at": t + timedelta(seconds=30)}
    assert duration_s({**registered, "first_ts": None, "w_fs": None}) == 30
    archived = {
        "started_at": t,
        "ended_at": None,
        "first_ts": t,
        "last_ts": t + timedelta(seconds=9),
        "w_fs": 250.0,
        "n_samples": 250,
    }
    assert duration_s(archived) == 10
    assert (
        duration_s({"started_at": None, "ended_at": None, "first_ts": None, "w_fs": None}) is None
    )
