"""Crafted skops artifacts for the ``sklearn-pipeline`` family: hostile ones that loading
must refuse, and a real fitted pyRiemann pipeline for the happy path.

Every artifact is made with skops itself; where skops will not write the attack (a
constructor call to ``os.system``), its own ``schema.json`` is edited inside the zip, as
an attacker would. ``os_system_reference(command)`` is a real exploit: trusting it with
``skops.io.loads`` runs ``command`` (the tests show that, then that our loader refuses it
and the command never ran).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

FS = 128.0
CHANNELS = ("Fz", "Cz", "Pz", "Oz")


class Smuggled(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A harmless transformer from a module no allow-list names (this one)."""

    def fit(self, X: Any, y: Any = None) -> Smuggled:
        return self

    def transform(self, X: Any) -> Any:
        return X


def _flat() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(20, 3))) + 0.1
    return x, np.arange(20) % 2


def _with_func(func: Any, *, fit: bool = True) -> bytes:
    """A FunctionTransformer(func) + LDA pipeline (fitted unless ``fit=False``), dumped."""
    x, y = _flat()
    est = make_pipeline(FunctionTransformer(func), LinearDiscriminantAnalysis())
    return sio.dumps(est.fit(x, y) if fit else est)


def _rewrite(artifact: bytes, edit: Any) -> bytes:
    """``artifact`` with its ``schema.json`` passed through ``edit(schema) -> schema``."""
    src = zipfile.ZipFile(io.BytesIO(artifact))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "schema.json":
                data = json.dumps(edit(json.loads(data))).encode()
            dst.writestr(info.filename, data)
    return out.getvalue()


def _func_node(schema: dict[str, Any]) -> dict[str, Any]:
    """The FunctionTransformer's ``content`` dict in a ``_with_func`` schema."""
    steps = schema["content"]["content"]["steps"]["content"]
    return steps[0]["content"][1]["content"]["content"]


def eval_reference() -> bytes:
    """FunctionTransformer(func=builtins.eval): skops writes it as a function reference."""
    return _with_func(eval, fit=False)


def os_system_reference(command: str = "true") -> bytes:
    """A pipeline whose FunctionTransformer ``func`` is a constructor call
    ``os.system(command)``: skops would run ``command`` while loading, if trusted."""
    args = json.loads(zipfile.ZipFile(io.BytesIO(sio.dumps((command,)))).read("schema.json"))
    args.pop("protocol", None)
    args.pop("_skops_version", None)

    def edit(schema: dict[str, Any]) -> dict[str, Any]:
        _func_node(schema)["func"] = {
            "__class__": "system",
            "__module__": os.system.__module__,  # "posix" (or "nt"): where skops finds it
            "__loader__": "ConstructorFromReduceNode",
            "content": args,
            "__id__": 1,
        }
        return schema

    return _rewrite(_with_func(np.log1p), edit)


def unlisted_class() -> bytes:
    """A pipeline holding a class of an unlisted module (``tests.hostile_artifacts``)."""
    x, y = _flat()
    return sio.dumps(make_pipeline(Smuggled(), LinearDiscriminantAnalysis()).fit(x, y))


def allowed_function_param() -> bytes:
    """FunctionTransformer(func=numpy.log): NumPy is allowed, but a function is no class."""
    return _with_func(np.log)


def truncated() -> bytes:
    """The first half of a real artifact (its zip directory is lost)."""
    blob = xdawn_pipeline_artifact().artifact
    return blob[: len(blob) // 2]


def oversized(n_bytes: int = 100 * 1024 * 1024) -> bytes:
    """A valid skops artifact padded with a stored zip member to ``n_bytes`` or more."""
    out = io.BytesIO(xdawn_pipeline_artifact().artifact)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("padding.bin", bytes(max(0, n_bytes - len(out.getvalue()))))
    return out.getvalue()


@dataclass(frozen=True)
class FittedPipeline:
    """A fitted pipeline, its skops bytes, the µV epochs it was fitted on, and the
    metadata a ``sklearn-pipeline`` version of it records (``raw@1``, any stream)."""

    artifact: bytes = field(repr=False)
    estimator: Any = field(repr=False)
    x: np.ndarray = field(repr=False)  # float32 [n, c, t], µV
    y: np.ndarray = field(repr=False)  # int64 [n], 1 = target
    fs: float = FS
    channels: tuple[str, ...] = CHANNELS

    def metadata(self, **model_params: Any) -> dict[str, Any]:
        """family, feature_pipeline, feature_params, model_params, input_spec, classes."""
        return {
            "family": "sklearn-pipeline",
            "feature_pipeline": "raw@1",
            "feature_params": {"stream_filter": None},
            "model_params": model_params,
            "input_spec": {
                "fs": self.fs,
                "n_channels": self.x.shape[1],
                "n_samples": self.x.shape[2],
                "kind": "epoch",
                "channels": list(self.channels),
                "tmin": -0.1,
                "tmax": -0.1 + self.x.shape[2] / self.fs,
                "units": "uV",
            },
            "classes": [0, 1],
        }


def p300_epochs(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic µV epochs ``[n, 4, 64]`` at 128 Hz: targets carry a P300-like bump."""
    rng = np.random.default_rng(seed)
    t = np.arange(64) / FS - 0.1
    y = np.arange(n) % 2
    x = rng.normal(scale=5.0, size=(n, len(CHANNELS), t.size))
    bump = 8.0 * np.exp(-(((t - 0.3) / 0.05) ** 2))
    x[y == 1] += bump * np.array([0.5, 1.0, 1.0, 0.3])[:, None]
    return x.astype(np.float32), y.astype(np.int64)


def xdawn_pipeline_artifact(seed: int = 0) -> FittedPipeline:
    """A real XdawnCovariances + TangentSpace + LogisticRegression pipeline (pyRiemann)."""
    from pyriemann.estimation import XdawnCovariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression

    x, y = p300_epochs(seed=seed)
    est = make_pipeline(XdawnCovariances(nfilter=2), TangentSpace(), LogisticRegression())
    est.fit(x.astype(np.float64), y)
    return FittedPipeline(sio.dumps(est), est, x, y)
