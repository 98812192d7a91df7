"""Issue 17 (mutation testing): FreqNet's network written out with torch's functional ops.

The reference follows the authors' ``networks/freqnet.py`` (AIGIBench copy) step by step,
with its own high-pass (full complex FFT, fftshift, the centred block
[n//2 − n//scale, n//2 + n//scale) zeroed, inverse, real part) and its own FCL (full
complex FFT, 1×1 weights on the real and the imaginary part, inverse, real part, ReLU);
only the weights are read from the module. The ResNet stages are torchvision's (pinned in
test_resnet_trunk_pinned.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from baselines.freqnet_net import FreqNet, FrequencyConvLayer, fft_highpass

# tiny tensors: one torch thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _highpass(x: torch.Tensor, dims: tuple[int, ...], scale: int) -> torch.Tensor:
    spectrum = torch.fft.fftshift(torch.fft.fftn(x, dim=dims), dim=dims)
    index = [slice(None)] * x.ndim
    for d in dims:
        n = x.shape[d]
        index[d] = slice(n // 2 - n // scale, n // 2 + n // scale)
    spectrum[tuple(index)] = 0
    return torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=dims), dim=dims).real


def _fcl(x: torch.Tensor, layer: FrequencyConvLayer) -> torch.Tensor:
    spectrum = torch.fft.fft2(x)
    wr, wi = layer.realconv.weight[:, :, 0, 0], layer.imagconv.weight[:, :, 0, 0]
    real = torch.einsum("oc,nchw->nohw", wr, spectrum.real)
    imag = torch.einsum("oc,nchw->nohw", wi, spectrum.imag)
    return torch.relu(torch.fft.ifft2(torch.complex(real, imag)).real)


def _conv(x: torch.Tensor, conv: nn.Conv2d, stride: int) -> torch.Tensor:
    return torch.relu(F.conv2d(x, conv.weight, conv.bias, stride=stride))


def _freqnet(net: FreqNet, x: torch.Tensor, scale: int) -> torch.Tensor:
    def spatial(t):
        return torch.relu(_highpass(t, (2, 3), scale))

    def channels(t):
        return torch.relu(_highpass(t, (1,), scale))

    x = spatial(x)
    x = _fcl(channels(_conv(x, net.conv1, 1)), net.fcl1)
    x = spatial(x)
    x = _fcl(channels(_conv(x, net.conv2, 2)), net.fcl2)
    x = net.layer1(F.max_pool2d(x, kernel_size=3, stride=2, padding=1))
    x = _fcl(_conv(spatial(x), net.conv3, 1), net.fcl3)
    x = _fcl(_conv(spatial(x), net.conv4, 2), net.fcl4)
    x = net.layer2(x)
    return x.mean(dim=(2, 3)) @ net.fc1.weight.T + net.fc1.bias


@pytest.mark.parametrize("scale", [4, 3])
def test_freqnet_is_the_written_out_network(scale):
    torch.manual_seed(0)
    net = FreqNet(num_classes=2, scale=scale).double().eval()
    assert net.scale == scale and net.fc1.out_features == 2
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # BatchNorm statistics that show in an eval pass
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    x = torch.randn(1, 3, 20, 18, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _freqnet(net, x, scale), rtol=1e-9, atol=1e-9)
        assert net.forward_features(x).shape == (1, 512)


def test_freqnet_initialisation_and_refusals():
    """1×1 convs outside the FCLs: weights and biases N(0, 1) (raw randn there); the FCLs'
    and the stages' convolutions Kaiming-normal, fan_out."""
    torch.manual_seed(0)
    net = FreqNet()
    assert net.fc1.out_features == 1 and net.scale == 4
    for conv in (net.conv3, net.conv4):
        assert conv.weight.std().item() == pytest.approx(1.0, rel=0.03)
        assert conv.bias.std().item() == pytest.approx(1.0, rel=0.2)
        assert abs(conv.weight.mean().item()) < 0.03
    assert (net.conv2.stride, net.conv4.stride, net.conv1.stride) == ((2, 2), (2, 2), (1, 1))
    # the stages are ResNet-50's layer1 (3 blocks, stride 1) and layer2 (4 blocks, stride 2)
    assert [b.conv2.stride for b in net.layer1] == [(1, 1)] * 3
    assert [b.conv2.stride for b in net.layer2] == [(2, 2)] + [(1, 1)] * 3
    assert (net.layer1[0].conv1.in_channels, net.layer2[0].conv1.in_channels) == (64, 256)
    assert (net.layer1[0].conv3.out_channels, net.layer2[0].conv3.out_channels) == (256, 512)
    for fcl in (net.fcl3, net.fcl4):
        for conv in (fcl.realconv, fcl.imagconv):
            assert conv.bias is None
            assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.03)
    for scale in (2, 1):
        with pytest.raises(ValueError, match=f"^FreqNet's high-pass needs scale > 2, got {scale}$"):
            FreqNet(scale=scale)
    with pytest.raises(ValueError, match="^FreqNet's high-pass needs scale > 2, got 1$"):
        fft_highpass(torch.zeros(4, 4), (0,), 1)
    assert FreqNet(scale=3).scale == 3


@pytest.mark.parametrize(("dims", "scale"), [((1, 2, 3), 4), ((0, 2), 3), ((-1,), 8)])
def test_highpass_over_other_axes_and_scales(dims, scale):
    x = torch.randn(3, 6, 7, 10, dtype=torch.float64)
    positive = tuple(d % 4 for d in dims)
    torch.testing.assert_close(fft_highpass(x, dims, scale), _highpass(x, positive, scale))


def test_highpass_and_fcl_take_integer_and_half_precision_input_in_float32():
    x = torch.randint(-3, 4, (2, 3, 8, 8))
    expected = _highpass(x.double(), (2, 3), 4).float()
    for value in (x, x.to(torch.bfloat16)):
        out = fft_highpass(value, (-2, -1))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    layer = FrequencyConvLayer(3)
    with torch.no_grad():
        reference = _fcl(x.double(), layer.double()).float()
        layer.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_fcl_takes_an_unbatched_map():
    """Like a convolution, the FCL takes a (C, H, W) map as a batch of one."""
    torch.manual_seed(0)
    layer = FrequencyConvLayer(3).double()
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        out = layer(x)
        assert out.shape == (3, 5, 7)
        torch.testing.assert_close(out, _fcl(x[None], layer)[0])
