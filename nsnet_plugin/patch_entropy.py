"""Spectral entropy of image patches and the ranking Patch Selection keeps, fast and exact.

The ranking rule (unchanged since the first release) is exact: patches are ordered by
(entropy rounded to 1e-9 bits, patch index), the entropy computed in float64 as
H = −Σ p log₂ p, p = |fft2(grey)|² / Σ|fft2(grey)|², grey = BT.601 luma
(``entropy_input = "luma"``) or the mean of the three channels' entropies ("rgb-mean").

Computing every patch that way (complex128 FFTs) cost 8-10× the decoding of the image.
``ranked_order`` gets the same order from float32 real FFTs: a float32 entropy differs
from the float64 one by at most 2e-6 bits on every patch of the scikit-image and
scikit-learn photographs (7,131 patches, plus near-flat adversarial ones; measured, see
tests/test_patch_selection.py), so two patches whose float32 entropies are more than
``TOLERANCE`` = 1e-4 bits apart (50× that) are ordered as float64 orders them. Patches
closer than that to a neighbour, where their order decides the selection or the tiling
(inside the kept sets or at their borders), are recomputed in float64 and ordered by the
exact rule: flat patches (entropy 0 exactly), duplicated patches and near-ties all land
there. The result is the float64 ranking, bit for bit, at float32 cost.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

#: ITU-R BT.601 luma weights (what PIL's convert("L") uses).
LUMA_601 = (0.299, 0.587, 0.114)
#: Entropy is at most log2(N²) = 10 bits for N = 32; 1e-9 bits separates any real
#: difference and absorbs FFT rounding noise, so ties are exact.
ENTROPY_DECIMALS = 9
#: float32 entropies this close (bits) are re-ranked in float64 where it matters.
TOLERANCE = 1e-4
ENTROPY_INPUTS = ("luma", "rgb-mean")
_LOG2 = float(np.log(2.0))


# --------------------------------------------------------------------------- exact
def spectral_entropy(gray: torch.Tensor, decimals: int | None = ENTROPY_DECIMALS) -> torch.Tensor:
    """Spectral entropy (bits) over the last two dims, in float64 (the exact rule).

    power = |fftshift(fft2(gray))|², p = power / Σpower, H = −Σ p log₂ p (the authors'
    later paper; the shift cannot change H but is kept to follow it). DC stays in, as in
    that formula. A patch with zero power has H = 0 (p log p is 0 where p = 0).
    """
    spectrum = torch.fft.fftshift(torch.fft.fft2(gray.to(torch.float64)), dim=(-2, -1))
    power = spectrum.real.square() + spectrum.imag.square()
    total = power.sum(dim=(-2, -1), keepdim=True)
    p = power / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(p, p).sum(dim=(-2, -1)) / np.log(2.0)
    return entropy if decimals is None else torch.round(entropy, decimals=decimals)


def to_gray(patches: torch.Tensor) -> torch.Tensor:
    """(..., C, h, w) with C = 1 or 3 -> (..., h, w) float64 luma."""
    x = patches.to(torch.float64)
    if x.shape[-3] == 1:
        return x[..., 0, :, :]
    if x.shape[-3] == 3:
        w = torch.tensor(LUMA_601, dtype=torch.float64, device=x.device)
        return torch.einsum("...chw,c->...hw", x, w)
    raise ValueError(f"patch selection needs 1 or 3 channels, got {x.shape[-3]}")


def exact_entropy(patches: torch.Tensor, entropy_input: str = "luma") -> torch.Tensor:
    """(k, C, N, N) patches -> (k,) float64 entropies under the exact rule.

    A patch whose channels are each constant has all its power in DC: entropy 0 exactly,
    without an FFT (flat regions, black borders and padding are common near-ties).
    """
    _check_input(entropy_input)
    flat = (patches.amax(dim=(-2, -1)) == patches.amin(dim=(-2, -1))).all(dim=-1)
    out = torch.zeros(patches.shape[0], dtype=torch.float64, device=patches.device)
    busy = patches[~flat]
    if busy.shape[0] == 0:
        return out
    if entropy_input == "luma" or patches.shape[-3] == 1:
        out[~flat] = spectral_entropy(to_gray(busy))
    else:
        per_channel = spectral_entropy(busy.to(torch.float64), decimals=None)
        out[~flat] = torch.round(per_channel.mean(dim=-1), decimals=ENTROPY_DECIMALS)
    return out


# --------------------------------------------------------------------------- fast
def planes(patches: torch.Tensor, entropy_input: str = "luma") -> torch.Tensor:
    """(..., C, N, N) -> (..., P, N, N) float32: the planes whose entropies are averaged.

    luma: one plane (float32 BT.601); rgb-mean: the channels themselves. Grey (C = 1)
    images have one plane either way.
    """
    _check_input(entropy_input)
    channels = patches.shape[-3]
    if channels not in (1, 3):
        raise ValueError(f"patch selection needs 1 or 3 channels, got {channels}")
    x = patches.to(torch.float32)
    if channels == 1 or entropy_input == "rgb-mean":
        return x
    w = torch.tensor(LUMA_601, dtype=torch.float32, device=x.device)
    return torch.einsum("...chw,c->...hw", x, w).unsqueeze(-3)


def fast_entropy(planes: torch.Tensor, dims: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """float32 planes -> float32 entropies (bits) of the N × N patches spanning ``dims``.

    ``dims`` = (a, last): one real FFT call. |rfft|² holds each bin of |fft2|² once, or
    twice for the inner columns (their mirror images, by Hermitian symmetry), so sums
    count those twice. With ``dims`` = (1, 3) an (R, N, C, N) image grid is ranked
    without copying it into patches first. Returns the entropies with ``dims`` reduced.
    """
    a, b = (d % planes.ndim for d in dims)
    if b != planes.ndim - 1 or a >= b:
        raise ValueError(f"dims must be (a, last) with a < last, got {dims}")
    last = planes.shape[b] // 2  # the Nyquist column when N is even; else an inner one
    odd = planes.shape[b] % 2

    def bins_sum(x: torch.Tensor) -> torch.Tensor:
        edges = x[..., 0] if odd else x[..., 0] + x[..., last]
        return (2 * x.sum(-1) - edges).sum(a)

    squares = torch.view_as_real(torch.fft.rfftn(planes.to(torch.float32), dim=(a, b))).square_()
    p = squares[..., 0] + squares[..., 1]  # |X|², written once
    total = bins_sum(p)
    p.div_(torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(a).unsqueeze(-1))
    # p log p with 0 log 0 = 0: below 1e-30 the term is < 1e-28 bits
    return -bins_sum(p.clamp_min(1e-30).log_().mul_(p)) / _LOG2


# --------------------------------------------------------------------------- ranking
def ranked_order(
    fast: np.ndarray,
    exact_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_high: int,
    n_low: int,
    tolerance: float = TOLERANCE,
) -> np.ndarray:
    """(B, n) float32 entropies -> (B, n_high + n_low): highest first, then lowest, ranked.

    The exact rule's order (see the module): near-ties inside the kept sets or across
    their borders are settled by ``exact_of(image_idx, patch_idx)`` (float64 entropies of
    those patches), for all images at once; everything else keeps the float32 order,
    which is the same. numpy: a few hundred numbers per image, where torch's per-call
    overhead would dominate.
    """
    b, n = fast.shape
    ascending = np.argsort(fast, axis=1, kind="stable")
    values = np.take_along_axis(fast, ascending, axis=1)
    cluster = np.zeros((b, n), dtype=np.int64)
    np.cumsum(np.diff(values, axis=1) >= tolerance, axis=1, out=cluster[:, 1:])
    cluster += np.arange(b)[:, None] * n  # cluster ids unique across images
    position = np.arange(n)
    matters = np.broadcast_to((position < n_low) | (position >= n - n_high), (b, n))
    flat = cluster.ravel()
    cluster_matters = np.bincount(flat, weights=matters.ravel(), minlength=b * n) > 0
    size = np.bincount(flat, minlength=b * n)
    refine = cluster_matters[cluster] & (size[cluster] > 1)
    if refine.any():
        rows, cols = np.nonzero(refine)
        patch = ascending[rows, cols]
        key = fast.astype(np.float64)
        key[rows, patch] = exact_of(rows, patch)
        ascending = np.argsort(key, axis=1, kind="stable")
    return select_order_from(ascending, n_high, n_low)


def kept_sets(
    fast: np.ndarray,
    exact_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_high: int,
    n_low: int,
    tolerance: float = TOLERANCE,
) -> np.ndarray:
    """(B, n) float32 entropies -> (B, n_high + n_low): the kept patches in index order.

    Which patches the exact rule keeps (the n_high highest, then the n_low lowest, each
    set in patch-index order), settling only what can change it. For a cut between
    ascending positions k − 1 and k (values v_lo ≤ v_hi): a patch more than
    ``tolerance`` below v_hi is below every patch from position k on, whatever its float64
    entropy, so it is kept below the cut; one more than ``tolerance`` above v_lo is above;
    the patches in between (a window at most 2 · tolerance wide) get float64 entropies
    and fill the remaining places in (entropy, index) order.
    """
    b, n = fast.shape
    rows = np.arange(b)[:, None]
    ascending = np.argsort(fast, axis=1, kind="stable")
    values = np.take_along_axis(fast, ascending, axis=1)
    cuts = sorted({k for k in (n_low, n - n_high) if 0 < k < n})
    windows = {}
    for k in cuts:
        lo, hi = values[:, k - 1 : k], values[:, k : k + 1]
        windows[k] = (
            (values >= hi - tolerance) & (values <= lo + tolerance),
            values < hi - tolerance,
        )
    exact = np.full((b, n), np.inf)
    anywhere = np.zeros((b, n), dtype=bool)
    for window, _ in windows.values():
        anywhere |= window
    r, c = np.nonzero(anywhere)
    if len(r):
        exact[r, ascending[r, c]] = exact_of(r, ascending[r, c])

    def below(k: int) -> np.ndarray:
        """(B, n) by patch index: whether a patch is among the k lowest (exact rule)."""
        if k <= 0:
            return np.zeros((b, n), dtype=bool)
        if k >= n:
            return np.ones((b, n), dtype=bool)
        window_sorted, certain_sorted = windows[k]
        certain = np.zeros((b, n), dtype=bool)
        certain[rows, ascending] = certain_sorted
        window = np.zeros((b, n), dtype=bool)
        window[rows, ascending] = window_sorted
        need = k - certain_sorted.sum(axis=1, keepdims=True)
        key = np.where(window, exact, np.inf)  # by patch index: ties go to the lower index
        rank = np.empty((b, n), dtype=np.int64)
        rank[rows, np.argsort(key, axis=1, kind="stable")] = np.arange(n)
        return certain | (window & (rank < need))

    low = below(n_low)
    high = ~below(n - n_high)
    return np.concatenate(
        [np.nonzero(high)[1].reshape(b, n_high), np.nonzero(low)[1].reshape(b, n_low)], axis=1
    )


def select_order_from(ascending: np.ndarray, n_high: int, n_low: int) -> np.ndarray:
    """Indices in ascending rank -> the n_high highest (descending), then the n_low lowest."""
    n = ascending.shape[1]
    return np.concatenate([ascending[:, n - n_high :][:, ::-1], ascending[:, :n_low]], axis=1)


def _check_input(entropy_input: str) -> None:
    if entropy_input not in ENTROPY_INPUTS:
        raise ValueError(f"entropy_input must be one of {ENTROPY_INPUTS}, got {entropy_input!r}")
