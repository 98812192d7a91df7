"""Issue 17 (mutation testing): the truncated ResNet-50 and NPR's network, pinned.

The stages are checked against torchvision's own ResNet-50 (its layer1 and layer2 load
into ours key for key and give the same output); the stem, pooling and head are written
out here with torch's functional ops from the authors' definition (3×3 stride-2 conv,
BatchNorm, ReLU, 3×3 stride-2 max-pool, global mean, Linear); NPR's residual is the
formula x[i, j] − x[2⌊i/2⌋, 2⌊j/2⌋] looped here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from baselines.npr_net import NPRNet, NPRResidual
from baselines.resnet_trunk import TruncatedResNet50, init_resnet_, resnet_stage
from tests.pinned_helpers import randomise_batchnorm as _randomise_bn

# tiny tensors: one torch thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _eval_bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-5)
    return (x - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]


def _trunk(net: TruncatedResNet50, x: torch.Tensor) -> torch.Tensor:
    """Stem and head written out; the stages are torchvision's layout (pinned below)."""
    y = F.conv2d(x, net.conv1.weight, stride=2, padding=1)
    y = F.max_pool2d(torch.relu(_eval_bn(y, net.bn1)), kernel_size=3, stride=2, padding=1)
    y = net.layer2(net.layer1(y))
    return y.mean(dim=(2, 3)) @ net.fc1.weight.T + net.fc1.bias


@pytest.fixture(scope="module")
def torchvision_resnet50() -> nn.Module:
    from torchvision.models import resnet50

    torch.manual_seed(0)
    return resnet50().eval()


@pytest.mark.parametrize(
    ("stage", "args"), [("layer1", (64, 64, 3, 1)), ("layer2", (256, 128, 4, 2))]
)
def test_stages_are_torchvisions_resnet50_stages(torchvision_resnet50, stage, args):
    reference = getattr(torchvision_resnet50, stage)
    ours = resnet_stage(*args).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, args[0], 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_the_shortcut_is_projected_exactly_when_the_shape_changes():
    """torchvision's rule: a 1×1 conv + BN shortcut when stride ≠ 1 or inplanes ≠ 4·planes."""
    cases = {(256, 64, 1): False, (256, 64, 2): True, (64, 64, 1): True, (128, 32, 1): False}
    for (inplanes, planes, stride), projected in cases.items():
        first = resnet_stage(inplanes, planes, 2, stride)[0]
        assert (first.downsample is not None) == projected, (inplanes, planes, stride)
        assert first.conv2.stride == (stride, stride)
        if projected:
            conv, bn = first.downsample
            assert conv.stride == (stride, stride) and conv.bias is None
            assert (conv.in_channels, conv.out_channels, bn.num_features) == (
                inplanes,
                4 * planes,
                4 * planes,
            )
    assert len(resnet_stage(64, 64, 5, 1)) == 5


def test_init_is_kaiming_fan_out_and_resets_batchnorm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 256, 3), nn.BatchNorm2d(7), nn.Linear(3, 3))
    linear = net[2].weight.detach().clone()
    _randomise_bn(net, 1)
    init_resnet_(net)
    std = math.sqrt(2.0 / (256 * 9))  # fan_out = out_channels · k², ReLU gain √2
    assert net[0].weight.mean().abs() < 0.05 * std
    assert net[0].weight.std().item() == pytest.approx(std, rel=0.02)
    assert torch.equal(net[1].weight, torch.ones(7)) and torch.equal(net[1].bias, torch.zeros(7))
    assert torch.equal(net[2].weight, linear)  # only convolutions and BatchNorms


def test_truncated_resnet_is_the_written_out_trunk():
    torch.manual_seed(0)
    net = TruncatedResNet50(num_classes=3).eval()
    assert isinstance(net.input_step, nn.Identity) and net.fc1.out_features == 3
    _randomise_bn(net, 2)
    nn.init.normal_(net.fc1.bias)
    x = torch.randn(2, 3, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _trunk(net, x), rtol=1e-5, atol=1e-5)
        assert net.forward_features(x).shape == (2, 512)
    assert TruncatedResNet50().fc1.out_features == 1  # one logit by default
    small = TruncatedResNet50(layers=(1, 2))
    assert (len(small.layer1), len(small.layer2)) == (1, 2)
    assert (len(net.layer1), len(net.layer2)) == (3, 4)
    assert [b.conv2.stride for b in net.layer1] == [(1, 1)] * 3
    assert [b.conv2.stride for b in net.layer2] == [(2, 2)] + [(1, 1)] * 3
    assert (net.layer1[0].conv1.in_channels, net.layer2[0].conv1.in_channels) == (64, 256)
    assert (net.layer1[0].conv3.out_channels, net.layer2[0].conv3.out_channels) == (256, 512)
    assert net.conv1.bias is None and net.bn1.num_features == 64


def _npr(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.shape[-2]):
        for j in range(x.shape[-1]):
            out[..., i, j] = x[..., i, j] - x[..., 2 * (i // 2), 2 * (j // 2)]
    return out


def test_npr_net_is_two_thirds_of_the_residual_into_the_trunk():
    torch.manual_seed(0)
    net = NPRNet().eval()
    assert net.fc1.out_features == 1 and isinstance(net.input_step, NPRResidual)
    _randomise_bn(net, 3)
    x = np.random.default_rng(0).normal(size=(2, 3, 33, 30)).astype(np.float32)
    residual = torch.from_numpy(_npr(x) * 2 / 3)
    with torch.no_grad():
        torch.testing.assert_close(net.input_step(torch.from_numpy(x)), residual)
        torch.testing.assert_close(net(torch.from_numpy(x)), _trunk(net, residual))
    other = NPRNet(num_classes=2, scale=0.5)
    assert other.fc1.out_features == 2 and other.input_step.scale == 0.5
    assert repr(NPRResidual()) == "NPRResidual(scale=0.666667)"
    assert repr(NPRResidual(1)) == "NPRResidual(scale=1)"
