"""Drift benchmark: one evaluation over 10k windows, streaming detector vs Evidently.

Reference and current hold ``--windows`` epochs each (16 channels x 200 samples at 250 Hz,
two channels shifted in the current set). Rows: band-power features, the vectorised KS
(all 80 features in one pass) against a per-feature ``scipy.stats.ks_2samp`` loop (the
baseline), MMD on a 500-row subsample, and Evidently's DataDriftPreset on the same
features. Run: .venv/bin/python -m bench.drift"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.common import FS, N_CH, N_S, table
from neurostream.drift import band_features, ks_drift, mmd_rbf

CHANNELS = [f"ch{i}" for i in range(N_CH)]


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def windows(n: int, seed: int, shifted: bool) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 10, (n, N_CH, N_S)).astype(np.float32)
    if shifted:
        x[:, [3, 7]] *= 1.5
    return x


def evidently(ref: np.ndarray, cur: np.ndarray, names: list[str]) -> float:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snap = Report([DataDriftPreset()]).run(
        current_data=pd.DataFrame(cur, columns=names),
        reference_data=pd.DataFrame(ref, columns=names),
    )
    return float(snap.dict()["metrics"][0]["value"]["share"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--windows", type=int, default=10_000)
    args = ap.parse_args()
    n = args.windows
    ref_x, cur_x = windows(n, 1, False), windows(n, 2, True)
    # The first call pays page faults on fresh arrays and FFT set-up; a monitoring API is a
    # long-running process, so the detector total uses the warm figure.
    t_cold, _ = timed(lambda: band_features(ref_x, FS, CHANNELS), 1)
    t_feat, (ref, names, ch_of) = timed(lambda: band_features(ref_x, FS, CHANNELS))
    cur, _, _ = band_features(cur_x, FS, CHANNELS)
    t_ks, res = timed(lambda: ks_drift(ref, cur, names, ch_of, CHANNELS))
    t_loop, _ = timed(
        lambda: [stats.ks_2samp(ref[:, j], cur[:, j], method="asymp") for j in range(len(names))]
    )
    small_ref, small_cur = ref[:120], cur[:120]
    t_small, _ = timed(lambda: ks_drift(small_ref, small_cur, names, ch_of, CHANNELS), 20)
    t_small_loop, _ = timed(
        lambda: [
            stats.ks_2samp(small_ref[:, j], small_cur[:, j], method="asymp")
            for j in range(len(names))
        ],
        20,
    )
    t_mmd, mmd = timed(lambda: mmd_rbf(ref, cur))
    t_ev, ev_share = timed(lambda: evidently(ref, cur, names), 1)
    rows = [
        ["band-power features, first call (one side)", f"{n}", f"{t_cold * 1000:.0f}", "-"],
        ["band-power features, warm (one side)", f"{n}", f"{t_feat * 1000:.0f}", "-"],
        [
            "KS, vectorised (detector)",
            f"{len(names)} features",
            f"{t_ks * 1000:.1f}",
            f"share {res.share:.3f}, drifted {res.drifted_channels}",
        ],
        [
            "KS, scipy ks_2samp loop (baseline)",
            f"{len(names)} features",
            f"{t_loop * 1000:.1f}",
            f"x{t_loop / t_ks:.1f} slower",
        ],
        [
            "KS, vectorised, sliding window (120 vs 120)",
            f"{len(names)} features",
            f"{t_small * 1000:.2f}",
            "-",
        ],
        [
            "KS, scipy loop, sliding window (120 vs 120)",
            f"{len(names)} features",
            f"{t_small_loop * 1000:.2f}",
            f"x{t_small_loop / t_small:.1f} slower",
        ],
        ["MMD² RBF (500-row subsample)", "-", f"{t_mmd * 1000:.1f}", f"{mmd:.4f}"],
        [
            "detector total (features x2 + KS + MMD)",
            "-",
            f"{(2 * t_feat + t_ks + t_mmd) * 1000:.0f}",
            "-",
        ],
        [
            "Evidently DataDriftPreset",
            f"{len(names)} columns",
            f"{t_ev * 1000:.0f}",
            f"share {ev_share:.3f}",
        ],
    ]
    table(
        f"Drift evaluation, {n} reference vs {n} current windows ({N_CH}x{N_S} @ {FS:.0f} Hz)",
        ["step", "size", "ms", "result"],
        rows,
    )


if __name__ == "__main__":
    main()
