"""Patch Selection: the image rebuilt from its most and least spectrally complex patches.

Instead of a crop (which may miss the artefacts) or a resize (which resamples them away),
NS-Net cuts the image into non-overlapping N × N patches, ranks them by the spectral
entropy of their grey-scale power spectrum, keeps the K highest and K lowest with
2K = (M / N)², shuffles them and tiles an M × M image. Every output pixel is an input
pixel: tiles are copied, never resampled.

Choices the paper leaves open, each an option:
- odd_tile = "low": 2K = 49 is impossible, so 49 tiles are 24 highest + 25 lowest; the
  reference notes count "24 + 25" in the order the paper names them (top K, then bottom).
  "high" gives 25 + 24.
- ties: patches are ranked by (entropy, index), a total order, so the highest and lowest
  sets never overlap and ties resolve the same way on every machine. Entropy is rounded to
  ENTROPY_DECIMALS first so that rounding noise of the FFT (1e-15) cannot reorder ties.
- a patch with zero power (all black) has entropy 0, like any flat patch (all its power
  is in DC); p log p is taken as 0 where p = 0.
- small_image = "reflect": an image with fewer than 2K patches (smaller than M, or a side
  under N) has each side shorter than M mirror-padded (numpy's "symmetric": the edge pixel
  repeats) up to M. Mirroring repeats real pixels, so every tile still carries the
  camera's or the generator's own pixel statistics. "resize" upsamples (bicubic) just
  enough instead, which interpolates every pixel and destroys the very high-frequency
  traces the method keeps; "error" refuses. Never a constant fill: flat tiles have the
  lowest entropy and would be selected first, silently.
- shuffle = True: the paper shuffles at train and test; False keeps the ranked order
  (for ablations).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.interfaces import Addon, Detector, Transform

SmallImage = Literal["reflect", "resize", "error"]
OddTile = Literal["low", "high"]
SMALL_IMAGE_POLICIES = ("reflect", "resize", "error")
ODD_TILE_CHOICES = ("low", "high")

#: ITU-R BT.601 luma weights (what PIL's convert("L") uses).
LUMA_601 = (0.299, 0.587, 0.114)
#: Entropy is at most log2(N²) = 10 bits for N = 32; 1e-9 bits separates any real
#: difference and absorbs FFT rounding noise, so ties are exact.
ENTROPY_DECIMALS = 9


# --------------------------------------------------------------------------- entropy
def spectral_entropy(gray: torch.Tensor) -> torch.Tensor:
    """Spectral entropy (bits) over the last two dims of grey patches, in one FFT call.

    power = |fftshift(fft2(gray))|², p = power / Σpower, H = −Σ p log₂ p (the authors'
    later paper; the shift cannot change H but is kept to follow it). DC stays in, as in
    that formula, so H mostly grows with a patch's contrast relative to its mean level.
    """
    spectrum = torch.fft.fftshift(torch.fft.fft2(gray.to(torch.float64)), dim=(-2, -1))
    power = spectrum.real.square() + spectrum.imag.square()
    total = power.sum(dim=(-2, -1), keepdim=True)
    p = power / torch.where(total > 0, total, torch.ones_like(total))  # zero power: p = 0
    entropy = -torch.special.xlogy(p, p).sum(dim=(-2, -1)) / np.log(2.0)
    return torch.round(entropy, decimals=ENTROPY_DECIMALS)


def to_gray(patches: torch.Tensor) -> torch.Tensor:
    """(..., C, h, w) with C = 1 or 3 -> (..., h, w) float64 luma."""
    x = patches.to(torch.float64)
    if x.shape[-3] == 1:
        return x[..., 0, :, :]
    if x.shape[-3] == 3:
        w = torch.tensor(LUMA_601, dtype=torch.float64, device=x.device)
        return torch.einsum("...chw,c->...hw", x, w)
    raise ValueError(f"patch selection needs 1 or 3 channels, got {x.shape[-3]}")


# --------------------------------------------------------------------------- geometry
def _check_sizes(out_size: int, patch_size: int) -> int:
    if patch_size <= 0 or out_size <= 0:
        raise ValueError(f"out_size and patch_size must be positive, got {out_size}, {patch_size}")
    if out_size % patch_size:
        raise ValueError(f"out_size {out_size} is not a multiple of patch_size {patch_size}")
    return (out_size // patch_size) ** 2


def split_counts(tiles: int, odd_tile: OddTile = "low") -> tuple[int, int]:
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
    tiles = _check_sizes(out_size, patch_size)
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


def select_order(entropy: torch.Tensor, n_high: int, n_low: int) -> torch.Tensor:
    """(B, n) entropies -> (B, n_high + n_low) patch indices: highest first, then lowest.

    One total order by (entropy, index) serves both ends, so the two sets are disjoint.
    """
    ascending = torch.sort(entropy, dim=1, stable=True).indices
    n = entropy.shape[1]
    highest = ascending[:, n - n_high :].flip(1)
    return torch.cat([highest, ascending[:, :n_low]], dim=1)


# --------------------------------------------------------------------------- selection
def patch_select_batch(
    images: torch.Tensor,
    out_size: int = 224,
    patch_size: int = 32,
    seeds: Sequence[int] | torch.Tensor | None = None,
    *,
    small_image: SmallImage = "reflect",
    odd_tile: OddTile = "low",
    shuffle: bool = True,
) -> torch.Tensor:
    """Patch Selection of a (B, C, H, W) batch, one FFT call; same dtype, (B, C, M, M).

    seeds: one shuffle seed per image (default 0 for all).
    """
    grown, ranked, order = selection(
        images,
        out_size,
        patch_size,
        seeds,
        small_image=small_image,
        odd_tile=odd_tile,
        shuffle=shuffle,
    )
    patches = to_patches(grown, patch_size)
    chosen = patches[torch.arange(grown.shape[0], device=order.device)[:, None], order]
    return from_tiles(chosen)


def selection(
    images: torch.Tensor,
    out_size: int = 224,
    patch_size: int = 32,
    seeds: Sequence[int] | torch.Tensor | None = None,
    *,
    small_image: SmallImage = "reflect",
    odd_tile: OddTile = "low",
    shuffle: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images after the small-image policy, ranked picks, tile order) of a (B, C, H, W) batch.

    ranked: (B, n_high + n_low) patch indices (row-major over the grown image), highest
    entropy first, then lowest; order: the same indices as tiled (shuffled when asked).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    tiles = _check_sizes(out_size, patch_size)
    n_high, n_low = split_counts(tiles, odd_tile)
    b = images.shape[0]
    seed_list = [0] * b if seeds is None else [int(s) for s in seeds]
    if len(seed_list) != b:
        raise ValueError(f"{b} images but {len(seed_list)} seeds")
    images = fit_small(images, out_size, patch_size, small_image)
    patches = to_patches(images, patch_size)
    ranked = select_order(spectral_entropy(to_gray(patches)), n_high, n_low)
    order = ranked
    if shuffle:
        perms = [
            torch.randperm(tiles, generator=torch.Generator().manual_seed(s % 2**63))
            for s in seed_list
        ]
        order = torch.gather(ranked, 1, torch.stack(perms).to(ranked.device))
    return images, ranked, order


def patch_select(
    image: torch.Tensor,
    out_size: int = 224,
    patch_size: int = 32,
    seed: int = 0,
    *,
    small_image: SmallImage = "reflect",
    odd_tile: OddTile = "low",
    shuffle: bool = True,
) -> torch.Tensor:
    """Patch Selection of one (C, H, W) image (uint8 or float); same dtype, (C, M, M)."""
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    out = patch_select_batch(
        image.unsqueeze(0),
        out_size,
        patch_size,
        [seed],
        small_image=small_image,
        odd_tile=odd_tile,
        shuffle=shuffle,
    )
    return out[0]


def content_seed(image: torch.Tensor) -> int:
    """A seed from the pixels (and shape, dtype): evaluation independent of order and run."""
    data = image.detach().cpu().contiguous()
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{tuple(data.shape)}|{data.dtype}|".encode())
    h.update(data.numpy().tobytes())
    return int.from_bytes(h.digest(), "little") % 2**63


# --------------------------------------------------------------------------- components
class PatchSelect(Transform):
    """The geometry step: PIL in, PIL out (or (C, H, W) tensor in, tensor out).

    Train: the shuffle seed is the one the chain passes. Evaluation: the seed comes from
    the image content, so a score does not depend on load order, worker or batch.
    """

    role = "geometry"

    def __init__(
        self,
        out_size: int = 224,
        patch_size: int = 32,
        small_image: SmallImage = "reflect",
        odd_tile: OddTile = "low",
        shuffle: bool = True,
    ):
        try:
            _check_sizes(out_size, patch_size)
            split_counts(1, odd_tile)
        except ValueError as exc:
            raise BenchError(f"patch_select: {exc}") from None
        if small_image not in SMALL_IMAGE_POLICIES:
            raise BenchError(
                f"patch_select: small_image must be one of {', '.join(SMALL_IMAGE_POLICIES)}, "
                f"got {small_image!r}"
            )
        self.out_size = out_size
        self.patch_size = patch_size
        self.small_image = small_image
        self.odd_tile = odd_tile
        self.shuffle = shuffle

    def __repr__(self) -> str:
        return (
            f"PatchSelect(out_size={self.out_size}, patch_size={self.patch_size}, "
            f"small_image={self.small_image!r}, odd_tile={self.odd_tile!r}, "
            f"shuffle={self.shuffle})"
        )

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        is_tensor = isinstance(image, torch.Tensor)
        pil_mode = None
        if not is_tensor:
            image, pil_mode = _pil_to_tensor(image)
        if not train:
            seed = content_seed(image)
        try:
            out = patch_select(
                image,
                self.out_size,
                self.patch_size,
                seed,
                small_image=self.small_image,
                odd_tile=self.odd_tile,
                shuffle=self.shuffle,
            )
        except ValueError as exc:
            raise BenchError(f"patch_select: {exc}") from None
        return out if is_tensor else _tensor_to_pil(out, pil_mode)

    def explain(self, image: Any, *, train: bool = False, seed: int = 0) -> dict[str, Any]:
        """What this step makes of one PIL image, for `bench show-patches` (patch_explain)."""
        from nsnet_plugin.patch_explain import explain_patch_select

        return explain_patch_select(self, image, train=train, seed=seed)


def _pil_to_tensor(image: Any) -> tuple[torch.Tensor, str]:
    """PIL "RGB" or "L" as a (C, H, W) uint8 tensor; other modes are converted to RGB."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    array = np.array(image, dtype=np.uint8, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), image.mode


def _tensor_to_pil(tensor: torch.Tensor, mode: str) -> Any:
    from PIL import Image

    array = tensor.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)


class PatchSelectAddon(Addon):
    """Input addon: swaps any detector's crop/resize step for Patch Selection.

    The output size is the detector's input size, which must be a multiple of patch_size
    (CLIP's 224 = 7 · 32, SAFE's 256 = 8 · 32); otherwise it refuses rather than tile a
    smaller image and resize or pad it, which would resample or add pixels the method
    promises not to.
    """

    hook = "transform"
    requires = frozenset()

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.patch_size = int(self.options.get("patch_size", 32))
        self.small_image = str(self.options.get("small_image", "reflect"))
        self.odd_tile = str(self.options.get("odd_tile", "low"))
        self.shuffle = bool(self.options.get("shuffle", True))
        if self.patch_size <= 0:
            raise BenchError(f"patchselect: patch_size must be positive, got {self.patch_size}")
        if self.small_image not in SMALL_IMAGE_POLICIES:
            raise BenchError(
                f"patchselect: small_image must be one of {', '.join(SMALL_IMAGE_POLICIES)}, "
                f"got {self.small_image!r}"
            )
        if self.odd_tile not in ODD_TILE_CHOICES:
            raise BenchError(
                f"patchselect: odd_tile must be one of {', '.join(ODD_TILE_CHOICES)}, "
                f"got {self.odd_tile!r}"
            )

    def geometry(self, detector: Detector, train: bool) -> Transform:
        size = detector.input_size
        if size % self.patch_size:
            raise BenchError(
                f"patchselect: the detector's input size {size} is not a multiple of "
                f"patch_size {self.patch_size}; set patchselect.patch_size to a divisor of {size}"
            )
        return PatchSelect(size, self.patch_size, self.small_image, self.odd_tile, self.shuffle)
