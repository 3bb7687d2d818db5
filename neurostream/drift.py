"""Data drift between a reference and a current set of windows: the streaming detector.

Monitoring compares what a service sees now with what its model was trained on (a dataset
snapshot) or with an earlier stretch of production (a time range). Windows become the
``bandpower@1`` features (log band power per channel and band, named ``<channel>:<band>``);
each feature gets a two-sample Kolmogorov-Smirnov test, computed for all features at once
(one sort of the pooled samples per feature, the asymptotic p-value of
``scipy.stats.ks_2samp(method="asymp")``), with a Bonferroni correction over the features.
Channels aggregate their bands; the multivariate score is an RBF-kernel MMD. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist

from neurostream.features import get_pipeline
from neurostream.signal import BANDS

BAND_NAMES: tuple[str, ...] = tuple(BANDS)


def band_features(
    x: np.ndarray, fs: float, channels: Sequence[str]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``[n, c, s]`` windows -> (features ``[n, c*b]``, names, channel index per feature)."""
    if x.ndim != 3 or x.shape[1] != len(channels):
        raise ValueError(f"windows {x.shape} do not match {len(channels)} channels")
    feats = get_pipeline("bandpower@1").transform(x, fs, {}).astype(np.float64)
    names = [f"{ch}:{band}" for ch in channels for band in BAND_NAMES]
    channel_of = np.repeat(np.arange(len(channels)), len(BAND_NAMES))
    return feats, names, channel_of


def ks_2samp_columns(
    ref: np.ndarray, cur: np.ndarray, n_eff: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """KS statistic and asymptotic p-value for every column of ``ref`` vs ``cur`` at once.

    ``n_eff`` replaces the sample sizes in the p-value: overlapping windows share samples,
    so their features are not independent and the nominal sizes would overstate evidence.
    """
    n1, n2 = ref.shape[0], cur.shape[0]
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one row")
    # Features as contiguous rows, so each row sorts in cache (sorting a strided column
    # is several times slower); ties are resolved below, so an unstable sort will do.
    pooled = np.ascontiguousarray(np.concatenate([ref, cur], axis=0).T)
    order = np.argsort(pooled, axis=1)
    values = np.take_along_axis(pooled, order, axis=1)
    step = np.where(order < n1, 1.0 / n1, -1.0 / n2)
    diff = np.cumsum(step, axis=1)  # ECDF_ref - ECDF_cur after each pooled sample
    # Only where the value changes (the last of a run of ties) is the ECDF difference real.
    last_of_ties = np.ones_like(values, dtype=bool)
    last_of_ties[:, :-1] = values[:, 1:] != values[:, :-1]
    d = np.where(last_of_ties, np.abs(diff), 0.0).max(axis=1)
    e1, e2 = n_eff if n_eff is not None else (n1, n2)
    en = max(1.0, float(np.round(e1 * e2 / (e1 + e2))))
    p = np.clip(stats.kstwo.sf(d, en), 0.0, 1.0)
    return d, p


@dataclass(frozen=True)
class DriftResult:
    """Per-feature and per-channel tests, and the share of drifted features."""

    features: list[str]
    statistic: np.ndarray  # KS D per feature
    p_value: np.ndarray  # raw p per feature
    p_adjusted: np.ndarray  # Bonferroni: min(1, p * n_features)
    drifted: np.ndarray  # p_adjusted < alpha
    channels: list[str]
    channel_statistic: np.ndarray  # max D over the channel's bands
    channel_p_value: np.ndarray  # min Bonferroni-adjusted p over the channel's bands
    channel_share: np.ndarray  # share of the channel's bands that drifted
    channel_drifted: np.ndarray  # any band drifted
    share: float  # share of all features that drifted
    alpha: float
    n_reference: int
    n_current: int

    @property
    def drifted_channels(self) -> list[str]:
        return [c for c, d in zip(self.channels, self.channel_drifted, strict=True) if d]


def ks_drift(
    ref: np.ndarray,
    cur: np.ndarray,
    names: Sequence[str],
    channel_of: np.ndarray,
    channels: Sequence[str],
    *,
    alpha: float = 0.05,
    n_eff: tuple[float, float] | None = None,
) -> DriftResult:
    """Per-feature KS tests with Bonferroni correction, aggregated per channel."""
    if ref.shape[1] != cur.shape[1] or ref.shape[1] != len(names):
        raise ValueError(f"feature counts differ: {ref.shape[1]}, {cur.shape[1]}, {len(names)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    d, p = ks_2samp_columns(ref, cur, n_eff)
    p_adj = np.minimum(1.0, p * len(names))
    drifted = p_adj < alpha
    n_ch = len(channels)
    ch_stat, ch_p = np.zeros(n_ch), np.ones(n_ch)
    ch_share = np.zeros(n_ch)
    for c in range(n_ch):
        mask = channel_of == c
        if mask.any():
            ch_stat[c], ch_p[c] = d[mask].max(), p_adj[mask].min()
            ch_share[c] = drifted[mask].mean()
    return DriftResult(
        features=list(names),
        statistic=d,
        p_value=p,
        p_adjusted=p_adj,
        drifted=drifted,
        channels=list(channels),
        channel_statistic=ch_stat,
        channel_p_value=ch_p,
        channel_share=ch_share,
        channel_drifted=ch_share > 0,
        share=float(drifted.mean()) if len(names) else 0.0,
        alpha=alpha,
        n_reference=ref.shape[0],
        n_current=cur.shape[0],
    )


def effective_n(n: int, window_s: float, spacing_s: float | None) -> float:
    """Independent-sample equivalent of ``n`` windows of ``window_s`` every ``spacing_s``."""
    if spacing_s is None or spacing_s <= 0 or spacing_s >= window_s:
        return float(n)
    return max(2.0, n * spacing_s / window_s)


def mmd_rbf(ref: np.ndarray, cur: np.ndarray, *, max_n: int = 500, seed: int = 0) -> float:
    """Unbiased MMD² with an RBF kernel (median-heuristic bandwidth) on standardised features.

    Features are scaled by the reference's mean and spread so no band dominates; at most
    ``max_n`` rows per side (a seeded subsample) keep the O(n²) kernel cheap.
    """
    rng = np.random.default_rng(seed)
    if ref.shape[0] > max_n:
        ref = ref[rng.choice(ref.shape[0], max_n, replace=False)]
    if cur.shape[0] > max_n:
        cur = cur[rng.choice(cur.shape[0], max_n, replace=False)]
    m, n = ref.shape[0], cur.shape[0]
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least two rows per sample")
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    sd[sd == 0] = 1.0
    a, b = (ref - mu) / sd, (cur - mu) / sd
    d_aa, d_bb, d_ab = (
        cdist(a, a, "sqeuclidean"),
        cdist(b, b, "sqeuclidean"),
        cdist(a, b, "sqeuclidean"),
    )
    pooled = np.concatenate(
        [d_aa[np.triu_indices(m, 1)], d_bb[np.triu_indices(n, 1)], d_ab.ravel()]
    )
    gamma = 1.0 / max(float(np.median(pooled)), 1e-12)
    k_aa, k_bb, k_ab = np.exp(-gamma * d_aa), np.exp(-gamma * d_bb), np.exp(-gamma * d_ab)
    xx = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    yy = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(xx + yy - 2 * k_ab.mean())
