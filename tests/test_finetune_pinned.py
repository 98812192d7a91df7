"""Issue 17 (mutation testing): CNN-Spot's and LaDeDa's shared base (baselines/finetune.py).

A two-weight network stands in for the ResNets, so the logit, the BCE loss, the
probabilities and Adam's settings are checked by hand; lr drops come from
CNNDetection's rule (``factor`` once per drop epoch reached, epochs counted from 0).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.finetune import BinaryNetDetector, step_drop_factor
from bench.interfaces import RunContext


class _Pixels(nn.Module):
    """logit = w · (per-channel mean) + b, one output column as the real networks have."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)
        self.bn = nn.BatchNorm1d(3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
            self.fc.bias.fill_(0.25)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class _Tiny(BinaryNetDetector):
    name = "tiny"
    input_size = 5

    def build_net(self, ctx):
        self.init_facts = {"weights": "none (test)"}
        return _Pixels()

    def base_transforms(self, train):  # pragma: no cover - not used here
        raise NotImplementedError


def _ready(**options) -> _Tiny:
    det = _Tiny(options)
    det.setup(RunContext(device="cpu"))
    return det


def _logits(images: torch.Tensor) -> np.ndarray:
    means = images.double().mean(dim=(2, 3)).numpy()
    return means @ np.array([1.0, -2.0, 0.5]) + 0.25


def test_step_drop_factor_counts_the_drop_epochs_reached():
    assert [step_drop_factor(s, 3, [1, 3], 0.5) for s in range(12)] == [
        1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25,
    ]  # fmt: skip
    assert step_drop_factor(5, 0, [2], 0.1) == pytest.approx(0.1)  # 0 steps: 1 a epoch
    assert step_drop_factor(0, 4, [0], 0.1) == 1.0  # epoch 0 is never a drop
    assert step_drop_factor(8, 4, [2, 2], 0.1) == pytest.approx(0.01)


def test_construction_and_setup():
    det = _Tiny({})
    assert det.net is None and det.init_facts == {} and det.describe() == {"parameters": 0}
    assert det.provides == frozenset()
    det.setup(RunContext(device="meta"))  # "meta": shapes only, shows the move with no GPU
    assert all(p.device.type == "meta" for p in det.net.parameters())
    with pytest.raises(NotImplementedError):
        BinaryNetDetector.build_net(det, RunContext())


def test_setup_builds_the_network_from_the_runs_own_context():
    """CNN-Spot and LaDeDa read the device and the weights' option from the context."""
    seen = []

    class _Recording(_Tiny):
        def build_net(self, ctx):
            seen.append(ctx)
            return super().build_net(ctx)

    ctx = RunContext(device="cpu")
    _Recording({}).setup(ctx)
    assert len(seen) == 1 and seen[0] is ctx


def test_logit_loss_and_probability_by_hand():
    det = _ready()
    images = torch.rand(4, 3, 5, 5)
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    z = _logits(images)
    logits = det.logits(images)
    assert logits.shape == (4,) and logits.dtype == torch.float32
    np.testing.assert_allclose(logits.detach().numpy(), z, rtol=1e-5)
    p = 1 / (1 + np.exp(-z))
    bce = float(np.mean(-(labels.numpy() * np.log(p) + (1 - labels.numpy()) * np.log(1 - p))))
    loss = det.training_step({"image": images, "label": labels}).detach()
    assert float(loss) == pytest.approx(bce, rel=1e-5)
    proba = det.predict_proba({"image": images})
    assert not proba.requires_grad
    np.testing.assert_allclose(proba.numpy(), p, rtol=1e-5)


def test_half_precision_logits_come_back_as_float32():
    det = _ready()
    det.net.to(torch.bfloat16)
    assert det.logits(torch.rand(2, 3, 4, 4, dtype=torch.bfloat16)).dtype == torch.float32


def test_optimizer_is_adam_with_beta1_and_the_lr():
    det = _ready()
    opt = det.configure_optimizer()
    assert type(opt) is torch.optim.Adam
    (group,) = opt.param_groups
    assert group["lr"] == 1e-4 and group["betas"] == (0.9, 0.999)
    assert group["weight_decay"] == 0 and len(group["params"]) == 4
    group = _ready(lr=0.5, beta1=0.25).configure_optimizer().param_groups[0]
    assert group["lr"] == 0.5 and group["betas"] == (0.25, 0.999)


def _lrs(det, steps_per_epoch, steps):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = det.configure_scheduler(opt, steps_per_epoch, 10)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_scheduler_drops_at_the_listed_epochs_by_the_factor():
    assert _ready().configure_scheduler(None, 2, 3) is None
    assert _lrs(_ready(lr_drop_epochs=[2, 1]), 2, 6) == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )
    assert _lrs(_ready(lr_drop_epochs=[1], lr_drop_factor=0.9), 1, 3) == pytest.approx(
        [1.0, 0.9, 0.9]
    )


def test_modes_state_and_description():
    det = _ready()
    det.train_mode(True)
    assert det.net.training and det.net.bn.training and det.is_training()
    det.train_mode(False)
    assert not det.net.training and not det.is_training()
    _Tiny({}).train_mode(True)  # no net yet: nothing to switch
    state = det.trainable_state()
    assert set(state) == set(det.net.state_dict()) and "bn.running_mean" in state
    assert all(not t.requires_grad for t in state.values())
    other = _ready()
    with torch.no_grad():
        other.net.fc.weight.zero_()
    other.load_trainable_state({k: v.clone() for k, v in state.items()})
    assert torch.equal(other.net.fc.weight, det.net.fc.weight)
    assert det.describe() == {"weights": "none (test)", "parameters": 3 + 1 + 3 + 3}
