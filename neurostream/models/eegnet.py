"""The ``torch-eegnet`` family: a compact EEGNet-style CNN (Lawhern et al., 2018).

It takes ``erp@1`` features folded back to ``[n, 1, channels, times]``. This is the only
module that imports torch; ``artifacts`` and ``training`` import it lazily. Everything
runs on the CPU with few threads, because workers scale by processes, not threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import torch
from torch import nn

ARCH_KEYS: Final = (
    "n_channels",
    "n_times",
    "n_classes",
    "F1",
    "D",
    "F2",
    "kernel_length",
    "dropout",
)
DEFAULTS: Final[Mapping[str, Any]] = {
    "F1": 8,
    "D": 2,
    "F2": 16,
    "kernel_length": 25,  # ~250 ms at 100 Hz: one temporal filter spans an ERP component
    "dropout": 0.25,
    "epochs": 30,
    "batch_size": 32,
    "lr": 3e-3,
    "weight_decay": 1e-3,
    "num_threads": 1,  # more threads lose to contention when workers share cores
}


class EEGNet(nn.Module):
    """Temporal conv -> depthwise spatial conv -> separable conv -> pooling -> linear."""

    input_scale: torch.Tensor

    def __init__(
        self,
        n_channels: int,
        n_times: int,
        n_classes: int,
        F1: int = 8,
        D: int = 2,
        F2: int = 16,
        kernel_length: int = 25,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        k1 = kernel_length | 1  # odd kernels keep "same" padding symmetric
        pool1 = max(1, min(4, n_times))
        pool2 = max(1, min(8, n_times // pool1))
        t_out = n_times // pool1 // pool2
        # Amplitude normaliser fitted on training data; a buffer so it lives in the state_dict.
        self.register_buffer("input_scale", torch.ones(()))
        self.temporal = nn.Sequential(
            nn.Conv2d(1, F1, (1, k1), padding="same", bias=False), nn.BatchNorm2d(F1)
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(F1, F1 * D, (n_channels, 1), groups=F1, bias=False),
            nn.BatchNorm2d(F1 * D),
            nn.ELU(),
            nn.AvgPool2d((1, pool1)),
            nn.Dropout(dropout),
        )
        self.separable = nn.Sequential(
            nn.Conv2d(F1 * D, F1 * D, (1, 15), padding="same", groups=F1 * D, bias=False),
            nn.Conv2d(F1 * D, F2, 1, bias=False),
            nn.BatchNorm2d(F2),
            nn.ELU(),
            nn.AvgPool2d((1, pool2)),
            nn.Dropout(dropout),
        )
        self.classify = nn.Linear(F2 * t_out, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.input_scale
        x = self.separable(self.spatial(self.temporal(x)))
        logits: torch.Tensor = self.classify(x.flatten(1))
        return logits


def resolve_params(model_params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults merged with the stored params; the shape keys must be present."""
    missing = [k for k in ("n_channels", "n_times", "n_classes") if k not in model_params]
    if missing:
        raise ValueError(f"torch-eegnet model_params lack {missing}")
    return {**DEFAULTS, **model_params}


def build(model_params: Mapping[str, Any]) -> EEGNet:
    p = resolve_params(model_params)
    return EEGNet(**{k: p[k] for k in ARCH_KEYS})


class TorchClassifier:
    """Adapts an ``EEGNet`` to the ``Classifier`` protocol over flat ``[n, c*t]`` features."""

    def __init__(self, net: EEGNet, model_params: Mapping[str, Any]) -> None:
        p = resolve_params(model_params)
        self.net = net.eval()
        self.n_channels = int(p["n_channels"])
        self.n_times = int(p["n_times"])
        self.classes: list[int] = [int(c) for c in p.get("classes", range(int(p["n_classes"])))]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_channels * self.n_times:
            raise ValueError(
                f"features {X.shape} do not fold into [{self.n_channels}, {self.n_times}]"
            )
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)  # per-batch work is small; processes give parallelism
        x = torch.from_numpy(np.ascontiguousarray(X)).view(-1, 1, self.n_channels, self.n_times)
        with torch.inference_mode():
            return torch.softmax(self.net(x), dim=1).double().numpy()


def fit(
    X: np.ndarray, y_index: np.ndarray, model_params: Mapping[str, Any], seed: int = 0
) -> TorchClassifier:
    """Class-weighted Adam training; deterministic for a given seed."""
    p = resolve_params(model_params)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(p["num_threads"])))
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = build(p)
        x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        x = x.view(-1, 1, int(p["n_channels"]), int(p["n_times"]))
        target = torch.from_numpy(np.asarray(y_index, dtype=np.int64))
        net.input_scale.fill_(float(x.std()) or 1.0)
        counts = torch.bincount(target, minlength=int(p["n_classes"])).clamp(min=1).float()
        loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(counts) * counts))
        opt = torch.optim.AdamW(
            net.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"])
        )
        bs = int(p["batch_size"])
        net.train()
        for _ in range(int(p["epochs"])):
            order = torch.randperm(len(target), generator=gen)
            for i in range(0, len(order), bs):
                idx = order[i : i + bs]
                if len(idx) < 2:  # BatchNorm needs more than one sample
                    continue
                opt.zero_grad()
                loss_fn(net(x[idx]), target[idx]).backward()
                opt.step()
        return TorchClassifier(net, p)
    finally:
        torch.set_num_threads(previous_threads)
