"""CNN-Spot: the network and its weights, the blur + JPEG augmentation, the addons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from bench.interfaces import RunContext
from bench.options import merge_options
from bench.plugins import get_registry

REGISTRY = get_registry(refresh=True)


def build(preset: str | None = None, **overrides):
    entry = REGISTRY.get("detector", "cnnspot")
    presets = [entry.presets[preset]] if preset else []
    return entry.load()(merge_options("cnnspot", entry.specs, *presets, overrides))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()[100:260, 150:310])  # a real photograph, 160 px


def test_network_is_resnet50_with_one_logit_and_loads_imagenet_weights_but_the_head(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import resnet50

    torch.manual_seed(1)
    imagenet = resnet50().state_dict()
    save_file({k: v.contiguous() for k, v in imagenet.items()}, str(tmp_path / "r50.safetensors"))
    torch.manual_seed(0)
    det = build(pretrained=str(tmp_path / "r50.safetensors"))
    det.setup(RunContext(log=lambda m: None))
    own = det.net.state_dict()
    for key, value in imagenet.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert det.net.fc.weight.shape == (1, 2048)
    assert det.net.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)  # N(0, 0.02)
    # ResNet-50 with Linear(2048, 1): 25,557,032 - 2048 * 1000 - 1000 + 2048 + 1
    assert sum(p.numel() for p in det.net.parameters()) == 23_510_081
    facts = det.describe()
    assert facts["random_weights"] is False and "r50.safetensors" in facts["backbone"]


def test_demo_says_its_weights_are_random():
    det = build("demo")
    det.setup(RunContext(log=lambda m: None))
    facts = det.describe()
    assert facts["random_weights"] is True and "random" in facts["weights"]
    assert det.input_size == 64


def test_missing_weights_offline_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(BenchError) as info:
        build().setup(RunContext(log=lambda m: None))
    message = str(info.value)
    assert "\n" not in message and "resnet50/torchvision:IMAGENET1K_V1" in message
    assert "--opt cnnspot.pretrained=" in message


def _blur_jpeg(chain):
    return next(step for step in chain.steps if type(step).__name__ == "BlurJpeg")


def test_blur_is_cnndetections_gaussian_and_jpeg_is_a_real_recompression(photo):
    """Blur: scipy's gaussian_filter per channel, as CNNDetection; JPEG: an 8x8-block codec."""
    import cv2
    from scipy.ndimage import gaussian_filter

    from baselines.augment import BlurJpeg

    array = np.asarray(photo)
    blurred = np.asarray(
        BlurJpeg(blur_p=1.0, sigma=(2.0, 2.0), jpeg_p=0.0)(photo, train=True, seed=0)
    ).astype(float)
    reference = np.stack([gaussian_filter(array[..., c].astype(float), 2.0) for c in range(3)], -1)
    inner = (slice(10, -10), slice(10, -10))  # away from the borders (padding modes differ)
    assert np.abs(blurred[inner] - reference[inner]).max() <= 2.0
    assert np.abs(blurred - array).mean() > 2.0
    jpeg = np.asarray(BlurJpeg(blur_p=0.0, jpeg_p=1.0, quality=(40, 40))(photo, train=True, seed=0))
    ok, code = cv2.imencode(".jpg", array[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert ok
    np.testing.assert_array_equal(jpeg, cv2.imdecode(code, cv2.IMREAD_COLOR)[..., ::-1])


def test_train_chain_blurs_and_compresses_half_of_the_images(photo):
    chain = build().transforms(True)
    names = [type(s).__name__ for s in chain.steps]
    assert names == ["ResizeShorter", "BlurJpeg", "RandomCrop", "HorizontalFlip", "ToTensor"]
    step = _blur_jpeg(chain)
    assert (step.blur_p, step.sigma, step.jpeg_p, step.quality) == (0.5, (0.0, 3.0), 0.5, (30, 100))
    array = np.asarray(photo)
    changed = sum(
        not np.array_equal(np.asarray(step(photo, train=True, seed=s)), array) for s in range(100)
    )
    # Independent draws, as CNNDetection's: P(unchanged) = P(no JPEG) · P(no visible blur)
    # = 0.5 · (1 - 0.5 · P(σ > 2/7)) with σ ~ U[0, 3]: 72.6 of 100 change (sd 4.5); if
    # blur and JPEG were drawn together only the 50 compressed ones would.
    assert 60 <= changed <= 85
    assert np.array_equal(np.asarray(step(photo, train=False, seed=0)), array)
    assert chain(photo, train=True, seed=3).shape == (3, 224, 224)  # 160 -> 256 -> crop 224


def test_evaluation_is_a_centre_crop_without_resizing(photo):
    chain = build().transforms(False)
    assert [type(s).__name__ for s in chain.steps] == ["CenterCrop", "ToTensor"]
    big = Image.fromarray(np.tile(np.asarray(photo), (2, 2, 1)))  # 320 px: cropped, not shrunk
    out = chain(big, train=False, seed=0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    pixels = torch.from_numpy(np.asarray(big)[48:272, 48:272].copy()).permute(2, 0, 1) / 255
    torch.testing.assert_close(out, (pixels - mean) / std)


def test_addons_patchselect_replaces_the_crop_and_nullspace_is_refused(photo):
    cls = REGISTRY.get("detector", "cnnspot").load()
    if "nullspace" in REGISTRY.names("addon"):
        with pytest.raises(BenchError, match="does not provide"):
            REGISTRY.get("addon", "nullspace").load().check_compatible("nullspace", "cnnspot", cls)
    if "patchselect" not in REGISTRY.names("addon"):
        pytest.skip("patchselect addon not registered")
    entry = REGISTRY.get("addon", "patchselect")
    det = build()
    entry.load()(entry.options()).attach(det)
    for train in (True, False):
        names = " ".join(det.transforms(train).describe())
        assert "Crop" not in names and "ResizeShorter" not in names and "PatchSelect" in names
    big = Image.fromarray(np.tile(np.asarray(photo), (2, 2, 1)))
    assert det.transforms(True)(big, train=True, seed=0).shape == (3, 224, 224)
