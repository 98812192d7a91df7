"""FreqNet's network: high-pass filtering and frequency-domain convolutions around ResNet stages.

FreqNet (Tan et al., AAAI 2024) makes a small CNN look only at high frequencies, of the
image and of its feature maps, and learn in the frequency domain:

- **high-pass** (HFRI on the image, HFRFS on feature maps): 2-D FFT, zero the centred
  block of the lowest frequencies (|k| under a quarter of each side: signed frequency
  −⌊H/4⌋ ≤ k < ⌊H/4⌋, likewise along W), inverse FFT, real part, ReLU;
- **channel high-pass** (HFRFC): the same along the channel axis of a feature map;
- **frequency convolution layer** (FCL): 2-D FFT, a 1×1 convolution on the real part and
  another on the imaginary part, inverse FFT, real part, ReLU.

Order (the authors' ``networks/freqnet.py``): HFRI → 1×1 conv 3→64 → HFRFC → FCL →
HFRFS → 1×1 conv stride 2 → HFRFC → FCL → max-pool → layer1 (3 bottlenecks) → HFRFS →
1×1 conv 256→256 → FCL → HFRFS → 1×1 conv stride 2 → FCL → layer2 (4 bottlenecks) →
global pool → Linear(512, 1). Every 1×1 conv outside an FCL has a bias and is followed by
ReLU; their weights and biases start N(0, 1) (they are raw ``randn`` parameters there), the
other convolutions Kaiming-normal. The code wraps the FCL's 1×1 convolutions in
fftshift/ifftshift; a per-pixel operation commutes with the shift, so it is left out here
(same output). Both steps use real FFTs over half the spectrum, exact for real maps (see
each docstring). All FFT work runs in float32 with autocast off (no bf16 FFT kernels).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from baselines.resnet_trunk import init_resnet_, resnet_stage


def _low(k: torch.Tensor, n: int, scale: int) -> torch.Tensor:
    """Whether signed frequency k (of an n-point FFT) is in FreqNet's low band [−n//scale, n//scale)."""
    return (k >= -(n // scale)) & (k < n // scale)


def fft_highpass(x: torch.Tensor, dims: tuple[int, ...], scale: int = 4) -> torch.Tensor:
    """Real part of x with its lowest frequencies along ``dims`` removed (FreqNet's filter).

    FreqNet zeroes, in the centred (fftshift-ed) spectrum, ``[n//2 − n//scale, n//2 +
    n//scale)`` along every axis in ``dims`` together (a block): the bins of signed frequency
    k with −n//scale ≤ k < n//scale on each axis, a set M that is not symmetric (−n//scale is
    in it, +n//scale is not). For real x, Re(IFFT(1_keep · FFT(x))) equals the inverse FFT with
    the symmetrised weight 1 − (1_M(k) + 1_M(−k))/2 (0.5 on the two unpaired edges), which is
    Hermitian, so a real FFT over half the spectrum computes it exactly at half the cost.
    """
    if scale <= 2:
        raise ValueError(f"FreqNet's high-pass needs scale > 2, got {scale}")
    dims = tuple(d % x.ndim for d in dims)
    sizes = [x.shape[d] for d in dims]
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        inside = torch.ones((), dtype=torch.bool, device=x.device)
        mirrored = torch.ones((), dtype=torch.bool, device=x.device)
        for axis, (d, n) in enumerate(zip(dims, sizes, strict=True)):
            last = axis == len(dims) - 1
            freqs = torch.fft.rfftfreq(n, 1.0 / n) if last else torch.fft.fftfreq(n, 1.0 / n)
            k = freqs.round().long().to(x.device)
            shape = [1] * x.ndim
            shape[d] = k.numel()
            inside = inside & _low(k, n, scale).reshape(shape)
            mirrored = mirrored & _low(-k, n, scale).reshape(shape)
        keep = 1.0 - (inside.to(x.dtype) + mirrored.to(x.dtype)) / 2
        spectrum = torch.fft.rfftn(x, dim=dims, norm="ortho") * keep
        return torch.fft.irfftn(spectrum, s=sizes, dim=dims, norm="ortho")


class FrequencyConvLayer(nn.Module):
    """FCL: 2-D FFT, 1×1 conv on the real part and another on the imaginary part, inverse FFT, ReLU.

    The spectrum of a real map is Hermitian; 1×1 convolutions with real weights mix channels
    at each frequency and keep it Hermitian, so the inverse FFT is real and the half spectrum
    of a real FFT gives exactly FreqNet's Re(IFFT(·)) at half the cost.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.realconv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.imagconv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(self.realconv.weight.dtype)
            spectrum = torch.fft.rfft2(x, norm="ortho")
            mixed = torch.complex(self.realconv(spectrum.real), self.imagconv(spectrum.imag))
            return F.relu(torch.fft.irfft2(mixed, s=x.shape[-2:], norm="ortho"))


class FreqNet(nn.Module):
    """High-pass and FCL blocks interleaved with ResNet-50's layer1 and layer2; one logit."""

    def __init__(self, num_classes: int = 1, scale: int = 4):
        super().__init__()
        if scale <= 2:
            raise ValueError(f"FreqNet's high-pass needs scale > 2, got {scale}")
        self.scale = int(scale)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=1, bias=True)
        self.fcl1 = FrequencyConvLayer(64)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=1, stride=2, bias=True)
        self.fcl2 = FrequencyConvLayer(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = resnet_stage(64, 64, 3, stride=1)
        self.conv3 = nn.Conv2d(256, 256, kernel_size=1, bias=True)
        self.fcl3 = FrequencyConvLayer(256)
        self.conv4 = nn.Conv2d(256, 256, kernel_size=1, stride=2, bias=True)
        self.fcl4 = FrequencyConvLayer(256)
        self.layer2 = resnet_stage(256, 128, 4, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(512, num_classes)
        init_resnet_(self)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            nn.init.normal_(conv.weight)
            nn.init.normal_(conv.bias)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(fft_highpass(x, (-2, -1), self.scale))

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(fft_highpass(x, (1,), self.scale))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 512) pooled feature."""
        x = self._spatial(x)  # HFRI
        x = self.fcl1(self._channels(F.relu(self.conv1(x))))
        x = self._spatial(x)  # HFRFS
        x = self.fcl2(self._channels(F.relu(self.conv2(x))))
        x = self.layer1(self.maxpool(x))
        x = self.fcl3(F.relu(self.conv3(self._spatial(x))))
        x = self.fcl4(F.relu(self.conv4(self._spatial(x))))
        x = self.layer2(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_classes) logits."""
        return self.fc1(self.forward_features(x))
