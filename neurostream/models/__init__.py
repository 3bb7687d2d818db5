"""Model families, safe artifacts, serving and training.

A model version is a family on one feature pipeline. Four families:

- ``sklearn-lda`` and ``torch-eegnet``: fitted here (``training``) on flat features;
- ``sklearn-pipeline``: any scikit-learn-compatible estimator (scikit-learn, pyRiemann,
  ``mne.decoding``) a user fitted and saved with skops, on features or raw epochs
  (``raw@1``), its labels mapped to the service's through ``model_params["class_map"]``;
- ``onnx``: a network exported to ONNX and run by onnxruntime.

``artifacts`` stores and verifies them: a skops artifact loads only if every type it
names is a *class* of an allowed module (sklearn, numpy, scipy, pyriemann, mne.decoding,
plus what an operator trusts through ``ArtifactPolicy``); functions and system modules
never load. ``serving`` turns a registry row into a worker's in-memory model (units
converted, the positive class found through ``classes``), ``training`` produces new
versions, and ``signature`` records the input a version was trained on and matches
windows to it by channel name. Torch loads only when a ``torch-eegnet`` model is trained
or loaded, onnxruntime only for ``onnx``.
"""

from __future__ import annotations

from neurostream.models.artifacts import ArtifactError, ArtifactPolicy, dump, load, sha256_hex
from neurostream.models.families import FAMILIES, TRAINABLE, Classifier, PipelineClassifier
from neurostream.models.serving import Prediction, ServingModel
from neurostream.models.signature import Signature, map_channels, select_channels
from neurostream.models.training import TrainedModel, dataset_hash, evaluate, train_model

__all__ = [
    "FAMILIES",
    "TRAINABLE",
    "ArtifactError",
    "ArtifactPolicy",
    "Classifier",
    "PipelineClassifier",
    "Prediction",
    "ServingModel",
    "Signature",
    "TrainedModel",
    "dataset_hash",
    "dump",
    "evaluate",
    "load",
    "map_channels",
    "select_channels",
    "sha256_hex",
    "train_model",
]
