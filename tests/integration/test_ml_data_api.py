"""The ML data API end to end: real PostgreSQL (scratch database), real RabbitMQ (vhost).

The app runs with its lifespan (so the label collector and window archiver consume the
test vhost) under ``httpx.AsyncClient`` + ``ASGITransport``. Sessions are recorded by
publishing windows to ``eeg.windows`` and labels to ``eeg.labels``, as the producer does.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from aio_pika.abc import AbstractExchange

from ml_data_api.app import create_app
from ml_data_api.export import read_parquet_arrays
from ml_data_api.settings import DataApiSettings
from neurostream import datasets, topology
from neurostream.contract import KIND_HEADER, TRIAL_KIND, TrialTruth, encode, make_window, trial_key
from neurostream.errors import NotFound
from neurostream.models.training import dataset_hash
from neurostream.settings import CoreSettings
from tests.factories import app_client

pytestmark = pytest.mark.integration
MAX_UPLOAD = 64 * 1024
T0 = 1_700_000_000.0
N_CH, N_S = 4, 50
CHANNELS = ["Fz", "Cz", "Pz", "Oz"]


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def eventually(check: Callable[[], Awaitable[bool]], wait_s: float = 60.0) -> None:
    """Poll until ``check`` holds (consumers are asynchronous; no tight timing)."""
    for _ in range(int(wait_s / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


@dataclass
class Broker:
    windows: AbstractExchange
    labels: AbstractExchange


@dataclass
class Recorded:
    session_id: str
    service: str
    x: np.ndarray  # epoch windows by seq
    y: np.ndarray  # labels of the labelled epochs (seq 0..len(y)-1)


@pytest.fixture(scope="module")
async def api(core: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(core, DataApiSettings(max_upload_bytes=MAX_UPLOAD, page_max=100))
    async with app_client(app, core, base_url="http://data", timeout=60) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


@pytest.fixture(scope="module")
async def broker(core: CoreSettings) -> AsyncIterator[Broker]:
    connection = await aio_pika.connect_robust(core.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    ex = await topology.declare_exchanges(channel)
    yield Broker(ex[topology.WINDOWS_EXCHANGE], ex[topology.LABELS_EXCHANGE])
    await connection.close()


async def sql(api: httpx.AsyncClient, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with api.app.state.pool.connection() as conn:  # type: ignore[attr-defined]
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def publish_windows(
    broker: Broker, service: str, session_id: str, x: np.ndarray, kind: str = "epoch", start=0
) -> None:
    for i, data in enumerate(x):
        seq = start + i
        window = make_window(
            data,
            session_id=session_id,
            seq=seq,
            t0=T0 + seq,
            fs=250.0,
            channels=CHANNELS,
            kind=kind,
            marker=1 if kind == "epoch" else None,
        )
        body, headers = encode(window)
        message = aio_pika.Message(body, headers=headers, message_id=f"{session_id}:{seq}")
        await broker.windows.publish(message, routing_key=service)


async def publish_label(broker: Broker, body: Any, key: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    await broker.labels.publish(aio_pika.Message(raw), routing_key=key)


async def record(
    api: httpx.AsyncClient, broker: Broker, *, n: int = 12, labelled: int = 9, seed: int = 0
) -> Recorded:
    """A session through the broker: ``n`` epochs archived, the first ``labelled`` labelled."""
    sid, service = _id("sess"), _id("svc")
    x = np.random.default_rng(seed).normal(0, 10, (n, N_CH, N_S)).astype(np.float32)
    y = (np.arange(labelled) % 3 == 0).astype(np.int64)
    await publish_windows(broker, service, sid, x)

    async def archived() -> bool:
        rows = await sql(api, "SELECT count(*) FROM windows WHERE session_id = %s", [sid])
        return rows[0][0] == n

    await eventually(archived)
    for seq, label in enumerate(y.tolist()):
        await publish_label(broker, {"session_id": sid, "seq": seq, "label": label}, sid)

    async def collected() -> bool:
        rows = await sql(api, "SELECT count(*) FROM labels WHERE session_id = %s", [sid])
        return rows[0][0] == labelled

    await eventually(collected)
    return Recorded(sid, service, x, y)


@pytest.fixture(scope="module")
async def session(api: httpx.AsyncClient, broker: Broker) -> Recorded:
    return await record(api, broker)


# --- consumers ----------------------------------------------------------------------------


async def test_archiver_stores_windows_and_skips_invalid(
    api: httpx.AsyncClient, broker: Broker, session: Recorded
) -> None:
    rows = await sql(
        api,
        "SELECT seq, data, n_channels, n_samples, kind, service, channels FROM windows "
        "WHERE session_id = %s ORDER BY seq",
        [session.session_id],
    )
    assert [r[0] for r in rows] == list(range(len(session.x)))
    for r in rows:
        got = np.frombuffer(r[1], dtype="<f4").reshape(r[2], r[3])
        np.testing.assert_array_equal(got, session.x[r[0]])
        assert (r[4], r[5], r[6]) == ("epoch", session.service, CHANNELS)
    # A window that breaks the contract is acked and skipped; later windows still arrive.
    sid = _id("bad")
    await broker.windows.publish(
        aio_pika.Message(b"\x00" * 7, headers={"session_id": sid, "seq": 0, "schema": 1}),
        routing_key=session.service,
    )
    await publish_windows(broker, session.service, sid, session.x[:1], start=1)

    async def good_one() -> bool:
        return bool(await sql(api, "SELECT 1 FROM windows WHERE session_id = %s", [sid]))

    await eventually(good_one)
    assert await sql(api, "SELECT seq FROM windows WHERE session_id = %s", [sid]) == [(1,)]
    archiver = api.app.state.consumers.archiver  # type: ignore[attr-defined]
    assert archiver.skipped >= 1


async def test_collector_upserts_and_rejects_malformed(
    api: httpx.AsyncClient, broker: Broker, session: Recorded
) -> None:
    sid = session.session_id
    await publish_label(broker, b"not json", sid)
    await publish_label(broker, {"session_id": sid, "seq": "x", "label": 1}, sid)
    await publish_label(broker, {"session_id": sid, "seq": 0, "label": 7, "source": "fix"}, sid)

    async def corrected() -> bool:
        rows = await sql(api, "SELECT label FROM labels WHERE session_id=%s AND seq=0", [sid])
        return rows == [(7,)]

    await eventually(corrected)
    await publish_label(broker, {"session_id": sid, "seq": 0, "label": int(session.y[0])}, sid)

    async def restored() -> bool:
        rows = await sql(
            api, "SELECT label, source FROM labels WHERE session_id=%s AND seq=0", [sid]
        )
        return rows == [(int(session.y[0]), "paradigm")]

    await eventually(restored)
    assert api.app.state.consumers.collector.skipped >= 2  # type: ignore[attr-defined]
    count = await sql(api, "SELECT count(*) FROM labels WHERE session_id = %s", [sid])
    assert count == [(len(session.y),)]


# --- labels over HTTP ---------------------------------------------------------------------


async def test_post_labels_by_seq_and_range(api: httpx.AsyncClient, broker: Broker) -> None:
    rec = await record(api, broker, n=6, labelled=0, seed=1)
    sid = rec.session_id
    r = await api.post(
        "/labels",
        json=[
            {"session_id": sid, "seq": 0, "label": 1},
            {"session_id": sid, "t_from": T0 + 2, "t_to": T0 + 4, "label": 0},
        ],
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"stored": 4}
    page = (await api.get("/labels", params={"session_id": sid})).json()
    assert [(i["seq"], i["label"], i["source"]) for i in page["items"]] == [
        (0, 1, "api"),
        (2, 0, "api"),
        (3, 0, "api"),
        (4, 0, "api"),
    ]
    assert page["next_offset"] is None


@pytest.mark.parametrize(
    ("item", "status", "field"),
    [
        ({"session_id": "no-such-session", "seq": 0, "label": 1}, 404, "0.session_id"),
        ({"seq": 99, "label": 1}, 422, "1.seq"),  # window does not exist
        ({"seq": 0, "label": "one"}, 422, "label"),
        ({"seq": -1, "label": 1}, 422, "seq"),
        ({"t_from": T0 + 500, "t_to": T0 + 600, "label": 1}, 422, "t_from"),
        ({"t_from": T0 + 5, "t_to": T0 + 1, "label": 1}, 422, "t_to"),
        ({"session_id": "x'; DROP TABLE labels; --", "seq": 0, "label": 1}, 422, "session_id"),
    ],
)
async def test_bad_labels_write_nothing(
    api: httpx.AsyncClient, session: Recorded, item: dict[str, Any], status: int, field: str
) -> None:
    sid = session.session_id
    before = await sql(api, "SELECT seq, label, source FROM labels ORDER BY 1, 2")
    good = {"session_id": sid, "seq": len(session.y), "label": 1}  # an unlabelled window
    body = [item, good] if status == 404 else [good, {"session_id": sid, **item}]
    r = await api.post("/labels", json=body)
    assert r.status_code == status, r.text
    assert field in r.json()["detail"]
    assert await sql(api, "SELECT seq, label, source FROM labels ORDER BY 1, 2") == before
    assert await sql(api, "SELECT 1 FROM pg_tables WHERE tablename = 'labels'") == [(1,)]


async def test_writes_need_the_token(api: httpx.AsyncClient, session: Recorded) -> None:
    body = [{"session_id": session.session_id, "seq": 0, "label": 1}]
    r = await api.post("/labels", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


# --- datasets -----------------------------------------------------------------------------


async def test_dataset_from_sessions_round_trips(api: httpx.AsyncClient, session: Recorded) -> None:
    name = _id("p300")
    r = await api.post(
        "/datasets", json={"name": name, "kind": "training", "session_ids": [session.session_id]}
    )
    assert r.status_code == 201, r.text
    ds = r.json()
    x, y = session.x[: len(session.y)], session.y
    assert (ds["version"], ds["n_rows"], ds["n_channels"], ds["n_samples"]) == (1, 9, N_CH, N_S)
    assert ds["channels"] == CHANNELS and ds["fs"] == 250.0
    assert ds["label_counts"] == {"0": 6, "1": 3}
    assert ds["content_hash"] == dataset_hash(x, y)
    async with api.app.state.pool.connection() as conn:  # type: ignore[attr-defined]
        snap = await datasets.load_snapshot(conn, ds["id"])
        latest = await datasets.get_dataset(conn, name)
    np.testing.assert_array_equal(snap.x, x)
    np.testing.assert_array_equal(snap.y, y)
    assert snap.session_ids == [session.session_id] * 9 and snap.seqs == list(range(9))
    assert latest is not None and latest["id"] == ds["id"]
    again = await api.post(
        "/datasets", json={"name": name, "kind": "training", "session_ids": [session.session_id]}
    )
    assert again.json()["version"] == 2
    listed = (await api.get("/datasets", params={"name": name})).json()
    assert [d["version"] for d in listed] == [2, 1]
    assert (await api.get(f"/datasets/{ds['id']}")).json() == ds
    grown = await api.post(
        "/datasets",
        json={
            "name": name,
            "kind": "training",
            "session_ids": [session.session_id],
            "base_dataset": ds["id"],
        },
    )
    assert grown.status_code == 201 and grown.json()["n_rows"] == 9  # nothing new to add
    missing = await api.post(
        "/datasets",
        json={
            "name": name,
            "kind": "training",
            "session_ids": [session.session_id],
            "base_dataset": 999999,
        },
    )
    assert (missing.status_code, missing.json()["detail"]) == (
        422,
        "base_dataset: dataset 999999 does not exist",
    )


async def test_dataset_from_sessions_refuses(api: httpx.AsyncClient, broker: Broker) -> None:
    unlabelled = await record(api, broker, n=2, labelled=0, seed=2)
    count = await sql(api, "SELECT count(*) FROM datasets")
    body = {"name": _id("d"), "kind": "training", "session_ids": [unlabelled.session_id]}
    r = await api.post("/datasets", json=body)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("session_ids: no labelled epoch windows in sessions")
    r = await api.post("/datasets", json={**body, "session_ids": ["nope"]})
    assert r.status_code == 404 and "session_ids.0" in r.json()["detail"]
    r = await api.post("/datasets", json={**body, "kind": "validation"})
    assert r.status_code == 422 and "kind" in r.json()["detail"]
    for path in ("/datasets/999999", "/datasets/999999/export"):
        r = await api.get(path)
        assert (r.status_code, r.json()["detail"]) == (
            404,
            "dataset_id: dataset 999999 does not exist",
        )
    async with api.app.state.pool.connection() as conn:  # type: ignore[attr-defined]
        with pytest.raises(NotFound) as info:
            await datasets.load_snapshot(conn, 999999)
    assert (info.value.field, info.value.message) == (
        "dataset_id",
        "dataset id 999999 does not exist",
    )
    assert await sql(api, "SELECT count(*) FROM datasets") == count


async def test_export_csv_and_parquet(api: httpx.AsyncClient, session: Recorded) -> None:
    body = {"name": _id("exp"), "kind": "testing", "session_ids": [session.session_id]}
    ds = (await api.post("/datasets", json=body)).json()
    x, y = session.x[: len(session.y)], session.y
    r = await api.get(f"/datasets/{ds['id']}/export", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["x-content-hash"] == ds["content_hash"]
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0][:5] == ["idx", "session_id", "seq", "label", "Fz_0"]
    got = np.array([[float(v) for v in row[4:]] for row in table[1:]], dtype=np.float32)
    np.testing.assert_array_equal(got.reshape(x.shape), x)
    assert [int(row[3]) for row in table[1:]] == y.tolist()
    r = await api.get(f"/datasets/{ds['id']}/export", params={"format": "parquet"})
    assert r.status_code == 200
    px, py = read_parquet_arrays(pq.read_table(io.BytesIO(r.content)))
    np.testing.assert_array_equal(px, x)
    np.testing.assert_array_equal(py, y)
    bad = await api.get(f"/datasets/{ds['id']}/export", params={"format": "xlsx"})
    assert bad.status_code == 422 and "format" in bad.json()["detail"]


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    x = np.random.default_rng(seed).normal(0, 1, (n, 2, 5)).astype(np.float32)
    y = np.arange(n) % 2
    return x, y, [{"data": x[i].tolist(), "label": int(y[i])} for i in range(n)]


async def test_upload_json_and_npz(api: httpx.AsyncClient) -> None:
    x, y, rows = _rows(6)
    evil = "'); DROP TABLE datasets; --"
    body = {
        "name": _id("up"),
        "kind": "training",
        "fs": 100.0,
        "channels": ["a", "b"],
        "description": evil,
        "rows": rows,
    }
    r = await api.post("/datasets/upload", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["description"] == evil and r.json()["content_hash"] == dataset_hash(x, y)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y)
    form = {"name": _id("npz"), "kind": "testing", "fs": "100", "channels": '["a", "b"]'}
    r = await api.post("/datasets/upload/npz", data=form, files={"file": ("d.npz", buf.getvalue())})
    assert r.status_code == 201, r.text
    async with api.app.state.pool.connection() as conn:  # type: ignore[attr-defined]
        snap = await datasets.load_snapshot(conn, r.json()["id"])
    np.testing.assert_array_equal(snap.x, x)
    np.testing.assert_array_equal(snap.y, y)


async def test_bad_uploads_write_nothing(api: httpx.AsyncClient) -> None:
    count = await sql(api, "SELECT count(*) FROM datasets")
    rows_before = await sql(api, "SELECT count(*) FROM dataset_rows")
    x, y, rows = _rows(4)
    base = {"name": _id("bad"), "kind": "training", "fs": 100.0, "channels": ["a", "b"]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "rows": [*rows[:3], {"data": [[1.0], [2.0]], "label": 0}]}, "rows.3.data"),
        ({**base, "rows": [{**rows[0], "label": "yes"}]}, "label"),
        ({**base, "rows": [{**rows[0], "data": "abc"}]}, "data"),
        ({**base, "channels": ["a"], "rows": rows}, "channels"),
        ({**base, "name": "x'; DROP TABLE datasets; --", "rows": rows}, "name"),
        ({**base, "fs": -1, "rows": rows}, "fs"),
        ({**base, "rows": []}, "rows"),
    ]
    for body, field in cases:
        r = await api.post("/datasets/upload", json=body)
        assert r.status_code == 422, (field, r.text)
        assert field in r.json()["detail"], (field, r.json())
    _, _, big = _rows(400)
    r = await api.post("/datasets/upload", json={**base, "rows": big})
    assert r.status_code == 413
    pickled = io.BytesIO()
    np.savez(pickled, x=np.array([object()], dtype=object), y=y)
    form = {"name": _id("pk"), "kind": "training", "fs": "100", "channels": "a,b"}
    r = await api.post(
        "/datasets/upload/npz", data=form, files={"file": ("p.npz", pickled.getvalue())}
    )
    assert r.status_code == 422 and "file" in r.json()["detail"]
    r = await api.post("/datasets/upload/npz", data=form, files={"file": ("z.npz", b"junk")})
    assert r.status_code == 422 and "file" in r.json()["detail"]
    bomb = io.BytesIO()
    np.savez_compressed(bomb, x=np.zeros((64, 32, 256), np.float32), y=np.zeros(64, np.int64))
    assert len(bomb.getvalue()) < MAX_UPLOAD
    r = await api.post(
        "/datasets/upload/npz", data=form, files={"file": ("b.npz", bomb.getvalue())}
    )
    assert r.status_code == 422 and "unpacks to" in r.json()["detail"]
    assert await sql(api, "SELECT count(*) FROM datasets") == count
    assert await sql(api, "SELECT count(*) FROM dataset_rows") == rows_before


# --- production data and sessions ---------------------------------------------------------


async def _predict(api: httpx.AsyncClient, rec: Recorded, version: int, correct: bool) -> None:
    """Serving predictions as a worker would write them (every labelled epoch)."""
    for seq, label in enumerate(rec.y.tolist()):
        predicted = label if correct else 1 - label
        p1 = 0.9 if predicted == 1 else 0.1
        await sql(
            api,
            "INSERT INTO predictions (session_id, seq, model_version_id, window_ts, service, "
            "kind, predicted, score, proba, worker_id) VALUES "
            "(%s, %s, %s, to_timestamp(%s), %s, 'epoch', %s, %s, %s, 'w1')",
            [rec.session_id, seq, version, T0 + seq, rec.service, predicted, p1, [1 - p1, p1]],
        )


async def test_predictions_and_windows_pagination(api: httpx.AsyncClient, broker: Broker) -> None:
    rec = await record(api, broker, n=7, labelled=6, seed=3)
    await _predict(api, rec, 101, correct=True)
    seen: list[int] = []
    params: dict[str, Any] = {"session_id": rec.session_id, "limit": 4}
    while True:
        page = (await api.get("/predictions", params=params)).json()
        seen += [item["seq"] for item in page["items"]]
        if page["next_offset"] is None:
            break
        params["offset"] = page["next_offset"]
    assert seen == [5, 4, 3, 2, 1, 0]
    one = await api.get("/predictions", params={"session_id": rec.session_id, "limit": 1})
    assert one.json()["items"][0]["label"] == int(rec.y[5])
    filtered = await api.get(
        "/predictions",
        params={"service": rec.service, "model_version_id": 101, "from": T0 + 1, "to": T0 + 2},
    )
    assert [i["seq"] for i in filtered.json()["items"]] == [2, 1]
    assert (await api.get("/predictions", params={"model_version_id": 999})).json()["items"] == []
    w = await api.get("/windows", params={"session_id": rec.session_id, "limit": 3})
    body = w.json()
    assert [i["seq"] for i in body["items"]] == [6, 5, 4] and body["next_offset"] == 3
    assert body["items"][0]["data"] is None and body["items"][0]["label"] is None
    w = await api.get(
        "/windows", params={"session_id": rec.session_id, "include_data": True, "offset": 6}
    )
    item = w.json()["items"][0]
    assert item["seq"] == 0 and w.json()["next_offset"] is None
    np.testing.assert_array_equal(np.array(item["data"], np.float32), rec.x[0])
    bad_params: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"from": "yesterday"}, "from"),
        ({"model_version_id": "x"}, "model_version_id"),
    ]
    for bad, field in bad_params:
        r = await api.get("/predictions", params=bad)
        assert r.status_code == 422 and field in r.json()["detail"], (bad, r.text)


async def test_sessions(api: httpx.AsyncClient, broker: Broker) -> None:
    rec = await record(api, broker, n=8, labelled=6, seed=4)
    await sql(
        api,
        "INSERT INTO sessions (session_id, service, board, fs, channels) VALUES (%s,%s,%s,%s,%s)",
        [rec.session_id, rec.service, "synthetic", 250.0, json.dumps(CHANNELS)],
    )
    await _predict(api, rec, 201, correct=True)
    await _predict(api, rec, 202, correct=False)
    detail = (await api.get(f"/sessions/{rec.session_id}")).json()
    assert detail["board"] == "synthetic" and detail["channels"] == CHANNELS
    assert (detail["windows"], detail["epochs"], detail["labelled"]) == (8, 8, 6)
    assert detail["labelled_share"] == pytest.approx(6 / 8)
    assert detail["duration_s"] == pytest.approx(7 + N_S / 250.0)
    assert detail["predictions"] == 12 and detail["labels"] == 6
    per = {p["model_version_id"]: p for p in detail["by_model_version"]}
    assert per[201]["roc_auc"] == 1.0 and per[201]["balanced_accuracy"] == 1.0
    assert per[202]["roc_auc"] == 0.0 and per[202]["balanced_accuracy"] == 0.0
    assert per[201]["accuracy"] == 1.0 and per[202]["accuracy"] == 0.0
    labels = rec.y[:6]
    chance = max(labels.mean(), 1 - labels.mean())
    assert per[201]["accuracy_chance"] == pytest.approx(chance)
    assert detail["balanced_accuracy"] == 0.5 and detail["roc_auc"] == 0.5
    assert detail["accuracy"] == 0.5 and detail["accuracy_chance"] == pytest.approx(chance)
    assert list(detail).index("roc_auc") < list(detail).index("accuracy")
    listed: list[dict[str, Any]] = []
    while page := (await api.get("/sessions", params={"offset": len(listed)})).json():
        listed += page
    assert rec.session_id in {s["session_id"] for s in listed}
    r = await api.get("/sessions/no-such-session")
    assert r.status_code == 404 and "session_id" in r.json()["detail"]
    health = await api.get("/health")
    assert health.json()["checks"] == {"database": "ok", "broker": "ok"}


# --- trials and decisions of a speller session ---------------------------------------------


async def publish_truth(broker: Broker, service: str, body: TrialTruth | bytes) -> None:
    raw = body.encode() if isinstance(body, TrialTruth) else body
    session = body.session_id if isinstance(body, TrialTruth) else "x"
    message = aio_pika.Message(raw, headers={KIND_HEADER: TRIAL_KIND})
    await broker.labels.publish(message, routing_key=trial_key(service, session))


async def _decide(api: httpx.AsyncClient, sid: str, service: str, trial: int, codes: list[int]):
    """A decision row as the decider writes it (rule fixed-10, decided 0.25 s after the
    last flash's epoch ended)."""
    await sql(
        api,
        "INSERT INTO decisions (session_id, trial, rule, service, symbol_index, symbol, codes, "
        "posterior, repetitions, epochs, model_version_ids, evidence, last_event_at, "
        "last_sample_at, decided_at, worker_id) VALUES (%s, %s, 'fixed-10', %s, 0, 'A', %s, "
        "0.97, 10, 120, '{7}', %s, to_timestamp(%s), to_timestamp(%s), to_timestamp(%s), 'w')",
        [sid, trial, service, codes, json.dumps({"1": 2.5, "7": 3.0}), T0, T0 + 0.7, T0 + 0.95],
    )


async def test_trial_truths_are_collected_and_decisions_scored_against_them(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    sid, service = _id("spell"), _id("svc")
    await sql(
        api,
        "INSERT INTO sessions (session_id, service, board, fs, channels, paradigm) "
        "VALUES (%s, %s, 'synthetic', 250.0, '[]', %s)",
        [sid, service, json.dumps({"kind": "speller"})],
    )
    skipped = api.app.state.consumers.collector.skipped  # type: ignore[attr-defined]
    await publish_truth(broker, service, b'{"session_id": "x", "trial": 0, "targets": []}')
    await publish_truth(broker, service, TrialTruth(session_id=sid, trial=0, targets=[1, 8]))
    await publish_truth(
        broker, service, TrialTruth(session_id=sid, trial=1, targets=[2, 9], symbol="O")
    )
    # An epoch's label on the same exchange still goes to ``labels``.
    await publish_label(broker, {"session_id": sid, "seq": 3, "label": 1}, sid)
    await _decide(api, sid, service, 0, [1, 8])  # right
    await _decide(api, sid, service, 1, [3, 9])  # wrong: row 3, not row 2
    await _decide(api, sid, service, 2, [1, 7])  # no truth yet

    async def collected() -> bool:
        rows = await sql(api, "SELECT count(*) FROM trials WHERE session_id = %s", [sid])
        labels = await sql(api, "SELECT label FROM labels WHERE session_id = %s", [sid])
        return rows == [(2,)] and labels == [(1,)]

    await eventually(collected)
    assert api.app.state.consumers.collector.skipped == skipped + 1  # type: ignore[attr-defined]
    trials = (await api.get(f"/sessions/{sid}/trials")).json()
    assert [(t["trial"], t["targets"], t["symbol"], t["source"]) for t in trials] == [
        (0, [1, 8], None, "paradigm"),
        (1, [2, 9], "O", "paradigm"),
    ]
    decisions = (await api.get(f"/sessions/{sid}/decisions")).json()
    assert [(d["trial"], d["codes"], d["targets"], d["correct"]) for d in decisions] == [
        (0, [1, 8], [1, 8], True),
        (1, [3, 9], [2, 9], False),
        (2, [1, 7], None, None),
    ]
    first = decisions[0]
    assert first["rule"] == "fixed-10" and first["evidence"] == {"1": 2.5, "7": 3.0}
    assert (first["repetitions"], first["epochs"], first["model_version_ids"]) == (10, 120, [7])
    assert first["latency_s"] == pytest.approx(0.25, abs=1e-3)
    assert first["posterior"] == pytest.approx(0.97, rel=1e-6)
    # A corrected truth replaces the old one: the same decision is now right.
    await publish_truth(broker, service, TrialTruth(session_id=sid, trial=1, targets=[9, 3]))

    async def corrected() -> bool:
        rows = (await api.get(f"/sessions/{sid}/decisions", params={"rule": "fixed-10"})).json()
        return [d["correct"] for d in rows] == [True, True, None]

    await eventually(corrected)
    assert (await api.get(f"/sessions/{sid}/decisions", params={"rule": "other"})).json() == []
    for path in ("decisions", "trials"):
        r = await api.get(f"/sessions/no-such-session/{path}")
        assert r.status_code == 404 and "session_id" in r.json()["detail"]
        r = await api.get(f"/sessions/{sid}/{path}", params={"limit": 101})
        assert r.status_code == 422 and "limit" in r.json()["detail"]
