"""Patch Selection: the image rebuilt from its most and least spectrally complex patches.

Instead of a crop (which may miss the artefacts) or a resize (which resamples them away),
NS-Net cuts the image into non-overlapping N × N patches, ranks them by the spectral
entropy of their power spectrum (``nsnet_plugin.patch_entropy``: the exact float64 rule,
computed with float32 real FFTs), keeps the K highest and K lowest with 2K = (M / N)²,
shuffles them and tiles an M × M image. Every output pixel is an input pixel: tiles are
copied, never resampled.

Choices the paper leaves open, each an option:
- odd_tile = "high": 2K = 49 is impossible; the same authors' Patch Selection code
  (HorizonTEL/DGS-Net) keeps ``num_patches // 2`` = 24 lowest and the other 25 highest.
  "low" gives 24 highest + 25 lowest.
- entropy_input = "luma": the entropy of the BT.601 grey patch, as the authors' later
  code computes it; "rgb-mean" reads the paper's N × N × 3 FFT as the mean of the three
  channels' entropies.
- ties: patches are ranked by (entropy rounded to 1e-9 bits, index), a total order, so
  the highest and lowest sets never overlap and ties resolve the same way everywhere.
- a patch with zero power (all black) has entropy 0, like any flat patch.
- small_image = "reflect": an image with fewer than 2K patches (smaller than M, or a side
  under N) has each side shorter than M mirror-padded (numpy's "symmetric": the edge pixel
  repeats) up to M. Mirroring repeats real pixels, so every tile still carries the
  camera's or the generator's own pixel statistics. "resize" upsamples (bicubic) just
  enough instead, which interpolates every pixel and destroys the very high-frequency
  traces the method keeps; "error" refuses. Never a constant fill: flat tiles have the
  lowest entropy and would be selected first, silently.
- shuffle = True: the paper shuffles at train and test; False keeps the ranked order
  (highest first, then lowest; for ablations). The shuffle permutes the kept patches
  taken in patch-index order (the 25 highest, then the 24 lowest), so only which
  patches are kept has to be exact, not their rank inside each set. The permutation is an
  argsort of a 64-bit hash (SplitMix64) of (seed, tile): the same on every machine and
  torch version, drawn for a batch at once.
  At evaluation the seed is a hash of which patches were selected and of the image's
  shape, so a score depends on the image only, not on its position, worker or batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from bench.errors import BenchError
from bench.interfaces import Addon, Detector, Transform
from nsnet_plugin.patch_entropy import (
    ENTROPY_DECIMALS,
    ENTROPY_INPUTS,
    LUMA_601,
    exact_entropy,
    fast_entropy,
    kept_sets,
    planes,
    ranked_order,
    spectral_entropy,
    to_gray,
)
from nsnet_plugin.patch_geometry import (
    ODD_TILE_CHOICES,
    SMALL_IMAGE_POLICIES,
    OddTile,
    SmallImage,
    check_sizes,
    fit_small,
    from_tiles,
    split_counts,
    to_patches,
)

EntropyInput = Literal["luma", "rgb-mean"]
#: Re-exported for callers of the first release.
__all__ = [
    "ENTROPY_DECIMALS",
    "LUMA_601",
    "ODD_TILE_CHOICES",
    "SMALL_IMAGE_POLICIES",
    "fit_small",
    "from_tiles",
    "spectral_entropy",
    "split_counts",
    "to_gray",
    "to_patches",
]
_LUMA32 = np.asarray(LUMA_601, dtype=np.float32)


def select_order(entropy: torch.Tensor, n_high: int, n_low: int) -> torch.Tensor:
    """(B, n) exact entropies -> (B, n_high + n_low) indices: highest first, then lowest.

    One total order by (entropy, index) serves both ends, so the two sets are disjoint.
    """
    ascending = torch.sort(entropy, dim=1, stable=True).indices
    n = entropy.shape[1]
    return torch.cat([ascending[:, n - n_high :].flip(1), ascending[:, :n_low]], dim=1)


def select_patches(
    patches: torch.Tensor,
    n_high: int,
    n_low: int,
    entropy_input: EntropyInput = "luma",
    *,
    ranked: bool = True,
) -> torch.Tensor:
    """(B, n, C, N, N) patches -> (B, n_high + n_low) indices under the exact rule, fast.

    ranked: each set in rank order (else in patch-index order: what shuffling needs).
    """
    fast = fast_entropy(planes(patches, entropy_input)).mean(dim=-1)

    def exact_of(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        index = (
            torch.from_numpy(rows).to(patches.device),
            torch.from_numpy(cols).to(patches.device),
        )
        return exact_entropy(patches[index], entropy_input).cpu().numpy()

    choose = ranked_order if ranked else kept_sets
    order = choose(fast.cpu().numpy(), exact_of, n_high, n_low)
    return torch.from_numpy(np.ascontiguousarray(order)).to(patches.device)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shuffle_perms(seeds: Sequence[int], tiles: int) -> torch.Tensor:
    """(B, tiles) permutations, one per seed: argsort of SplitMix64(seed · 2³² + tile).

    SplitMix64 is a bijection of 64-bit integers, so one seed's keys never tie.
    """
    s = np.asarray(seeds, dtype=object) % 2**64 if len(seeds) else np.zeros(0)
    s = s.astype(np.uint64)
    x = (s[:, None] << np.uint64(32)) + np.arange(tiles, dtype=np.uint64)[None, :]
    return torch.from_numpy(np.argsort(_splitmix64(x), axis=1, kind="stable"))


def selection_seeds(selected: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(B, t) kept patch indices -> (B,) shuffle seeds below 2**63, for a batch at once:
    SplitMix64 of (position, index, the image's (H, W, C)) per kept patch, XOR-folded.

    The selection is a function of the pixels alone (and exact: the same on every
    machine), so evaluation is independent of order, worker and run; it costs a few
    array operations beside the selection, whatever the image size.
    """
    kept = np.sort(np.asarray(selected, dtype=np.int64), axis=1).astype(np.uint64)
    h, w, c = (np.uint64(int(v)) for v in shape)
    salt = _splitmix64(np.asarray([(h << np.uint64(40)) ^ (w << np.uint64(16)) ^ c]))
    position = np.arange(kept.shape[1], dtype=np.uint64)[None, :] << np.uint64(32)
    keys = _splitmix64(kept ^ position ^ salt)
    return _splitmix64(np.bitwise_xor.reduce(keys, axis=1)) >> np.uint64(1)


def content_seed(selected: np.ndarray | torch.Tensor, shape: Sequence[int]) -> int:
    """``selection_seeds`` of one image's kept indices."""
    data = selected.cpu().numpy() if isinstance(selected, torch.Tensor) else selected
    return int(selection_seeds(np.asarray(data).reshape(1, -1), shape)[0])


# --------------------------------------------------------------------------- selection
def patch_select_batch(
    images: torch.Tensor,
    out_size: int = 224,
    patch_size: int = 32,
    seeds: Sequence[int] | torch.Tensor | None = None,
    *,
    small_image: SmallImage = "reflect",
    odd_tile: OddTile = "high",
    shuffle: bool = True,
    entropy_input: EntropyInput = "luma",
    content_seeds: bool = False,
) -> torch.Tensor:
    """Patch Selection of a (B, C, H, W) batch on its device; same dtype, (B, C, M, M).

    seeds: one shuffle seed per image (default 0 for all); content_seeds=True ignores
    them and seeds each image from its selected patches (what evaluation does).
    """
    grown, _, order = selection(
        images,
        out_size,
        patch_size,
        seeds,
        small_image=small_image,
        odd_tile=odd_tile,
        shuffle=shuffle,
        entropy_input=entropy_input,
        content_seeds=content_seeds,
    )
    patches = to_patches(grown, patch_size)
    return from_tiles(patches[torch.arange(grown.shape[0], device=order.device)[:, None], order])


def selection(
    images: torch.Tensor,
    out_size: int = 224,
    patch_size: int = 32,
    seeds: Sequence[int] | torch.Tensor | None = None,
    *,
    small_image: SmallImage = "reflect",
    odd_tile: OddTile = "high",
    shuffle: bool = True,
    entropy_input: EntropyInput = "luma",
    content_seeds: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images after the small-image policy, kept picks, tile order) of a (B, C, H, W) batch.

    picks: (B, n_high + n_low) patch indices (row-major over the grown image), the
    highest-entropy set first, then the lowest (in rank order without shuffling, else in
    patch-index order, as the shuffle takes them); order: the indices as tiled.
    ``bench show-patches`` draws these, so a picture shows what the network receives.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    tiles = check_sizes(out_size, patch_size)
    n_high, n_low = split_counts(tiles, odd_tile)
    b = images.shape[0]
    seed_list = [0] * b if seeds is None else [int(s) for s in seeds]
    if len(seed_list) != b:
        raise ValueError(f"{b} images but {len(seed_list)} seeds")
    c, h, w = images.shape[1:]
    images = fit_small(images, out_size, patch_size, small_image)
    patches = to_patches(images, patch_size)
    picks = select_patches(patches, n_high, n_low, entropy_input, ranked=not shuffle)
    order = picks
    if shuffle:
        if content_seeds:
            seed_list = selection_seeds(picks.cpu().numpy(), (h, w, c)).tolist()
        order = torch.gather(picks, 1, shuffle_perms(seed_list, tiles).to(picks.device))
    return images, picks, order


def patch_select(
    image: torch.Tensor,
    out_size: int = 224,
    patch_size: int = 32,
    seed: int = 0,
    *,
    small_image: SmallImage = "reflect",
    odd_tile: OddTile = "high",
    shuffle: bool = True,
    entropy_input: EntropyInput = "luma",
    content_seeds: bool = False,
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
        entropy_input=entropy_input,
        content_seeds=content_seeds,
    )
    return out[0]


def patch_select_array(
    array: np.ndarray,
    out_size: int,
    patch_size: int,
    seed: int | None,
    *,
    odd_tile: OddTile = "high",
    shuffle: bool = True,
    entropy_input: EntropyInput = "luma",
) -> np.ndarray:
    """The same selection on an (H, W, C) uint8 array with enough whole patches.

    The DataLoader path: a decoded image is already HWC, so patches stay views into it
    (no CHW copy), BT.601 luma is one float32 matrix product, and the tiles are gathered
    by one fancy index. seed None: from the content (evaluation).
    """
    tiles = check_sizes(out_size, patch_size)
    n_high, n_low = split_counts(tiles, odd_tile)
    n = patch_size
    h, w, c = array.shape
    rows, cols = h // n, w // n
    grid = array[: rows * n, : cols * n].reshape(rows, n, cols, n, c)
    if c == 3 and entropy_input == "luma":
        gray = array[: rows * n, : cols * n].astype(np.float32) @ _LUMA32
        fast = fast_entropy(torch.from_numpy(gray).reshape(rows, n, cols, n), dims=(1, 3))
    else:  # one plane per channel: (C, R, N, C', N), averaged over channels
        stack = torch.from_numpy(grid.transpose(4, 0, 1, 2, 3).astype(np.float32))
        fast = fast_entropy(stack, dims=(2, 4)).mean(dim=0)

    def exact_of(_: np.ndarray, idx: np.ndarray) -> np.ndarray:
        chosen = grid[idx // cols, :, idx % cols]  # (k, n, n, c)
        out = np.zeros(len(idx), dtype=np.float64)
        pixels = chosen.reshape(len(idx), -1, c)
        busy = (pixels != pixels[:, :1]).any(axis=(1, 2))
        if busy.any():  # flat patches have entropy 0 exactly (see exact_entropy)
            tensor = torch.from_numpy(np.ascontiguousarray(chosen[busy].transpose(0, 3, 1, 2)))
            out[busy] = exact_entropy(tensor, entropy_input).numpy()
        return out

    choose = kept_sets if shuffle else ranked_order
    order = choose(fast.reshape(1, -1).numpy(), exact_of, n_high, n_low)[0]
    if shuffle:
        if seed is None:
            seed = content_seed(order, array.shape)
        order = order[shuffle_perms([seed], tiles)[0].numpy()]
    chosen = grid[order // cols, :, order % cols]  # (tiles, n, n, c)
    g = int(round(tiles**0.5))
    return chosen.reshape(g, g, n, n, c).transpose(0, 2, 1, 3, 4).reshape(g * n, g * n, c)


# --------------------------------------------------------------------------- components
class PatchSelect(Transform):
    """The geometry step: PIL in, PIL out (or (C, H, W) tensor in, tensor out).

    Train: the shuffle seed is the one the chain passes. Evaluation: the seed comes from
    the selected pixels, so a score does not depend on load order, worker or batch.
    """

    role = "geometry"

    def __init__(
        self,
        out_size: int = 224,
        patch_size: int = 32,
        small_image: SmallImage = "reflect",
        odd_tile: OddTile = "high",
        shuffle: bool = True,
        entropy_input: EntropyInput = "luma",
    ):
        try:
            check_sizes(out_size, patch_size)
            split_counts(1, odd_tile)
        except ValueError as exc:
            raise BenchError(f"patch_select: {exc}") from None
        for key, value, allowed in (
            ("small_image", small_image, SMALL_IMAGE_POLICIES),
            ("entropy_input", entropy_input, ENTROPY_INPUTS),
        ):
            if value not in allowed:
                raise BenchError(
                    f"patch_select: {key} must be one of {', '.join(allowed)}, got {value!r}"
                )
        self.out_size = out_size
        self.patch_size = patch_size
        self.small_image = small_image
        self.odd_tile = odd_tile
        self.shuffle = shuffle
        self.entropy_input = entropy_input

    def __repr__(self) -> str:
        # entropy_input shows only when not the default, so cache keys of luma runs stay
        extra = "" if self.entropy_input == "luma" else f", entropy_input={self.entropy_input!r}"
        return (
            f"PatchSelect(out_size={self.out_size}, patch_size={self.patch_size}, "
            f"small_image={self.small_image!r}, odd_tile={self.odd_tile!r}, "
            f"shuffle={self.shuffle}{extra})"
        )

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        if isinstance(image, torch.Tensor):
            return self._tensor(image, train, seed)
        from PIL import Image

        mode = image.mode if image.mode in ("RGB", "L") else "RGB"
        array = np.asarray(image if image.mode == mode else image.convert(mode))
        if array.ndim == 2:
            array = array[:, :, None]
        h, w = array.shape[:2]
        n = self.patch_size
        if (h // n) * (w // n) < (self.out_size // n) ** 2:  # too small: the tensor path
            out = self._tensor(torch.from_numpy(array.copy()).permute(2, 0, 1), train, seed)
            out_array = out.permute(1, 2, 0).numpy()
        else:
            out_array = patch_select_array(
                array,
                self.out_size,
                n,
                seed if train else None,
                odd_tile=self.odd_tile,
                shuffle=self.shuffle,
                entropy_input=self.entropy_input,
            )
        if mode == "L":
            out_array = out_array[:, :, 0]
        return Image.fromarray(np.ascontiguousarray(out_array), mode=mode)

    def _tensor(self, image: torch.Tensor, train: bool, seed: int) -> torch.Tensor:
        try:
            return patch_select(
                image,
                self.out_size,
                self.patch_size,
                seed,
                small_image=self.small_image,
                odd_tile=self.odd_tile,
                shuffle=self.shuffle,
                entropy_input=self.entropy_input,
                content_seeds=not train,
            )
        except ValueError as exc:
            raise BenchError(f"patch_select: {exc}") from None

    def explain(self, image: Any, *, train: bool = False, seed: int = 0) -> dict[str, Any]:
        """What this step makes of one PIL image, for `bench show-patches` (patch_explain)."""
        from nsnet_plugin.patch_explain import explain_patch_select

        return explain_patch_select(self, image, train=train, seed=seed)


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
        # a run saved before the default became "high" recorded its "low" explicitly
        self.odd_tile = str(self.options.get("odd_tile", "high"))
        self.shuffle = bool(self.options.get("shuffle", True))
        self.entropy_input = str(self.options.get("entropy_input", "luma"))
        if self.patch_size <= 0:
            raise BenchError(f"patchselect: patch_size must be positive, got {self.patch_size}")
        for key, value, allowed in (
            ("small_image", self.small_image, SMALL_IMAGE_POLICIES),
            ("odd_tile", self.odd_tile, ODD_TILE_CHOICES),
            ("entropy_input", self.entropy_input, ENTROPY_INPUTS),
        ):
            if value not in allowed:
                raise BenchError(
                    f"patchselect: {key} must be one of {', '.join(allowed)}, got {value!r}"
                )

    def geometry(self, detector: Detector, train: bool) -> Transform:
        size = detector.input_size
        if size % self.patch_size:
            raise BenchError(
                f"patchselect: the detector's input size {size} is not a multiple of "
                f"patch_size {self.patch_size}; set patchselect.patch_size to a divisor of {size}"
            )
        return PatchSelect(
            size,
            self.patch_size,
            self.small_image,  # type: ignore[arg-type]
            self.odd_tile,  # type: ignore[arg-type]
            self.shuffle,
            self.entropy_input,  # type: ignore[arg-type]
        )
