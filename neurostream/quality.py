"""Data quality of a session's raw windows: bad channels, bad amplitudes, dropped windows.

A channel that is flat (electrode off, all zeros), saturated (the amplifier clips at the
same value) or far out of the EEG range poisons features long before drift tests notice;
gaps in ``seq`` mean windows were lost between the headset and the store. Pure: the
monitoring API loads the windows and seqs and reports what this module finds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    flat_uv: float = 0.5  # a channel's std below this (µV) over a window: flat
    range_uv: float = 500.0  # |x| above this (µV): out of range
    saturation_share: float = 0.05  # share of samples pinned at the channel's extreme


def channel_quality(
    x: np.ndarray, channels: Sequence[str], t: Thresholds | None = None
) -> list[dict[str, Any]]:
    """Per-channel shares of flat / missing / saturated windows and out-of-range samples."""
    t = t or Thresholds()
    if x.ndim != 3 or x.shape[1] != len(channels):
        raise ValueError(f"windows {x.shape} do not match {len(channels)} channels")
    n = x.shape[0]
    if n == 0:
        return []
    std = x.std(axis=2)  # [n, c]
    missing = (x == 0).all(axis=2) | ~np.isfinite(x).all(axis=2)
    flat = (std < t.flat_uv) & ~missing
    absx = np.abs(x)
    peak = absx.max(axis=2, keepdims=True)
    pinned = (np.isclose(absx, peak) & (peak > 0)).mean(axis=2)  # share at the extreme
    saturated = (pinned >= t.saturation_share) & ~flat & ~missing
    out_of_range = (absx > t.range_uv).mean(axis=2)  # share of samples per window
    rows: list[dict[str, Any]] = []
    for c, name in enumerate(channels):
        rows.append(
            {
                "channel": name,
                "missing_share": float(missing[:, c].mean()),
                "flat_share": float(flat[:, c].mean()),
                "saturated_share": float(saturated[:, c].mean()),
                "out_of_range_share": float(out_of_range[:, c].mean()),
                "max_abs_uv": float(absx[:, c].max()),
                "mean_std_uv": float(std[:, c].mean()),
            }
        )
    for r in rows:
        r["flags"] = [
            k.removesuffix("_share")
            for k in ("missing_share", "flat_share", "saturated_share", "out_of_range_share")
            if float(r[k]) > (0.01 if k == "out_of_range_share" else 0.5)
        ]
    return rows


def seq_gaps(seqs: Iterable[int], expected_end: int | None = None) -> list[tuple[int, int]]:
    """Missing inclusive seq ranges in ``[0, max(seen, expected_end)]``."""
    seen = np.unique(np.fromiter(seqs, dtype=np.int64))
    end = int(seen[-1]) if seen.size else -1
    if expected_end is not None:
        end = max(end, expected_end)
    if end < 0:
        return []
    full = np.concatenate([[-1], seen[(seen >= 0) & (seen <= end)], [end + 1]])
    jumps = np.nonzero(np.diff(full) > 1)[0]
    return [(int(full[i] + 1), int(full[i + 1] - 1)) for i in jumps]
