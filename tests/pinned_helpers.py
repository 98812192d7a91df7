"""Small helpers the pinned tests share: a detector from the catalogue, the numpy forms
of sigmoid and BCE the expected values are computed with, random BatchNorm statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bench.options import merge_options
from bench.plugins import get_registry


def build_detector(name: str, **overrides: Any) -> Any:
    """The registered detector ``name`` with the catalogue's defaults and ``overrides``."""
    entry = get_registry().get("detector", name)
    return entry.load()(merge_options(name, entry.specs, overrides))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def bce(z, y) -> float:
    """Mean binary cross-entropy of logits ``z`` against labels ``y``."""
    p = sigmoid(z)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def randomise_batchnorm(net: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so that an eval pass shows every affine step."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
