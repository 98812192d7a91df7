"""LaDeDa: the NPR input, the 9 x 9 receptive field, patch pooling, size and pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from baselines.ladeda_net import LaDeDaNet, npr_residual, receptive_field
from bench.errors import BenchError
from bench.interfaces import RunContext
from bench.options import merge_options
from bench.plugins import get_registry

REGISTRY = get_registry(refresh=True)


def build(preset: str | None = None, **overrides):
    entry = REGISTRY.get("detector", "ladeda")
    presets = [entry.presets[preset]] if preset else []
    return entry.load()(merge_options("ladeda", entry.specs, *presets, overrides))


def test_npr_residual_is_each_pixel_minus_its_2x2_cells_top_left():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 6, 7)))
    expected = x.numpy().copy()
    for i in range(6):
        for j in range(7):
            expected[..., i, j] -= x.numpy()[..., 2 * (i // 2), 2 * (j // 2)]
    np.testing.assert_allclose(npr_residual(x).numpy(), expected, atol=0)
    even = x[..., :6]  # NPR's own definition, x - up(down(x)), where it is defined
    down_up = F.interpolate(F.interpolate(even, scale_factor=0.5, mode="nearest"), scale_factor=2.0)
    torch.testing.assert_close(npr_residual(even), even - down_up, rtol=0, atol=0)


@pytest.mark.parametrize(("receptive", "kernel3"), [(5, (1, 0, 0, 0)), (9, (1, 1, 0, 0))])
def test_each_output_sees_exactly_one_receptive_field_window(receptive, kernel3):
    """The gradient of output (i, j) is non-zero exactly on the q x q window at (8i, 8j)."""
    assert receptive_field(kernel3) == receptive
    assert receptive_field((1, 1, 1, 0)) == 17 and receptive_field((1, 1, 1, 1)) == 33
    torch.manual_seed(0)
    net = LaDeDaNet(receptive, preprocess="raw").eval()
    x = torch.randn(1, 3, 40, 40, requires_grad=True)
    features = net.patch_features(x)
    i, j = 1, 2
    features[0, :, i, j].sum().backward()
    rows, cols = np.nonzero(x.grad.abs().sum(dim=1)[0].numpy())
    assert (rows.min(), rows.max()) == (8 * i, 8 * i + receptive - 1)
    assert (cols.min(), cols.max()) == (8 * j, 8 * j + receptive - 1)


def test_the_image_score_is_the_mean_of_the_patch_scores():
    torch.manual_seed(0)
    net = LaDeDaNet().eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        patches = net.patch_logits(x)
        assert patches.shape == (2, 1, 5, 5)
        torch.testing.assert_close(net(x), patches.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


def test_parameter_count_of_ladeda9_follows_the_resnet50_layout():
    """Stem (1x1 3->64, 3x3 64->64, BN 64) + bottlenecks (1x1, kxk, 1x1, 3 BNs, projection
    shortcut in each stage's first block) + Linear(2048, 1): 13,641,793 at any input size,
    as the AIGIBench authors' LaDeDa9 (their definition instantiated separately)."""

    def bottleneck(inplanes: int, planes: int, k: int, shortcut: bool) -> int:
        out = 4 * planes
        convs = inplanes * planes + planes * planes * k * k + planes * out
        bns = 2 * (planes + planes + out)
        return convs + bns + ((inplanes * out + 2 * out) if shortcut else 0)

    total = 3 * 64 + 64 * 64 * 9 + 2 * 64
    inplanes = 64
    for planes, blocks, k in [(64, 3, 3), (128, 4, 3), (256, 6, 1), (512, 3, 1)]:
        total += bottleneck(inplanes, planes, k, True)
        total += (blocks - 1) * bottleneck(4 * planes, planes, 1, False)
        inplanes = 4 * planes
    total += 2048 + 1
    assert total == 13_641_793
    assert sum(p.numel() for p in LaDeDaNet().parameters()) == total


def test_pipeline_squashes_to_256_crops_224_and_tests_uncropped():
    from PIL import Image

    det = build()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 3), np.uint8))
    train = det.transforms(True)
    assert [type(s).__name__ for s in train.steps] == [
        "ResizeSquare",
        "RandomCrop",
        "HorizontalFlip",
        "ToTensor",
    ]
    assert train(image, train=True, seed=1).shape == (3, 224, 224)
    assert det.transforms(False)(image, train=False, seed=0).shape == (3, 256, 256)
    cropped = build(eval_crop=200)
    assert cropped.transforms(False)(image, train=False, seed=0).shape == (3, 200, 200)


def test_only_the_stem_batchnorm_is_slow_and_the_demo_speeds_it_up():
    """LaDeDa's stem BatchNorm keeps running statistics with momentum 0.001 (the others 0.1);
    the demo's 50 steps would leave them at 5 % of the data's, so its preset uses 0.1."""
    net = LaDeDaNet()
    slow = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.momentum != 0.1]
    assert slow == [net.bn1] and net.bn1.momentum == 0.001
    det = build("demo")
    det.setup(RunContext(log=lambda m: None))
    assert det.net.bn1.momentum == 0.1


def test_bad_options_are_refused_before_any_work():
    with pytest.raises(BenchError, match="ladeda.receptive_field must be one of 5, 9, 17, 33"):
        build(receptive_field=7)
    with pytest.raises(BenchError, match="ladeda.preprocess must be one of"):
        build(preprocess="dct")


def test_patchselect_replaces_the_resize_and_the_crop():
    if "patchselect" not in REGISTRY.names("addon"):
        pytest.skip("patchselect addon not registered")
    from PIL import Image

    entry = REGISTRY.get("addon", "patchselect")
    det = build()
    entry.load()(entry.options()).attach(det)
    for train in (True, False):
        names = " ".join(det.transforms(train).describe())
        assert "ResizeSquare" not in names and "Crop" not in names and "PatchSelect" in names
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 280, 3), np.uint8))
    assert det.transforms(False)(image, train=False, seed=0).shape == (3, 224, 224)
