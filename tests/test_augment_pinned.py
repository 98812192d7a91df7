"""Issue 17 (mutation testing): the baselines' transform steps (baselines/augment.py), pinned.

Sizes are worked by hand (torchvision's truncation of the long side), pixels come from PIL
and torchvision called directly, RandomMask's cells from ``random.Random`` with the
documented draw order (p, then the ratio, then the cells), and the albumentations steps
are checked by the parameters they were built with.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.augment import (
    BlurJpeg,
    RandomMask,
    ResizeShorter,
    ResizeSquare,
    TorchvisionStep,
    cnndetection_transforms,
)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ------------------------------------------------------------------------ ResizeShorter
@pytest.mark.parametrize(
    ("w", "h", "target"),
    [(10, 7, (5, 4)), (7, 10, (4, 5)), (9, 9, (4, 4)), (3, 2, (6, 4))],
)
def test_shorter_side_to_size_and_the_long_side_truncated(w, h, target):
    """4 * 10 / 7 = 5.71 -> 5 (truncated, as torchvision); 2 -> 4 enlarges 3 -> 6."""
    image = _image(w, h)
    out = ResizeShorter(4)(image, train=True, seed=0)
    assert out.size == target
    expected = image.resize(target, Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_resize_shorter_keeps_an_image_at_size_and_takes_the_filter_by_name():
    image = _image(4, 9)
    assert ResizeShorter(4)(image, train=False, seed=0) is image
    wide = _image(12, 8, seed=1)
    out = ResizeShorter(4, interpolation="nearest")(wide, train=False, seed=0)
    expected = wide.resize((6, 4), Image.Resampling.NEAREST)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
    assert repr(ResizeShorter(256)) == "ResizeShorter(size=256, interpolation='bilinear')"
    assert repr(ResizeShorter("7", "nearest")) == "ResizeShorter(size=7, interpolation='nearest')"


# ------------------------------------------------------------------------ ResizeSquare
def test_resize_square_squashes_both_sides_and_keeps_an_image_at_size():
    image = _image(10, 7)
    out = ResizeSquare(5)(image, train=True, seed=0)
    expected = image.resize((5, 5), Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
    nearest = ResizeSquare(6, interpolation="nearest")(image, train=False, seed=0)
    assert np.array_equal(
        np.asarray(nearest), np.asarray(image.resize((6, 6), Image.Resampling.NEAREST))
    )
    square = _image(5, 5)
    assert ResizeSquare(5)(square, train=True, seed=0) is square
    assert ResizeSquare(5)(_image(5, 6), train=True, seed=0).size == (5, 5)
    assert repr(ResizeSquare(256)) == "ResizeSquare(size=256, interpolation='bilinear')"
    assert repr(ResizeSquare("3", "bicubic")) == "ResizeSquare(size=3, interpolation='bicubic')"


# ------------------------------------------------------------------------------ BlurJpeg
def test_blur_jpeg_builds_its_albumentations_steps_from_its_parameters():
    default = BlurJpeg()
    blur, jpeg = default._blur.transforms[0], default._jpeg.transforms[0]
    assert blur.sigma_limit == (1e-3, 3.0)  # sigma 0 clamped: albumentations divides by it
    assert blur.blur_limit == (0, 0) and blur.p == 0.5  # kernel from sigma
    assert jpeg.quality_range == (30, 100) and jpeg.p == 0.5
    assert repr(default) == (
        "BlurJpeg(blur_p=0.5, sigma=(0.0, 3.0), jpeg_p=0.5, quality=(30, 100), "
        "draws='independent', jpeg='cv2-bgr')"
    )
    step = BlurJpeg(blur_p=0.25, sigma=(0.0005, 0.0002), jpeg_p=0.75, quality=(40.0, 61), kernel=3)
    blur, jpeg = step._blur.transforms[0], step._jpeg.transforms[0]
    assert blur.sigma_limit == (1e-3, 1e-3) and blur.blur_limit == (3, 3) and blur.p == 0.25
    assert jpeg.quality_range == (40, 61) and jpeg.p == 0.75
    assert step.sigma == (0.0005, 0.0002) and step.quality == (40, 61) and step.kernel == 3
    assert repr(step) == (
        "BlurJpeg(blur_p=0.25, sigma=(0.0005, 0.0002), jpeg_p=0.75, quality=(40, 61), "
        "kernel=3, draws='independent', jpeg='cv2-bgr')"
    )
    assert repr(BlurJpeg(blur_p=1, sigma=(1, 2), jpeg_p=0, quality=(50, 60))).startswith(
        "BlurJpeg(blur_p=1.0, sigma=(1.0, 2.0), jpeg_p=0.0, quality=(50, 60), draws="
    )


def test_blur_jpeg_returns_the_image_itself_when_it_cannot_change_it():
    image = _image(16, 16)
    assert BlurJpeg(blur_p=1.0, jpeg_p=1.0)(image, train=False, seed=0) is image
    assert BlurJpeg(blur_p=0.0, jpeg_p=0.0)(image, train=True, seed=0) is image


def test_jpeg_alone_is_cv2s_recompression_of_the_bgr_pixels():
    """With only JPEG on (p 1, quality 35), the output is cv2's round trip in BGR order."""
    import cv2

    pixels = np.asarray(_image(24, 16, seed=2))
    out = BlurJpeg(blur_p=0.0, jpeg_p=1.0, quality=(35, 35))(
        Image.fromarray(pixels), train=True, seed=5
    )
    ok, data = cv2.imencode(".jpg", pixels[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 35])
    assert ok
    expected = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(np.asarray(out), expected)


def test_a_grey_or_rgba_image_is_made_rgb_first():
    import cv2

    grey = np.random.default_rng(6).integers(0, 256, (16, 24), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    ok, data = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 50])
    expected = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    step = BlurJpeg(blur_p=0.0, jpeg_p=1.0, quality=(50, 50))
    out = step(Image.fromarray(grey, mode="L"), train=True, seed=0)
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), expected)


def test_blur_alone_is_a_gaussian_with_sigma_and_nothing_else():
    """Blur only (p 1, sigma 1.5): cv2's Gaussian, kernel 2*round(3.5*sigma)+1 = 11 (PIL's radius)."""
    import cv2

    pixels = np.asarray(_image(32, 24, seed=3))
    out = BlurJpeg(blur_p=1.0, sigma=(1.5, 1.5), jpeg_p=0.0)(
        Image.fromarray(pixels), train=True, seed=9
    )
    expected = cv2.GaussianBlur(pixels, (11, 11), sigmaX=1.5, sigmaY=1.5)
    assert np.abs(np.asarray(out).astype(int) - expected.astype(int)).max() <= 1


def test_blur_and_jpeg_draws_are_seeded_and_not_the_same_draw():
    """p 0.5 each (sigma and quality fixed): over 40 seeds each output is one of the four
    outcomes (none, blur, JPEG, blur then JPEG), all four occur, and a seed repeats its
    image. Were both steps fed one seed, blur and JPEG would always come together."""
    import cv2

    def jpeg(pixels):
        bgr = np.ascontiguousarray(pixels[..., ::-1])
        _, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 30])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]

    image = _image(24, 24, seed=4)
    clean = np.asarray(image)
    blurred = np.asarray(BlurJpeg(1.0, (2.0, 2.0), 0.0)(image, train=True, seed=0))
    outcomes = {"none": clean, "blur": blurred, "jpeg": jpeg(clean), "both": jpeg(blurred)}
    step = BlurJpeg(blur_p=0.5, sigma=(2.0, 2.0), jpeg_p=0.5, quality=(30, 30))
    seen = []
    for seed in range(40):
        out = np.asarray(step(image, train=True, seed=seed))
        assert np.array_equal(out, np.asarray(step(image, train=True, seed=seed)))
        seen += [name for name, pixels in outcomes.items() if np.array_equal(out, pixels)]
    assert len(seen) == 40 and set(seen) == set(outcomes)


# ------------------------------------------------------------------------ TorchvisionStep
def test_torchvision_step_draws_from_the_given_seed_and_restores_the_caller_rng():
    from torchvision import transforms as T

    image = _image(20, 20, seed=5)
    rotate = T.RandomRotation(180.0)
    step = TorchvisionStep(rotate)
    assert step(image, train=False, seed=3) is image
    torch.manual_seed(123)
    out = step(image, train=True, seed=3)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # the caller's stream is untouched
    torch.manual_seed(3)
    expected = rotate(image)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
    assert not np.array_equal(np.asarray(out), np.asarray(image))
    assert repr(step) == f"TorchvisionStep({rotate!r})"


# ------------------------------------------------------------------------------ RandomMask
def _expected_mask(seed, p, ratio, patch, h, w):
    rng = random.Random(seed)
    if rng.random() >= p:
        return None
    rows, cols = h // patch, w // patch
    count = min(int(h * w * rng.uniform(*ratio) / patch**2), rows * cols)
    keep = np.ones((h, w), dtype=bool)
    for cell in rng.sample(range(rows * cols), count) if count else ():
        r, c = divmod(cell, cols)
        keep[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = False
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_random_mask_zeroes_the_documented_grid_cells(seed):
    """3 x 40 x 72 image, 16-pixel cells: a 2 x 4 grid (the ragged border never masked)."""
    x = torch.rand(3, 40, 72) + 0.5
    out = RandomMask(p=0.7, patch=16, ratio=(0.2, 0.9))(x, train=True, seed=seed)
    keep = _expected_mask(seed, 0.7, (0.2, 0.9), 16, 40, 72)
    if keep is None:
        assert out is x
        return
    expected = x * torch.from_numpy(keep)
    assert torch.equal(out, expected)
    assert float(x.min()) >= 0.5  # the input itself is not written to


def test_random_mask_probability_is_a_strict_threshold():
    """The first draw of random.Random(5) is u = 0.6229...: p = u does not mask, p just
    above it does."""
    u = random.Random(5).random()
    x = torch.ones(1, 32, 32)
    assert RandomMask(p=u, ratio=(1.0, 1.0))(x, train=True, seed=5) is x
    masked = RandomMask(p=u + 1e-9, ratio=(1.0, 1.0))(x, train=True, seed=5)
    assert float(masked.sum()) == 0.0  # ratio 1: every cell
    assert RandomMask(p=1.0, ratio=(1.0, 1.0))(x, train=False, seed=5) is x


def test_random_mask_count_is_capped_at_the_grid_and_zero_leaves_the_image():
    x = torch.ones(2, 40, 40)  # 2 x 2 cells of 16; 40*40*1/256 = 6.25 -> 6, capped at 4
    out = RandomMask(p=1.0, patch=16, ratio=(1.0, 1.0))(x, train=True, seed=0)
    assert float(out[:, :32, :32].sum()) == 0.0 and float(out.sum()) == 2 * (1600 - 1024)
    few = RandomMask(p=1.0, patch=16, ratio=(0.1, 0.1))(torch.ones(1, 64, 64), train=True, seed=0)
    assert float((few == 0).sum()) == 256  # 64*64*0.1/256 = 1.6 -> one cell
    assert RandomMask(p=1.0, ratio=(0.0, 0.0))(x, train=True, seed=0) is x


def test_random_mask_defaults_and_repr():
    mask = RandomMask()
    assert (mask.p, mask.patch, mask.ratio) == (0.5, 16, (0.0, 0.75))
    assert repr(mask) == "RandomMask(p=0.5, patch=16, ratio=(0.0, 0.75))"
    assert repr(RandomMask(1, 8.0, (0, 1))) == "RandomMask(p=1.0, patch=8, ratio=(0.0, 1.0))"


# ---------------------------------------------------------------- cnndetection_transforms
def test_cnndetection_chains_for_training_and_evaluation():
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)
    tensor = "ToTensor(mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 1.0))"
    assert cnndetection_transforms(False, {"load_size": 9}, 8, mean, std).describe() == [
        "CenterCrop(size=8)",
        tensor,
    ]
    assert cnndetection_transforms(True, {}, 8, mean, std).describe() == [
        "ResizeShorter(size=256, interpolation='bilinear')",
        "BlurJpeg(blur_p=0.5, sigma=(0.0, 3.0), jpeg_p=0.5, quality=(30, 100), "
        "draws='independent', jpeg='cv2-bgr')",
        "RandomCrop(size=8)",
        "HorizontalFlip(p=0.5)",
        tensor,
    ]
    options = {
        "load_size": 12,
        "blur_p": 0.25,
        "blur_sigma": [1, 2],
        "jpeg_p": 0.75,
        "jpeg_quality": [40, 50],
    }
    described = cnndetection_transforms(True, options, 8, mean, std).describe()
    assert described[:2] == [
        "ResizeShorter(size=12, interpolation='bilinear')",
        "BlurJpeg(blur_p=0.25, sigma=(1.0, 2.0), jpeg_p=0.75, quality=(40, 50), "
        "draws='independent', jpeg='cv2-bgr')",
    ]
    out = cnndetection_transforms(True, options, 8, mean, std)(_image(20, 14), train=True, seed=1)
    assert out.shape == (3, 8, 8)
