"""Issue 17 (mutation testing): which patches Patch Selection keeps and how it tiles them.

References written here: SplitMix64 in Python integers (checked against the published
first output for state 0), the seeds of patch_selection's docstring, and a per-patch numpy
loop for the entropies (patch_entropy's rule: rounded to 1e-9 bits, ties by index).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from nsnet_plugin.patch_selection import (
    PatchSelect,
    PatchSelectAddon,
    _splitmix64,
    content_seed,
    patch_select,
    patch_select_array,
    select_order,
    select_patches,
    selection,
    selection_seeds,
    shuffle_perms,
)

MASK = 2**64 - 1


def splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def perm(seed: int, tiles: int) -> list[int]:
    return sorted(range(tiles), key=lambda t: splitmix(((seed % 2**64) << 32) + t & MASK))


def seed_of(kept: list[int], h: int, w: int, c: int) -> int:
    salt = splitmix((h << 40) ^ (w << 16) ^ c)
    fold = 0
    for position, index in enumerate(sorted(kept)):
        fold ^= splitmix(index ^ (position << 32) ^ salt)
    return splitmix(fold) >> 1


def entropy(plane: np.ndarray) -> float:
    power = np.abs(np.fft.fft2(plane.astype(np.float64))) ** 2
    if power.sum() == 0:
        return 0.0
    p = power[power > 0] / power.sum()
    return float(-(p * np.log2(p)).sum())


def reference(img: np.ndarray, n: int, tiles: int, how: str = "luma", odd: str = "high"):
    """(H, W, C) -> (highest first, lowest first) patch indices, one patch at a time."""
    rows, cols = img.shape[0] // n, img.shape[1] // n
    values = []
    for r in range(rows):
        for c in range(cols):
            patch = img[r * n : (r + 1) * n, c * n : (c + 1) * n].astype(np.float64)
            if patch.shape[2] == 1:
                values.append(entropy(patch[..., 0]))
            elif how == "luma":
                values.append(entropy(patch @ np.asarray([0.299, 0.587, 0.114])))
            else:
                values.append(float(np.mean([entropy(patch[..., k]) for k in range(3)])))
    ascending = sorted(range(len(values)), key=lambda i: (round(values[i], 9), i))
    n_low = tiles // 2 if odd == "high" else tiles - tiles // 2
    n_high = tiles - n_low
    return ascending[len(ascending) - n_high :][::-1], ascending[:n_low]


def noisy_image(h: int, w: int, c: int, n: int, seed: int = 0) -> np.ndarray:
    """Noise of varied strength per patch, some flat patches (exact ties at entropy 0)."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, c), np.uint8)
    for r in range(0, h, n):
        for q in range(0, w, n):
            block = img[r : r + n, q : q + n]
            if rng.random() < 0.25:
                block[...] = rng.integers(0, 256, size=c)
            else:
                spread = rng.uniform(2, 90)
                block[...] = np.clip(128 + rng.normal(0, spread, block.shape), 0, 255)
    return img


def tiles_of(out: np.ndarray, n: int) -> list[bytes]:
    g = out.shape[0] // n
    return [
        out[r * n : (r + 1) * n, q * n : (q + 1) * n].tobytes() for r in range(g) for q in range(g)
    ]


def patch_bytes(img: np.ndarray, n: int, index: int) -> bytes:
    r, q = divmod(index, img.shape[1] // n)
    return np.ascontiguousarray(img[r * n : (r + 1) * n, q * n : (q + 1) * n]).tobytes()


def test_splitmix64_is_the_published_generator():
    assert int(_splitmix64(np.zeros(1, np.uint64))[0]) == 0xE220A8397B1DCDAF
    x = np.asarray([1, 2**40 + 7, MASK], dtype=np.uint64)
    assert [int(v) for v in _splitmix64(x)] == [splitmix(int(v)) for v in x]


def test_shuffle_permutations_are_argsorts_of_splitmix_keys():
    seeds = [0, 5, 2**40 + 3, -1, 2**70 + 9]
    got = shuffle_perms(seeds, 49)
    assert got.shape == (5, 49)
    assert got.tolist() == [perm(s, 49) for s in seeds]
    assert shuffle_perms([], 9).shape == (0, 9)


def test_selection_seeds_hash_the_kept_set_and_the_shape():
    kept = np.asarray([[7, 3, 11, 0], [1, 2, 3, 4]])
    got = selection_seeds(kept, (40, 48, 3))
    assert got.tolist() == [seed_of([7, 3, 11, 0], 40, 48, 3), seed_of([1, 2, 3, 4], 40, 48, 3)]
    assert all(0 <= v < 2**63 for v in got.tolist())
    assert content_seed(torch.tensor([3, 0, 11, 7]), (40, 48, 3)) == seed_of(
        [0, 3, 7, 11], 40, 48, 3
    )
    assert content_seed(np.asarray([1, 2, 3, 4]), (48, 40, 1)) == seed_of([1, 2, 3, 4], 48, 40, 1)


def test_select_order_takes_both_ends_of_one_total_order():
    ent = torch.tensor([[2.0, 0.0, 5.0, 0.0, 5.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    # ascending by (entropy, index): 1, 3, 5, 0, 2, 4 -> highest 4, 2; lowest 1, 3
    assert select_order(ent, 2, 2).tolist() == [[4, 2, 1, 3], [5, 4, 0, 1]]
    assert select_order(ent, 3, 0).tolist() == [[4, 2, 0], [5, 4, 3]]
    # 1000 values with many ties: an unstable sort (torch's default) reorders them
    values = [float(i % 3 == 0) for i in range(1000)]
    ascending = sorted(range(1000), key=lambda i: (values[i], i))
    got = select_order(torch.tensor([values]), 400, 400)
    assert got.tolist() == [ascending[600:][::-1] + ascending[:400]]


@pytest.mark.parametrize("how", ["luma", "rgb-mean"])
@pytest.mark.parametrize("odd", ["high", "low"])
def test_selection_keeps_the_reference_sets_and_tiles_them_by_the_hash(how, odd):
    n, out_size = 5, 15  # 9 tiles from a 6 x 7 grid, with a remainder to crop
    img = noisy_image(33, 37, 3, n, seed=len(how) + len(odd))
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    high, low = reference(img, n, 9, how, odd)
    grown, picks, order = selection(
        x, out_size, n, None, odd_tile=odd, shuffle=False, entropy_input=how
    )
    assert (
        grown.shape == x.shape and picks.tolist() == [high + low] and order.tolist() == [high + low]
    )
    _, picks, order = selection(x, out_size, n, [12], odd_tile=odd, entropy_input=how)
    kept = sorted(high) + sorted(low)
    assert picks.tolist() == [kept]
    assert order.tolist() == [[kept[i] for i in perm(12, 9)]]
    _, _, order = selection(
        x, out_size, n, [12], odd_tile=odd, entropy_input=how, content_seeds=True
    )
    assert order.tolist() == [[kept[i] for i in perm(seed_of(kept, 33, 37, 3), 9)]]
    # the DataLoader path keeps and tiles the same patches
    for seed, expected_seed in ((12, 12), (None, seed_of(kept, 33, 37, 3))):
        tiled = patch_select_array(img, out_size, n, seed, odd_tile=odd, entropy_input=how)
        expected = [patch_bytes(img, n, kept[i]) for i in perm(expected_seed, 9)]
        assert tiled.shape == (15, 15, 3) and tiles_of(tiled, n) == expected
    ranked = patch_select_array(img, out_size, n, 0, odd_tile=odd, shuffle=False, entropy_input=how)
    assert tiles_of(ranked, n) == [patch_bytes(img, n, i) for i in high + low]


def test_grey_images_and_small_ones_seeded_by_their_own_shape():
    n = 4
    img = noisy_image(17, 26, 1, n, seed=3)  # 4 x 6 patches, 16 needed
    high, low = reference(img, n, 16)
    kept = sorted(high) + sorted(low)
    tiled = patch_select_array(img, 16, n, None)
    assert tiles_of(tiled, n) == [
        patch_bytes(img, n, kept[i]) for i in perm(seed_of(kept, 17, 26, 1), 16)
    ]
    small = noisy_image(12, 14, 1, n, seed=4)  # 3 x 3 patches: mirrored to 16 x 16 first
    grown = np.pad(small, ((0, 4), (0, 2), (0, 0)), mode="symmetric")
    high, low = reference(grown, n, 16)
    kept = sorted(high) + sorted(low)
    x = torch.from_numpy(small).permute(2, 0, 1)[None]
    grown_t, picks, order = selection(x, 16, n, None, content_seeds=True)
    assert np.array_equal(grown_t[0, 0].numpy(), grown[..., 0]) and picks.tolist() == [kept]
    assert order.tolist() == [[kept[i] for i in perm(seed_of(kept, 12, 14, 1), 16)]]
    out = patch_select(x[0], 16, n, 0, content_seeds=True)  # the seed: the original 12 x 14
    expected = [patch_bytes(grown, n, kept[i]) for i in perm(seed_of(kept, 12, 14, 1), 16)]
    assert tiles_of(out.permute(1, 2, 0).numpy(), n) == expected


def test_selection_refusals_are_one_line():
    with pytest.raises(ValueError, match=r"^images must be \(B, C, H, W\), got shape \(3, 8, 8\)$"):
        selection(torch.zeros(3, 8, 8), 8, 4)
    with pytest.raises(ValueError, match=r"^2 images but 1 seeds$"):
        selection(torch.zeros(2, 3, 8, 8), 8, 4, [0])
    with pytest.raises(ValueError, match=r"^image must be \(C, H, W\), got shape \(1, 3, 8, 8\)$"):
        patch_select(torch.zeros(1, 3, 8, 8), 8, 4)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_transform_keeps_grey_grey_and_turns_the_rest_to_rgb(mode):
    n = 4
    rgb = noisy_image(20, 24, 3, n, seed=5)
    image = Image.fromarray(rgb).convert(mode)
    seen = np.asarray(image.convert("L" if mode == "L" else "RGB"))
    seen = seen[:, :, None] if seen.ndim == 2 else seen
    high, low = reference(seen, n, 16)
    kept = sorted(high) + sorted(low)
    out = PatchSelect(16, n)(image, train=True, seed=9)
    assert out.mode == ("L" if mode == "L" else "RGB") and out.size == (16, 16)
    got = np.asarray(out)
    got = got[:, :, None] if got.ndim == 2 else got
    assert tiles_of(got, n) == [patch_bytes(seen, n, kept[i]) for i in perm(9, 16)]


def test_transform_small_pil_image_goes_through_the_mirror():
    n = 4
    small = noisy_image(10, 13, 3, n, seed=6)
    out = PatchSelect(16, n)(Image.fromarray(small), train=False, seed=9)
    grown = np.pad(small, ((0, 6), (0, 3), (0, 0)), mode="symmetric")
    high, low = reference(grown, n, 16)
    kept = sorted(high) + sorted(low)
    expected = [patch_bytes(grown, n, kept[i]) for i in perm(seed_of(kept, 10, 13, 3), 16)]
    assert out.mode == "RGB" and tiles_of(np.asarray(out), n) == expected
    with pytest.raises(BenchError, match=r"^patch_select: image of 13 x 10 px has 6 whole 4-px"):
        PatchSelect(16, n, small_image="error")(Image.fromarray(small), train=True, seed=0)


def test_addon_tiles_at_the_detectors_size_or_refuses():
    class Sized:
        input_size = 96

    transform = PatchSelectAddon(
        {"patch_size": 16, "odd_tile": "low", "shuffle": False, "entropy_input": "rgb-mean"}
    ).geometry(Sized(), train=True)
    assert (transform.out_size, transform.patch_size, transform.odd_tile, transform.shuffle) == (
        96,
        16,
        "low",
        False,
    )
    assert transform.entropy_input == "rgb-mean"
    message = (
        r"^patchselect: the detector's input size 96 is not a multiple of patch_size 28; "
        r"set patchselect.patch_size to a divisor of 96$"
    )
    with pytest.raises(BenchError, match=message):
        PatchSelectAddon({"patch_size": 28}).geometry(Sized(), train=False)


def swapped_pair_image() -> tuple[np.ndarray, int]:
    """(8 x 12 px image of 2 x 3 patches of 4, n_low): patches 0 and 1 hold the same three
    channels, red and green swapped, so their rgb-mean entropies tie exactly (index decides)
    while their luma entropies differ, the later one lower. Patch 5 is flat (lowest);
    2, 3, 4 are noise (highest). With 2 + 2 kept, the cut runs between patches 0 and 1."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:4, 0:4]
    a = np.stack([rng.integers(0, 256, (4, 4)), 60 + 20 * xx, np.full((4, 4), 90)], -1)
    b = a[..., [1, 0, 2]]
    luma = [entropy(p.astype(np.float64) @ np.asarray([0.299, 0.587, 0.114])) for p in (a, b)]
    first, second = (a, b) if luma[1] < luma[0] else (b, a)
    img = np.zeros((8, 12, 3), np.uint8)
    img[0:4, 0:4], img[0:4, 4:8] = first, second
    for q, (r, c) in enumerate([(0, 8), (4, 0), (4, 4)]):
        img[r : r + 4, c : c + 4] = np.random.default_rng(q).integers(0, 256, (4, 4, 3))
    img[4:8, 8:12] = 7
    return img, 2


def test_rgb_mean_near_ties_are_settled_by_rgb_mean_entropies():
    img, n_low = swapped_pair_image()
    high, low = reference(img, 4, 4, "rgb-mean")
    assert low == [5, 0]  # the tie goes to the lower index
    luma_high, luma_low = reference(img, 4, 4, "luma")
    assert luma_low == [5, 1]  # luma would keep the other one
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    patches = x.reshape(1, 3, 2, 4, 3, 4).permute(0, 2, 4, 1, 3, 5).reshape(1, 6, 3, 4, 4)
    assert select_patches(patches, 2, 2, "rgb-mean").tolist() == [high + low]
    assert select_patches(patches, 2, 2, "rgb-mean", ranked=False).tolist() == [
        sorted(high) + sorted(low)
    ]
    assert select_patches(patches, 2, 2).tolist() == [luma_high + luma_low]  # luma, ranked
    ranked = patch_select_array(img, 8, 4, 0, shuffle=False, entropy_input="rgb-mean")
    assert tiles_of(ranked, 4) == [patch_bytes(img, 4, i) for i in high + low]
    kept = sorted(high) + sorted(low)
    tiled = patch_select_array(img, 8, 4, 3, entropy_input="rgb-mean")
    assert tiles_of(tiled, 4) == [patch_bytes(img, 4, kept[i]) for i in perm(3, 4)]


@pytest.mark.parametrize("size", [(20, 15), (15, 20)])
def test_transform_options_reach_both_paths_and_train_uses_the_chains_seed(size):
    n = 4
    step = PatchSelect(16, n, odd_tile="low", shuffle=False, entropy_input="rgb-mean")
    big = noisy_image(24, 20, 3, n, seed=12)
    high, low = reference(big, n, 16, "rgb-mean", "low")
    got = np.asarray(step(Image.fromarray(big), train=True, seed=0))
    assert tiles_of(got, n) == [patch_bytes(big, n, i) for i in high + low]
    # 15 x 20 px: 3 x 5 = 15 whole patches (18.75 by length), 16 needed: mirrored first
    small = noisy_image(size[0], size[1], 3, n, seed=13)
    rows, cols = 16 - size[0] if size[0] < 16 else 0, 16 - size[1] if size[1] < 16 else 0
    grown = np.pad(small, ((0, rows), (0, cols), (0, 0)), mode="symmetric")
    high, low = reference(grown, n, 16, "rgb-mean", "low")
    got = np.asarray(step(Image.fromarray(small), train=True, seed=0))
    assert tiles_of(got, n) == [patch_bytes(grown, n, i) for i in high + low]
    shuffled = PatchSelect(16, n)
    high, low = reference(grown, n, 16)
    kept = sorted(high) + sorted(low)
    for image in (Image.fromarray(small), torch.from_numpy(small).permute(2, 0, 1)):
        out = shuffled(image, train=True, seed=21)
        out = np.asarray(out) if isinstance(out, Image.Image) else out.permute(1, 2, 0).numpy()
        assert tiles_of(np.ascontiguousarray(out), n) == [
            patch_bytes(grown, n, kept[i]) for i in perm(21, 16)
        ]


def test_defaults_are_224_pixels_of_32_px_patches_seed_0():
    img = noisy_image(64, 96, 3, 32, seed=14)  # 2 x 3 patches: mirrored to 224 x 224
    x = torch.from_numpy(img).permute(2, 0, 1)
    grown = np.pad(img, ((0, 160), (0, 128), (0, 0)), mode="symmetric")
    high, low = reference(grown, 32, 49)
    kept = sorted(high) + sorted(low)
    expected = [patch_bytes(grown, 32, kept[i]) for i in perm(0, 49)]
    _, picks, order = selection(x[None])
    assert picks.tolist() == [kept] and order.tolist() == [[kept[i] for i in perm(0, 49)]]
    assert tiles_of(patch_select(x).permute(1, 2, 0).numpy(), 32) == expected


def test_odd_tile_reaches_both_pil_paths():
    n = 4  # 12 px out: 9 tiles, odd_tile="low" keeps 4 highest + 5 lowest
    step = PatchSelect(12, n, odd_tile="low", shuffle=False)
    big = noisy_image(16, 20, 3, n, seed=15)  # 4 x 5 patches: the array path
    high, low = reference(big, n, 9, odd="low")
    assert (len(high), len(low)) == (4, 5)
    got = np.asarray(step(Image.fromarray(big), train=True, seed=0))
    assert tiles_of(got, n) == [patch_bytes(big, n, i) for i in high + low]
    small = noisy_image(9, 10, 3, n, seed=16)  # 2 x 2 patches: mirrored to 12 x 12
    grown = np.pad(small, ((0, 3), (0, 2), (0, 0)), mode="symmetric")
    high, low = reference(grown, n, 9, odd="low")
    got = np.asarray(step(Image.fromarray(small), train=True, seed=0))
    assert tiles_of(got, n) == [patch_bytes(grown, n, i) for i in high + low]
