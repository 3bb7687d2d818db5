"""Exporting the project's EEGNet to ONNX, so a trained version can serve from onnxruntime.

``eegnet_to_onnx`` writes the network with a dynamic batch axis through
``torch.onnx.export(dynamo=True)`` (the exporter torch 2.13 recommends and defaults to;
it needs ``onnx`` and ``onnxscript``, the ``onnx-export`` extra, which serving does not
install). It then loads the bytes through ``neurostream.models.onnxnet`` and checks that
onnxruntime gives torch's probabilities, so an export that changed the numbers never
becomes a version. ``onnx_version`` turns a trained ``torch-eegnet`` version into the
equivalent ``onnx`` one: same features, signature, classes and metrics, and for a binary
version the same score (``positive_class`` set to the greater label, as the torch family
scores it).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import warnings
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from neurostream.errors import ArtifactError, ConfigError
from neurostream.models import onnxnet
from neurostream.models.artifacts import sha256_hex
from neurostream.models.families import ONNX, TORCH_EEGNET, Classifier
from neurostream.models.training import TrainedModel

if TYPE_CHECKING:
    from neurostream.models.eegnet import TorchClassifier

INPUT_NAME: Final = "epochs"  # [batch, 1, channels, times], as EEGNet reads them
OUTPUT_NAME: Final = "logits"
_CHECK_ROWS: Final = 8
_CHECK_TOLERANCE: Final = 1e-5  # largest |p_onnx - p_torch| accepted after export
_EXTRA: Final = "pip install 'neurostream[onnx-export]'"


def _require_exporter() -> None:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"exporting to ONNX needs {' and '.join(missing)}, which are not installed; "
            f"install them with `{_EXTRA}`",
            hint=_EXTRA,
        )


def eegnet_to_onnx(classifier: TorchClassifier) -> bytes:
    """A fitted ``eegnet.TorchClassifier`` as ONNX bytes (weights inside, dynamic batch).

    Raises ``ConfigError`` without the ``onnx-export`` extra, ``ArtifactError`` when the
    exported graph does not reproduce torch's probabilities.
    """
    _require_exporter()
    import torch

    from neurostream.models import eegnet

    if not isinstance(classifier, eegnet.TorchClassifier):
        raise TypeError(f"expected an eegnet.TorchClassifier, got {type(classifier).__name__}")
    net = classifier.net.eval()
    example = torch.zeros(2, 1, classifier.n_channels, classifier.n_times)
    # The exporter logs skipped torchvision ops and warns about pytree internals; neither
    # concerns this network, and a CLI's story should not carry them.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                external_data=False,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    if program is None:  # only the TorchScript path writes to a file and returns None
        raise ArtifactError("torch.onnx.export returned no program")
    data: bytes = program.model_proto.SerializeToString()
    _check_export(classifier, data)
    return data


def probability_gap(
    classifier: TorchClassifier, served: Classifier, *, rows: int = _CHECK_ROWS, seed: int = 0
) -> float:
    """Largest |p_torch - p_served| over ``rows`` random epochs (10 µV noise) of the
    network's input shape: how far an export strays from the network it came from."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 10.0, (rows, classifier.n_channels * classifier.n_times))
    return float(np.abs(served.predict_proba(x) - classifier.predict_proba(x)).max())


def _check_export(classifier: TorchClassifier, data: bytes) -> None:
    """onnxruntime must give torch's probabilities on random epochs of the right shape."""
    served = onnxnet.load(data, classes=list(classifier.classes), model_params={})
    diff = probability_gap(classifier, served)
    if not diff <= _CHECK_TOLERANCE:
        raise ArtifactError(
            f"the ONNX export differs from torch by {diff:.2e} in probability "
            f"(tolerance {_CHECK_TOLERANCE:g}); not registering it"
        )


def onnx_version(trained: TrainedModel) -> TrainedModel:
    """A trained ``torch-eegnet`` version as an ``onnx``-family version of the same model."""
    if trained.family != TORCH_EEGNET:
        raise ConfigError(
            f"only {TORCH_EEGNET} versions export to ONNX, not {trained.family!r}",
            field="family",
        )
    from neurostream.models.eegnet import TorchClassifier

    if not isinstance(trained.classifier, TorchClassifier):
        raise TypeError(
            f"{TORCH_EEGNET} version carries a {type(trained.classifier).__name__} classifier"
        )
    data = eegnet_to_onnx(trained.classifier)
    model_params: dict[str, Any] = {
        "output": OUTPUT_NAME,
        "output_kind": "logits",
        "exported_from": {
            "family": trained.family,
            "sha256": trained.sha256,
            "model_params": trained.model_params,
        },
    }
    if len(trained.classes) == 2:  # torch-eegnet scores its greater label; keep that score
        model_params["positive_class"] = max(trained.classes)
    return dataclasses.replace(
        trained,
        family=ONNX,
        model_params=model_params,
        artifact=data,
        sha256=sha256_hex(data),
        classifier=onnxnet.load(data, classes=list(trained.classes), model_params=model_params),
    )
