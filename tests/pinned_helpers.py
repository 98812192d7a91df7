"""Small helpers the pinned tests share: a detector from the catalogue, and the numpy
forms of sigmoid and BCE the expected values are computed with."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

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
