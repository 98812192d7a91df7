"""Issue 17 (mutation testing): LaDeDa's network written out with torch's functional ops.

The reference follows the AIGIBench copy of ``networks/LaDeDa.py`` (LaDeDa9: stem 1×1 then
unpadded 3×3, BatchNorm, ReLU; Bottleneck stages [3, 4, 6, 3] with strides 2, 2, 2, 1, the
first block of the first stages unpadded 3×3, the shortcut cropped at the bottom right;
mean of the patch features; Linear), with the block plan spelt out here; only the weights
are read from the module. The gradient inputs are checked against scipy's correlate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from baselines.ladeda_net import LaDeDaNet, PatchBottleneck, npr_residual, receptive_field
from tests.pinned_helpers import randomise_batchnorm as _randomise_bn

# tiny tensors: one torch thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


KERNELS = {
    "x_grad": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "y_grad": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "left_diag": [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
    "right_diag": [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]],
}


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]


def _block(block: PatchBottleneck, x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    assert block.conv2.weight.shape[-2:] == (kernel, kernel)
    out = torch.relu(_bn(F.conv2d(x, block.conv1.weight), block.bn1))
    out = torch.relu(_bn(F.conv2d(out, block.conv2.weight, stride=stride), block.bn2))
    out = _bn(F.conv2d(out, block.conv3.weight), block.bn3)
    if block.downsample is None:
        shortcut = x
    else:
        conv, bn = block.downsample
        shortcut = _bn(F.conv2d(x, conv.weight, stride=stride), bn)
    h, w = out.shape[-2:]
    return torch.relu(out + shortcut[:, :, :h, :w])


def _features(net: LaDeDaNet, x: torch.Tensor, kernel3: tuple[int, ...]) -> torch.Tensor:
    x = F.conv2d(F.conv2d(x, net.conv1.weight), net.conv2.weight)
    x = torch.relu(_bn(x, net.bn1))
    for i, (stride, depth) in enumerate(zip((2, 2, 2, 1), (3, 4, 6, 3), strict=True)):
        stage = getattr(net, f"layer{i + 1}")
        assert len(stage) == depth
        for b, block in enumerate(stage):
            first = b == 0
            x = _block(block, x, 3 if first and kernel3[i] else 1, stride if first else 1)
    return x


def _npr(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    for i in range(x.shape[-2]):
        for j in range(x.shape[-1]):
            out[..., i, j] -= x[..., 2 * (i // 2), 2 * (j // 2)]
    return out


@pytest.mark.parametrize(("receptive", "kernel3"), [(9, (1, 1, 0, 0)), (17, (1, 1, 1, 0))])
def test_ladeda_is_the_written_out_network(receptive, kernel3):
    torch.manual_seed(0)
    net = LaDeDaNet(receptive).double().eval()
    assert net.kernel3 == kernel3 and net.receptive_field == receptive
    _randomise_bn(net, 1)
    nn.init.normal_(net.fc.bias)
    x = np.random.default_rng(2).normal(size=(1, 3, 25, 27))
    residual = torch.from_numpy(_npr(x))
    with torch.no_grad():
        feats = _features(net, residual, kernel3)
        assert feats.shape[-2:] == ((2, 2) if receptive == 17 else (3, 3))
        torch.testing.assert_close(net.patch_features(torch.from_numpy(x)), feats)
        net.patch_features = lambda _: feats  # the head on the features just checked
        logits = torch.einsum("nchw,oc->nohw", feats, net.fc.weight) + net.fc.bias[:, None, None]
        torch.testing.assert_close(net.patch_logits(x), logits)
        pooled = feats.mean(dim=(2, 3)) @ net.fc.weight.T + net.fc.bias
        torch.testing.assert_close(net(x), pooled)


def test_an_unprojected_block_crops_its_shortcut_at_the_bottom_right():
    torch.manual_seed(0)
    block = PatchBottleneck(8, 2, stride=1, kernel=3).double().eval()
    assert block.downsample is None
    _randomise_bn(block, 3)
    x = torch.randn(1, 8, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
        assert out.shape == (1, 8, 5, 5)
        torch.testing.assert_close(out, _block(block, x, 3, 1))
    projected = PatchBottleneck(8, 2, stride=2, kernel=1)
    assert projected.downsample is not None and projected.downsample[0].stride == (2, 2)
    assert PatchBottleneck(4, 2).downsample is not None  # 4 != 2 * 4
    default = PatchBottleneck(8, 2)  # a 1 x 1, stride-1 middle convolution by default
    assert (default.conv2.kernel_size, default.conv2.stride, default.downsample) == (
        (1, 1),
        (1, 1),
        None,
    )
    assert block.conv2.padding == (0, 0) and block.conv2.bias is None


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_gradient_inputs_are_the_depthwise_kernels(name):
    torch.manual_seed(0)
    net = LaDeDaNet(5, preprocess=name)
    x = np.random.default_rng(4).normal(size=(2, 3, 6, 7))
    kernel = np.array(KERNELS[name], dtype=float)
    expected = np.stack(
        [[ndimage.correlate(x[n, c], kernel, mode="constant") for c in range(3)] for n in range(2)]
    )
    ours = net.prepare(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    assert net.prepare(torch.from_numpy(x).float()).dtype == torch.float32


def test_npr_residual_of_one_channel_and_of_a_single_image():
    x = np.random.default_rng(6).normal(size=(3, 5))
    np.testing.assert_array_equal(npr_residual(torch.from_numpy(x)).numpy(), _npr(x))
    y = np.random.default_rng(7).normal(size=(2, 4, 3))
    np.testing.assert_array_equal(npr_residual(torch.from_numpy(y)).numpy(), _npr(y))


def test_raw_and_npr_inputs_and_the_refusals():
    x = torch.randn(1, 3, 5, 6)
    assert LaDeDaNet(5, preprocess="raw").prepare(x) is x
    torch.testing.assert_close(LaDeDaNet(5).prepare(x), npr_residual(x))
    with pytest.raises(
        ValueError, match=r"^receptive field must be one of \[5, 9, 17, 33\], got 7$"
    ):
        LaDeDaNet(7)
    message = "^preprocess must be one of NPR, raw, x_grad, y_grad, left_diag, right_diag$"
    with pytest.raises(ValueError, match=message):
        LaDeDaNet(9, preprocess="dct")
    net = LaDeDaNet(5, num_classes=3, stem_bn_momentum=0.2)
    assert net.fc.out_features == 3 and net.bn1.momentum == 0.2
    assert net.fc.in_features == 2048 and LaDeDaNet(5).fc.out_features == 1


def test_receptive_field_needs_one_flag_per_stage():
    assert receptive_field((0, 0, 0, 0)) == 3 and receptive_field((0, 1, 0, 0)) == 7
    assert receptive_field((1, 1), (1, 1)) == 7
    with pytest.raises(ValueError):
        receptive_field((1, 1, 1))


def test_initialisation_is_normal_with_fan_out_variance():
    """LaDeDa's init: every conv ~ N(0, 2 / (k·k·out)); BatchNorm weight 1, bias 0."""
    torch.manual_seed(0)
    net = LaDeDaNet(9)
    for conv, n in ((net.layer1[0].conv2, 9 * 64), (net.layer3[0].conv3, 1024), (net.conv2, 576)):
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / n), rel=0.03)
        assert abs(conv.weight.mean().item()) < 0.05 * math.sqrt(2 / n)
    _randomise_bn(net, 5)
    net.reset_parameters()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
