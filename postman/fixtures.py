"""Files the collection uploads: a small erp@1 LDA artifact and an .npz dataset.

Written only when missing: the collection refers to them by path and their metadata is
fixed in ``flows``, so regenerating the collection never depends on their bytes.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from postman.flows import CHANNELS, FS, MODEL_FIXTURE, NPZ_FIXTURE, SAMPLES


def synthetic_erp(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` windows [n, channels, samples] with a P300-like bump on label 1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.arange(SAMPLES) / FS
    bump = 8 * np.exp(-(((t - 0.35) / 0.07) ** 2) / 2)
    x = rng.normal(0, 10, (n, len(CHANNELS), SAMPLES)) + y[:, None, None] * bump
    return x.astype(np.float32), y.astype(np.int64)


def write_npz(path: Path) -> None:
    """An .npz with fixed zip timestamps (``np.savez`` stamps the current time)."""
    x, y = synthetic_erp(20, seed=3)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in (("x", x), ("y", y)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            zf.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue()
            )


def write_model(path: Path) -> None:
    from neurostream.models.training import train_model

    x, y = synthetic_erp(60, seed=1)
    trained = train_model("sklearn-lda", x, y, FS, seed=0)
    path.write_bytes(trained.artifact)


def ensure(root: Path) -> list[Path]:
    """Create the fixtures that are missing; returns those written."""
    written = []
    for rel, write in ((MODEL_FIXTURE, write_model), (NPZ_FIXTURE, write_npz)):
        path = root / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
            written.append(path)
    return written
