"""Bring in a model that MLflow tracks, without ever unpickling it.

``neurostream models import-mlflow SOURCE`` reads an MLflow model: a local folder with an
``MLmodel`` file, or (with the ``mlflow`` extra) a ``models:/name/version`` or
``runs:/<run>/<path>`` URI that MLflow's artifact API downloads into a scratch folder.
The ``MLmodel`` YAML names the flavors the model was saved with, and only two carry an
artifact a neurostream worker can load safely:

* ``sklearn`` saved with ``serialization_format: skops``: the ``.skops`` file is the
  artifact of family ``sklearn-pipeline`` (skops loads only the types it trusts);
* ``onnx``: the ``.onnx`` file is the artifact of family ``onnx``; weights MLflow stored
  beside it as external data are folded into the one file the registry keeps (this
  needs the ``onnx`` package, from the ``onnx-export`` extra).

Anything else (``sklearn`` with pickle or cloudpickle, a ``python_function``-only model,
``pytorch``, ...) is a pickle, and unpickling runs whatever code it holds: it is refused
with the call that re-logs it safely. Only the YAML is parsed (``yaml.safe_load``) and
only the artifact's bytes are read; the model itself is loaded by the queue manager when
the upload arrives, exactly as a worker loads it. The neurostream signature (channel
names, epoch geometry) still comes from the command's flags: MLflow's tensor spec has no
channel names, so its input shape is only shown beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from neurostream.errors import ArtifactError, ConfigError
from neurostream.models.families import ONNX, SKLEARN_PIPELINE

__all__ = ["MLMODEL", "MlflowModel", "import_source", "read_model_dir", "resolve"]

MLMODEL: Final = "MLmodel"
SKOPS: Final = "skops"  # mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS
# Files MLflow writes beside every model; anything else beside an .onnx file may be its
# external data.
_MLFLOW_FILES: Final = frozenset(
    {
        MLMODEL,
        "conda.yaml",
        "python_env.yaml",
        "requirements.txt",
        "input_example.json",
        "serving_input_example.json",
        "registered_model_meta",
    }
)
_MLFLOW_DIRS: Final = frozenset({"metadata", "code"})
RELOG: Final = (
    "re-log it with skops: mlflow.sklearn.log_model(model, name=..., "
    "serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS, "
    "skops_trusted_types=[...]) (skops.io.get_untrusted_types(data=skops.io.dumps(model)) "
    "lists the types to trust), or export it to ONNX and log it with mlflow.onnx.log_model"
)


@dataclass(frozen=True)
class MlflowModel:
    """An MLflow model that neurostream can register: its artifact and where it came from."""

    source: str  # what was asked for: a folder or a models:/ / runs:/ URI
    path: Path  # the local model folder that was read
    flavor: str  # "sklearn" | "onnx"
    family: str  # the neurostream family that serves it
    artifact_file: str  # the artifact's name inside the folder
    artifact: bytes = field(repr=False)
    input_schema: str | None = None  # MLflow's input signature, summarised
    mlflow_version: str | None = None
    model_uuid: str | None = None
    run_id: str | None = None
    trusted_types: tuple[str, ...] = ()  # skops_trusted_types recorded with the model

    def lineage(self) -> dict[str, Any]:
        """Where the version came from, stored with its metrics."""
        out: dict[str, Any] = {
            "source": "mlflow",
            "uri": self.source,
            "flavor": self.flavor,
            "artifact_file": self.artifact_file,
        }
        for key in ("mlflow_version", "model_uuid", "run_id", "input_schema"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def _schema_summary(signature: Any) -> str | None:
    """MLflow's input schema in a few words: ``tensor float32 [-1, 4, 205]``, or columns."""
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return None
    try:
        inputs = json.loads(signature["inputs"])
    except (TypeError, ValueError):
        return None
    if not isinstance(inputs, list) or not inputs:
        return None
    tensors = [s for s in inputs if isinstance(s, dict) and s.get("type") == "tensor"]
    if tensors:
        parts = []
        for s in tensors:
            spec = s.get("tensor-spec", {})
            name = f"{s['name']}: " if s.get("name") else ""
            parts.append(f"{name}tensor {spec.get('dtype', '?')} {spec.get('shape', '?')}")
        return ", ".join(parts)
    types = sorted({str(s.get("type", "?")) for s in inputs if isinstance(s, dict)})
    return f"{len(inputs)} columns ({', '.join(types)})"


def _shape_note(schema: str | None) -> str:
    return f" (MLflow input: {schema})" if schema else ""


def _inside(folder: Path, name: Any, what: str) -> Path:
    """The file ``name`` inside ``folder``; an MLmodel may not point outside its folder."""
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"{folder / MLMODEL} names no {what} file", field="MLmodel")
    file = (folder / name).resolve()
    if not file.is_relative_to(folder.resolve()):
        raise ArtifactError(
            f"{folder / MLMODEL} points its {what} outside the model folder: {name!r}",
            field="MLmodel",
        )
    if not file.is_file():
        raise ArtifactError(
            f"{folder / MLMODEL} names {what} file {name!r}, which is not in {folder}",
            field="MLmodel",
            hint="download the whole model folder (every file MLflow logged)",
        )
    return file


def _external_tensors(model: Any) -> bool:
    """Whether any initializer of the graph or its subgraphs lives in an external file."""
    from onnx import AttributeProto
    from onnx.external_data_helper import uses_external_data

    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        if any(uses_external_data(t) for t in graph.initializer):
            return True
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    graphs.extend(attr.graphs)
                elif attr.type == AttributeProto.TENSOR and uses_external_data(attr.t):
                    return True
    return False


def _onnx_bytes(file: Path, folder: Path) -> bytes:
    """The ``.onnx`` file as one self-contained model (external weights folded in)."""
    try:
        import onnx
    except ImportError:
        others = sorted(
            p.name
            for p in folder.iterdir()
            if p != file
            and not (p.name in _MLFLOW_FILES or (p.is_dir() and p.name in _MLFLOW_DIRS))
        )
        if others:
            raise ArtifactError(
                f"{folder} holds {', '.join(others)} beside {file.name}: MLflow may have saved "
                "the weights as ONNX external data, which needs the onnx package to fold into "
                "one artifact",
                field="artifact",
                hint="pip install 'neurostream[onnx-export]', or save the model with "
                "mlflow.onnx.save_model(..., save_as_external_data=False)",
            ) from None
        return file.read_bytes()
    data = file.read_bytes()
    model = onnx.load_from_string(data)
    if not _external_tensors(model):
        return data
    onnx.load_external_data_for_model(model, str(folder))
    return bytes(model.SerializeToString())


def read_model_dir(path: Path, *, source: str | None = None) -> MlflowModel:
    """The artifact of the MLflow model in ``path``, or ``ArtifactError`` saying why it is
    refused (a pickle: how to re-log it; another flavor: what neurostream takes)."""
    source = source or str(path)
    mlmodel = path / MLMODEL
    if not mlmodel.is_file():
        raise ConfigError(
            f"{path} is not an MLflow model folder (it has no {MLMODEL} file)",
            field="source",
            hint="give the folder mlflow.<flavor>.save_model wrote, or a models:/ or runs:/ URI",
        )
    try:
        meta = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{mlmodel} is not readable YAML: {exc}", field="MLmodel") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors"), dict):
        raise ArtifactError(f"{mlmodel} lists no flavors", field="MLmodel")
    flavors: dict[str, Any] = meta["flavors"]
    schema = _schema_summary(meta.get("signature"))
    common: dict[str, Any] = {
        "source": source,
        "path": path,
        "input_schema": schema,
        "mlflow_version": meta.get("mlflow_version"),
        "model_uuid": meta.get("model_uuid"),
        "run_id": meta.get("run_id"),
    }
    onnx_flavor = flavors.get("onnx")
    if isinstance(onnx_flavor, dict):
        file = _inside(path, onnx_flavor.get("data"), "ONNX")
        return MlflowModel(
            flavor="onnx",
            family=ONNX,
            artifact_file=file.name,
            artifact=_onnx_bytes(file, path),
            **common,
        )
    sk = flavors.get("sklearn")
    if isinstance(sk, dict):
        # MLflow before 1.x wrote no serialization_format: those models are pickles.
        fmt = sk.get("serialization_format") or "pickle"
        if fmt != SKOPS:
            raise ArtifactError(
                f"{source} is a scikit-learn model MLflow saved with {fmt} "
                f"({sk.get('pickled_model', '?')}); neurostream never loads a pickle "
                f"(unpickling runs any code it holds){_shape_note(schema)}",
                field="artifact",
                hint=RELOG,
            )
        file = _inside(path, sk.get("pickled_model"), "skops")
        trusted = sk.get("skops_trusted_types") or []
        return MlflowModel(
            flavor="sklearn",
            family=SKLEARN_PIPELINE,
            artifact_file=file.name,
            artifact=file.read_bytes(),
            trusted_types=tuple(str(t) for t in trusted),
            **common,
        )
    names = ", ".join(sorted(flavors)) or "none"
    torch = " (a torch model: torch.onnx.export it first)" if "pytorch" in flavors else ""
    raise ArtifactError(
        f"{source} has MLflow flavor(s) {names}; neurostream imports scikit-learn models saved "
        f"as skops and ONNX models, never a pickled one{torch}{_shape_note(schema)}",
        field="artifact",
        hint=RELOG,
    )


def resolve(source: str, dst: Path, *, tracking_uri: str | None = None) -> Path:
    """The local folder of ``source``: itself when it is a folder, else MLflow downloads
    the model (``models:/``, ``runs:/``, any artifact URI) into ``dst``."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    if ":/" not in source:
        raise ConfigError(
            f"no MLflow model folder at {source}",
            field="source",
            hint="give a folder with an MLmodel file, or a models:/NAME/VERSION or "
            "runs:/RUN_ID/PATH URI",
        )
    try:
        from mlflow.artifacts import download_artifacts
    except ImportError:
        raise ConfigError(
            f"{source} is an MLflow URI, and reading one needs MLflow",
            field="source",
            hint="pip install 'neurostream[mlflow]', or download the model folder and give "
            "its path",
        ) from None
    try:
        # The registry is the tracking server unless MLflow is told otherwise (models:/).
        where = {"tracking_uri": tracking_uri, "registry_uri": tracking_uri} if tracking_uri else {}
        return Path(download_artifacts(artifact_uri=source, dst_path=str(dst), **where))
    except Exception as exc:  # MlflowException, or the store's own (HTTP, S3, ...) errors
        raise ConfigError(
            f"MLflow could not fetch {source}: {getattr(exc, 'message', None) or exc}",
            field="source",
            hint="check the URI, and the tracking server (--tracking-uri or MLFLOW_TRACKING_URI)",
        ) from exc


def import_source(source: str, dst: Path, *, tracking_uri: str | None = None) -> MlflowModel:
    """``resolve`` then ``read_model_dir``: the one call behind ``models import-mlflow``."""
    return read_model_dir(resolve(source, dst, tracking_uri=tracking_uri), source=source)
