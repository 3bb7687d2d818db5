"""Dataset snapshots: immutable, versioned sets of labelled windows with a content hash.

ml_data_api builds snapshots from archived session windows joined with ground-truth
labels (or from uploaded rows); retraining_api loads them to train and evaluate. A
snapshot's ``content_hash`` is ``neurostream.models.training.dataset_hash`` of its arrays,
so a model version's ``dataset_hash`` points at exactly the snapshot it was trained on.
Bad input raises ``InvalidRequest`` and a missing id ``NotFound``, each naming its
``field``, so an HTTP service answers them as they are (422 / 404).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from neurostream.errors import InvalidRequest, NotFound
from neurostream.models.training import dataset_hash

Kind = Literal["training", "testing"]
KINDS: frozenset[str] = frozenset({"training", "testing"})
_LOCK_CLASS = 0x64617461  # "data": serialises version numbering per dataset name
_INT32 = (-(2**31), 2**31 - 1)

_COLUMNS = """id, name, version, kind, description, source, n_rows, fs, n_channels, n_samples,
    channels, label_counts, content_hash, created_at"""


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: ``x`` float32 ``[n, channels, samples]``, ``y`` int64 ``[n]``."""

    meta: dict[str, Any]
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    session_ids: list[str | None] = field(repr=False)
    seqs: list[int | None] = field(repr=False)


def check_arrays(
    windows: np.ndarray, labels: np.ndarray, *, fs: float, channels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise snapshot arrays; ``InvalidRequest.field`` names what is wrong."""
    x = np.asarray(windows)
    if x.ndim != 3:
        raise InvalidRequest(
            f"expected [n, channels, samples], got shape {x.shape}", field="windows"
        )
    if x.shape[0] == 0:
        raise InvalidRequest("a snapshot needs at least one row", field="windows")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InvalidRequest(f"expected real numbers, got dtype {x.dtype}", field="windows")
    x = np.ascontiguousarray(x, dtype="<f4")
    if not np.isfinite(x).all():
        raise InvalidRequest("contain NaN or Inf (or values beyond float32)", field="windows")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise InvalidRequest(f"expected shape ({x.shape[0]},), got {y.shape}", field="labels")
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            pass
        else:
            raise InvalidRequest(f"expected integers, got dtype {y.dtype}", field="labels")
    y = y.astype("<i8")
    if y.min() < _INT32[0] or y.max() > _INT32[1]:
        raise InvalidRequest("values must fit in a 32-bit integer", field="labels")
    if not (isinstance(fs, int | float) and np.isfinite(fs) and fs > 0):
        raise InvalidRequest(f"must be a positive finite number, got {fs!r}", field="fs")
    if len(channels) != x.shape[1]:
        raise InvalidRequest(
            f"{len(channels)} names given but windows have {x.shape[1]} channels",
            field="channels",
        )
    if not all(isinstance(c, str) and c for c in channels):
        raise InvalidRequest("every channel name must be a non-empty string", field="channels")
    return x, y


async def create_snapshot(
    conn: AsyncConnection[Any],
    *,
    name: str,
    kind: Kind,
    windows: np.ndarray,
    labels: np.ndarray,
    fs: float,
    channels: list[str],
    description: str = "",
    source: dict[str, Any] | None = None,
    session_ids: list[str | None] | None = None,
    seqs: list[int | None] | None = None,
) -> dict[str, Any]:
    """Store a new version of dataset ``name`` (max + 1) in one transaction; return its row."""
    if not name or not name.strip():
        raise InvalidRequest("must not be empty", field="name")
    if kind not in KINDS:
        raise InvalidRequest(f"must be one of {sorted(KINDS)}, got {kind!r}", field="kind")
    x, y = check_arrays(windows, labels, fs=fs, channels=channels)
    n = x.shape[0]
    sids = list(session_ids) if session_ids is not None else [None] * n
    sqs = list(seqs) if seqs is not None else [None] * n
    if len(sids) != n:
        raise InvalidRequest(f"expected {n} entries, got {len(sids)}", field="session_ids")
    if len(sqs) != n:
        raise InvalidRequest(f"expected {n} entries, got {len(sqs)}", field="seqs")
    counts = {str(k): v for k, v in sorted(Counter(y.tolist()).items())}
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_LOCK_CLASS, name])
        await cur.execute(
            f"""INSERT INTO datasets (name, version, kind, description, source, n_rows, fs,
                n_channels, n_samples, channels, label_counts, content_hash)
            SELECT %(name)s, COALESCE(max(version), 0) + 1, %(kind)s, %(description)s,
                %(source)s, %(n)s, %(fs)s, %(c)s, %(s)s, %(channels)s, %(counts)s, %(hash)s
            FROM datasets WHERE name = %(name)s
            RETURNING {_COLUMNS}""",
            {
                "name": name,
                "kind": kind,
                "description": description,
                "source": json.dumps(source or {}),
                "n": n,
                "fs": float(fs),
                "c": x.shape[1],
                "s": x.shape[2],
                "channels": json.dumps(list(channels)),
                "counts": json.dumps(counts),
                "hash": dataset_hash(x, y),
            },
        )
        row = await cur.fetchone()
        assert row is not None
        copy_sql = "COPY dataset_rows (dataset_id, idx, session_id, seq, label, data) FROM STDIN"
        async with cur.copy(copy_sql) as copy:
            for i in range(n):
                await copy.write_row((row["id"], i, sids[i], sqs[i], int(y[i]), x[i].tobytes()))
    return row


async def get_dataset(
    conn: AsyncConnection[Any], name: str, version: int | None = None
) -> dict[str, Any] | None:
    """One snapshot's metadata by name; the latest version when ``version`` is None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM datasets
            WHERE name = %s AND (%s::int IS NULL OR version = %s)
            ORDER BY version DESC LIMIT 1""",
            [name, version, version],
        )
        return await cur.fetchone()


async def get_dataset_by_id(conn: AsyncConnection[Any], id: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM datasets WHERE id = %s", [id])
        return await cur.fetchone()


async def list_datasets(
    conn: AsyncConnection[Any], name: str | None = None
) -> list[dict[str, Any]]:
    """Every snapshot (optionally of one name), newest first within a name."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM datasets WHERE %(name)s::text IS NULL OR name = %(name)s
            ORDER BY name, version DESC""",
            {"name": name},
        )
        return await cur.fetchall()


async def load_snapshot(conn: AsyncConnection[Any], dataset_id: int) -> Snapshot:
    """The snapshot's arrays in row order; ``NotFound`` when the id does not exist."""
    meta = await get_dataset_by_id(conn, dataset_id)
    if meta is None:
        raise NotFound(f"dataset id {dataset_id} does not exist", field="dataset_id")
    cur = await conn.execute(
        "SELECT session_id, seq, label, data FROM dataset_rows WHERE dataset_id = %s ORDER BY idx",
        [dataset_id],
    )
    rows = await cur.fetchall()
    shape = (len(rows), meta["n_channels"], meta["n_samples"])
    x = np.frombuffer(b"".join(bytes(r[3]) for r in rows), dtype="<f4").reshape(shape)
    y = np.array([r[2] for r in rows], dtype=np.int64)
    return Snapshot(
        meta=meta,
        x=x.copy(),
        y=y,
        session_ids=[r[0] for r in rows],
        seqs=[r[1] for r in rows],
    )


_LABELLED = """
SELECT DISTINCT ON (w.session_id, w.seq) w.session_id, w.seq, w.fs, w.n_channels,
    w.n_samples, w.channels, w.data, l.label
FROM windows w JOIN labels l ON l.session_id = w.session_id AND l.seq = w.seq
WHERE w.session_id = ANY(%(ids)s) AND w.kind = 'epoch'
ORDER BY w.session_id, w.seq, w.window_ts
"""


async def snapshot_from_sessions(
    conn: AsyncConnection[Any],
    *,
    name: str,
    kind: Kind,
    session_ids: list[str],
    description: str = "",
    base_dataset_id: int | None = None,
) -> dict[str, Any]:
    """Snapshot the labelled epoch windows of ``session_ids`` (in that order, then by seq).

    With ``base_dataset_id`` the snapshot grows an earlier one: its rows first, then the
    sessions' windows it does not already hold, so training data accumulates.
    """
    if not session_ids:
        raise InvalidRequest("at least one session is needed", field="session_ids")
    ids = list(dict.fromkeys(session_ids))
    cur = await conn.execute(_LABELLED, {"ids": ids})
    rows = await cur.fetchall()
    if not rows:
        raise InvalidRequest(
            f"no labelled epoch windows in sessions {ids} "
            "(are the windows archived and the labels collected?)",
            field="session_ids",
        )
    order = {sid: i for i, sid in enumerate(ids)}
    rows.sort(key=lambda r: (order[r[0]], r[1]))
    shapes = {(r[3], r[4]) for r in rows}
    rates = {float(r[2]) for r in rows}
    if len(shapes) > 1 or len(rates) > 1:
        raise InvalidRequest(
            f"windows have mixed shapes {sorted(shapes)} or sampling rates "
            f"{sorted(rates)}; snapshot sessions recorded with the same montage",
            field="session_ids",
        )
    channels = await _channels(conn, ids, rows)
    (n_ch, n_s), fs = shapes.pop(), rates.pop()
    x = np.frombuffer(b"".join(bytes(r[6]) for r in rows), dtype="<f4").reshape(-1, n_ch, n_s)
    y = np.array([r[7] for r in rows], dtype=np.int64)
    sids: list[str | None] = [r[0] for r in rows]
    seqs: list[int | None] = [r[1] for r in rows]
    source: dict[str, Any] = {"sessions": ids, "kind": "epoch"}
    if base_dataset_id is not None:
        x, y, sids, seqs = await _grow(conn, base_dataset_id, x, y, sids, seqs, fs, channels)
        source["base_dataset_id"] = base_dataset_id
    return await create_snapshot(
        conn,
        name=name,
        kind=kind,
        windows=x,
        labels=y,
        fs=fs,
        channels=channels,
        description=description,
        source=source,
        session_ids=sids,
        seqs=seqs,
    )


async def _grow(
    conn: AsyncConnection[Any],
    base_id: int,
    x: np.ndarray,
    y: np.ndarray,
    sids: list[str | None],
    seqs: list[int | None],
    fs: float,
    channels: list[str],
) -> tuple[np.ndarray, np.ndarray, list[str | None], list[int | None]]:
    """The base snapshot's rows followed by the new rows it does not already hold."""
    try:
        base = await load_snapshot(conn, base_id)
    except NotFound:  # a missing base is bad input to this request (422), as before
        raise InvalidRequest(f"dataset {base_id} does not exist", field="base_dataset") from None
    if base.x.shape[1:] != x.shape[1:] or float(base.meta["fs"]) != fs:
        raise InvalidRequest(
            f"shape {base.x.shape[1:]} at {base.meta['fs']} Hz does not match "
            f"the sessions' {x.shape[1:]} at {fs} Hz",
            field="base_dataset",
        )
    if list(base.meta.get("channels") or channels) != channels:
        raise InvalidRequest(
            "its channels differ from the sessions' channels", field="base_dataset"
        )
    held = {(s, q) for s, q in zip(base.session_ids, base.seqs, strict=True) if s is not None}
    keep = [i for i, key in enumerate(zip(sids, seqs, strict=True)) if key not in held]
    return (
        np.concatenate([base.x, x[keep]]),
        np.concatenate([base.y, y[keep]]),
        base.session_ids + [sids[i] for i in keep],
        base.seqs + [seqs[i] for i in keep],
    )


async def _channels(
    conn: AsyncConnection[Any], ids: list[str], rows: list[tuple[Any, ...]]
) -> list[str]:
    """Channel names from the archived windows, else the sessions table, else generic."""
    names = {tuple(r[5]) for r in rows if r[5]}
    if not names:
        cur = await conn.execute(
            "SELECT DISTINCT channels FROM sessions WHERE session_id = ANY(%s)", [ids]
        )
        names = {tuple(r[0]) for r in await cur.fetchall() if r[0]}
    if len(names) > 1:
        raise InvalidRequest(
            f"sessions have different channels {sorted(names)}", field="session_ids"
        )
    if names:
        found = list(names.pop())
        if len(found) == rows[0][3]:
            return found
    return [f"ch{i}" for i in range(rows[0][3])]
