"""The ``onnx`` family: a network brought as an ONNX file, served by onnxruntime on the CPU.

Users train where they like (PyTorch, Keras via tf2onnx, the project's own EEGNet through
``neurostream.models.export``) and upload the ``.onnx`` bytes. ``load`` reads the model's
own signature and refuses, as an ``ArtifactError`` saying what was found and what is
needed, anything a worker could not feed: exactly one float tensor input of rank 2
(``[batch, features]``), 3 (``[batch, channels, times]``) or 4 (``[batch, 1, channels,
times]``) whose non-batch dimensions are fixed numbers, and one float tensor output
``[batch, k]`` with a column per class. It then runs a zero probe so a graph that cannot
execute fails at upload, not mid-stream.

The batch axis should be dynamic (a name or unknown). A model exported with a fixed batch
of 1 still serves: ``predict_proba`` runs it once per row. On a 64-row batch of the
project's EEGNet (8 channels x 80 samples, one thread) that took 0.92 ms against 0.50 ms
for one dynamic-batch call (1.85x; torch itself took 1.2 ms), so a dynamic batch axis is
the advice, not a requirement. A fixed batch larger than 1 cannot take a worker's
variable batches and is refused.

One intra-op and one inter-op thread per session, run sequentially: workers scale by
processes, as the torch family does (``eegnet.DEFAULTS["num_threads"]``).

``model_params`` (all optional): ``output`` names the output tensor (default: the first),
``output_kind`` is ``"logits"`` (softmax applied; the default, what ``torch.onnx.export``
of a classifier gives) or ``"probabilities"`` (rows already summing to 1), and
``exported_from`` is free-form provenance that serving does not read. Columns are matched
to the version's ``classes`` in order; no column is assumed to be "the positive class"
(a binary version's is ``positive_class``, which ``serving`` reads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from scipy.special import softmax

from neurostream.errors import ArtifactError

OUTPUT_KINDS: Final = ("logits", "probabilities")
# ``positive_class`` is read by serving (the binary score's class), not here.
MODEL_PARAMS: Final = frozenset({"output", "output_kind", "exported_from", "positive_class"})
# ONNX element types a worker feeds (cast from the feature pipeline's float64).
_INPUT_TYPES: Final[Mapping[str, type[np.floating[Any]]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}
_OUTPUT_TYPES: Final = frozenset({"tensor(float)", "tensor(double)", "tensor(float16)"})
_RANKS: Final = {
    2: "[batch, features]",
    3: "[batch, channels, times]",
    4: "[batch, 1, channels, times]",
}
_PROBE_TOLERANCE: Final = 1e-3  # how far from 1 a "probabilities" row may sum on the probe
_SHOWN_ERROR: Final = 300  # characters of an onnxruntime error quoted in a message

Dim = int | str | None


def _shape(arg: Any) -> tuple[Dim, ...] | None:
    """An onnxruntime NodeArg's shape (ints for fixed dims, names or None for free ones)."""
    try:
        shape = arg.shape
    except Exception:  # non-tensor types (sequences, maps) have no shape
        return None
    if shape is None:
        return None
    return tuple(d if isinstance(d, int | str) else None for d in shape)


def _show(shape: Sequence[Dim] | None) -> str:
    if shape is None:
        return "no shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _free(dim: Dim) -> bool:
    """A dimension the model leaves open: a symbolic name, unknown, or a negative marker."""
    return not isinstance(dim, int) or dim < 0


def _check_params(model_params: Mapping[str, Any]) -> tuple[str | None, str]:
    unknown = sorted(set(model_params) - MODEL_PARAMS)
    if unknown:
        raise ArtifactError(
            f"onnx: unknown model_params {unknown}; known: {sorted(MODEL_PARAMS)}",
            field="model_params",
        )
    kind = model_params.get("output_kind", "logits")
    if kind not in OUTPUT_KINDS:
        raise ArtifactError(
            f"onnx: model_params.output_kind must be one of {list(OUTPUT_KINDS)}, got {kind!r}",
            field="model_params.output_kind",
        )
    output = model_params.get("output")
    if output is not None and not isinstance(output, str):
        raise ArtifactError(
            f"onnx: model_params.output must be an output name, got {output!r}",
            field="model_params.output",
        )
    return output, str(kind)


class OnnxClassifier:
    """An onnxruntime session adapted to the ``Classifier`` protocol.

    The signature read from the model is public so an upload check can report it:
    ``input_name``, ``input_shape`` (batch first; None or a name where free),
    ``input_type``, ``output_name``, ``output_shape``, ``output_kind``, ``fixed_batch``
    (True: the model takes one row at a time and is looped) and ``feature_size``.
    """

    def __init__(
        self,
        session: Any,
        *,
        classes: list[int],
        input_name: str,
        input_shape: tuple[Dim, ...],
        input_type: str,
        output_name: str,
        output_shape: tuple[Dim, ...],
        output_kind: str,
    ) -> None:
        self.session = session
        self.classes: list[int] = classes
        self.input_name = input_name
        self.input_shape = input_shape
        self.input_type = input_type
        self.output_name = output_name
        self.output_shape = output_shape
        self.output_kind = output_kind
        self.fixed_batch = input_shape[0] == 1
        self.row_shape: tuple[int, ...] = tuple(int(d) for d in input_shape[1:])  # type: ignore[arg-type]
        self.feature_size = math.prod(self.row_shape)
        self._dtype = _INPUT_TYPES[input_type]

    def __repr__(self) -> str:
        batch = "fixed batch 1" if self.fixed_batch else "dynamic batch"
        return (
            f"OnnxClassifier({self.input_name}{_show(self.input_shape)} -> "
            f"{self.output_name}{_show(self.output_shape)}, {self.output_kind}, {batch})"
        )

    def describe(self) -> dict[str, Any]:
        """The signature as JSON, for an upload's answer and the version's record."""
        return {
            "input": {
                "name": self.input_name,
                "shape": list(self.input_shape),
                "type": self.input_type,
            },
            "output": {
                "name": self.output_name,
                "shape": list(self.output_shape),
                "kind": self.output_kind,
            },
            "batch": 1 if self.fixed_batch else "dynamic",
            "feature_size": self.feature_size,
            "classes": list(self.classes),
        }

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``[n, f]`` (flat, channel-major) or ``[n, c, t]`` features -> ``[n, k]`` float64."""
        X = np.asarray(X)
        n = X.shape[0] if X.ndim else 0
        if X.ndim < 2 or math.prod(X.shape[1:]) != self.feature_size:
            raise ValueError(
                f"features {X.shape} do not fit the ONNX input {self.input_name}"
                f"{_show(self.input_shape)} ({self.feature_size} values per row)"
            )
        x = np.ascontiguousarray(X.reshape((n, *self.row_shape)), dtype=self._dtype)
        k = len(self.classes)
        if n == 0:
            return np.empty((0, k))
        if self.fixed_batch:
            out = np.concatenate([self._run(x[i : i + 1]) for i in range(n)])
        else:
            out = self._run(x)
        if out.shape != (n, k):
            raise ValueError(
                f"ONNX output {self.output_name} gave {out.shape} for {n} rows, expected ({n}, {k})"
            )
        if self.output_kind == "logits":
            probabilities: np.ndarray = softmax(out, axis=1)
            return probabilities
        return out


def _session(artifact: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the rest would flood a worker's log
    try:
        return ort.InferenceSession(
            artifact, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # InvalidProtobuf, Fail, InvalidGraph...: all mean "not loadable"
        why = str(exc).strip()[:_SHOWN_ERROR] or type(exc).__name__
        raise ArtifactError(
            f"not a loadable ONNX model ({len(artifact)} bytes): {why}",
            hint="upload the .onnx file itself (weights inside it, not as external data)",
        ) from exc


def _read_input(session: Any) -> tuple[str, tuple[Dim, ...], str]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        found = [f"{i.name}{_show(_shape(i))}" for i in inputs]
        raise ArtifactError(
            f"ONNX model has {len(inputs)} inputs {found}; need exactly one, the epochs "
            f"{' or '.join(_RANKS.values())}"
        )
    arg = inputs[0]
    shape, dtype = _shape(arg), str(arg.type)
    where = f"ONNX input {arg.name!r} is {dtype} {_show(shape)}"
    if dtype not in _INPUT_TYPES:
        raise ArtifactError(f"{where}; need a float tensor (tensor(float), i.e. float32)")
    if shape is None or len(shape) not in _RANKS:
        raise ArtifactError(f"{where}; need rank 2, 3 or 4: {', '.join(_RANKS.values())}")
    if len(shape) == 4 and shape[1] != 1:
        raise ArtifactError(f"{where}; a rank-4 input must be {_RANKS[4]}, with 1 at axis 1")
    free = [i for i, d in enumerate(shape[1:], start=1) if _free(d) or d == 0]
    if free:
        raise ArtifactError(
            f"{where}; axes {free} are not fixed sizes: only the batch axis (0) may be "
            f"dynamic, the others must match the epochs ({_RANKS[len(shape)]})"
        )
    batch = shape[0]
    if not _free(batch) and batch != 1:
        raise ArtifactError(
            f"{where}; its batch axis is fixed at {batch}, need a dynamic batch axis (or a "
            "fixed batch of 1, served row by row)",
            hint="export with a dynamic batch axis, e.g. torch.onnx.export(..., "
            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}})",
        )
    return str(arg.name), shape, dtype


def _read_output(session: Any, wanted: str | None) -> tuple[str, tuple[Dim, ...]]:
    outputs = session.get_outputs()
    found = {o.name: o for o in outputs}
    listed = ", ".join(f"{o.name!r} {o.type} {_show(_shape(o))}" for o in outputs)
    if wanted is not None and wanted not in found:
        raise ArtifactError(
            f"model_params.output names {wanted!r}, but the ONNX model's outputs are {listed}",
            field="model_params.output",
        )
    arg = found[wanted] if wanted is not None else outputs[0]
    shape, dtype = _shape(arg), str(arg.type)
    where = f"ONNX output {arg.name!r} is {dtype} {_show(shape)}"
    if dtype not in _OUTPUT_TYPES:
        hint = (
            "convert with sklearn-onnx's options={id(model): {'zipmap': False}} so the "
            "probabilities are a tensor"
            if dtype.startswith(("seq", "map"))
            else "set model_params.output to the output holding the scores"
        )
        raise ArtifactError(
            f"{where}; need a float tensor [batch, classes] of scores (outputs: {listed})",
            field="model_params.output",
            hint=hint,
        )
    if shape is not None and len(shape) != 2:
        raise ArtifactError(f"{where}; need rank 2, [batch, classes]", field="model_params.output")
    return str(arg.name), shape or (None, None)


def load(
    artifact: bytes, *, classes: Sequence[int] | None, model_params: Mapping[str, Any]
) -> OnnxClassifier:
    """Open an ONNX model for serving; every reason it cannot serve is an ``ArtifactError``.

    ``classes`` are the service labels in the order of the output's columns; None (a file
    inspected before its labels are known) takes the column indices ``0..k-1``.
    """
    output, kind = _check_params(model_params)
    session = _session(bytes(artifact))
    input_name, input_shape, input_type = _read_input(session)
    output_name, output_shape = _read_output(session, output)
    width = output_shape[1]
    if classes is None:
        if _free(width):
            raise ArtifactError(
                f"ONNX output {output_name!r} {_show(output_shape)} does not fix its number "
                "of classes; give the version's classes",
                field="classes",
            )
        classes = range(int(width))  # type: ignore[arg-type]  # _free() excludes str/None
    labels = [int(c) for c in classes]
    if not _free(width) and width != len(labels):
        raise ArtifactError(
            f"ONNX output {output_name!r} {_show(output_shape)} has {width} columns, but the "
            f"version has {len(labels)} classes {labels}; need one column per class",
            field="classes",
        )
    model = OnnxClassifier(
        session,
        classes=labels,
        input_name=input_name,
        input_shape=input_shape,
        input_type=input_type,
        output_name=output_name,
        output_shape=output_shape,
        output_kind=kind,
    )
    _probe(model)
    return model


def _probe(model: OnnxClassifier) -> None:
    """Run zeros through the graph: a model that cannot execute, gives the wrong width at
    run time, or says "probabilities" but does not sum to 1 is refused now."""
    rows = 1 if model.fixed_batch else 2  # two rows also test that the batch axis is free
    x = np.zeros((rows, *model.row_shape), dtype=model._dtype)
    try:
        raw = model._run(x)
    except Exception as exc:
        why = str(exc).strip()[:_SHOWN_ERROR] or type(exc).__name__
        raise ArtifactError(
            f"{model!r} fails on a zero batch of shape {x.shape}: {why}",
            hint="a batch axis named in the signature but fixed inside the graph fails "
            "here; export with a dynamic batch axis",
        ) from exc
    k = len(model.classes)
    if raw.shape != (rows, k):
        raise ArtifactError(
            f"ONNX output {model.output_name!r} gave shape {raw.shape} for {rows} rows; need "
            f"({rows}, {k}), one column per class {model.classes}",
            field="classes",
        )
    if not np.isfinite(raw).all():
        raise ArtifactError(f"{model!r} gives non-finite scores on a zero batch")
    if model.output_kind == "probabilities":
        sums = raw.sum(axis=1)
        if (raw < -_PROBE_TOLERANCE).any() or not np.allclose(sums, 1.0, atol=_PROBE_TOLERANCE):
            raise ArtifactError(
                f"output_kind is 'probabilities' but {model.output_name!r} rows sum to "
                f"{sums.round(4).tolist()} on a zero batch",
                field="model_params.output_kind",
                hint="set model_params.output_kind to 'logits' for raw scores",
            )
