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
(same output). All FFT work runs in float32 with autocast off (no bf16 FFT kernels).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from baselines.resnet_trunk import init_resnet_, resnet_stage


def _low_band(n: int, scale: int, device: torch.device) -> torch.Tensor:
    """Boolean mask over the n FFT bins (unshifted order) of signed frequency in [−n//scale, n//scale)."""
    k = torch.fft.fftfreq(n, d=1.0 / n, device=device).round().long()
    return (k >= -(n // scale)) & (k < n // scale)


def fft_highpass(x: torch.Tensor, dims: tuple[int, ...], scale: int = 4) -> torch.Tensor:
    """Real part of x with its lowest frequencies along ``dims`` removed (FreqNet's filter).

    In the centred (fftshift-ed) spectrum FreqNet zeroes ``[n//2 − n//scale, n//2 + n//scale)``
    along each axis in ``dims`` together (a block, not a cross); those are the bins of signed
    frequency −n//scale … n//scale − 1, which is the mask used here without shifting.
    """
    if scale <= 2:
        raise ValueError(f"FreqNet's high-pass needs scale > 2, got {scale}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        low = torch.ones((), dtype=torch.bool, device=x.device)
        for d in dims:
            shape = [1] * x.ndim
            shape[d] = x.shape[d]
            low = low & _low_band(x.shape[d], scale, x.device).reshape(shape)
        spectrum = torch.fft.fftn(x, dim=dims, norm="ortho")
        spectrum = spectrum.masked_fill(low, 0)
        return torch.fft.ifftn(spectrum, dim=dims, norm="ortho").real


class FrequencyConvLayer(nn.Module):
    """FCL: 2-D FFT, 1×1 conv on the real part and another on the imaginary part, inverse FFT, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.realconv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.imagconv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(self.realconv.weight.dtype)
            spectrum = torch.fft.fft2(x, norm="ortho")
            mixed = torch.complex(self.realconv(spectrum.real), self.imagconv(spectrum.imag))
            return F.relu(torch.fft.ifft2(mixed, norm="ortho").real)


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
