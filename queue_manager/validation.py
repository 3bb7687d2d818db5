"""Refuse an uploaded model before it is stored: it must load exactly as a worker loads it.

The upload is turned into the ``model_versions`` row a worker would read and passed to
``ServingModel.from_row`` (hash check, safe deserialisation, feature pipeline lookup and a
warm-up prediction on the declared input shape). Anything it refuses is a 422 naming the
field at fault, so a broken artifact never reaches a worker. The signature in
``input_spec`` (channel names, fs, window length, epoch geometry, units) is checked first,
so its faults name ``metadata.input_spec.<key>`` rather than the artifact.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from neurostream.errors import InvalidRequest
from neurostream.models.artifacts import DEFAULT_POLICY, ArtifactPolicy
from queue_manager.schemas import VersionMetadata


class InvalidUpload(InvalidRequest):
    """The upload cannot serve; ``field`` names the form field or metadata key at fault."""


def version_row(model_name: str, meta: VersionMetadata, artifact: bytes) -> dict[str, Any]:
    """The row ``ServingModel.from_row`` expects, as the registry would store it."""
    return {
        "id": 0,
        "model_name": model_name,
        "version": 0,
        **meta.model_dump(exclude={"sha256"}),
        "sha256": hashlib.sha256(artifact).hexdigest(),
        "artifact": artifact,
    }


def _load(row: dict[str, Any], policy: ArtifactPolicy = DEFAULT_POLICY) -> None:
    # Imported lazily: torch/skops are heavy and only needed when an upload arrives.
    from neurostream.features import UnknownPipeline
    from neurostream.models.artifacts import ArtifactError
    from neurostream.models.serving import ServingModel

    try:
        ServingModel.from_row(row, policy=policy)
    except UnknownPipeline as exc:
        raise InvalidUpload(
            f"unknown feature pipeline: {exc.args[0] if exc.args else exc}",
            field="metadata.feature_pipeline",
        ) from exc
    except ArtifactError as exc:
        raise InvalidUpload(exc.message, field="artifact", hint=exc.hint) from exc
    except Exception as exc:  # whatever a malformed artifact makes the loader raise
        raise InvalidUpload(f"artifact could not be loaded: {exc!r}", field="artifact") from exc


async def validate_upload(
    model_name: str,
    meta: VersionMetadata,
    artifact: bytes,
    *,
    policy: ArtifactPolicy = DEFAULT_POLICY,  # ArtifactPolicy.from_settings(core)
) -> None:
    """Raise ``InvalidUpload`` unless the artifact loads and predicts like a worker's would."""
    from neurostream.models.artifacts import ArtifactError
    from neurostream.models.signature import Signature

    try:
        Signature.from_spec(meta.input_spec)
    except ArtifactError as exc:
        raise InvalidUpload(exc.message, field=f"metadata.{exc.field or 'input_spec'}") from exc
    if not artifact:
        raise InvalidUpload("artifact is empty", field="artifact")
    actual = hashlib.sha256(artifact).hexdigest()
    if meta.sha256 is not None and meta.sha256 != actual:
        raise InvalidUpload(
            f"sha256 mismatch: the upload hashes to {actual}, metadata says {meta.sha256}",
            field="metadata.sha256",
        )
    await asyncio.to_thread(_load, version_row(model_name, meta, artifact), policy)
