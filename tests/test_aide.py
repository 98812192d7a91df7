"""AIDE: DCT patch scores and the SRM bank against formulas; views, network, addons, weights."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.fft import dct, dctn

from baselines.aide_patches import (
    AideViews,
    dct_matrix,
    patch_scores,
    select_patches,
    srm_filters,
    srm_residuals,
    windows,
)
from bench.errors import BenchError
from bench.interfaces import IMAGENET_MEAN, IMAGENET_STD, Addon, RunContext
from bench.options import merge_options
from bench.plugins import get_registry

REGISTRY = get_registry(refresh=True)


def build(preset: str | None = "demo", **overrides):
    entry = REGISTRY.get("detector", "aide")
    presets = [entry.presets[preset]] if preset else []
    return entry.load()(merge_options("aide", entry.specs, *presets, overrides))


def reference_score(patch: np.ndarray, bands: int = 6) -> float:
    """AIDE's patch score from its definition, with scipy's orthonormal DCT-II."""
    n = patch.shape[-1]
    spectrum = np.log1p(np.abs(dctn(patch, type=2, norm="ortho", axes=(-2, -1))))
    total = 0.0
    for b in range(bands):
        lo, hi = 2 * n * b / bands, 2 * n * (b + 1) / bands
        band = [(u, v) for u in range(n) for v in range(n) if lo <= u + v <= hi]
        energy = sum(spectrum[:, u, v].sum() for u, v in band)
        total += 2**b * energy / len(band)
    return total


@pytest.fixture(scope="module")
def demo_aide():
    torch.manual_seed(0)
    det = build()
    det.setup(RunContext(log=lambda m: None))
    return det


def test_dct_matrix_is_scipys_orthonormal_dct_ii():
    x = np.random.default_rng(0).normal(size=(32, 5))
    np.testing.assert_allclose(
        dct_matrix(32).double().numpy() @ x, dct(x, norm="ortho", axis=0), atol=1e-6
    )


def test_patch_scores_match_the_formula():
    rng = np.random.default_rng(1)
    patches = rng.random((5, 3, 32, 32))
    patches[1] = 0.5  # flat: only the DC term
    patches[2] = np.indices((32, 32)).sum(0) % 2  # checkerboard: the highest frequencies
    ours = patch_scores(torch.from_numpy(patches).float()).numpy()
    np.testing.assert_allclose(ours, [reference_score(p) for p in patches], rtol=1e-5)
    assert ours.argmin() == 1 and ours.argmax() == 2


def test_selection_is_lowest_highest_then_the_runners_up():
    rng = np.random.default_rng(2)
    image = rng.random((3, 80, 64)) * 0.1  # faint noise everywhere
    image[:, 0:32, 0:32] = 0.3  # a flat window
    image[:, 48:80, 32:64] = rng.random((3, 32, 32))  # a busy one
    tensor = torch.from_numpy(image).float()
    tiles = [
        image[:, top : top + 32, left : left + 32]
        for top in range(0, 80 - 31, 16)
        for left in range(0, 64 - 31, 16)
    ]
    np.testing.assert_array_equal(windows(tensor).numpy(), np.stack(tiles).astype(np.float32))
    order = np.argsort([reference_score(t) for t in tiles], kind="stable")
    expected = np.stack([tiles[order[0]], tiles[order[-1]], tiles[order[1]], tiles[order[-2]]])
    np.testing.assert_allclose(select_patches(tensor).numpy(), expected, atol=1e-7)
    assert np.allclose(expected[0], 0.3) and order[-1] == len(tiles) - 1


def test_small_images_are_padded_to_one_window():
    tiles = windows(torch.rand(3, 20, 50))
    assert tiles.shape == (2, 3, 32, 32)
    assert torch.equal(tiles[0, :, 25:, :], tiles[0, :, 19:20, :].expand(-1, 7, -1))


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[i, j] = x[i + dy, j + dx], zero outside (the conv's zero padding)."""
    out = np.zeros_like(x)
    h, w = x.shape[-2:]
    src = x[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    out[..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)] = src
    return out


def test_srm_bank_matches_the_residual_formulas():
    """Each output channel is a residual of R + G + B written out here from its definition."""
    bank = srm_filters()
    assert bank.shape == (30, 5, 5)
    assert torch.allclose(bank.sum(dim=(1, 2)), torch.zeros(30), atol=1e-6)  # high-pass
    x = np.random.default_rng(3).normal(size=(1, 3, 12, 12))
    high = srm_residuals(torch.from_numpy(x))
    s = x[0].sum(0)  # every filter is applied to each channel and summed
    raster = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    clockwise = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    expected = [_shift(s, dy, dx) - s for dy, dx in raster]
    expected += [(_shift(s, dy, dx) + _shift(s, -dy, -dx) - 2 * s) / 2 for dy, dx in raster[:4]]
    expected += [
        (-_shift(s, 2 * dy, 2 * dx) + 3 * _shift(s, dy, dx) - 3 * s + _shift(s, -dy, -dx)) / 3
        for dy, dx in clockwise
    ]
    kv3 = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]], float)
    kv5 = np.array(
        [
            [-1, 2, -2, 2, -1],
            [2, -6, 8, -6, 2],
            [-2, 8, -12, 8, -2],
            [2, -6, 8, -6, 2],
            [-1, 2, -2, 2, -1],
        ],
        float,
    )
    for kernel, norm in ((kv3, 4), (kv5, 12)):
        c = kernel.shape[0] // 2
        rows, cols = np.indices(kernel.shape)
        for keep in (rows <= c, cols >= c, rows >= c, cols <= c):  # top, right, bottom, left
            expected.append(ndimage.correlate(s, kernel * keep / norm, mode="constant"))
    expected += [ndimage.correlate(s, kv3 / 4, mode="constant")]
    expected += [ndimage.correlate(s, kv5 / 12, mode="constant")]
    np.testing.assert_allclose(high[0].numpy(), np.stack(expected), atol=1e-6)  # float32 bank


def test_views_are_the_selected_patches_and_the_whole_image():
    from PIL import Image

    rng = np.random.default_rng(4)
    array = rng.integers(0, 255, (70, 90, 3), np.uint8)
    views = AideViews(view_size=64)(Image.fromarray(array), train=False, seed=0)
    assert views.shape == (5, 3, 64, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    picks = select_patches(pixels)
    for k in range(4):
        enlarged = torch.nn.functional.interpolate(picks[k : k + 1], size=(64, 64), mode="bilinear")
        torch.testing.assert_close(views[k], (enlarged[0] - mean) / std)
    whole = torch.nn.functional.interpolate(pixels[None], size=(64, 64), mode="bilinear")
    torch.testing.assert_close(views[4], (whole[0] - mean) / std)


def test_semantic_feature_is_aides_pooled_convnext_map(demo_aide):
    """AIDE: head.global_pool = head.flatten = Identity, trunk(x), then average pooling."""
    trunk = copy.deepcopy(demo_aide.semantic.trunk).eval()
    trunk.head.global_pool = torch.nn.Identity()
    trunk.head.flatten = torch.nn.Identity()
    views = torch.randn(2, 5, 3, 32, 32)
    demo_aide.train_mode(False)
    tokens = views[:, 4]
    inet_mean, inet_std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    clip_mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    clip_std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    with torch.no_grad():
        official = trunk(tokens * (inet_std / clip_std) + (inet_mean - clip_mean) / clip_std)
        torch.testing.assert_close(
            demo_aide.semantic_feature(views), official.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5
        )


def test_gradients_reach_the_patch_experts_and_head_but_not_the_frozen_parts(demo_aide):
    batch = {"image": torch.randn(4, 5, 3, 32, 32), "label": torch.tensor([0.0, 1.0, 0.0, 1.0])}
    demo_aide.net.zero_grad(set_to_none=True)
    demo_aide.train_mode(True)
    assert demo_aide.semantic.training  # AIDE's model.train() reaches the ConvNeXt too
    demo_aide.training_step(batch).backward()
    demo_aide.train_mode(False)
    assert not demo_aide.semantic.training
    net = demo_aide.net
    for part in (net.model_min, net.model_max, net.fc):
        assert all(p.grad is not None for p in part.parameters())
    assert all(p.grad is None for p in net.convnext_proj.parameters())  # AIDE: under no_grad
    assert not any(p.requires_grad for p in demo_aide.semantic.parameters())
    assert set(demo_aide.trainable_state()) == set(net.state_dict())


def test_network_size_at_the_paper_setting():
    """Trainable parameters with the 3072-d ConvNeXt-XXL feature: two ResNet-50s with a
    30-channel 7x7 stem and no classifier, Linear(3072, 256), Linear(2304, 1024), Linear(1024, 2)."""
    from torchvision.models import resnet50

    from baselines.aide_net import AideNet

    resnet = sum(p.numel() for p in resnet50().parameters())  # 25,557,032
    per_expert = resnet - 64 * 3 * 49 + 64 * 30 * 49 - (2048 * 1000 + 1000)
    expected = 2 * per_expert + (3072 * 256 + 256) + (2304 * 1024 + 1024) + (1024 * 2 + 2)
    assert expected == 50_334_466
    assert sum(p.numel() for p in AideNet(3072).parameters()) == expected


def test_addons_are_refused_in_one_line():
    aide = REGISTRY.get("detector", "aide").load()
    for name in ("patchselect", "nullspace"):
        if name not in REGISTRY.names("addon"):
            continue
        with pytest.raises(BenchError) as info:
            REGISTRY.get("addon", name).load().check_compatible(name, "aide", aide)
        assert "\n" not in str(info.value)

    class Geometry(Addon):
        hook = "transform"

    with pytest.raises(BenchError, match="cannot give up"):
        Geometry.check_compatible("x", "aide", aide)


def test_missing_convnext_weights_offline_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    det = build(preset=None)
    start = time.perf_counter()
    with pytest.raises(BenchError) as info:
        det.setup(RunContext(log=lambda m: None))
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message and "convnext_xxlarge/laion2b_s34b_b82k_augreg_soup" in message
    assert "--opt aide.convnext_pretrained=" in message


def test_resnet_weights_file_loads_into_both_experts_but_not_their_stems(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import resnet50

    torch.manual_seed(1)
    reference = resnet50().state_dict()
    save_file({k: v.contiguous() for k, v in reference.items()}, str(tmp_path / "r50.safetensors"))
    torch.manual_seed(0)
    det = build(resnet_pretrained=str(tmp_path / "r50.safetensors"))
    det.setup(RunContext(log=lambda m: None))
    for expert in (det.net.model_min, det.net.model_max):
        own = expert.state_dict()
        assert torch.equal(own["layer3.2.conv2.weight"], reference["layer3.2.conv2.weight"])
        assert own["conv1.weight"].shape == (64, 30, 7, 7)
    assert "r50.safetensors" in det.describe()["patch_resnets"]
