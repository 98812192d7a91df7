"""Issue 17 (mutation testing): Patch Selection's entropy functions and geometry, pinned.

Expected values come from numpy (``np.fft.fft2``, ``np.pad(mode="symmetric")``), from
closed forms (an impulse has a flat spectrum: log₂ N² bits; a pure cosine: 1 bit) or by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nsnet_plugin.patch_entropy import (
    exact_entropy,
    fast_entropy,
    planes,
    spectral_entropy,
    to_gray,
)
from nsnet_plugin.patch_geometry import (
    check_sizes,
    fit_small,
    from_tiles,
    split_counts,
    to_patches,
)


def numpy_entropy(plane: np.ndarray) -> float:
    power = np.abs(np.fft.fft2(plane.astype(np.float64))) ** 2
    if power.sum() == 0:
        return 0.0
    p = power[power > 0] / power.sum()
    return float(-(p * np.log2(p)).sum())


def test_spectral_entropy_closed_forms():
    n = 8
    impulse = torch.zeros(n, n, dtype=torch.float64)
    impulse[2, 5] = 3.0
    xx = torch.arange(n, dtype=torch.float64)
    cosine = torch.cos(2 * torch.pi * xx / n).expand(n, n)  # two bins of equal power
    batch = torch.stack([impulse, cosine, torch.zeros(n, n), torch.full((n, n), 4.0)])
    got = spectral_entropy(batch)
    assert got.dtype == torch.float64 and got.shape == (4,)
    assert got.tolist() == pytest.approx([6.0, 1.0, 0.0, 0.0], abs=1e-12)  # 0 power: 0, not NaN


def test_spectral_entropy_rounds_to_1e9_bits_unless_told_not_to():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 6))
    reference = [numpy_entropy(p) for p in x]
    raw = spectral_entropy(torch.from_numpy(x), decimals=None).tolist()
    assert raw == pytest.approx(reference, abs=1e-12)
    assert any(abs(v * 1e9 - round(v * 1e9)) > 1e-3 for v in raw)  # not on the 1e-9 grid
    rounded = spectral_entropy(torch.from_numpy(x)).tolist()
    assert rounded == pytest.approx([round(v, 9) for v in reference], abs=1e-13)


def test_to_gray_is_bt601_luma_and_refuses_two_channels():
    rgb = torch.tensor([[[[10.0]], [[20.0]], [[40.0]]]])  # (1, 3, 1, 1)
    assert to_gray(rgb)[0, 0, 0].item() == pytest.approx(0.299 * 10 + 0.587 * 20 + 0.114 * 40)
    assert to_gray(rgb).dtype == torch.float64
    assert to_gray(torch.full((1, 1, 2, 2), 7, dtype=torch.uint8)).tolist() == [[[7.0] * 2] * 2]
    with pytest.raises(ValueError, match=r"^patch selection needs 1 or 3 channels, got 2$"):
        to_gray(torch.zeros(1, 2, 4, 4))


def test_exact_entropy_luma_and_rgb_mean_against_numpy():
    rng = np.random.default_rng(1)
    busy = rng.integers(0, 256, size=(4, 3, 8, 8)).astype(np.uint8)
    busy[1, 2] = 9  # one flat channel (entropy 0) inside a busy patch
    flat = np.zeros((2, 3, 8, 8), np.uint8)
    flat[1] = np.asarray([5, 100, 200], np.uint8)[:, None, None]  # flat colour: 0 too
    patches = torch.from_numpy(np.concatenate([flat[:1], busy, flat[1:]]))
    luma = [numpy_entropy(np.tensordot([0.299, 0.587, 0.114], p, axes=1)) for p in busy]
    rgb = [np.mean([numpy_entropy(ch) for ch in p]) for p in busy]
    assert exact_entropy(patches).tolist() == pytest.approx([0.0, *luma, 0.0], abs=1e-8)
    got = exact_entropy(patches, "rgb-mean")
    assert got.tolist() == pytest.approx([0.0, *rgb, 0.0], abs=1e-8)
    assert got[1:5].tolist() == pytest.approx([round(v, 9) for v in rgb], abs=1e-12)
    grey = patches[:, :1]
    expected = [numpy_entropy(p[0]) for p in grey.numpy()]
    assert exact_entropy(grey, "rgb-mean").tolist() == pytest.approx(expected, abs=1e-8)
    assert exact_entropy(torch.from_numpy(flat)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"^entropy_input must be one of \('luma', 'rgb-mean'\)"):
        exact_entropy(patches, "grey")


def test_planes_give_float32_luma_or_the_channels():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).reshape(2, 3, 2, 2)
    luma = planes(x)
    assert luma.shape == (2, 1, 2, 2) and luma.dtype == torch.float32
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(luma[:, 0], expected.float())
    both = planes(x, "rgb-mean")
    assert both.dtype == torch.float32 and torch.equal(both, x.float())
    assert torch.equal(planes(x[:, :1]), x[:, :1].float())
    with pytest.raises(ValueError, match=r"^patch selection needs 1 or 3 channels, got 2$"):
        planes(x[:, :2])
    with pytest.raises(ValueError, match=r"^entropy_input must be one of"):
        planes(x, "grey")


@pytest.mark.parametrize("n", [5, 6, 7, 8])
def test_fast_entropy_matches_numpy_for_odd_and_even_sides(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(0, 255, size=(5, n, n)).astype(np.float32)
    x[0] = 0.0  # zero power: 0 bits
    x[1] = 0.0
    x[1, 1, 2] = 50.0  # an impulse: log2(n²)
    got = fast_entropy(torch.from_numpy(x))
    assert got.dtype == torch.float32 and got.shape == (5,)
    expected = [numpy_entropy(p) for p in x]
    assert expected[1] == pytest.approx(2 * np.log2(n))
    assert got.tolist() == pytest.approx(expected, abs=2e-5)


@pytest.mark.parametrize("n", [5, 8])
def test_fast_entropy_reads_an_image_grid_in_place(n):
    rng = np.random.default_rng(10 + n)
    image = rng.uniform(0, 255, size=(2 * n, 3 * n)).astype(np.float32)  # 2 x 3 patches
    grid = torch.from_numpy(image).reshape(2, n, 3, n)
    got = fast_entropy(grid, dims=(1, 3))
    assert got.shape == (2, 3)
    expected = [
        [numpy_entropy(image[r * n : (r + 1) * n, c * n : (c + 1) * n]) for c in range(3)]
        for r in range(2)
    ]
    assert np.allclose(got.numpy(), expected, atol=2e-5)
    for bad in [(3, 1), (0, 2), (1, 1)]:
        message = rf"^dims must be \(a, last\) with a < last, got \({bad[0]}, {bad[1]}\)$"
        with pytest.raises(ValueError, match=message):
            fast_entropy(grid, dims=bad)


def test_sizes_and_split_counts():
    assert check_sizes(224, 32) == 49
    assert check_sizes(64, 16) == 16
    for out, patch in [(0, 32), (224, 0), (-32, 32), (224, -32)]:
        with pytest.raises(
            ValueError, match=rf"^out_size and patch_size must be positive, got {out}, {patch}$"
        ):
            check_sizes(out, patch)
    with pytest.raises(ValueError, match=r"^out_size 100 is not a multiple of patch_size 32$"):
        check_sizes(100, 32)
    assert split_counts(49) == (25, 24) and split_counts(49, "low") == (24, 25)
    assert split_counts(16, "high") == (8, 8) == split_counts(16, "low")
    assert split_counts(1, "high") == (1, 0) and split_counts(1, "low") == (0, 1)
    with pytest.raises(ValueError, match=r"^odd_tile must be one of \('low', 'high'\), got 'mid'$"):
        split_counts(49, "mid")  # type: ignore[arg-type]


def test_reflect_is_numpy_symmetric_padding_several_times_over():
    img = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(1, 2, 3, 5)  # (B, C, 3, 5)
    got = fit_small(torch.from_numpy(img), 16, 4, "reflect")
    assert got.shape == (1, 2, 16, 16) and got.dtype == torch.uint8
    expected = np.pad(img, ((0, 0), (0, 0), (0, 13), (0, 11)), mode="symmetric")
    assert np.array_equal(got.numpy(), expected)
    wide = torch.from_numpy(np.arange(3 * 20, dtype=np.int16).reshape(1, 1, 3, 20))
    got = fit_small(wide, 16, 4, "reflect")  # the long side is kept whole, not cut to 16
    expected = np.pad(wide.numpy(), ((0, 0), (0, 0), (0, 13), (0, 0)), mode="symmetric")
    assert np.array_equal(got.numpy(), expected)


def test_small_image_policies_refuse_and_pass_through():
    enough = torch.zeros(1, 3, 64, 70)
    assert fit_small(enough, 64, 32, "error") is enough
    with pytest.raises(ValueError, match=r"^empty image \(0 x 5\)$"):
        fit_small(torch.zeros(1, 3, 0, 5), 64, 32, "reflect")
    with pytest.raises(ValueError, match=r"^empty image \(5 x 0\)$"):
        fit_small(torch.zeros(1, 3, 5, 0), 64, 32, "resize")
    message = (
        r"^image of 65 x 40 px has 2 whole 32-px patches; 4 are needed \(small_image='error'\)$"
    )
    with pytest.raises(ValueError, match=message):
        fit_small(torch.zeros(1, 3, 40, 65), 64, 32, "error")
    with pytest.raises(
        ValueError,
        match=r"^small_image must be one of \('reflect', 'resize', 'error'\), got 'pad'$",
    ):
        fit_small(enough, 64, 32, "pad")  # type: ignore[arg-type]


def test_resize_takes_the_smallest_upscale_on_a_one_percent_grid():
    # 16 x 16 -> 4 tiles of 32: the area bound sqrt(4 · 32² / 16²) = 4 is enough: 64 x 64
    rng = np.random.default_rng(2)
    small = torch.from_numpy(rng.integers(0, 256, size=(1, 3, 16, 16)).astype(np.uint8))
    got = fit_small(small, 64, 32, "resize")
    assert got.shape == (1, 3, 64, 64) and got.dtype == torch.uint8
    up = F.interpolate(small.double(), size=(64, 64), mode="bicubic", align_corners=False)
    assert up.min() < -0.5 and up.max() > 255.5  # bicubic overshoots: clamped, not wrapped
    expected = np.clip(np.round(up.numpy()), 0, 255)
    assert np.abs(got.numpy().astype(np.float64) - expected).max() <= 1  # float32 vs float64
    assert np.mean(got.numpy() == expected) > 0.99
    floats = fit_small(small.float() / 255, 64, 32, "resize")
    assert floats.dtype == torch.float32 and floats.shape == (1, 3, 64, 64)
    # 20 x 40, tiles of 16, 4 needed: from s0 = sqrt(4 · 256 / 800) = 1.1314, s0 · 1.01^33
    # gives 31.4 x 62.8 -> 31 x 63 (1 x 3 patches), s0 · 1.01^34 = 1.5868 gives 32 x 63
    tall = torch.zeros(1, 1, 20, 40, dtype=torch.float64)
    assert fit_small(tall, 32, 16, "resize").shape == (1, 1, 32, 63)
    assert fit_small(tall, 32, 16, "resize").dtype == torch.float64
    # a side under the patch: 8 x 100 with 32-px tiles, 4 needed: the side bound 32 / 8 = 4
    # wins over the area bound sqrt(4096 / 800) = 2.26: 32 x 400
    assert fit_small(torch.zeros(1, 1, 8, 100), 64, 32, "resize").shape == (1, 1, 32, 400)


def test_patches_are_cut_and_tiled_row_major():
    img = torch.arange(6 * 9).reshape(1, 1, 6, 9)  # 3 x 4 patches of 2, one column cropped
    patches = to_patches(img, 2)
    assert patches.shape == (1, 12, 1, 2, 2)
    assert patches[0, 5, 0].tolist() == [[20, 21], [29, 30]]  # row 1, column 1
    assert patches[0, 11, 0].tolist() == [[42, 43], [51, 52]]
    tiles = patches[:, [0, 3, 8, 11]]
    assert from_tiles(tiles)[0, 0].tolist() == [
        [0, 1, 6, 7],
        [9, 10, 15, 16],
        [36, 37, 42, 43],
        [45, 46, 51, 52],
    ]


def test_low_power_float_patches_are_normalised_by_their_own_total():
    # pixel values in [0, 1] can give a total power under 1: p must still sum to 1
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 0.01, size=(3, 4, 4))
    expected = [numpy_entropy(p) for p in x]
    assert sum(float((np.abs(np.fft.fft2(p)) ** 2).sum()) < 1 for p in x) == 3
    assert spectral_entropy(torch.from_numpy(x)).tolist() == pytest.approx(expected, abs=1e-9)
    fast = fast_entropy(torch.from_numpy(x).float())
    assert fast.tolist() == pytest.approx(expected, abs=2e-5)
    assert fast_entropy(torch.from_numpy(x)).dtype == torch.float32  # float64 in, float32 out


def test_float32_input_is_still_ranked_in_float64():
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 255, size=(40, 8, 8)).astype(np.float32)
    expected = [round(numpy_entropy(p), 9) for p in x]
    assert spectral_entropy(torch.from_numpy(x)).tolist() == pytest.approx(expected, abs=1e-12)


def test_rgb_mean_rounds_the_mean_not_each_channel():
    rng = np.random.default_rng(9)
    patches = rng.integers(0, 256, size=(120, 3, 4, 4)).astype(np.uint8)
    means = [np.mean([numpy_entropy(ch) for ch in p]) for p in patches]
    got = exact_entropy(torch.from_numpy(patches), "rgb-mean").tolist()
    assert got == pytest.approx([round(v, 9) for v in means], abs=1e-12)


def test_grey_planes_are_the_pixels_bit_for_bit():
    x = torch.from_numpy(np.random.default_rng(10).uniform(0, 1, size=(4, 1, 6, 6)))
    assert torch.equal(planes(x), x.float())


def test_one_pixel_patches_and_the_pass_through_bound():
    assert check_sizes(4, 1) == 16 and check_sizes(1, 1) == 1
    with pytest.raises(ValueError, match=r"^dims must be"):
        fast_entropy(torch.zeros(2, 4, 4), dims=(-1, -1))
    # 48 x 96 has 1 x 3 whole 32-px patches (1.5 x 3 by area): too few, rows mirrored to 64
    assert fit_small(torch.zeros(1, 1, 48, 96), 64, 32, "reflect").shape == (1, 1, 64, 96)
    assert fit_small(torch.zeros(1, 1, 96, 48), 64, 32, "reflect").shape == (1, 1, 96, 64)


def test_resize_counts_whole_patches_while_it_grows():
    # 32 x 72, 9 tiles of 16: at s = 1 it has 2 x 4.5 patches by length but 2 x 4 whole ones;
    # 1.01^9 gives 35 x 79 (2 x 4), 1.01^10 gives 35 x 80 (2 x 5 = 10): 35 x 80
    assert fit_small(torch.zeros(1, 1, 32, 72), 48, 16, "resize").shape == (1, 1, 35, 80)
