"""Feature pipelines: named, versioned transforms from raw windows to model inputs.

A model version records the key of the pipeline it was trained on (``erp@1``) and its
parameters; a worker looks the key up here and refuses the model when it is missing, so
features at serving time are exactly those seen in training. A pipeline never changes
behaviour under the same key: a change is a new version (``erp@2``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from neurostream import signal
from neurostream.errors import UnknownPipeline as UnknownPipeline  # re-exported


@runtime_checkable
class FeaturePipeline(Protocol):
    key: str
    name: str
    version: int

    def transform(self, batch: np.ndarray, fs: float, params: Mapping[str, Any]) -> np.ndarray:
        """float32 ``[n, c, s]`` -> float32 ``[n, f]``."""
        ...

    def default_params(self) -> dict[str, Any]: ...


def _check_batch(batch: np.ndarray, fs: float, dtype: type = np.float64) -> np.ndarray:
    arr = np.asarray(batch)
    if arr.ndim != 3:
        raise ValueError(f"batch must be [n_windows, n_channels, n_samples], got {arr.shape}")
    if not fs > 0:
        raise ValueError(f"fs must be positive, got {fs}")
    return np.ascontiguousarray(arr, dtype=dtype)


class _Pipeline:
    """Shared parameter handling: defaults merged with overrides, unknown keys refused."""

    key: str
    name: str
    version: int
    _defaults: ClassVar[dict[str, Any]]

    def default_params(self) -> dict[str, Any]:
        return copy.deepcopy(self._defaults)

    def resolve(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with ``params``; a typo in a key fails loudly instead of silently."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(self._defaults))
        if unknown:
            raise ValueError(
                f"{self.key}: unknown params {unknown}; known: {sorted(self._defaults)}"
            )
        return {**self.default_params(), **given}


class ErpPipeline(_Pipeline):
    """Time-domain ERP features: band-pass, baseline, ~100 Hz, channels concatenated."""

    key = "erp@1"
    name = "erp"
    version = 1
    _defaults: ClassVar[dict[str, Any]] = {
        "l_freq": 0.5,
        "h_freq": 20.0,
        "order": 4,
        "tmin": -0.1,  # the epoch starts this many seconds before the stimulus onset
        "target_fs": 100.0,
    }

    def transform(self, batch: np.ndarray, fs: float, params: Mapping[str, Any]) -> np.ndarray:
        p = self.resolve(params)
        x = _check_batch(batch, fs, np.float32)
        n, c, s = x.shape
        op = _erp_operator(
            float(fs),
            s,
            float(p["l_freq"]),
            float(p["h_freq"]),
            int(p["order"]),
            float(p["tmin"]),
            float(p["target_fs"]),
        )
        out: np.ndarray = (x.reshape(n * c, s) @ op).reshape(n, -1)
        return out


def erp_reference(x: np.ndarray, fs: float, p: Mapping[str, Any]) -> np.ndarray:
    """The ``erp@1`` chain applied step by step, ``[n, c, s]`` -> ``[n, c, t]`` (float64)."""
    x = signal.bandpass(x, fs, p["l_freq"], p["h_freq"], int(p["order"]))
    n_base = int(round(max(0.0, -float(p["tmin"])) * fs))
    x = signal.baseline_correct(x, min(n_base, x.shape[-1]))
    return signal.resample(x, fs, float(p["target_fs"]))[0]


@lru_cache(maxsize=32)
def _erp_operator(
    fs: float,
    n_samples: int,
    l_freq: float,
    h_freq: float,
    order: int,
    tmin: float,
    target_fs: float,
) -> np.ndarray:
    """The whole ``erp@1`` chain as one ``[s, t]`` matrix.

    Zero-phase filtering (with its odd extension and initial conditions), baseline removal
    and polyphase resampling are all linear in the samples, so their composition is a
    matrix: its rows are the chain's responses to unit impulses. One float32 GEMM per
    batch then replaces per-row IIR filtering (~50x faster on a 64-epoch batch).
    """
    params = {
        "l_freq": l_freq,
        "h_freq": h_freq,
        "order": order,
        "tmin": tmin,
        "target_fs": target_fs,
    }
    impulses = np.eye(n_samples)[:, None, :]
    op = np.ascontiguousarray(erp_reference(impulses, fs, params)[:, 0, :], dtype=np.float32)
    op.setflags(write=False)
    return op


class BandPowerPipeline(_Pipeline):
    """Spectral features: Welch log band powers per channel (channel-major)."""

    key = "bandpower@1"
    name = "bandpower"
    version = 1
    _defaults: ClassVar[dict[str, Any]] = {
        "bands": {k: list(v) for k, v in signal.BANDS.items()},
        "nperseg_s": 1.0,
    }

    def transform(self, batch: np.ndarray, fs: float, params: Mapping[str, Any]) -> np.ndarray:
        p = self.resolve(params)
        x = _check_batch(batch, fs)
        bands = {str(k): (float(v[0]), float(v[1])) for k, v in dict(p["bands"]).items()}
        nperseg = int(round(float(p["nperseg_s"]) * fs))
        bp = signal.band_powers(x, fs, bands, nperseg=nperseg)
        return np.ascontiguousarray(bp.reshape(bp.shape[0], -1), dtype=np.float32)


_REGISTRY: dict[str, FeaturePipeline] = {p.key: p for p in (ErpPipeline(), BandPowerPipeline())}


def get_pipeline(key: str) -> FeaturePipeline:
    """The pipeline registered under ``key``; ``UnknownPipeline`` names the available ones."""
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise UnknownPipeline.of(str(key), available_pipelines()) from None


def available_pipelines() -> list[str]:
    return sorted(_REGISTRY)
