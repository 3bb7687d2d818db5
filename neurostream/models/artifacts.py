"""Model artifacts: the bytes stored in ``model_versions.artifact`` and their safe loading.

Artifacts arrive from the registry API and the database, so loading never unpickles
arbitrary objects. The four families:

- ``sklearn-lda``: our own LDA pipeline, a ``skops.io`` file of scikit-learn, NumPy and
  SciPy classes only;
- ``sklearn-pipeline``: any scikit-learn-compatible estimator a user fitted and saved with
  ``skops.io.dump`` (scikit-learn, pyRiemann, ``mne.decoding``), loaded under an
  ``ArtifactPolicy``;
- ``torch-eegnet``: a ``state_dict`` read with ``torch.load(weights_only=True)`` into an
  architecture rebuilt from ``model_params``;
- ``onnx``: an ONNX graph run by onnxruntime (``neurostream.models.onnxnet``).

The allow-list of a skops artifact is one of *classes*: every type its ``schema.json``
names must be a class (``isinstance(obj, type)``) whose module is, on a dotted boundary,
under ``sklearn``, ``numpy``, ``scipy``, ``pyriemann`` or ``mne.decoding`` (plus the
modules an operator trusts: ``CoreSettings.trusted_modules``). Functions (``eval``,
``os.system``, even ``numpy.log``), bound methods, ``functools.partial`` and
``operator`` callables are refused, and so is every class of a system module
(``DENIED_MODULES``: builtins beyond plain data, os, subprocess, importlib, ...), which
no setting can trust. The schema is read as JSON from the zip, without importing any
module it names outside the allow-list, so nothing in a refused artifact runs: skops
constructs objects only after every type passed. The size is checked before anything
else, and the sha256 on every load, so a corrupted or swapped artifact never serves.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import io
import json
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from neurostream.errors import ArtifactError as ArtifactError  # re-exported
from neurostream.errors import ConfigError
from neurostream.models.families import (
    FAMILIES,
    ONNX,
    SKLEARN_LDA,
    SKLEARN_PIPELINE,
    TORCH_EEGNET,
    Classifier,
    PipelineClassifier,
    SklearnClassifier,
    check_family,
)

if TYPE_CHECKING:
    from neurostream.settings import CoreSettings

# Module prefixes whose classes a skops artifact may reference without an operator's say.
ALLOWED_MODULES: Final = ("sklearn", "numpy", "scipy", "pyriemann", "mne.decoding")
# What our own sklearn-lda artifacts hold (their behaviour before user pipelines came).
LDA_MODULES: Final = ("sklearn", "numpy", "scipy")
# Never trusted, whatever an operator sets: their classes and functions reach the
# interpreter, the file system, processes, the network or serialisation.
DENIED_MODULES: Final = (
    "__main__",
    "_io",
    "_pickle",
    "_thread",
    "asyncio",
    "builtins",
    "code",
    "codeop",
    "copyreg",
    "ctypes",
    "dill",
    "cloudpickle",
    "functools",
    "gc",
    "glob",
    "http",
    "importlib",
    "inspect",
    "io",
    "joblib",
    "marshal",
    "mmap",
    "multiprocessing",
    "nt",
    "ntpath",
    "operator",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pip",
    "pkgutil",
    "platform",
    "posix",
    "posixpath",
    "pty",
    "runpy",
    "setuptools",
    "shutil",
    "signal",
    "site",
    "socket",
    "subprocess",
    "sys",
    "sysconfig",
    "tempfile",
    "threading",
    "types",
    "urllib",
    "webbrowser",
    "zipimport",
)
# The builtins skops rebuilds itself as plain data (containers, numbers, text).
DATA_BUILTINS: Final = frozenset(
    {
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "NoneType",
        "set",
        "slice",
        "str",
        "tuple",
    }
)
MAX_BYTES: Final = 64 * 1024 * 1024
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRUST_HINT: Final = (
    "to trust another module's classes, an operator adds its name to "
    "NEUROSTREAM_TRUSTED_MODULES (a JSON list; a trusted module's classes run their own "
    "code when an artifact is loaded)"
)


def under(module: str, prefixes: Sequence[str]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one, on a dotted boundary
    (``mne.decoding`` covers ``mne.decoding.csp``, not ``mne.io`` nor ``mne.decodingx``)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@dataclass(frozen=True, slots=True)
class ArtifactPolicy:
    """What a skops artifact may contain: the built-in allow-list plus the module prefixes
    an operator trusts (``trusted_modules``), and how large an artifact may be."""

    trusted_modules: tuple[str, ...] = ()
    max_bytes: int = MAX_BYTES

    def __post_init__(self) -> None:
        for name in self.trusted_modules:
            if not isinstance(name, str) or not _MODULE.match(name):
                raise ConfigError(
                    f"trusted_modules: {name!r} is not a dotted module name",
                    field="trusted_modules",
                )
            if under(name, DENIED_MODULES) or any(under(d, (name,)) for d in DENIED_MODULES):
                raise ConfigError(
                    f"trusted_modules: {name!r} is a system module that is never trusted "
                    f"(never: {', '.join(DENIED_MODULES)})",
                    field="trusted_modules",
                )
        if self.max_bytes < 1:
            raise ConfigError(
                f"max_artifact_bytes must be positive, got {self.max_bytes}",
                field="max_artifact_bytes",
            )

    @classmethod
    def from_settings(cls, core: CoreSettings) -> ArtifactPolicy:
        return cls(tuple(core.trusted_modules), int(core.max_artifact_bytes))

    @property
    def modules(self) -> tuple[str, ...]:
        """Every module prefix whose classes load: the built-in ones, then the trusted."""
        return ALLOWED_MODULES + tuple(m for m in self.trusted_modules if m not in ALLOWED_MODULES)


DEFAULT_POLICY: Final = ArtifactPolicy()


def sha256_hex(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def dump(estimator: Any, family: str) -> bytes:
    """Serialise a fitted model (or its ``Classifier`` adapter) for the registry:
    skops for the scikit-learn families, a ``state_dict`` for torch, ONNX bytes as given."""
    check_family(family)
    if family in (SKLEARN_LDA, SKLEARN_PIPELINE):
        import skops.io as sio

        data: bytes = sio.dumps(getattr(estimator, "estimator", estimator))
        return data
    if family == ONNX:
        if not isinstance(estimator, bytes | bytearray):
            raise TypeError(f"an {ONNX} artifact is the model's bytes, got {type(estimator)}")
        return bytes(estimator)
    import torch

    net = getattr(estimator, "net", estimator)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    return buf.getvalue()


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every skops node of a schema: dicts whose ``__loader__`` is a string, at any depth
    (walked iteratively, so a deep schema cannot exhaust the stack)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("__loader__"), str):
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _refusal(module: str, name: str, modules: Sequence[str]) -> str | None:
    """Why ``module.name`` may not load, or None for a class of an allowed module.
    Modules outside the allow-list are judged by name alone, never imported."""
    if not _MODULE.match(module) or not _NAME.match(name):
        return "not a module and class name"
    if module == "builtins":
        return None if name in DATA_BUILTINS else "a builtin, never loaded"
    if under(module, DENIED_MODULES):
        return "a system module, never loaded"
    if not under(module, modules):
        return "its module is not trusted"
    try:
        obj = getattr(importlib.import_module(module), name)
    except Exception:  # ImportError, AttributeError, or an import that fails on its own
        return "not found"
    if not isinstance(obj, type):
        return f"a {type(obj).__name__}, not a class"
    defined = str(getattr(obj, "__module__", "") or "")
    if defined != "builtins" and (under(defined, DENIED_MODULES) or not under(defined, modules)):
        return f"a class defined in {defined}, which is not trusted"
    return None


def check_skops(artifact: bytes, modules: Sequence[str], max_bytes: int) -> list[str]:
    """The types an artifact names, each checked (``ArtifactError`` naming every refused
    one); reads only the zip's ``schema.json``, constructs nothing."""
    try:
        with zipfile.ZipFile(io.BytesIO(artifact)) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
            if unpacked > max_bytes:
                raise ArtifactError(
                    f"artifact unpacks to {unpacked} bytes, more than the {max_bytes} allowed",
                    field="artifact",
                )
            schema = json.loads(zf.read("schema.json"))
    except ArtifactError:
        raise
    except Exception as exc:  # BadZipFile, KeyError, JSON or recursion errors on garbage
        raise ArtifactError(
            f"not a readable skops artifact: {type(exc).__name__}: {exc}", field="artifact"
        ) from None
    seen: dict[str, str | None] = {}
    for node in _nodes(schema):
        loader = node["__loader__"]
        if loader == "CachedNode":  # a reference to a node already seen
            continue
        module, name = node.get("__module__"), node.get("__class__")
        if not isinstance(module, str) or not isinstance(name, str):
            raise ArtifactError(
                f"artifact schema has a {loader} without a module and class", field="artifact"
            )
        key = f"{module}.{name}"
        if loader == "MethodNode":
            seen[key] = "a bound method, not a class"
        elif key not in seen:
            seen[key] = _refusal(module, name, modules)
    refused = sorted(f"{key} ({why})" for key, why in seen.items() if why)
    if refused:
        raise ArtifactError(
            f"artifact refused: it references untrusted types: {'; '.join(refused)}. An "
            f"artifact may hold only classes of {', '.join(modules)}: never functions, "
            "builtins or system modules",
            field="artifact",
            hint=TRUST_HINT,
        )
    return sorted(seen)


def _load_skops(
    artifact: bytes,
    family: str,
    model_params: Mapping[str, Any],
    modules: Sequence[str],
    max_bytes: int,
) -> Classifier:
    accepted = set(check_skops(artifact, modules, max_bytes))
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=artifact)
    except Exception as exc:  # skops raises many kinds on garbage input
        raise ArtifactError(f"not a readable skops artifact: {exc}", field="artifact") from exc
    unchecked = sorted(set(untrusted) - accepted)
    if unchecked:  # skops names something the schema walk did not see: refuse, never guess
        raise ArtifactError(
            f"artifact refused: it references {unchecked}", field="artifact", hint=TRUST_HINT
        )
    try:
        estimator = sio.loads(artifact, trusted=untrusted)
    except Exception as exc:
        raise ArtifactError(f"cannot load the {family} artifact: {exc}", field="artifact") from exc
    if family == SKLEARN_LDA:
        try:
            return SklearnClassifier(estimator)
        except TypeError as exc:
            raise ArtifactError(str(exc), field="artifact") from None
    return PipelineClassifier.of(estimator, model_params)


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
    artifact: bytes,
    family: str,
    *,
    sha256: str,
    model_params: Mapping[str, Any],
    classes: Sequence[int] | None = None,
    policy: ArtifactPolicy = DEFAULT_POLICY,
) -> Classifier:
    """Check the size, verify the hash, then load safely; every failure is an
    ``ArtifactError``. ``classes`` (the row's) label an ONNX model's outputs."""
    if len(artifact) > policy.max_bytes:
        raise ArtifactError(
            f"artifact is {len(artifact)} bytes, more than the {policy.max_bytes} allowed",
            field="artifact",
            hint="an operator can raise NEUROSTREAM_MAX_ARTIFACT_BYTES",
        )
    if family not in FAMILIES:
        raise ArtifactError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    artifact = bytes(artifact)
    actual = sha256_hex(artifact)
    if not hmac.compare_digest(actual, str(sha256).lower()):
        raise ArtifactError(f"sha256 mismatch: artifact hashes to {actual}, expected {sha256}")
    if family == SKLEARN_LDA:
        return _load_skops(artifact, family, model_params, LDA_MODULES, policy.max_bytes)
    if family == SKLEARN_PIPELINE:
        return _load_skops(artifact, family, model_params, policy.modules, policy.max_bytes)
    if family == ONNX:
        from neurostream.models import onnxnet

        return onnxnet.load(artifact, classes=classes, model_params=model_params)
    return _load_torch(artifact, model_params)
