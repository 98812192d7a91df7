"""Issue 17 (mutation testing): AIDE's patch scores, windows and views beyond the defaults.

References are written here from AIDE's ``data/dct.py`` definition with scipy's DCT
(``_score``), numpy's edge padding and torch's own ``F.interpolate``; the module is only
the thing under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.fft import dctn
from torch.nn import functional as F

from baselines.aide_patches import (
    AideViews,
    band_masks,
    dct_matrix,
    empty_bands,
    patch_scores,
    select_patches,
    srm_filters,
    srm_residuals,
    windows,
)
from bench.interfaces import IMAGENET_MEAN, IMAGENET_STD

# tiny tensors: one torch thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _score(patch: np.ndarray, bands: int) -> float:
    n = patch.shape[-1]
    spectrum = np.log1p(np.abs(dctn(patch, type=2, norm="ortho", axes=(-2, -1))))
    diagonal = np.add.outer(np.arange(n), np.arange(n))  # u + v
    total = 0.0
    for b in range(bands):
        band = (diagonal >= 2 * n * b / bands) & (diagonal <= 2 * n * (b + 1) / bands)
        total += 2**b * spectrum[:, band].sum() / band.sum()
    return total


def _tiles(image: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
    c, h, w = image.shape
    if h < size or w < size:
        image = np.pad(image, ((0, 0), (0, max(0, size - h)), (0, max(0, size - w))), mode="edge")
        h, w = image.shape[-2:]
    return [
        image[:, top : top + size, left : left + size]
        for top in range(0, h - size + 1, stride)
        for left in range(0, w - size + 1, stride)
    ]


def _picks(image: np.ndarray, size: int, stride: int, bands: int) -> np.ndarray:
    tiles = _tiles(image, size, stride)
    order = np.argsort([_score(t, bands) for t in tiles], kind="stable")
    second = min(1, len(order) - 1)
    return np.stack([tiles[i] for i in (order[0], order[-1], order[second], order[-1 - second])])


@pytest.mark.parametrize(("n", "bands"), [(16, 4), (8, 6), (12, 3)])
def test_scores_at_other_window_sizes_and_band_counts(n, bands):
    patches = np.random.default_rng(n).random((3, 2, n, n))
    ours = patch_scores(torch.from_numpy(patches), bands).numpy()
    np.testing.assert_allclose(ours, [_score(p, bands) for p in patches], rtol=1e-6)
    assert patch_scores(torch.from_numpy(patches), bands).dtype == torch.float64
    masks = band_masks(n, bands).numpy()
    assert masks.shape == (bands, n, n)
    u, v = np.indices((n, n))
    for b in range(bands):
        inside = (u + v >= 2 * n * b / bands) & (u + v <= 2 * n * (b + 1) / bands)
        np.testing.assert_array_equal(masks[b], inside.astype(np.float32))
    assert dct_matrix(n).dtype == torch.float32


@pytest.mark.parametrize(
    ("shape", "count"), [((3, 20, 47), 1), ((3, 47, 20), 1), ((3, 20, 20), 1), ((3, 32, 40), 1)]
)
def test_one_side_short_pads_only_that_side_by_repeating_its_border(shape, count):
    image = np.random.default_rng(1).random(shape)
    tiles = windows(torch.from_numpy(image))
    expected = _tiles(image, 32, 16)
    assert len(expected) == count and tiles.shape == (count, 3, 32, 32)
    np.testing.assert_array_equal(tiles.numpy(), np.stack(expected))


def test_a_single_window_is_all_four_picks():
    image = torch.rand(3, 32, 40)
    picks = select_patches(image)
    assert picks.shape == (4, 3, 32, 32)
    for k in range(4):
        assert torch.equal(picks[k], image[:, :, :32])


def test_two_windows_are_lowest_highest_then_the_other_way_round():
    image = torch.rand(3, 32, 48)
    image[:, :, 32:] = 0.5  # the second window is the flatter one
    low, high = image[:, :, 16:48], image[:, :, :32]
    picks = select_patches(image)
    for k, expected in enumerate((low, high, high, low)):
        assert torch.equal(picks[k], expected), k


def test_default_bands_are_six():
    assert torch.equal(band_masks(12), band_masks(12, 6))
    patches = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(patch_scores(patches), patch_scores(patches, 6))
    np.testing.assert_allclose(
        patch_scores(patches).numpy(), [_score(p, 6) for p in patches.numpy()], rtol=1e-6
    )


def test_many_tied_windows_keep_their_order():
    """40 windows whose channels differ only in sign: |DCT| and so the scores tie exactly.
    torch's unstable CPU sort reorders ties from about 32 elements on; the stable one keeps
    the window order, so the picks are windows 0, 39, 1 and 38."""
    p = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    variants = [
        p * torch.tensor([(-1.0) ** (v >> c & 1) for c in range(3)]).view(3, 1, 1) for v in range(8)
    ]
    image = torch.cat([variants[i % 8] for i in range(40)], dim=2)
    picks = select_patches(image, size=8, stride=8)
    for k, window in enumerate((0, 39, 1, 38)):
        assert torch.equal(picks[k], variants[window % 8]), k


def _exactly_empty(n: int, bands: int) -> list[int]:
    """Bands b with no integer u + v in [0, 2n − 2] between 2n·b/bands and 2n·(b+1)/bands."""
    from fractions import Fraction

    return [
        b
        for b in range(bands)
        if not any(
            Fraction(2 * n * b, bands) <= t <= Fraction(2 * n * (b + 1), bands)
            for t in range(2 * n - 1)
        )
    ]


def test_settings_that_leave_a_band_without_frequencies_are_refused():
    """A band with no frequency makes every score 0/0 (NaN): the picks would be arbitrary."""
    for n in (2, 4, 5, 6, 7, 12, 32):
        for bands in (1, 6, 12, 32, 33, 64):
            assert empty_bands(n, bands) == _exactly_empty(n, bands), (n, bands)
    assert empty_bands(5, 6) == [5] and empty_bands(6, 6) == [] and empty_bands(32, 33) != []
    message = (
        "^6 DCT bands leave band 5 of a 4 x 4 window without a frequency \\(its score would be "
        "0/0\\): use fewer bands or a larger window$"
    )
    with pytest.raises(ValueError, match=message):
        AideViews(window=4)
    with pytest.raises(ValueError, match="^64 DCT bands leave band 63 of a 32 x 32 window"):
        AideViews(bands=64)
    assert AideViews(window=6).window == 6


def test_ties_keep_the_window_order():
    """Windows P, −P, Q, −Q: |DCT| is the same for a patch and its negative, so the scores
    tie in pairs; the stable order gives P lowest, −Q highest, −P and Q the runners-up."""
    rng = np.random.default_rng(2)
    p = rng.random((3, 8, 8)) * 0.01
    q = rng.random((3, 8, 8))
    image = torch.from_numpy(np.concatenate([p, -p, q, -q], axis=2))
    picks = select_patches(image, size=8, stride=8)
    expected = torch.from_numpy(np.stack([p, -q, -p, q]))
    assert torch.equal(picks, expected)


def test_views_with_other_settings_and_antialias():
    array = np.random.default_rng(3).integers(0, 255, (40, 56, 3), np.uint8)
    pixels = array.transpose(2, 0, 1).astype(np.float32) / 255
    picks = torch.from_numpy(_picks(pixels.astype(np.float64), 16, 8, 4)).float()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for antialias in (True, False):
        views = AideViews(24, window=16, stride=8, bands=4, antialias=antialias)(
            Image.fromarray(array), train=True, seed=0
        )
        assert views.shape == (5, 3, 24, 24)
        enlarged = F.interpolate(picks, size=(24, 24), mode="bilinear", align_corners=False)
        torch.testing.assert_close(views[:4], (enlarged - mean) / std)
        whole = F.interpolate(
            torch.from_numpy(pixels)[None], size=(24, 24), mode="bilinear", antialias=antialias
        )
        torch.testing.assert_close(views[4:], (whole - mean) / std)
    plain = F.interpolate(torch.from_numpy(pixels)[None], size=(24, 24), mode="bilinear")
    smooth = F.interpolate(
        torch.from_numpy(pixels)[None], size=(24, 24), mode="bilinear", antialias=True
    )
    assert not torch.allclose(plain, smooth, atol=1e-3)  # the setting shows
    grey = Image.fromarray(array[..., 0])  # any mode is converted to RGB first
    assert AideViews(24, 16, 8, 4)(grey, train=False, seed=0).shape == (5, 3, 24, 24)


def test_views_defaults_and_repr():
    views = AideViews()
    assert repr(views) == (
        "AideViews(view_size=256, window=32, stride=16, bands=6, antialias=False)"
    )
    assert views.role == "tensor"
    assert repr(AideViews(64, 16, 4, 3, True)) == (
        "AideViews(view_size=64, window=16, stride=4, bands=3, antialias=True)"
    )


def test_srm_residuals_take_a_given_bank():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    weight = torch.zeros(1, 2, 5, 5)
    weight[0, 0, 2, 2], weight[0, 1, 2, 3] = 1.0, -1.0  # R minus G one to the right
    shifted = torch.zeros_like(x[:, 1])
    shifted[..., :-1] = x[:, 1, :, 1:]
    torch.testing.assert_close(srm_residuals(x, weight)[:, 0], x[:, 0] - shifted)
    assert srm_residuals(x).shape == (1, 30, 6, 6) and srm_residuals(x).dtype == torch.float64
    assert srm_filters().dtype == torch.float32
