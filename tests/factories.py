"""Factories for test data: synthetic P300 epochs and trained models."""

from __future__ import annotations

import uuid

import numpy as np

FS = 250.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def synthetic_p300(
    n: int = 120, channels: int = 4, seed: int = 0, amplitude: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """Epochs [-0.1, 0.7) s at 250 Hz with a Gaussian bump at 300 ms on targets (y == 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.8 * FS)) / FS - 0.1
    y = (np.arange(n) % 3 == 0).astype(np.int64)
    x = rng.normal(0, 5, (n, channels, t.size)).astype(np.float32)
    x[y == 1] += (amplitude * np.exp(-((t - 0.3) ** 2) / (2 * 0.05**2))).astype(np.float32)
    return x, y
