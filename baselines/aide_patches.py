"""AIDE's patchwise expert input: DCT-scored patches and the SRM high-pass filter bank.

The claim it tests (Yan et al., ICLR 2025): low-level traces live in the patches with the
most and the least high-frequency content, so AIDE scores every 32 × 32 window of the
full-resolution image (stride 16) by its DCT spectrum, keeps the two highest and the two
lowest, and shows them, through 30 SRM high-pass filters, to two ResNet-50s; a frozen CLIP
ConvNeXt sees the whole image for semantics.

The score of a window P (C × n × n, pixels in [0, 1]), from AIDE's ``data/dct.py``:
X_c = D P_c Dᵀ with D the orthonormal DCT-II matrix; with band b (b = 0..5) the
frequencies (u, v) with 2n·b/6 ≤ u + v ≤ 2n·(b+1)/6 (both ends included, so the diagonal
u + v = n counts in bands 2 and 3, as there) and |band b| its number of frequencies,
    score(P) = Σ_b 2^b · Σ_c Σ_{(u,v) ∈ band b} log(1 + |X_c[u, v]|) / |band b|.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from bench.interfaces import IMAGENET_MEAN, IMAGENET_STD, Transform

#: The order AIDE stacks its views in: lowest, highest, 2nd lowest, 2nd highest, whole image.
VIEW_NAMES = ("lowest", "highest", "second_lowest", "second_highest", "image")


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II: D[k, j] = sqrt((1 if k = 0 else 2) / n) · cos(π (j + ½) k / n)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (j + 0.5) * k / n) * math.sqrt(2.0 / n)
    d[0] = math.sqrt(1.0 / n)
    return d.float()


def band_masks(n: int, bands: int = 6) -> torch.Tensor:
    """(bands, n, n) 0/1 masks of the anti-diagonal frequency bands, both ends included."""
    total = torch.arange(n)[:, None] + torch.arange(n)[None, :]
    edges = [2.0 * n / bands * b for b in range(bands + 1)]
    return torch.stack(
        [((total >= edges[b]) & (total <= edges[b + 1])).float() for b in range(bands)]
    )


def empty_bands(n: int, bands: int) -> list[int]:
    """The bands with no frequency of an n × n window: their mean is 0/0, so every score
    is NaN and the "selection" is arbitrary (6 bands need n >= 6; n = 32 allows 32)."""
    return [b for b, mask in enumerate(band_masks(n, bands)) if not bool(mask.any())]


def patch_scores(patches: torch.Tensor, bands: int = 6) -> torch.Tensor:
    """(L, C, n, n) windows -> (L,) AIDE scores (module docstring); higher = more detail."""
    n = patches.shape[-1]
    d = dct_matrix(n).to(patches)
    spectrum = torch.log1p((d @ patches @ d.T).abs())
    masks = band_masks(n, bands).to(patches)
    weights = 2.0 ** torch.arange(bands, dtype=patches.dtype, device=patches.device)
    per_band = torch.einsum("lcuv,buv->lb", spectrum, masks) / masks.sum(dim=(1, 2))
    return per_band @ weights


def windows(image: torch.Tensor, size: int = 32, stride: int = 16) -> torch.Tensor:
    """(C, H, W) -> (L, C, size, size), row by row as ``nn.Unfold``; an image smaller than
    one window is first padded by repeating its border (AIDE's code fails on such images)."""
    c, h, w = image.shape
    if h < size or w < size:
        pad = (0, max(0, size - w), 0, max(0, size - h))
        image = F.pad(image[None], pad, mode="replicate")[0]
    tiles = image.unfold(1, size, stride).unfold(2, size, stride)
    return tiles.permute(1, 2, 0, 3, 4).reshape(-1, c, size, size)


def select_patches(
    image: torch.Tensor, size: int = 32, stride: int = 16, bands: int = 6
) -> torch.Tensor:
    """(4, C, size, size): the lowest, highest, 2nd lowest and 2nd highest scoring windows.

    A stable sort breaks ties by position (the first window is the lowest, the last the
    highest); with a single window all four are that window, as in AIDE's code.
    """
    tiles = windows(image, size, stride)
    order = torch.sort(patch_scores(tiles, bands), stable=True).indices
    second = min(1, len(order) - 1)
    picks = [order[0], order[-1], order[second], order[-1 - second]]
    return tiles[torch.stack(picks)]


def srm_filters() -> torch.Tensor:
    """(30, 5, 5) SRM high-pass residual filters in AIDE's order, each normalised.

    8 first-order differences (a neighbour, in raster order, minus the centre); 4
    second-order (both neighbours of a line minus twice the centre) / 2; 8 third-order
    along 8 directions (−1, +3, −3, +1) / 3; the 3 × 3 "edge" kernels (half of the 3 × 3
    KV square: top, right, bottom, left) / 4; the 5 × 5 ones likewise / 12; the 3 × 3
    square / 4 and the 5 × 5 KV square / 12. 3 × 3 filters sit at the centre of 5 × 5.
    """
    c = 2
    out: list[np.ndarray] = []

    def blank() -> np.ndarray:
        return np.zeros((5, 5), dtype=np.float64)

    neighbours = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    for dy, dx in neighbours:  # class 1
        f = blank()
        f[c + dy, c + dx], f[c, c] = 1, -1
        out.append(f)
    for dy, dx in neighbours[:4]:  # class 2: the four lines through the centre
        f = blank()
        f[c + dy, c + dx] = f[c - dy, c - dx] = 1
        f[c, c] = -2
        out.append(f / 2)
    clockwise = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    for dy, dx in clockwise:  # class 3
        f = blank()
        f[c + 2 * dy, c + 2 * dx], f[c + dy, c + dx], f[c, c], f[c - dy, c - dx] = -1, 3, -3, 1
        out.append(f / 3)
    square3 = blank()
    square3[1:4, 1:4] = [[-1, 2, -1], [2, -4, 2], [-1, 2, -1]]
    square5 = np.array(
        [
            [-1, 2, -2, 2, -1],
            [2, -6, 8, -6, 2],
            [-2, 8, -12, 8, -2],
            [2, -6, 8, -6, 2],
            [-1, 2, -2, 2, -1],
        ],
        dtype=np.float64,
    )
    rows, cols = np.indices((5, 5))
    halves = [rows <= c, cols >= c, rows >= c, cols <= c]  # top, right, bottom, left
    out += [square3 * half / 4 for half in halves]
    out += [square5 * half / 12 for half in halves]
    out += [square3 / 4, square5 / 12]
    return torch.from_numpy(np.stack(out)).float()


def srm_residuals(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 30, H, W): every SRM filter applied to each of R, G, B and summed
    (AIDE's ``HPF``: one 5 × 5 convolution, zero padding 2, no bias)."""
    if weight is None:
        weight = srm_filters()[:, None].expand(-1, x.shape[1], -1, -1)
    return F.conv2d(x, weight.to(x), padding=2)


class AideViews(Transform):
    """PIL image -> (5, 3, S, S): AIDE's four patches and the whole image, each resized to
    S × S (bilinear) and ImageNet-normalised, in AIDE's order (``VIEW_NAMES``).

    Patches are scored on the image at its own resolution (no crop, no resize first).
    ``antialias`` applies to the whole-image resize only (the patches are enlarged);
    AIDE's environment (torchvision 0.15) resizes tensors without it.
    """

    role = "tensor"

    def __init__(
        self,
        view_size: int = 256,
        window: int = 32,
        stride: int = 16,
        bands: int = 6,
        antialias: bool = False,
    ):
        self.view_size = int(view_size)
        self.window = int(window)
        self.stride = int(stride)
        self.bands = int(bands)
        self.antialias = bool(antialias)
        empty = empty_bands(self.window, self.bands)
        if empty:
            raise ValueError(
                f"{self.bands} DCT bands leave band {empty[0]} of a {self.window} x "
                f"{self.window} window without a frequency (its score would be 0/0): use "
                "fewer bands or a larger window"
            )

    def __call__(self, image: Any, *, train: bool, seed: int) -> torch.Tensor:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
        patches = select_patches(pixels, self.window, self.stride, self.bands)
        size = (self.view_size, self.view_size)
        enlarged = F.interpolate(patches, size=size, mode="bilinear", align_corners=False)
        whole = F.interpolate(
            pixels[None], size=size, mode="bilinear", align_corners=False, antialias=self.antialias
        )
        views = torch.cat([enlarged, whole])
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (views - mean) / std

    def __repr__(self) -> str:
        return (
            f"AideViews(view_size={self.view_size}, window={self.window}, stride={self.stride}, "
            f"bands={self.bands}, antialias={self.antialias})"
        )
