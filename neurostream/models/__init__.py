"""Model families, safe artifacts, serving and training.

A model version is a family (``sklearn-lda``, ``torch-eegnet``) trained on one feature
pipeline; ``artifacts`` stores and verifies it, ``serving`` turns a registry row into a
worker's in-memory model, ``training`` produces new versions, and ``signature`` records
the input a version was trained on and matches windows to it by channel name. Torch loads
only when a ``torch-eegnet`` model is trained or loaded.
"""

from __future__ import annotations

from neurostream.models.artifacts import ArtifactError, dump, load, sha256_hex
from neurostream.models.families import FAMILIES, Classifier
from neurostream.models.serving import Prediction, ServingModel
from neurostream.models.signature import Signature, map_channels, select_channels
from neurostream.models.training import TrainedModel, dataset_hash, evaluate, train_model

__all__ = [
    "FAMILIES",
    "ArtifactError",
    "Classifier",
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
