"""Reference implementations Patch Selection is checked and timed against (not used in runs).

- ``first_release_order``: the ranking as the first release computed it (float64 BT.601
  luma by einsum, complex128 ``fft2`` of every patch, entropy rounded to 1e-9 bits, stable
  sort), kept verbatim so tests can show the fast path selects exactly the same patches.
- ``loop_select``: Patch Selection written from the paper one patch at a time (numpy),
  the baseline of the "≥ 3× faster than a per-patch loop" goal.
"""

from __future__ import annotations

import numpy as np
import torch

LUMA_601 = (0.299, 0.587, 0.114)


def first_release_order(patches: torch.Tensor, n_high: int, n_low: int) -> torch.Tensor:
    """(B, n, C, N, N) patches -> (B, n_high + n_low) indices, highest first (release 0.1)."""
    x = patches.to(torch.float64)
    if x.shape[-3] == 1:
        gray = x[..., 0, :, :]
    else:
        w = torch.tensor(LUMA_601, dtype=torch.float64, device=x.device)
        gray = torch.einsum("...chw,c->...hw", x, w)
    spectrum = torch.fft.fftshift(torch.fft.fft2(gray), dim=(-2, -1))
    power = spectrum.real.square() + spectrum.imag.square()
    total = power.sum(dim=(-2, -1), keepdim=True)
    p = power / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(p, p).sum(dim=(-2, -1)) / np.log(2.0)
    entropy = torch.round(entropy, decimals=9)
    ascending = torch.sort(entropy, dim=1, stable=True).indices
    n = entropy.shape[1]
    return torch.cat([ascending[:, n - n_high :].flip(1), ascending[:, :n_low]], dim=1)


def loop_entropy(patch: np.ndarray) -> float:
    """One (N, N, 3) uint8 patch: grey, |fftshift(fft2)|², −Σ p log₂ p."""
    x = patch.astype(np.float64)
    gray = LUMA_601[0] * x[..., 0] + LUMA_601[1] * x[..., 1] + LUMA_601[2] * x[..., 2]
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray))) ** 2
    total = power.sum()
    if total == 0:
        return 0.0
    p = power[power > 0] / total
    return float(-(p * np.log2(p)).sum())


def loop_select(
    image: np.ndarray, out_size: int = 224, patch_size: int = 32, seed: int = 0
) -> np.ndarray:
    """(H, W, 3) uint8 -> (M, M, 3): the paper's steps, one patch at a time."""
    n = patch_size
    rows, cols = image.shape[0] // n, image.shape[1] // n
    patches = [
        image[r * n : (r + 1) * n, c * n : (c + 1) * n] for r in range(rows) for c in range(cols)
    ]
    entropy = [loop_entropy(p) for p in patches]
    order = sorted(range(len(patches)), key=lambda i: (entropy[i], i))
    tiles = (out_size // n) ** 2
    low = tiles // 2
    chosen = order[len(order) - (tiles - low) :] + order[:low]
    np.random.default_rng(seed).shuffle(chosen)
    g = out_size // n
    out = np.empty((out_size, out_size, 3), dtype=image.dtype)
    for k, i in enumerate(chosen):
        r, c = divmod(k, g)
        out[r * n : (r + 1) * n, c * n : (c + 1) * n] = patches[i]
    return out
