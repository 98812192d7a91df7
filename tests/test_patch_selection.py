"""Patch Selection against an independent per-patch loop, and its transform and addon."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.catalogue import load_catalogue, register_catalogue
from bench.errors import BenchError
from bench.interfaces import Detector, Transform, TransformChain
from bench.options import parse_specs
from bench.registry import Entry
from nsnet_plugin.patch_selection import (
    PatchSelect,
    PatchSelectAddon,
    patch_select,
    patch_select_batch,
)

PS = 32


def structured_image(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 of distinct patches: flat, noisy, striped and smooth, mixed."""
    rng = np.random.default_rng(seed)
    img = np.zeros((rows * PS, cols * PS, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:PS, 0:PS]
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        kind = rng.integers(4)
        if kind == 0:  # flat, each with its own colour: entropy 0, ties broken by index
            patch = np.broadcast_to(rng.integers(1, 255, size=3), (PS, PS, 3))
        elif kind == 1:  # noise of random strength: high entropy
            base = rng.integers(60, 190, size=3)
            patch = base + rng.normal(0, rng.uniform(5, 60), size=(PS, PS, 3))
        elif kind == 2:  # a stripe pattern: few spectral peaks
            wave = np.sin(2 * np.pi * rng.integers(1, 8) * xx / PS + rng.uniform(0, 6))
            patch = 128 + rng.uniform(20, 100) * wave[..., None] + rng.normal(0, 1, (PS, PS, 3))
        else:  # a smooth ramp with a little noise
            patch = 40 + rng.uniform(1, 5) * (xx + yy)[..., None] + rng.normal(0, 2, (PS, PS, 3))
        img[r * PS : (r + 1) * PS, c * PS : (c + 1) * PS] = np.clip(patch, 1, 255).astype(np.uint8)
    return img


def reference_entropies(img: np.ndarray) -> list[float]:
    """One patch at a time: BT.601 grey, |fftshift(fft2)|², −Σ p log₂ p."""
    rows, cols = img.shape[0] // PS, img.shape[1] // PS
    out = []
    for r in range(rows):
        for c in range(cols):
            patch = img[r * PS : (r + 1) * PS, c * PS : (c + 1) * PS].astype(np.float64)
            gray = 0.299 * patch[..., 0] + 0.587 * patch[..., 1] + 0.114 * patch[..., 2]
            power = np.abs(np.fft.fftshift(np.fft.fft2(gray))) ** 2
            total = power.sum()
            if total == 0:
                out.append(0.0)
                continue
            p = power[power > 0] / total
            out.append(float(-(p * np.log2(p)).sum()))
    return out


def reference_selection(img: np.ndarray, out_size: int) -> tuple[set[int], set[int]]:
    """(highest, lowest) patch indices: 25 highest + 24 lowest for 49 tiles (DGS-Net's)."""
    ent = reference_entropies(img)
    order = sorted(range(len(ent)), key=lambda i: (round(ent[i], 6), i))
    tiles = (out_size // PS) ** 2
    n_low = tiles // 2
    return set(order[len(order) - (tiles - n_low) :]), set(order[:n_low])


def input_patches(img: np.ndarray) -> dict[bytes, int]:
    rows, cols = img.shape[0] // PS, img.shape[1] // PS
    return {
        np.ascontiguousarray(img[r * PS : (r + 1) * PS, c * PS : (c + 1) * PS]).tobytes(): r * cols
        + c
        for r in range(rows)
        for c in range(cols)
    }


def output_tiles(out_hwc: np.ndarray) -> list[np.ndarray]:
    g = out_hwc.shape[0] // PS
    return [
        out_hwc[r * PS : (r + 1) * PS, c * PS : (c + 1) * PS] for r in range(g) for c in range(g)
    ]


def chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).contiguous().numpy()


def selected_indices(img: np.ndarray, out: torch.Tensor) -> list[int]:
    lookup = input_patches(img)
    return [lookup[np.ascontiguousarray(t).tobytes()] for t in output_tiles(hwc(out))]


@pytest.mark.parametrize("seed", [0, 1])
def test_selection_matches_per_patch_loop(seed: int) -> None:
    img = structured_image(10, 9, seed=seed)  # 90 patches, plus a remainder to crop
    img = np.pad(img, ((0, 17), (0, 5), (0, 0)), constant_values=7)
    out = patch_select(chw(img), 224, PS, seed=3)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    chosen = selected_indices(img, out)  # every tile is bit-identical to an input patch
    high, low = reference_selection(img[: 10 * PS, : 9 * PS], 224)
    assert len(high) == 25 and len(low) == 24 and not high & low
    assert sorted(chosen) == sorted(high | low)  # each selected patch exactly once


def test_odd_tile_low_takes_25_lowest_and_high_is_the_default() -> None:
    img = structured_image(10, 9, seed=2)
    ent = reference_entropies(img)
    order = sorted(range(len(ent)), key=lambda i: (round(ent[i], 6), i))
    low = patch_select(chw(img), 224, PS, seed=0, odd_tile="low")
    assert sorted(selected_indices(img, low)) == sorted(order[:25] + order[-24:])
    default = patch_select(chw(img), 224, PS, seed=0)  # DGS-Net: 24 lowest + 25 highest
    assert sorted(selected_indices(img, default)) == sorted(order[:24] + order[-25:])
    # the two readings differ in exactly one patch: the 25th lowest vs the 25th highest
    assert set(selected_indices(img, low)) ^ set(selected_indices(img, default)) == {
        order[24],
        order[-25],
    }


def test_ties_are_broken_by_patch_index() -> None:
    # 100 flat patches (entropy 0 each, all tied), told apart by their grey level only
    levels = np.arange(1, 101, dtype=np.uint8).reshape(10, 10)
    img = np.repeat(np.repeat(levels, PS, axis=0), PS, axis=1)[:, :, None].repeat(3, axis=2)
    out = patch_select(chw(img), 224, PS, shuffle=False)
    # one total order by (entropy, index): the 25 "highest" are the last 25 indices
    assert selected_indices(img, out) == list(range(99, 74, -1)) + list(range(24))
    zero = np.zeros((320, 320, 3), dtype=np.uint8)  # zero power: entropy 0, no NaN
    assert torch.equal(
        patch_select(chw(zero), 224, PS), torch.zeros(3, 224, 224, dtype=torch.uint8)
    )


def test_shuffle_false_orders_highest_then_lowest() -> None:
    img = structured_image(8, 8, seed=4)
    out = patch_select(chw(img), 224, PS, shuffle=False)
    ent = reference_entropies(img)
    idx = selected_indices(img, out)
    first, rest = [ent[i] for i in idx[:25]], [ent[i] for i in idx[25:]]
    assert first == sorted(first, reverse=True) and rest == sorted(rest)
    assert min(first) >= max(rest)


def test_float_input_keeps_dtype_and_pixels() -> None:
    img = structured_image(8, 9, seed=5)
    x = chw(img).float() / 255.0
    out = patch_select(x, 224, PS, seed=1)
    assert out.dtype == torch.float32 and out.shape == (3, 224, 224)
    as_uint8 = patch_select(chw(img), 224, PS, seed=1)
    assert torch.equal(out, as_uint8.float() / 255.0)  # same selection, copied values


def test_grey_single_channel() -> None:
    img = structured_image(8, 8, seed=6)[:, :, :1]
    out = patch_select(chw(img), 128, PS, seed=0)
    assert out.shape == (1, 128, 128) and out.dtype == torch.uint8
    lookup = input_patches(img)
    assert all(np.ascontiguousarray(t).tobytes() in lookup for t in output_tiles(hwc(out)))


def test_seed_controls_the_arrangement() -> None:
    img = structured_image(10, 10, seed=7)
    a = patch_select(chw(img), 224, PS, seed=11)
    assert torch.equal(a, patch_select(chw(img), 224, PS, seed=11))
    b = patch_select(chw(img), 224, PS, seed=12)
    assert not torch.equal(a, b)
    assert sorted(selected_indices(img, a)) == sorted(selected_indices(img, b))


def test_batch_equals_per_image() -> None:
    imgs = [structured_image(9, 10, seed=s) for s in (8, 9, 10)]
    batch = torch.stack([chw(i) for i in imgs])
    seeds = [5, 6, 2**40 + 3]
    out = patch_select_batch(batch, 224, PS, seeds)
    for k, img in enumerate(imgs):
        assert torch.equal(out[k], patch_select(chw(img), 224, PS, seed=seeds[k]))


def test_out_size_must_be_multiple_of_patch_size() -> None:
    img = chw(structured_image(8, 8))
    with pytest.raises(ValueError, match="multiple"):
        patch_select(img, 200, PS)
    with pytest.raises(BenchError, match="multiple"):
        PatchSelect(200, PS)


# ------------------------------------------------------------------ small images
def test_small_image_reflect_uses_mirrored_real_pixels() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(1, 256, size=(100, 150, 3), dtype=np.uint8)  # 3 x 4 = 12 patches
    out = patch_select(chw(img), 224, PS, seed=0)  # default: reflect
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    mirrored = np.pad(img, ((0, 124), (0, 74), (0, 0)), mode="symmetric")
    lookup = input_patches(mirrored)
    chosen = [lookup[np.ascontiguousarray(t).tobytes()] for t in output_tiles(hwc(out))]
    assert sorted(chosen) == list(range(49))  # the 224 x 224 mirror has exactly 49 patches
    assert int(out.reshape(3, -1).min()) >= 1  # no black (constant-fill) tile


def test_small_image_side_under_patch_size() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(1, 256, size=(20, 500, 3), dtype=np.uint8)  # no whole patch at all
    out = patch_select(chw(img), 224, PS, seed=0)
    assert out.shape == (3, 224, 224)
    mirrored = np.pad(img, ((0, 204), (0, 0), (0, 0)), mode="symmetric")
    lookup = input_patches(mirrored)
    assert all(np.ascontiguousarray(t).tobytes() in lookup for t in output_tiles(hwc(out)))


def test_small_image_resize_and_error() -> None:
    rng = np.random.default_rng(2)
    img = chw(rng.integers(0, 256, size=(100, 150, 3), dtype=np.uint8))
    out = patch_select(img, 224, PS, seed=0, small_image="resize")
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="12 whole 32-px patches; 49 are needed"):
        patch_select(img, 224, PS, small_image="error")
    with pytest.raises(BenchError, match="49 are needed"):
        PatchSelect(small_image="error")(img, train=True, seed=0)
    with pytest.raises(ValueError, match="small_image"):
        patch_select(img, 224, PS, small_image="zeros")  # type: ignore[arg-type]


def test_large_enough_image_is_never_padded() -> None:
    img = structured_image(7, 7, seed=12)  # exactly 49 patches
    for policy in ("reflect", "resize", "error"):
        out = patch_select(chw(img), 224, PS, seed=0, small_image=policy)  # type: ignore[arg-type]
        assert sorted(selected_indices(img, out)) == list(range(49))


# ------------------------------------------------------------------ transform and addon
def test_transform_pil_in_pil_out() -> None:
    img = structured_image(9, 9, seed=13)
    t = PatchSelect()
    out = t(Image.fromarray(img), train=True, seed=4)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (224, 224)
    assert np.array_equal(np.asarray(out), hwc(patch_select(chw(img), 224, PS, seed=4)))
    grey = t(Image.fromarray(img[:, :, 0]), train=True, seed=4)
    assert grey.mode == "L" and grey.size == (224, 224)
    rgba = t(Image.fromarray(img).convert("RGBA"), train=True, seed=4)
    assert rgba.mode == "RGB"
    tensor_out = t(chw(img), train=True, seed=4)
    assert isinstance(tensor_out, torch.Tensor) and tensor_out.shape == (3, 224, 224)


def test_train_seed_from_chain_eval_seed_from_content() -> None:
    a, b = structured_image(9, 9, seed=14), structured_image(9, 9, seed=15)
    t = PatchSelect()
    train_1 = np.asarray(t(Image.fromarray(a), train=True, seed=1))
    train_2 = np.asarray(t(Image.fromarray(a), train=True, seed=2))
    assert not np.array_equal(train_1, train_2)
    # evaluation ignores the chain's seed and the order images arrive in
    first = [np.asarray(t(Image.fromarray(x), train=False, seed=s)) for x, s in ((a, 0), (b, 1))]
    second = [
        np.asarray(PatchSelect()(Image.fromarray(x), train=False, seed=s))
        for x, s in ((b, 9), (a, 3))
    ]
    assert np.array_equal(first[0], second[1]) and np.array_equal(first[1], second[0])


def test_repr_names_every_option() -> None:
    r = repr(PatchSelect(256, 32, "resize", "high", False))
    for part in (
        "out_size=256",
        "patch_size=32",
        "small_image='resize'",
        "odd_tile='high'",
        "shuffle=False",
    ):
        assert part in r
    assert PatchSelect.role == "geometry"


class _Crop(Transform):
    role = "geometry"

    def __call__(self, image, *, train, seed):
        return image


class _Detector(Detector):
    def __init__(self, size: int):
        super().__init__({})
        self._size = size

    @property
    def input_size(self) -> int:
        return self._size

    def base_transforms(self, train: bool) -> TransformChain:
        return TransformChain([_Crop()])

    def setup(self, ctx):
        pass

    def predict_proba(self, batch):
        raise NotImplementedError

    def trainable_state(self):
        return {}

    def load_trainable_state(self, state):
        pass


def test_addon_replaces_the_geometry_step() -> None:
    addon = PatchSelectAddon({"patch_size": 32, "small_image": "reflect"})
    assert addon.hook == "transform" and addon.requires == frozenset()
    det = _Detector(256)
    addon.attach(det)
    chain = det.transforms(train=True)
    assert chain.describe() == [repr(PatchSelect(256, 32))]
    out = chain(Image.fromarray(structured_image(9, 9, seed=16)), train=True, seed=0)
    assert out.size == (256, 256)
    assert isinstance(addon.geometry(SimpleNamespace(input_size=224), train=False), PatchSelect)


def test_addon_refuses_an_input_size_not_a_multiple() -> None:
    with pytest.raises(BenchError, match="not a multiple of patch_size 32"):
        PatchSelectAddon({}).geometry(SimpleNamespace(input_size=250), train=True)
    with pytest.raises(BenchError, match="small_image"):
        PatchSelectAddon({"small_image": "black"})


def test_registry_entries_load_with_their_defaults() -> None:
    entries: dict[tuple[str, str], Entry] = {}

    def register(kind, name, target, *, options, defaults, presets, summary):
        specs = parse_specs(name, options, defaults)
        entries[kind, name] = Entry(kind, name, target, "nsnet", specs, presets, summary)

    register_catalogue(register, "nsnet")
    addon_entry = entries["addon", "patchselect"]
    addon = addon_entry.load()(addon_entry.options())
    assert isinstance(addon, PatchSelectAddon) and addon.patch_size == 32
    transform_entry = entries["transform", "patch_select"]
    transform = transform_entry.load()(**transform_entry.options())
    assert repr(transform) == repr(PatchSelect())
    assert (
        load_catalogue()["addons"]["patchselect"]["options"]["small_image"]["default"] == "reflect"
    )


# ------------------------------------------------------------------ exactness of the fast path
def _photos() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = {
        name: np.asarray(getattr(data, name)())
        for name in ("astronaut", "coffee", "rocket", "chelsea", "hubble_deep_field")
        + ("retina", "immunohistochemistry", "camera", "text", "brick")
    }
    china, flower = load_sample_images().images
    out.update(china=china, flower=flower)
    return {
        k: (v if v.ndim == 3 else np.repeat(v[:, :, None], 3, axis=2))[..., :3]
        for k, v in out.items()
    }


PHOTOS = _photos()


def ties_image(seed: int = 3) -> np.ndarray:
    """12 x 12 patches with exact and float-level ties at both cut-offs of 49 tiles.

    A patch and its transpose have the same power spectrum, so the same entropy: the
    float64 rule sees a tie (broken by index), float32 sees two values ~1e-7 apart in a
    random order. Lowest first: 3 flat patches (entropy exactly 0) and 11 smooth patches
    with their transposes, so the 24th and 25th lowest are such a pair; highest: 13 noisy
    patches with their transposes, so the 25th and 26th highest are one. The rest:
    distinct fillers of middling entropy, and two exact duplicates among them.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:PS, 0:PS]
    cells = []
    for _ in range(3):
        cells.append(np.full((PS, PS, 3), 77, dtype=np.uint8))
    for k in range(11):  # smooth ramps: low entropy, distinct
        ramp = 60 + (1.0 + 0.15 * k) * xx + 0.3 * yy + rng.normal(0, 0.6, (PS, PS))
        patch = np.clip(ramp, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
        cells += [patch, np.ascontiguousarray(patch.transpose(1, 0, 2))]
    for k in range(13):  # noise: high entropy, distinct
        noise = rng.normal(128, 20 + 2 * k, (PS, PS, 3))
        patch = np.clip(noise, 0, 255).astype(np.uint8)
        cells += [patch, np.ascontiguousarray(patch.transpose(1, 0, 2))]
    while len(cells) < 144:  # stripes of middling entropy
        wave = np.sin(2 * np.pi * rng.integers(1, 6) * xx / PS + rng.uniform(0, 6))
        stripe = 128 + 40 * wave[..., None] + rng.normal(0, 8, (PS, PS, 3))
        cells.append(np.clip(stripe, 0, 255).astype(np.uint8))
    cells[-1] = cells[-2].copy()  # an exact duplicate
    order = rng.permutation(144)
    img = np.zeros((12 * PS, 12 * PS, 3), dtype=np.uint8)
    for cell, at in zip(cells, order, strict=True):
        r, c = divmod(int(at), 12)
        img[r * PS : (r + 1) * PS, c * PS : (c + 1) * PS] = cell
    return img


@pytest.mark.parametrize("name", [*PHOTOS, "ties"])
@pytest.mark.parametrize("odd_tile", ["high", "low"])
def test_fast_path_selects_exactly_what_the_first_release_selected(name, odd_tile) -> None:
    """Same kept patches and, unshuffled, the same ranked tiling as the float64 ranking
    of the first release, on every photo and on flat / duplicate / near-flat ties."""
    from benchmarks.patch_reference import first_release_order
    from nsnet_plugin.patch_selection import patch_select_array, split_counts, to_patches

    img = ties_image() if name == "ties" else PHOTOS[name]
    n_high, n_low = split_counts(49, odd_tile)
    patches = to_patches(chw(np.ascontiguousarray(img))[None], PS)
    want = first_release_order(patches, n_high, n_low)[0].tolist()
    ranked = patch_select(chw(np.ascontiguousarray(img)), 224, PS, shuffle=False, odd_tile=odd_tile)
    cols = img.shape[1] // PS
    lookup = {np.ascontiguousarray(t).tobytes() for t in output_tiles(hwc(ranked))}
    assert len(output_tiles(hwc(ranked))) == 49
    grid = img[: (img.shape[0] // PS) * PS, : cols * PS]
    wanted_tiles = [
        np.ascontiguousarray(
            grid[(i // cols) * PS : (i // cols + 1) * PS, (i % cols) * PS : (i % cols + 1) * PS]
        )
        for i in want
    ]
    assert [t.tobytes() for t in output_tiles(hwc(ranked))] == [t.tobytes() for t in wanted_tiles]
    assert lookup == {t.tobytes() for t in wanted_tiles}
    array_path = patch_select_array(
        np.ascontiguousarray(img), 224, PS, 0, odd_tile=odd_tile, shuffle=False
    )
    assert np.array_equal(array_path, hwc(ranked))
    # shuffled: the same patches, from either path, the batch one too
    shuffled = patch_select(chw(np.ascontiguousarray(img)), 224, PS, seed=5, odd_tile=odd_tile)
    kept = sorted(t.tobytes() for t in output_tiles(hwc(shuffled)))
    assert kept == sorted(t.tobytes() for t in wanted_tiles)
    array_shuffled = patch_select_array(np.ascontiguousarray(img), 224, PS, 5, odd_tile=odd_tile)
    assert np.array_equal(array_shuffled, hwc(shuffled))


def test_ties_image_really_puts_the_cut_offs_inside_ties() -> None:
    """The fixture is what it claims: at both cut-offs two patches tie under the float64
    rule while their float32 entropies differ (so float32 alone could pick either)."""
    from nsnet_plugin.patch_entropy import exact_entropy, fast_entropy, planes
    from nsnet_plugin.patch_selection import to_patches

    patches = to_patches(chw(ties_image())[None], PS)[0]
    exact = exact_entropy(patches).numpy()
    fast = fast_entropy(planes(patches)).mean(-1).numpy()
    ascending = np.lexsort((np.arange(144), exact))
    for a, b in ((23, 24), (144 - 26, 144 - 25)):  # low cut 24, high cut 25
        i, j = ascending[a], ascending[b]
        assert exact[i] == exact[j] and fast[i] != fast[j]
    assert (exact == 0).sum() == 3


def test_float32_entropy_error_is_far_below_the_tolerance() -> None:
    """The documented margin: float32 entropies within 5e-6 bits of float64 on every patch
    of the photos (measured ~1e-6), a twentieth of the 1e-4 tolerance that triggers the
    float64 re-ranking."""
    from nsnet_plugin.patch_entropy import TOLERANCE, exact_entropy, fast_entropy, planes
    from nsnet_plugin.patch_selection import to_patches

    worst = 0.0
    for img in [*PHOTOS.values(), ties_image()]:
        patches = to_patches(chw(np.ascontiguousarray(img))[None], PS)[0]
        for reading in ("luma", "rgb-mean"):
            fast = fast_entropy(planes(patches, reading)).mean(-1).double()
            worst = max(worst, float((fast - exact_entropy(patches, reading)).abs().max()))
    assert worst < TOLERANCE / 20, worst


def rgb_mean_reference(img: np.ndarray) -> list[float]:
    """Per patch, the mean over R, G, B of each channel's spectral entropy (numpy, float64)."""
    rows, cols = img.shape[0] // PS, img.shape[1] // PS
    out = []
    for r in range(rows):
        for c in range(cols):
            patch = img[r * PS : (r + 1) * PS, c * PS : (c + 1) * PS].astype(np.float64)
            values = []
            for ch in range(3):
                power = np.abs(np.fft.fft2(patch[..., ch])) ** 2
                p = power[power > 0] / power.sum() if power.sum() else np.zeros(0)
                values.append(float(-(p * np.log2(p)).sum()))
            out.append(sum(values) / 3)
    return out


def test_rgb_mean_reading_against_a_per_channel_loop_and_against_luma() -> None:
    """rgb-mean keeps the patches a per-channel numpy loop ranks highest/lowest; on a grey
    image it agrees with luma (entropy ignores scale, and every channel is the luma), on
    a colour photo it keeps other patches."""
    img = np.ascontiguousarray(PHOTOS["coffee"][: 8 * PS, : 12 * PS])
    ent = rgb_mean_reference(img)
    order = sorted(range(len(ent)), key=lambda i: (round(ent[i], 6), i))
    out = patch_select(chw(img), 224, PS, seed=0, entropy_input="rgb-mean")
    assert sorted(selected_indices(img, out)) == sorted(order[:24] + order[-25:])
    luma = patch_select(chw(img), 224, PS, seed=0)
    assert set(selected_indices(img, luma)) != set(selected_indices(img, out))

    grey = np.repeat(PHOTOS["camera"][: 8 * PS, : 12 * PS, :1], 3, axis=2)
    a = patch_select(chw(grey), 224, PS, seed=0)
    b = patch_select(chw(grey), 224, PS, seed=0, entropy_input="rgb-mean")
    assert sorted(selected_indices(grey, a)) == sorted(selected_indices(grey, b))


def test_shuffle_permutations_are_hash_based_and_batched() -> None:
    from nsnet_plugin.patch_selection import shuffle_perms

    perms = shuffle_perms([0, 1, 2**63 - 1, 0], 49)
    assert perms.shape == (4, 49)
    assert all(sorted(p.tolist()) == list(range(49)) for p in perms)
    assert torch.equal(perms[0], perms[3]) and not torch.equal(perms[0], perms[1])
    assert torch.equal(shuffle_perms([1], 49)[0], perms[1])  # one image = its row of a batch


def test_evaluation_seeds_agree_between_the_pil_tensor_and_batch_paths() -> None:
    imgs = [np.ascontiguousarray(PHOTOS[n][:320, :352]) for n in ("coffee", "rocket")]
    t = PatchSelect()
    pil = [np.asarray(t(Image.fromarray(x), train=False, seed=i)) for i, x in enumerate(imgs)]
    tensor = [hwc(t(chw(x), train=False, seed=9)) for x in imgs]
    batch = patch_select_batch(
        torch.stack([chw(x) for x in imgs]), seeds=[5, 6], content_seeds=True
    )
    for k in range(2):
        assert np.array_equal(pil[k], tensor[k]) and np.array_equal(pil[k], hwc(batch[k]))
