"""Model artifacts: the bytes stored in ``model_versions.artifact`` and their safe loading.

Artifacts arrive from the registry API and the database, so loading never unpickles
arbitrary objects: scikit-learn models go through ``skops.io`` and may only contain
scikit-learn, NumPy and SciPy types; torch models are a ``state_dict`` read with
``torch.load(weights_only=True)`` into an architecture rebuilt from ``model_params``.
The sha256 is checked on every load, so a corrupted or swapped artifact never serves.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import io
from collections.abc import Mapping
from typing import Any, Final

from neurostream.errors import ArtifactError as ArtifactError  # re-exported
from neurostream.models.families import (
    FAMILIES,
    SKLEARN_LDA,
    TORCH_EEGNET,
    Classifier,
    SklearnClassifier,
    check_family,
)

# Top-level packages whose *classes* an sklearn artifact may reference.
TRUSTED_ROOTS: Final = frozenset({"sklearn", "numpy", "scipy"})


def sha256_hex(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def dump(estimator: Any, family: str) -> bytes:
    """Serialise a fitted model (or its ``Classifier`` adapter) for the registry."""
    check_family(family)
    if family == SKLEARN_LDA:
        import skops.io as sio

        data: bytes = sio.dumps(getattr(estimator, "estimator", estimator))
        return data
    import torch

    net = getattr(estimator, "net", estimator)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    return buf.getvalue()


def _is_trusted_type(name: str) -> bool:
    """Only classes (not functions) under the trusted roots; others stay refused."""
    root = name.split(".", 1)[0]
    if root not in TRUSTED_ROOTS or "." not in name:
        return False
    module_name, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type)


def _load_sklearn(artifact: bytes) -> Classifier:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=artifact)
    except Exception as exc:  # skops raises many kinds on garbage input
        raise ArtifactError(f"not a readable skops artifact: {exc}") from exc
    refused = [t for t in untrusted if not _is_trusted_type(t)]
    if refused:
        raise ArtifactError(
            f"artifact references untrusted types {refused}; only scikit-learn, NumPy and "
            "SciPy classes are loaded"
        )
    try:
        estimator = sio.loads(artifact, trusted=untrusted)
        return SklearnClassifier(estimator)
    except Exception as exc:
        raise ArtifactError(f"cannot load the {SKLEARN_LDA} artifact: {exc}") from exc


def _load_torch(artifact: bytes, model_params: Mapping[str, Any]) -> Classifier:
    import torch

    from neurostream.models import eegnet

    try:
        state = torch.load(io.BytesIO(artifact), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but tensors and containers
        raise ArtifactError(f"not a weights-only torch state_dict: {exc}") from exc
    try:
        net = eegnet.build(model_params)
        net.load_state_dict(state, strict=True)
        return eegnet.TorchClassifier(net, model_params)
    except Exception as exc:
        raise ArtifactError(
            f"state_dict does not fit {TORCH_EEGNET}{dict(model_params)}: {exc}"
        ) from exc


def load(
    artifact: bytes, family: str, *, sha256: str, model_params: Mapping[str, Any]
) -> Classifier:
    """Verify the hash, then load safely; every failure is an ``ArtifactError``."""
    if family not in FAMILIES:
        raise ArtifactError(f"unknown model family {family!r}")
    artifact = bytes(artifact)
    actual = sha256_hex(artifact)
    if not hmac.compare_digest(actual, str(sha256).lower()):
        raise ArtifactError(f"sha256 mismatch: artifact hashes to {actual}, expected {sha256}")
    if family == SKLEARN_LDA:
        return _load_sklearn(artifact)
    return _load_torch(artifact, model_params)
