"""Issue 17 (mutation testing): UnivFD's linear probe (baselines/univfd.py), pinned against
its docstring's recipe computed in numpy (N(0, 0.02) weights, BCE-with-logits, sigmoid).

The heads are built without a backbone (``build_head`` on a small feature size), so no
CLIP model is needed: the backbone is frozen and only the head and its loss are theirs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.pinned_helpers import bce as _bce
from tests.pinned_helpers import build_detector as build
from tests.pinned_helpers import sigmoid as _sigmoid
from tests.pinned_helpers import to_numpy as _np


# ---------------------------------------------------------------------------- UnivFD
def test_univfd_head_is_one_linear_unit_with_weights_of_std_0_02():
    det = build("univfd")
    torch.manual_seed(0)
    head = det.build_head(20000)
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (20000, 1)
    assert float(head.weight.detach().std()) == pytest.approx(0.02, rel=0.03)
    assert abs(float(head.weight.detach().mean())) < 0.001
    bound = 1 / math.sqrt(20000)  # the bias keeps PyTorch's default U(-1/sqrt(d), 1/sqrt(d))
    assert abs(float(head.bias.detach())) <= bound
    wide = build("univfd", init_std=0.5).build_head(20000)
    assert float(wide.weight.detach().std()) == pytest.approx(0.5, rel=0.03)


def test_univfd_logits_loss_and_probability_by_hand():
    det = build("univfd")
    torch.manual_seed(1)
    det.head = det.build_head(6)
    x = torch.randn(5, 6)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    z = _np(x) @ _np(det.head.weight)[0] + float(det.head.bias.detach())
    logits = det.head_logits(x)
    assert logits.shape == (5,)
    np.testing.assert_allclose(_np(logits), z, rtol=1e-5, atol=1e-6)
    assert float(det.head_loss(x, y).detach()) == pytest.approx(_bce(z, _np(y)), rel=1e-5)
    np.testing.assert_allclose(_np(det.head_proba(x)), _sigmoid(z), rtol=1e-5)


def test_univfd_half_precision_head_gives_float32_loss_and_probabilities():
    det = build("univfd")
    torch.manual_seed(2)
    det.head = det.build_head(4).to(torch.bfloat16)
    x = torch.randn(3, 4).to(torch.bfloat16)
    y = torch.tensor([1.0, 0.0, 1.0])
    z = _np(x) @ _np(det.head.weight)[0] + float(det.head.bias.detach())
    loss = det.head_loss(x, y).detach()
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(_bce(z, _np(y)), rel=2e-2)
    proba = det.head_proba(x)
    assert proba.dtype == torch.float32
    np.testing.assert_allclose(_np(proba), _sigmoid(z), rtol=2e-2)


def test_fallback_init_std_is_the_registrys():
    import tomllib
    from pathlib import Path

    from baselines.univfd import UnivFD

    text = (Path(__file__).parents[1] / "registry.toml").read_text(encoding="utf-8")
    std = tomllib.loads(text)["detectors"]["univfd"]["options"]["init_std"]["default"]
    torch.manual_seed(0)
    head = UnivFD({}).build_head(20000)
    assert float(head.weight.detach().std()) == pytest.approx(std, rel=0.03)
