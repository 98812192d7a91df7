"""Issue 17 (mutation testing): `explain_patch_select`, checked against numpy by hand.

The kept patches of a small image whose patches have well separated spectral entropies
are recomputed here (numpy FFT, BT.601 luma or the mean of the channels' entropies) for
each setting of the step, and the tiles of the shown output are matched to the outlined
patches pixel for pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.errors import BenchError
from nsnet_plugin.patch_explain import explain_patch_select
from nsnet_plugin.patch_selection import PatchSelect

N = 16  # patch side
OUT = 48  # 3 x 3 = 9 tiles: an odd count, so odd_tile matters
ROWS, COLS = 4, 5  # the test image: 64 x 80 pixels, 20 patches


def striped_noise() -> np.ndarray:
    """(64, 80, 3) uint8: patch k carries noise of its own amplitude in channel k % 3 only."""
    rng = np.random.default_rng(7)
    amplitude = 3 + 5 * rng.permutation(ROWS * COLS)  # 3 .. 98, all different
    image = np.full((ROWS * N, COLS * N, 3), 128.0)
    for k in range(ROWS * COLS):
        r, c = divmod(k, COLS)
        noise = rng.uniform(-1, 1, (N, N)) * amplitude[k]
        image[r * N : (r + 1) * N, c * N : (c + 1) * N, k % 3] += noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def entropy(grey: np.ndarray) -> float:
    power = np.abs(np.fft.fft2(grey.astype(np.float64))) ** 2
    p = power / power.sum()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def expected_boxes(array: np.ndarray, n_high: int, n_low: int, how: str) -> set[tuple]:
    """{(left, top, right, bottom, group)} of the kept patches, by numpy."""
    scores = {}
    for r in range(array.shape[0] // N):
        for c in range(array.shape[1] // N):
            patch = array[r * N : (r + 1) * N, c * N : (c + 1) * N].astype(np.float64)
            if how == "luma":
                scores[(c * N, r * N)] = entropy(patch @ np.array([0.299, 0.587, 0.114]))
            else:  # rgb-mean: the mean of the three channels' entropies
                scores[(c * N, r * N)] = np.mean([entropy(patch[:, :, i]) for i in range(3)])
    ranked = sorted(scores, key=scores.get)
    groups = {xy: "lowest" for xy in ranked[:n_low]}
    groups.update({xy: "highest" for xy in ranked[len(ranked) - n_high :]})
    return {(x, y, x + N, y + N, g) for (x, y), g in groups.items()}


def tiles_of(shown: dict, output: np.ndarray) -> list[str]:
    """The group of each output tile (row-major), found by matching its pixels to a box."""
    grown = np.asarray(shown["input"])
    by_pixels = {grown[y0:y1, x0:x1].tobytes(): g for x0, y0, x1, y1, g in shown["boxes"]}
    side = OUT // N
    tiles = [
        output[r * N : (r + 1) * N, c * N : (c + 1) * N] for r in range(side) for c in range(side)
    ]
    return [by_pixels[t.tobytes()] for t in tiles]


def test_the_test_image_tells_the_entropy_inputs_and_odd_tiles_apart():
    array = striped_noise()
    assert expected_boxes(array, 5, 4, "luma") != expected_boxes(array, 5, 4, "rgb-mean")
    assert {b[:4] for b in expected_boxes(array, 5, 4, "luma")} != {
        b[:4] for b in expected_boxes(array, 4, 5, "luma")
    }


@pytest.mark.parametrize(
    ("odd_tile", "entropy_input", "shuffle", "counts"),
    [
        ("high", "luma", True, (5, 4)),
        ("low", "luma", False, (4, 5)),
        ("high", "rgb-mean", False, (5, 4)),
    ],
)
def test_the_kept_patches_and_the_summary_follow_the_steps_settings(
    odd_tile, entropy_input, shuffle, counts
):
    array = striped_noise()
    image = Image.fromarray(array)
    step = PatchSelect(OUT, N, odd_tile=odd_tile, shuffle=shuffle, entropy_input=entropy_input)
    shown = explain_patch_select(step, image)  # defaults: evaluation, seed 0
    n_high, n_low = counts
    assert set(shown["boxes"]) == expected_boxes(array, n_high, n_low, entropy_input)
    assert len(shown["boxes"]) == 9
    assert shown["tile_size"] == 16
    assert shown["summary"] == (
        f"{n_high} highest + {n_low} lowest spectral-entropy patches of 20 (16 px), "
        "tiled to 48 px" + (", shuffled" if shuffle else "")
    )
    assert np.array_equal(np.asarray(shown["input"]), array)  # big enough: not padded
    output = np.asarray(shown["output"])
    assert np.array_equal(output, np.asarray(step(image, train=False, seed=0)))
    assert tiles_of(shown, output) == shown["tiles"]
    if not shuffle:  # tiled in rank order: the highest group first
        assert shown["tiles"] == ["highest"] * n_high + ["lowest"] * n_low


def test_training_and_seeds_reach_the_selection_and_the_output():
    image = Image.fromarray(striped_noise())
    step = PatchSelect(OUT, N, shuffle=True)
    orders = set()
    for train, seed in ((True, 3), (True, 11)):
        shown = explain_patch_select(step, image, train=train, seed=seed)
        output = np.asarray(shown["output"])
        assert np.array_equal(output, np.asarray(step(image, train=train, seed=seed)))
        assert tiles_of(shown, output) == shown["tiles"]
        orders.add(output.tobytes())
    # the defaults are evaluation with seed 0; training's seed 0 shuffles differently
    default = np.asarray(explain_patch_select(step, image)["output"])
    assert np.array_equal(default, np.asarray(step(image, train=False, seed=0)))
    trained = explain_patch_select(step, image, train=True)
    assert np.array_equal(
        np.asarray(trained["output"]), np.asarray(step(image, train=True, seed=0))
    )
    orders |= {default.tobytes(), np.asarray(trained["output"]).tobytes()}
    assert len(orders) == 4  # four different shuffles: each setting was used


def test_grey_and_rgba_images_keep_or_get_their_mode():
    array = striped_noise()
    grey = Image.fromarray(array[:, :, 1])  # mode "L"
    shown = explain_patch_select(PatchSelect(OUT, N), grey)
    assert shown["input"].mode == "L" and shown["output"].mode == "L"
    assert np.array_equal(np.asarray(shown["input"]), array[:, :, 1])
    assert tiles_of(shown, np.asarray(shown["output"])) == shown["tiles"]

    rgba = Image.fromarray(np.dstack([array, np.full(array.shape[:2], 99, np.uint8)]))
    shown = explain_patch_select(PatchSelect(OUT, N), rgba)
    assert shown["input"].mode == "RGB"
    assert np.array_equal(np.asarray(shown["input"]), array)  # alpha dropped


def test_a_small_image_is_mirror_padded_or_refused_in_one_line():
    array = striped_noise()[:40, :40]  # 2 x 2 whole patches: fewer than the 9 tiles
    shown = explain_patch_select(PatchSelect(OUT, N), Image.fromarray(array))
    grown = np.asarray(shown["input"])
    assert grown.shape == (48, 48, 3)
    assert np.array_equal(grown[:40, :40], array)
    assert np.array_equal(grown[40:48, :40], array[39:31:-1])  # mirrored, edge repeated
    assert shown["summary"].startswith("5 highest + 4 lowest spectral-entropy patches of 9 ")
    refused = r"^patch_select: image of 40 x 40 px has 4 whole 16-px patches; 9 are needed"
    with pytest.raises(BenchError, match=refused):
        explain_patch_select(PatchSelect(OUT, N, small_image="error"), Image.fromarray(array))


def test_a_small_image_is_shown_resized_when_the_step_resizes():
    array = striped_noise()[:40, :40]
    step = PatchSelect(OUT, N, small_image="resize")
    shown = explain_patch_select(step, Image.fromarray(array))
    grown = np.asarray(shown["input"])
    assert grown.shape == (48, 48, 3)
    assert not np.array_equal(grown[:40, :40], array)  # resampled, not padded
    output = np.asarray(shown["output"])
    assert np.array_equal(output, np.asarray(step(Image.fromarray(array), train=False, seed=0)))
    assert tiles_of(shown, output) == shown["tiles"]  # the boxes are on the resized image
