"""Patch Selection's geometry: patch grids, tiling, and images too small for the grid.

Every output pixel is an input pixel: patches are cut and tiles are placed by indexing
only; the small-image policies are documented in ``nsnet_plugin.patch_selection``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

SmallImage = Literal["reflect", "resize", "error"]
OddTile = Literal["low", "high"]
SMALL_IMAGE_POLICIES = ("reflect", "resize", "error")
ODD_TILE_CHOICES = ("low", "high")


def check_sizes(out_size: int, patch_size: int) -> int:
    if patch_size <= 0 or out_size <= 0:
        raise ValueError(f"out_size and patch_size must be positive, got {out_size}, {patch_size}")
    if out_size % patch_size:
        raise ValueError(f"out_size {out_size} is not a multiple of patch_size {patch_size}")
    return (out_size // patch_size) ** 2


def split_counts(tiles: int, odd_tile: OddTile = "high") -> tuple[int, int]:
    """(highest, lowest) counts for ``tiles`` output tiles; the odd one goes to odd_tile."""
    if odd_tile not in ODD_TILE_CHOICES:
        raise ValueError(f"odd_tile must be one of {ODD_TILE_CHOICES}, got {odd_tile!r}")
    small, large = tiles // 2, tiles - tiles // 2
    return (small, large) if odd_tile == "low" else (large, small)


def _mirror_index(length: int, size: int, device: torch.device) -> torch.Tensor:
    """Indices 0..size-1 folded into 0..length-1 by mirroring (edge pixel repeated)."""
    i = torch.arange(size, device=device) % (2 * length)
    return torch.where(i < length, i, 2 * length - 1 - i)


def _grow_reflect(images: torch.Tensor, out_size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    rows = _mirror_index(h, max(h, out_size), images.device)
    cols = _mirror_index(w, max(w, out_size), images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


def _grow_resize(images: torch.Tensor, tiles: int, patch_size: int) -> torch.Tensor:
    """Uniform bicubic upscale by the smallest factor (on a 1 % grid) giving ``tiles`` patches."""
    h, w = images.shape[-2:]
    scale = max(patch_size / min(h, w), (tiles * patch_size**2 / (h * w)) ** 0.5)
    while (round(h * scale) // patch_size) * (round(w * scale) // patch_size) < tiles:
        scale *= 1.01
    size = (round(h * scale), round(w * scale))
    out = F.interpolate(images.to(torch.float32), size=size, mode="bicubic", align_corners=False)
    if images.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def fit_small(
    images: torch.Tensor, out_size: int, patch_size: int, small_image: SmallImage
) -> torch.Tensor:
    """Apply the small-image policy when (B, C, H, W) images have too few whole patches."""
    if small_image not in SMALL_IMAGE_POLICIES:
        raise ValueError(f"small_image must be one of {SMALL_IMAGE_POLICIES}, got {small_image!r}")
    tiles = check_sizes(out_size, patch_size)
    h, w = images.shape[-2:]
    if (h // patch_size) * (w // patch_size) >= tiles:
        return images
    if h == 0 or w == 0:
        raise ValueError(f"empty image ({h} x {w})")
    if small_image == "error":
        raise ValueError(
            f"image of {w} x {h} px has {(h // patch_size) * (w // patch_size)} whole "
            f"{patch_size}-px patches; {tiles} are needed (small_image='error')"
        )
    if small_image == "reflect":
        return _grow_reflect(images, out_size)
    return _grow_resize(images, tiles, patch_size)


def to_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, n, C, N, N), row-major; the right/bottom remainder is cropped."""
    b, c, h, w = images.shape
    rows, cols = h // patch_size, w // patch_size
    x = images[:, :, : rows * patch_size, : cols * patch_size]
    x = x.reshape(b, c, rows, patch_size, cols, patch_size).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, rows * cols, c, patch_size, patch_size)


def from_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """(B, g², C, N, N) -> (B, C, g·N, g·N), tiles placed row-major."""
    b, t, c, n, _ = tiles.shape
    g = int(round(t**0.5))
    x = tiles.reshape(b, g, g, c, n, n).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, g * n, g * n)
