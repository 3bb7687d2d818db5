"""Dataset export, streamed chunk by chunk: CSV (one wide row per window) or Parquet.

CSV columns are ``idx, session_id, seq, label`` then ``<channel>_<sample>`` for every
sample; floats are written with 9 significant digits, enough to read back the exact
float32. Parquet has the same metadata columns and a ``data`` column of fixed-size
float32 lists ``[n_channels * n_samples]``; the shape, channels, fs and content hash are in
the file's metadata. Both are produced from row chunks without holding the dataset.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

Row = tuple[int, str | None, int | None, int, bytes]  # idx, session_id, seq, label, data


def csv_header(channels: Sequence[str], n_samples: int) -> str:
    names = ["idx", "session_id", "seq", "label"]
    names += [f"{ch}_{i}" for ch in channels for i in range(n_samples)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(names)
    return buf.getvalue()


def csv_chunk(rows: Sequence[Row]) -> str:
    """CSV lines for a chunk of rows (no header)."""
    if not rows:
        return ""
    x = np.stack([np.frombuffer(bytes(r[4]), dtype="<f4") for r in rows])
    samples = io.StringIO()
    np.savetxt(samples, x, fmt="%.9g", delimiter=",")
    meta = io.StringIO()
    writer = csv.writer(meta, lineterminator="\n")
    for r in rows:
        writer.writerow([r[0], "" if r[1] is None else r[1], "" if r[2] is None else r[2], r[3]])
    lines = zip(meta.getvalue().splitlines(), samples.getvalue().splitlines(), strict=True)
    return "".join(f"{m},{s}\n" for m, s in lines)


class _Sink:
    """A write-only file that hands out what was written since the last ``take``."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        b = bytes(data)
        self._parts.append(b)
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def parquet_schema(meta: dict[str, Any]) -> pa.Schema:
    width = int(meta["n_channels"]) * int(meta["n_samples"])
    info: dict[str, Any] = {
        k: meta[k]
        for k in ("name", "version", "kind", "fs", "n_channels", "n_samples", "channels")
        if k in meta
    }
    info["content_hash"] = meta.get("content_hash", "")
    return pa.schema(
        [
            ("idx", pa.int32()),
            ("session_id", pa.string()),
            ("seq", pa.int32()),
            ("label", pa.int64()),
            ("data", pa.list_(pa.float32(), width)),
        ],
        metadata={"neurostream": json.dumps(info, default=str)},
    )


class ParquetEncoder:
    """Feed row chunks, get Parquet bytes back as they are produced (one row group each)."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.schema = parquet_schema(meta)
        self._width = self.schema.field("data").type.list_size
        self._sink = _Sink()
        self._writer = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), self.schema)

    def write(self, rows: Sequence[Row]) -> bytes:
        if rows:
            flat = np.concatenate([np.frombuffer(bytes(r[4]), dtype="<f4") for r in rows])
            table = pa.table(
                {
                    "idx": pa.array([r[0] for r in rows], pa.int32()),
                    "session_id": pa.array([r[1] for r in rows], pa.string()),
                    "seq": pa.array([r[2] for r in rows], pa.int32()),
                    "label": pa.array([r[3] for r in rows], pa.int64()),
                    "data": pa.FixedSizeListArray.from_arrays(pa.array(flat), self._width),
                },
                schema=self.schema,
            )
            self._writer.write_table(table)
        return self._sink.take()

    def close(self) -> bytes:
        """The footer (and anything still buffered)."""
        self._writer.close()
        return self._sink.take()


def parquet_bytes(meta: dict[str, Any], chunks: Iterable[Sequence[Row]]) -> Iterator[bytes]:
    """Parquet bytes for in-memory chunks (the router streams from the database instead)."""
    encoder = ParquetEncoder(meta)
    for rows in chunks:
        yield encoder.write(rows)
    yield encoder.close()


def read_parquet_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """``x`` [n, c, s] and ``y`` from an exported table (the inverse, for clients and tests)."""
    info = json.loads(table.schema.metadata[b"neurostream"])
    flat = table.column("data").combine_chunks().flatten().to_numpy()
    x = flat.reshape(table.num_rows, int(info["n_channels"]), int(info["n_samples"]))
    return x, table.column("label").to_numpy()
