"""Uploaded dataset rows -> validated arrays: JSON rows or an ``.npz`` with ``x`` and ``y``.

Pure functions; each raises ``Invalid`` naming the field. An ``.npz`` is opened with
``allow_pickle=False`` and its members' uncompressed sizes are checked before any array is
read, so a small compressed file cannot expand into gigabytes.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence

import numpy as np

from ml_data_api.errors import Invalid
from ml_data_api.schemas import UploadRow


def rows_to_arrays(rows: Sequence[UploadRow]) -> tuple[np.ndarray, np.ndarray]:
    """``x`` float32 [n, c, s] and ``y`` int64 [n] from JSON rows of equal shape."""
    if not rows:
        raise Invalid("at least one row is needed", field="rows")
    first = rows[0].data
    shape = (len(first), len(first[0]) if first else 0)
    if shape[0] == 0 or shape[1] == 0:
        raise Invalid("a window needs at least one channel and one sample", field="rows.0.data")
    for i, row in enumerate(rows):
        if len(row.data) != shape[0] or any(len(ch) != shape[1] for ch in row.data):
            raise Invalid(
                f"every window must be [{shape[0]}][{shape[1]}] like row 0", field=f"rows.{i}.data"
            )
    x = np.array([row.data for row in rows], dtype=np.float64)
    if not np.isfinite(x).all() or np.abs(x).max() > np.finfo(np.float32).max:
        raise Invalid("samples must be finite float32 values", field="rows")
    return x.astype(np.float32), np.array([row.label for row in rows], dtype=np.int64)


def load_npz(data: bytes, *, max_unpacked: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` [n, c, s] and ``y`` [n] from an ``.npz``; no pickles, bounded size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except zipfile.BadZipFile:
        raise Invalid("not an .npz (zip) archive", field="file") from None
    if unpacked > max_unpacked:
        raise Invalid(
            f"unpacks to {unpacked} bytes, more than the {max_unpacked} allowed", field="file"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = {"x", "y"} - set(npz.files)
            if missing:
                raise Invalid(
                    f"missing array(s) {sorted(missing)}; found {npz.files}", field="file"
                )
            x, y = npz["x"], npz["y"]
    except Invalid:
        raise
    except ValueError as exc:  # object arrays need pickle; refused
        raise Invalid(f"unreadable array: {exc}", field="file") from None
    except Exception as exc:
        raise Invalid(f"unreadable .npz: {exc}", field="file") from None
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise Invalid("members x and y must be .npy arrays", field="file")
    if x.dtype.kind not in "iuf":
        raise Invalid(f"expected a numeric array, got dtype {x.dtype}", field="file.x")
    if y.dtype.kind not in "iub":
        raise Invalid(f"expected an integer array, got dtype {y.dtype}", field="file.y")
    return x, y


def parse_channels(value: str) -> list[str]:
    """A form field: a JSON list of names or comma-separated names."""
    text = value.strip()
    if text.startswith("["):
        try:
            names = json.loads(text)
        except ValueError:
            raise Invalid("not valid JSON", field="channels") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise Invalid("must be a list of strings", field="channels")
    else:
        names = [n.strip() for n in text.split(",")]
    if not names or not all(names):
        raise Invalid("channel names must be non-empty", field="channels")
    return names
