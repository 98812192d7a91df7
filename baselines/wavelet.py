"""One-level 2-D discrete wavelet transform in torch, matching ``pywt.dwt2``.

SAFE feeds its network the diagonal detail (HH) sub-band of each colour channel: the band
where up-sampling and interpolation traces of generators concentrate. Doing the DWT in
torch keeps it batched on the GPU inside the network's forward, where SAFE does it; the
filters come from PyWavelets, and the tests check the bands against ``pywt.dwt2``.

Only PyWavelets' "symmetric" extension mode (half-sample symmetric, the edge sample
repeated) is implemented: it is the mode SAFE uses. DFFreq also needs the inverse of a
one-level Haar DWT (``idwt2_haar``); for even sizes Haar uses no extension at all, so it is
the same in every mode (pytorch_wavelets' "zero" included, which DFFreq's code uses).
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn
from torch.nn import functional as F


@cache
def _filters(wavelet: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import pywt

    w = pywt.Wavelet(wavelet)
    return tuple(w.dec_lo), tuple(w.dec_hi)


def _symmetric_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a half-sample symmetric extension by ``pad`` on both sides (any ``pad``)."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def dwt2(
    x: torch.Tensor, wavelet: str = "bior1.3", mode: str = "symmetric"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., H, W) -> pywt's (cA, cH, cV, cD), each (..., ⌊(H+L-1)/2⌋, ⌊(W+L-1)/2⌋).

    cH is high-pass down the rows and low-pass along them, cV the reverse, and cD (the HH
    band) high-pass both ways. Computed in float32 at least.
    """
    if mode != "symmetric":
        raise ValueError(f"only the 'symmetric' extension mode is implemented, got {mode!r}")
    length = len(_filters(wavelet)[0])
    h, w = x.shape[-2:]
    lead = x.shape[:-2]
    dtype = torch.promote_types(x.dtype, torch.float32)
    flat = x.reshape(-1, 1, h, w).to(dtype)
    pad = length - 1
    rows = _symmetric_index(h, pad, x.device)[1:]
    cols = _symmetric_index(w, pad, x.device)[1:]
    flat = flat.index_select(2, rows).index_select(3, cols)
    # pywt convolves the extended signal with the filter and keeps every second sample from
    # index L; that is a stride-2 cross-correlation with the reversed filter from index 1.
    out = F.conv2d(flat, _kernels(wavelet, dtype, x.device), stride=2)
    out = out[..., : (h + length - 1) // 2, : (w + length - 1) // 2]
    bands = out.reshape(*lead, 4, *out.shape[-2:]).unbind(-3)
    return bands[0], bands[1], bands[2], bands[3]


def _kernels(wavelet: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(4, 1, L, L) analysis kernels in pywt's band order cA, cH, cV, cD (reversed filters)."""
    lo, hi = _filters(wavelet)
    bank = torch.tensor([lo[::-1], hi[::-1]], dtype=dtype, device=device)
    kernels = torch.stack([torch.outer(bank[r], bank[c]) for c in (0, 1) for r in (0, 1)])
    return kernels[:, None]


def idwt2_haar(
    cA: torch.Tensor, cH: torch.Tensor, cV: torch.Tensor, cD: torch.Tensor
) -> torch.Tensor:
    """Inverse of ``dwt2(x, "haar")`` for an even-sized x: ``pywt.idwt2`` with the Haar wavelet.

    With the Haar filters and an even size no sample of the extension is used, so each band
    coefficient is the inner product of one 2×2 block with an orthonormal 2×2 kernel, and the
    block is the kernels weighted by the coefficients: a stride-2 transposed convolution.
    """
    lead, (h, w) = cA.shape[:-2], cA.shape[-2:]
    dtype = torch.promote_types(cA.dtype, torch.float32)
    bands = torch.stack([cA, cH, cV, cD], dim=-3).reshape(-1, 4, h, w).to(dtype)
    out = F.conv_transpose2d(bands, _kernels("haar", dtype, cA.device), stride=2)
    return out.reshape(*lead, 2 * h, 2 * w)


def dwt_hh(x: torch.Tensor, wavelet: str = "bior1.3", mode: str = "symmetric") -> torch.Tensor:
    """The diagonal detail band of a one-level DWT, per channel."""
    return dwt2(x, wavelet, mode)[3]


class HighFrequencyInput(nn.Module):
    """SAFE's input step: HH band of each channel, resized back to the input's size.

    SAFE's public code resizes with ``torchvision.transforms.Resize([H, W])`` on the tensor,
    that is bilinear interpolation (align_corners=False); the band is about half the input
    size, so this always up-samples and antialiasing plays no part. No parameters.
    """

    def __init__(self, wavelet: str = "bior1.3", mode: str = "symmetric"):
        super().__init__()
        self.wavelet = wavelet
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32 even under autocast: the band is a small difference of pixel values.
        with torch.autocast(device_type=x.device.type, enabled=False):
            hh = dwt_hh(x.float(), self.wavelet, self.mode)
            return F.interpolate(hh, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"wavelet={self.wavelet!r}, mode={self.mode!r}"
