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
    """(highest, lowest) patch indices: 24 highest + 25 lowest for 49 tiles."""
    ent = reference_entropies(img)
    order = sorted(range(len(ent)), key=lambda i: (round(ent[i], 6), i))
    tiles = (out_size // PS) ** 2
    n_high = tiles // 2
    return set(order[len(order) - n_high :]), set(order[: tiles - n_high])


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
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


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
    assert len(high) == 24 and len(low) == 25 and not high & low
    assert sorted(chosen) == sorted(high | low)  # each selected patch exactly once


def test_odd_tile_high_takes_25_highest() -> None:
    img = structured_image(10, 9, seed=2)
    out = patch_select(chw(img), 224, PS, seed=0, odd_tile="high")
    ent = reference_entropies(img)
    order = sorted(range(len(ent)), key=lambda i: (round(ent[i], 6), i))
    assert sorted(selected_indices(img, out)) == sorted(order[:24] + order[-25:])


def test_ties_are_broken_by_patch_index() -> None:
    # 100 flat patches (entropy 0 each, all tied), told apart by their grey level only
    levels = np.arange(1, 101, dtype=np.uint8).reshape(10, 10)
    img = np.repeat(np.repeat(levels, PS, axis=0), PS, axis=1)[:, :, None].repeat(3, axis=2)
    out = patch_select(chw(img), 224, PS, shuffle=False)
    # one total order by (entropy, index): the "highest" are the last 24 indices
    assert selected_indices(img, out) == list(range(99, 75, -1)) + list(range(25))
    zero = np.zeros((320, 320, 3), dtype=np.uint8)  # zero power: entropy 0, no NaN
    assert torch.equal(
        patch_select(chw(zero), 224, PS), torch.zeros(3, 224, 224, dtype=torch.uint8)
    )


def test_shuffle_false_orders_highest_then_lowest() -> None:
    img = structured_image(8, 8, seed=4)
    out = patch_select(chw(img), 224, PS, shuffle=False)
    ent = reference_entropies(img)
    idx = selected_indices(img, out)
    first, rest = [ent[i] for i in idx[:24]], [ent[i] for i in idx[24:]]
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
