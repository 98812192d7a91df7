"""DFFreq's network: a dual-frequency block in front of the truncated ResNet-50.

DFFreq (Yan et al., arXiv 2501.15253; TIFS 2026) argues that forgery traces are local and
live in the frequency domain, so it reworks the image before the CNN in two branches:

- **DWT branch**: a one-level Haar DWT of each colour channel; the four sub-bands (LL, LH,
  HL, HH) are laid out as a 4-row map whose columns run over the 2×2 coefficient blocks of
  the bands, so a 4×4 window holds the 16 coefficients of one 4×4 pixel area. Windowed
  attention (below) on the layer-normalised map is added back to it (a residual), and the
  inverse DWT returns to pixels.
- **FFT branch**: the phase of the real 2-D FFT goes through windowed attention (8×8
  windows, no normalisation, no residual); the magnitude is kept; the inverse FFT is scaled
  by a learned scalar that starts at 0, so the branch starts switched off.

The output is 0.6 · DWT branch + 0.4 · FFT branch, an image of the input's size, which the
truncated ResNet-50 classifies (one logit). Layout and constants follow the code the
AIGIBench authors trained (``networks/FreqLC.py``, ``networks/resnet.py``:
``FreqLCBlock(3, window_size=4)``; the FFT window is fixed at 8 there).

The windowed attention is "transposed": inside each window the channels attend to each
other (a C×C map from the window's pixels, scaled by a learned temperature that starts at
1/√C), and the result is gated by GELU(Linear(v)) over the window's pixels. Both branches run
in float32 with autocast off: FFTs have no bf16 kernels, and the bands are small differences
of pixel values.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from baselines.resnet_trunk import TruncatedResNet50
from baselines.wavelet import dwt2, idwt2_haar


def windows_of(x: torch.Tensor, window: int) -> tuple[torch.Tensor, int, int]:
    """(N, C, H, W) -> (N·nh·nw, C, window²), reflect-padding H and W up to a multiple."""
    n, c, h, w = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    nh, nw = (h + pad_h) // window, (w + pad_w) // window
    x = x.reshape(n, c, nh, window, nw, window).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n * nh * nw, c, window * window), nh, nw


def from_windows(x: torch.Tensor, n: int, nh: int, nw: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``windows_of``, cropping the padding away."""
    window = math.isqrt(x.shape[-1])
    c = x.shape[1]
    x = x.reshape(n, nh, nw, c, window, window).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, nh * window, nw * window)[:, :, :h, :w]


class WindowChannelAttention(nn.Module):
    """DFFreq's local attention: channel-to-channel attention inside non-overlapping windows.

    q, k, v come from a 1×1 convolution and a 3×3 depth-wise one (zero padding, no bias);
    per window and head, softmax(q·kᵀ · temperature) · v, gated element-wise by
    GELU(Linear(window², window²)) of v; a 1×1 convolution (with bias) projects the output.
    """

    def __init__(self, dim: int, window: int, heads: int = 1, bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.dim, self.window, self.heads = dim, window, heads
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(
            dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias
        )
        self.temperature = nn.Parameter(torch.full((heads, 1, 1), 1.0 / math.sqrt(dim)))
        self.gate = nn.Sequential(nn.Linear(window * window, window * window), nn.GELU())
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        qkv, nh, nw = windows_of(self.qkv_dwconv(self.qkv(x)), self.window)
        per_head = self.dim // self.heads
        # channels are ordered (q | k | v), each split into heads, as in DFFreq's code
        q, k, v = qkv.reshape(qkv.shape[0], 3, self.heads, per_head, -1).unbind(1)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.temperature, dim=-1)
        out = (attn @ v) * self.gate(v)
        out = from_windows(out.reshape(out.shape[0], self.dim, -1), n, nh, nw, h, w)
        return self.project_out(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window={self.window}, heads={self.heads}"


def bands_to_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W), H and W multiples of 4 -> (N, C, 4, H·W/4): DFFreq's sub-band map.

    Row b is sub-band b (LL, LH, HL, HH, pywt's cA, cH, cV, cD); along a row, each 2×2 block
    of the band takes four consecutive places (block by block in raster order).
    """
    n, c, h, w = x.shape
    bands = torch.stack(dwt2(x, "haar"), dim=2)  # (N, C, 4, H/2, W/2)
    bh, bw = h // 2, w // 2
    bands = bands.reshape(n, c, 4, bh // 2, 2, bw // 2, 2).permute(0, 1, 2, 3, 5, 4, 6)
    return bands.reshape(n, c, 4, bh * bw)


def rows_to_image(rows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of ``bands_to_rows``: the sub-band map back to an (N, C, H, W) image."""
    n, c = rows.shape[:2]
    bh, bw = h // 2, w // 2
    bands = rows.reshape(n, c, 4, bh // 2, bw // 2, 2, 2).permute(0, 1, 2, 3, 5, 4, 6)
    return idwt2_haar(*bands.reshape(n, c, 4, bh, bw).unbind(2))


def fft_phase_amplitude(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(amplitude, phase) of the real 2-D FFT over the last two axes (unnormalised)."""
    spectrum = torch.fft.rfft2(x)
    return spectrum.abs(), spectrum.angle()


class DualFrequencyBlock(nn.Module):
    """DFFreq's FreqLC block on an image: 0.6 · DWT-attention branch + 0.4 · FFT-phase branch."""

    def __init__(
        self,
        dim: int = 3,
        dwt_window: int = 4,
        fft_window: int = 8,
        weights: tuple[float, float] = (0.6, 0.4),
    ):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-5)  # over channels, at every place of the map
        self.dwt_attn = WindowChannelAttention(dim, dwt_window)
        self.fft_attn = WindowChannelAttention(dim, fft_window)
        self.fft_scale = nn.Parameter(torch.zeros(1))
        self.weights = (float(weights[0]), float(weights[1]))

    def dwt_branch(self, x: torch.Tensor) -> torch.Tensor:
        rows = bands_to_rows(x)
        normed = self.norm(rows.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return rows_to_image(rows + self.dwt_attn(normed), *x.shape[-2:])

    def fft_branch(self, x: torch.Tensor) -> torch.Tensor:
        amplitude, phase = fft_phase_amplitude(x)
        spectrum = torch.polar(amplitude, self.fft_attn(phase))
        return torch.fft.irfft2(spectrum, s=x.shape[-2:]) * self.fft_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"DFFreq needs image sides that are multiples of 4, got {h}x{w}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            return self.weights[0] * self.dwt_branch(x) + self.weights[1] * self.fft_branch(x)


class DFFreqNet(TruncatedResNet50):
    """DualFrequencyBlock -> truncated ResNet-50 -> one logit (BCE)."""

    def __init__(
        self,
        num_classes: int = 1,
        dwt_window: int = 4,
        fft_window: int = 8,
        weights: tuple[float, float] = (0.6, 0.4),
    ):
        # The trunk's initialisation runs over the block too, as DFFreq's code does.
        block = DualFrequencyBlock(3, dwt_window, fft_window, weights)
        super().__init__(num_classes=num_classes, input_step=block)
