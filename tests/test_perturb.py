"""Perturbations: each does what it says (checked by hand), seeded per image, cache-keyed.

Expected values are computed independently of the code under test: a 2x2 block mean for
box down-scaling, every second pixel for nearest, the second moment of a blurred impulse
for the Gaussian's sigma, the spread of noise on a flat image, PIL's own encoder for JPEG.
"""

from __future__ import annotations

import io
import types

import numpy as np
import pytest
from PIL import Image

from bench import plugins
from bench.errors import BenchError
from bench.interfaces import Perturbation, RunContext, TransformChain
from bench.options import merge_options
from bench.perturb import (
    PerturbedChain,
    parse_perturb_flags,
    perturb_from_config,
    perturb_image,
    resolve_sweep,
)
from bench.plugins import get_registry, hookimpl

REGISTRY = get_registry(refresh=True)


def sweep_item(name: str, **options):
    return resolve_sweep(REGISTRY, {name: options}).items[0]


def texture(seed: int = 0, size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = rng.normal(128, 40, (size[1] // 4, size[0] // 4, 3)).repeat(4, 0).repeat(4, 1)
    noisy = smooth + rng.normal(0, 20, smooth.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


# ------------------------------------------------------------------ each perturbation


def test_jpeg_is_pils_encoder_at_that_quality_and_degrades_with_it():
    image = texture()
    item = sweep_item("jpeg")
    for quality in (95, 50, 30):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)  # PIL's defaults: 4:2:0
        expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        out = perturb_image(item, quality, image)
        assert out.mode == "RGB" and out.size == image.size
        assert np.array_equal(np.asarray(out), expected)
    errors = [
        np.abs(pixels(perturb_image(item, q, image)) - pixels(image)).mean()
        for q in (95, 75, 50, 30)
    ]
    assert errors == sorted(errors) and errors[0] > 0  # lower quality, larger error
    full = sweep_item("jpeg", subsampling="4:4:4")
    assert not np.array_equal(
        np.asarray(perturb_image(full, 50, image)), np.asarray(perturb_image(item, 50, image))
    )


def test_resize_box_is_the_block_mean_and_nearest_takes_every_second_pixel():
    image = texture(size=(64, 48))
    array = pixels(image)
    box = perturb_image(sweep_item("resize", filter="box"), 0.5, image)
    assert box.size == (32, 24)
    block_mean = array.reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
    error = np.abs(pixels(box) - block_mean)  # PIL's fixed-point sums round by up to 1
    assert error.max() <= 1.0
    nearest = perturb_image(sweep_item("resize", filter="nearest"), 0.5, image)
    assert np.array_equal(np.asarray(nearest), np.asarray(image)[1::2, 1::2])
    quarter = perturb_image(sweep_item("resize"), 0.25, image)
    assert quarter.size == (16, 12)
    restored = perturb_image(sweep_item("resize", restore=True), 0.25, image)
    assert restored.size == image.size and not np.array_equal(
        np.asarray(restored), np.asarray(image)
    )


def test_blur_sigma_is_the_spread_of_a_blurred_step():
    """A blurred step's first difference is the Gaussian kernel: its variance is sigma²."""
    step = np.zeros((9, 80, 3), dtype=np.uint8)
    step[:, 40:] = 255
    for sigma in (1.0, 2.0, 3.0):
        out = pixels(perturb_image(sweep_item("blur"), sigma, Image.fromarray(step)))
        kernel = np.diff(out[4, :, 0])  # the kernel x 255, each value off by rounding only
        x = np.arange(kernel.size) - 39  # the kernel's centre sits between pixels 39 and 40
        assert kernel.sum() == 255
        variance = (x**2 * kernel).sum() / kernel.sum()
        assert abs(variance - sigma**2) < 0.05 * sigma**2 + 0.05
    same = perturb_image(sweep_item("blur"), 0.0, Image.fromarray(step))
    assert np.array_equal(np.asarray(same), step)  # sigma 0 is the identity


def test_noise_has_the_stated_spread_and_is_seeded_by_the_image_itself():
    flat = Image.fromarray(np.full((128, 128, 3), 128, dtype=np.uint8))
    item = sweep_item("noise")
    out = perturb_image(item, 0.05, flat)
    diff = pixels(out) - 128
    assert abs(diff.std() - 0.05 * 255) < 0.03 * 0.05 * 255 and abs(diff.mean()) < 0.2
    assert np.array_equal(np.asarray(perturb_image(item, 0.05, flat)), np.asarray(out))
    other = Image.fromarray(np.full((128, 128, 3), 129, dtype=np.uint8))
    other_diff = pixels(perturb_image(item, 0.05, other)) - 129
    assert np.abs(diff - other_diff).mean() > 5  # another image, other noise
    weaker = pixels(perturb_image(item, 0.01, flat)) - 128
    assert abs(weaker.std() - 0.01 * 255) < 0.1 * 0.01 * 255


@pytest.mark.parametrize("name", REGISTRY.names("perturbation"))
def test_contract_every_perturbation_at_its_default_levels(name: str):
    """Declared levels; RGB in, RGB out; deterministic; the input left untouched."""
    entry = REGISTRY.get("perturbation", name)
    cls = entry.load()
    assert issubclass(cls, Perturbation) and cls.stronger in ("higher", "lower")
    assert entry.specs["levels"].doc and entry.summary
    item = sweep_item(name)
    image = texture(3)
    before = np.asarray(image).copy()
    for level in item.levels:
        out = perturb_image(item, level, image)
        assert out.mode == "RGB"
        assert np.array_equal(np.asarray(perturb_image(item, level, image)), np.asarray(out))
        assert out.size != image.size or not np.array_equal(np.asarray(out), before)
    assert np.array_equal(np.asarray(image), before)
    mild, strong = item.levels[0], item.levels[-1]  # sorted from mild to strong
    assert (mild > strong) == (cls.stronger == "lower")


# ------------------------------------------------------------------ naming and checking


def test_flags_and_config_tables_name_levels_and_options():
    assert parse_perturb_flags(["jpeg=95,50", "blur"]) == {"jpeg": {"levels": "95,50"}, "blur": {}}
    sweep = resolve_sweep(REGISTRY, parse_perturb_flags(["jpeg=50,95", "blur"]))
    assert [(i.name, i.levels) for i in sweep.items] == [
        ("jpeg", [95, 50]),
        ("blur", [1.0, 2.0, 3.0]),
    ]
    cfg = perturb_from_config(
        {"resize": {"levels": [0.5], "filter": "bicubic"}, "noise": [0.02]}, "x"
    )
    sweep = resolve_sweep(REGISTRY, cfg)
    assert sweep.items[0].options["filter"] == "bicubic" and sweep.items[1].levels == [0.02]


@pytest.mark.parametrize(
    ("perturb", "options", "message"),
    [
        ({"jpeg": {"levels": "101"}}, {}, "option jpeg.levels must be ≤ 100, got 101"),
        ({"jpeg": {"levels": "50.5"}}, {}, "option jpeg.levels must be an integer, got 50.5"),
        ({"jpg": {}}, {}, "unknown perturbation 'jpg'; did you mean 'jpeg'?"),
        ({"resize": {"levels": ""}}, {}, "--perturb resize: give at least one level"),
        ({"resize": {"levels": "0.5,0.50"}}, {}, "--perturb resize: level 0.5 is listed twice"),
        ({"resize": {}}, {"resize": {"filter": "cubic"}}, "did you mean 'bicubic'?"),
        ({"noise": {"levels": "0"}}, {}, "option noise.levels must be > 0, got 0"),
    ],
)
def test_bad_names_levels_and_options_are_one_line_errors(perturb, options, message):
    with pytest.raises(BenchError) as err:
        resolve_sweep(REGISTRY, perturb, options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_flag_given_twice_is_refused():
    with pytest.raises(BenchError, match="given twice"):
        parse_perturb_flags(["jpeg=50", "jpeg=30"])


# ------------------------------------------------------------------ chains and caches


class Record:
    """A seed-dependent step: remembers the seed and returns the image as an array."""

    role = "augment"

    def __init__(self):
        self.seeds = []

    def __call__(self, image, *, train, seed):
        self.seeds.append(seed)
        return np.asarray(image)

    def __repr__(self):
        return "Record()"


def test_perturbed_chain_changes_pixels_keeps_the_inner_seeds_and_names_itself():
    clean_step, perturbed_step = Record(), Record()
    clean = TransformChain([clean_step])
    perturbed = PerturbedChain(sweep_item("jpeg"), 30, TransformChain([perturbed_step]))
    image = texture(5)
    a = clean(image, train=False, seed=77)
    b = perturbed(image, train=False, seed=77)
    assert clean_step.seeds == perturbed_step.seeds  # the clean pass's seeds, unchanged
    assert np.abs(a.astype(float) - b).mean() > 1.0  # the pixels really changed
    other = PerturbedChain(sweep_item("jpeg"), 50, clean)
    names = {tuple(clean.describe()), tuple(perturbed.describe()), tuple(other.describe())}
    assert len(names) == 3 and perturbed.describe()[0].startswith("Perturb(jpeg=30, Jpeg(")


def test_frozen_feature_cache_keys_on_the_perturbation(tmp_path, tiny_tree, monkeypatch):
    """Cached features of the clean chain are never served for a perturbed one, or back."""
    import torch

    from baselines.feature_cache import cached_features, image_digests
    from bench.builtin.transforms import CenterCrop, ToTensor
    from bench.data.layouts import read_dataset

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = read_dataset(str(tiny_tree), split="val")[:6]
    digests = image_digests(samples)
    clean = TransformChain([CenterCrop(64), ToTensor()])
    ctx = RunContext(device="cpu", workers=0)
    calls = []

    def encode(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return images.flatten(1)[:, :32]

    def features(chain):
        feats, found, computed = cached_features(
            samples,
            digests,
            chain,
            encode,
            key={"k": 1},
            train=False,
            view=0,
            batch_size=4,
            ctx=ctx,
        )
        assert bool(found.all())
        return feats, computed

    clean_feats, computed = features(clean)
    assert computed == 6
    assert features(clean)[1] == 0  # served from the cache
    noisy, computed = features(PerturbedChain(sweep_item("noise"), 0.05, clean))
    assert computed == 6 and not torch.equal(noisy, clean_feats)
    assert features(PerturbedChain(sweep_item("noise"), 0.05, clean))[1] == 0
    assert features(PerturbedChain(sweep_item("noise"), 0.01, clean))[1] == 6  # another level


# ------------------------------------------------------------------ outside plugins


class Invert(Perturbation):
    level_name = "share inverted"

    def apply(self, image, level, rng):
        array = np.asarray(image).astype(np.float64)
        return Image.fromarray(
            np.rint(array * (1 - level) + (255 - array) * level).astype(np.uint8)
        )


@pytest.fixture
def invert_plugin():
    """simonw/llm style: an outside plugin registers a perturbation, unregistered after."""
    module = types.ModuleType("fixture_invert_plugin")
    module.Invert = Invert

    @hookimpl
    def register_components(register):
        register(
            "perturbation",
            "invert",
            "tests.test_perturb:Invert",
            options={"levels": {"default": [0.5, 1.0], "min": 0, "max": 1, "doc": "a test"}},
            summary="Blend with the negative (a test plugin)",
        )

    module.register_components = register_components
    plugins.pm.register(module, name="fixture-invert")
    plugins.reset()
    yield plugins.get_registry()
    plugins.pm.unregister(name="fixture-invert")
    plugins.reset()


def test_an_outside_plugin_adds_a_perturbation(invert_plugin):
    from bench.cli import main

    assert "invert" in invert_plugin.names("perturbation")
    item = resolve_sweep(invert_plugin, {"invert": {"levels": [1.0]}}).items[0]
    image = texture(2)
    assert np.array_equal(np.asarray(perturb_image(item, 1.0, image)), 255 - np.asarray(image))
    assert merge_options("invert", invert_plugin.get("perturbation", "invert").specs)["levels"] == [
        0.5,
        1.0,
    ]
    assert main(["list", "perturbations"]) == 0
