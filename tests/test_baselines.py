"""The baselines plugin: SAFE's network and wavelet input, VIB-Net's bottleneck, the feature cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.data.pipeline import make_loader
from bench.errors import BenchError
from bench.interfaces import Addon, RunContext, TrainData
from bench.options import merge_options
from bench.plugins import get_registry

REGISTRY = get_registry(refresh=True)


def build(name: str, preset: str | None = "demo", **overrides):
    entry = REGISTRY.get("detector", name)
    presets = [entry.presets.get(preset, {})] if preset else []
    return entry.load()(merge_options(name, entry.specs, *presets, overrides))


def quiet_ctx(**kw) -> RunContext:
    return RunContext(device="cpu", seed=0, workers=0, log=lambda m: None, **kw)


def train_data(samples, batch_size: int, epochs: int) -> TrainData:
    def factory(s, chain, **kw):
        return make_loader(s, chain, workers=0, seed=0, **kw)

    return TrainData(samples, factory, batch_size=batch_size, epochs=epochs)


# ------------------------------------------------------------------------ registration
def test_plugin_registers_the_three_detectors():
    for name in ("univfd", "safe", "vibnet"):
        entry = REGISTRY.get("detector", name)
        assert entry.origin == "baselines"
        assert "demo" in entry.presets


def test_construction_is_cheap_and_loads_no_weights():
    for name in ("univfd", "vibnet"):
        det = build(name, preset=None)
        assert det.backbone is None and det.head is None
        assert det.options["model"] == "ViT-L-14" and det.options["pretrained"] == "openai"
    assert build("safe", preset=None).net is None


# ------------------------------------------------------------------------ SAFE network
def test_safe_net_layout_and_shapes():
    from torchvision.models import resnet50
    from torchvision.models.resnet import Bottleneck

    from baselines.safe_net import SafeNet

    net = SafeNet()
    assert len(net.layer1) == 3 and len(net.layer2) == 4
    assert all(isinstance(b, Bottleneck) for b in [*net.layer1, *net.layer2])
    assert (net.conv1.kernel_size, net.conv1.stride) == ((3, 3), (2, 2))
    assert (net.fc.in_features, net.fc.out_features) == (512, 2)
    assert not any(name.startswith(("layer3", "layer4")) for name, _ in net.named_modules())
    # Same parameters as torchvision's ResNet-50 stem BN + layer1 + layer2, with a 3x3 stem.
    ref = resnet50(weights=None)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expected = count(ref.bn1) + count(ref.layer1) + count(ref.layer2) + 64 * 3 * 3 * 3
    expected += 512 * 2 + 2
    assert count(net) == expected
    x = torch.rand(2, 3, 64, 64)
    assert net(x).shape == (2, 2)
    assert net.forward_features(x).shape == (2, 512)


# ------------------------------------------------------------------------ wavelet
@pytest.mark.parametrize("shape", [(7, 10), (16, 16), (2, 3, 9, 12)])
def test_dwt2_matches_pywavelets(shape):
    import pywt

    from baselines.wavelet import dwt2

    x = np.random.default_rng(0).random(shape)
    cA, (cH, cV, cD) = pywt.dwt2(x, "bior1.3", mode="symmetric")
    ours = dwt2(torch.from_numpy(x), "bior1.3")
    for band, ref in zip(ours, (cA, cH, cV, cD), strict=True):
        np.testing.assert_allclose(band.numpy(), ref, atol=1e-12)


def test_hh_band_sees_a_checkerboard_and_not_a_ramp():
    from baselines.wavelet import HighFrequencyInput, dwt2

    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    checker = ((i + j) % 2) * 2 - 1
    ll, lh, hl, hh = (b[3:-3, 3:-3] for b in dwt2(checker))  # interior: no edge effects
    assert hh.abs().min() > 0.5
    assert max(ll.abs().max(), lh.abs().max(), hl.abs().max()) < 1e-6
    ramp = j / 31.0  # varies along the width only
    assert dwt2(ramp)[3].abs().max() < 1e-6
    image = ramp.expand(1, 3, 32, 32)
    out = HighFrequencyInput()(image)
    assert out.shape == image.shape and out.abs().max() < 1e-6


# ------------------------------------------------------------------------ SAFE transforms
def test_random_mask_is_seeded_and_masks_grid_cells():
    from baselines.augment import RandomMask

    mask = RandomMask(p=1.0, patch=16, ratio=(0.5, 0.5))
    x = torch.ones(3, 64, 64)
    a, b = mask(x, train=True, seed=3), mask(x, train=True, seed=3)
    assert torch.equal(a, b)
    assert torch.equal(mask(x, train=False, seed=3), x)
    cells = a[0].reshape(4, 16, 4, 16).amin(dim=(1, 3))
    assert int((cells == 0).sum()) == 8  # ⌊64·64·0.5 / 16²⌋ whole cells
    assert float(a.mean()) == pytest.approx(0.5)


def test_safe_schedule_warms_up_then_decays():
    from baselines.safe import warmup_cosine

    assert warmup_cosine(0, 10, 100, 0.0) == 0.0
    assert warmup_cosine(5, 10, 100, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, 0.01) == pytest.approx(0.01)


def test_safe_lr_scales_linearly_with_batch():
    assert build("safe", preset=None).lr() == pytest.approx(5e-3)
    assert build("safe", preset=None, batch_size=32).lr() == pytest.approx(1.25e-3)


def test_safe_refuses_clip_addons():
    from bench.interfaces import Detector

    class NeedsText(Addon):
        hook = "features"
        requires = frozenset({"clip-text"})

    safe_cls = REGISTRY.get("detector", "safe").load()
    with pytest.raises(BenchError, match="does not provide"):
        NeedsText.check_compatible("nullspace", "safe", safe_cls)
    assert issubclass(safe_cls, Detector) and safe_cls.provides == frozenset()
    if "nullspace" in REGISTRY.names("addon"):
        real = REGISTRY.get("addon", "nullspace").load()
        with pytest.raises(BenchError):
            real.check_compatible("nullspace", "safe", safe_cls)


def test_patchselect_replaces_safes_crop():
    if "patchselect" not in REGISTRY.names("addon"):
        pytest.skip("patchselect addon not registered")
    from PIL import Image

    entry = REGISTRY.get("addon", "patchselect")
    det = build("safe", preset=None)  # the paper's 256 = 8 x 32 patches
    entry.load()(entry.options()).attach(det)
    for train in (True, False):
        chain = det.transforms(train)
        assert "RandomCrop" not in " ".join(chain.describe())
        assert "CenterCrop" not in " ".join(chain.describe())
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 280, 3), np.uint8))
    assert det.transforms(True)(image, train=True, seed=0).shape == (3, 256, 256)


# ------------------------------------------------------------------------ VIB-Net
def test_gaussian_kl_against_the_closed_form():
    from baselines.vibnet import gaussian_kl

    mu = torch.tensor([[1.0, 0.0]])
    sigma = torch.tensor([[1.0, 0.5]])
    # ½[(1 + 1 − 1 − ln 1) + (0 + 0.25 − 1 − ln 0.25)] = ½(1 − 0.75 + 2 ln 2)
    expected = 0.5 * (1.0 - 0.75 + 2 * math.log(2.0))
    assert gaussian_kl(mu, sigma).item() == pytest.approx(expected, rel=1e-6)
    dist = torch.distributions
    ref = dist.kl_divergence(dist.Normal(mu, sigma), dist.Normal(0.0, 1.0)).sum(-1)
    assert gaussian_kl(mu, sigma).item() == pytest.approx(ref.item(), rel=1e-6)
    assert gaussian_kl(torch.zeros(3, 4), torch.ones(3, 4)).abs().max() < 1e-7


def test_vib_head_uses_the_mean_at_test_and_samples_in_training():
    from baselines.vibnet import VIBHead

    torch.manual_seed(0)
    head = VIBHead(16, hidden=32, k=8)
    x = torch.randn(4, 16)
    head.eval()
    a, mu, sigma = head(x, sample=False)
    b, _, _ = head(x, sample=False)
    assert torch.equal(a, b)
    assert torch.equal(a, head.decoder(mu).squeeze(1))
    assert torch.all(sigma > 0)
    c, _, _ = head(x, sample=True)
    assert not torch.equal(a, c)


def test_vibnet_predictions_are_deterministic_unless_asked():
    torch.manual_seed(0)
    det = build("vibnet")
    det.setup(quiet_ctx())
    batch = {"image": torch.randn(3, 3, 224, 224), "label": torch.tensor([0.0, 1.0, 1.0])}
    det.train_mode(False)
    assert torch.equal(det.predict_proba(batch), det.predict_proba(batch))
    torch.manual_seed(0)
    sampling = build("vibnet", sample_at_test=True)
    sampling.setup(quiet_ctx())
    # σ = softplus(· − 5) is small at init; make it visible.
    with torch.no_grad():
        sampling.head.encoder[-1].bias[sampling.head.k :] += 8.0
    sampling.train_mode(False)
    assert not torch.equal(sampling.predict_proba(batch), sampling.predict_proba(batch))


# ------------------------------------------------------------------------ training steps
@pytest.mark.parametrize("name", ["univfd", "vibnet", "safe"])
def test_training_step_is_finite_with_grads_only_on_trainable_parts(name):
    torch.manual_seed(0)
    det = build(name)
    det.setup(quiet_ctx())
    size = 224 if name != "safe" else 64
    batch = {"image": torch.randn(4, 3, size, size), "label": torch.tensor([0.0, 1.0, 0.0, 1.0])}
    det.train_mode(True)
    loss = det.training_step(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    trained = det.net if name == "safe" else det.head
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained.parameters())
    if name != "safe":
        assert all(p.grad is None and not p.requires_grad for p in det.backbone.parameters())
    state = det.trainable_state()
    assert set(state) == set(trained.state_dict())


# ------------------------------------------------------------------------ feature cache
def test_parse_cache_mode():
    from baselines.feature_cache import parse_cache_mode

    assert parse_cache_mode("views:3").n_views(10) == 3
    assert parse_cache_mode("views").n_views(7) == 7
    assert parse_cache_mode("views:20").n_views(4) == 4
    assert parse_cache_mode("eval-view").n_views(7) == 1
    for bad in ("views:0", "view", "on", "views:x"):
        with pytest.raises(BenchError):
            parse_cache_mode(bad)
    with pytest.raises(BenchError, match="univfd.feature_cache"):
        build("univfd", feature_cache="sometimes")


class _Scale(Addon):
    """A feature addon that changes what the head sees (the cache must not care)."""

    hook = "features"

    def apply(self, features, batch, training):
        return features * 2.0


def _counting(det) -> list[int]:
    calls = [0]
    original = det.backbone.encode_image

    def encode_image(images):
        calls[0] += images.shape[0]
        return original(images)

    det.backbone.encode_image = encode_image
    return calls


def test_feature_cache_is_hit_on_a_second_fit(tiny_tree, tmp_path, monkeypatch):
    from bench.data.layouts import read_folder_tree

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    everything = read_folder_tree(tiny_tree)
    samples = everything[:6] + everything[-6:]  # both classes, kept small: nine fits follow
    data = train_data(samples, batch_size=4, epochs=2)

    def fitted(name: str, addon: Addon | None = None, **overrides) -> int:
        torch.manual_seed(0)  # the same random tiny CLIP each time
        det = build(name, epochs=2, batch_size=4, **overrides)
        if addon is not None:
            addon.attach(det)
        det.setup(quiet_ctx())
        calls = _counting(det)
        losses = det.fit(data, quiet_ctx())
        assert losses and all(math.isfinite(v) for v in losses)
        return calls[0]

    assert fitted("univfd") == 2 * len(samples)  # "views": one augmented view per epoch
    assert fitted("univfd") == 0  # the head again: no backbone forward
    assert fitted("univfd", addon=_Scale({})) == 0  # with a feature addon: still none
    assert fitted("vibnet") == 0  # same backbone and chain: VIB-Net shares the features
    assert fitted("univfd", jpeg_p=0.0) == 2 * len(samples)  # another chain: recomputed
    assert fitted("univfd", feature_cache="eval-view") == len(samples)
    assert fitted("univfd", feature_cache="eval-view") == 0
    assert fitted("univfd", feature_cache="off") == 2 * len(samples)  # the standard loop
    det = build("univfd", epochs=2, batch_size=4)
    det.setup(quiet_ctx())
    with torch.no_grad():  # other weights under the same name: their own cache entry
        next(det.backbone.parameters()).add_(0.01)
    calls = _counting(det)
    det.fit(data, quiet_ctx())
    assert calls[0] == 2 * len(samples)


def test_cached_training_learns_the_same_head_as_it_would_from_stored_views(
    tiny_tree, tmp_path, monkeypatch
):
    """Two runs from the same seed, one computing and one reading features, agree exactly."""
    from bench.data.layouts import read_folder_tree

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    everything = read_folder_tree(tiny_tree)
    data = train_data(everything[:6] + everything[-6:], batch_size=4, epochs=2)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        det = build("univfd", epochs=2, batch_size=4)
        det.setup(quiet_ctx())
        det.fit(data, quiet_ctx())
        states.append(det.trainable_state())
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key])


def test_views_cache_trains_exactly_like_the_standard_loop(tiny_tree, tmp_path, monkeypatch):
    """A cold "views" cache holds the images fit_loop draws, in fit_loop's batch order."""
    import tqdm.std

    from bench.data.layouts import read_folder_tree

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    # tqdm.auto's bar calls iter(loader) once more on construction, which draws from the
    # loader's generator and so shifts fit_loop's shuffle; the plain bar iterates once.
    monkeypatch.setattr("tqdm.auto.tqdm", tqdm.std.tqdm)
    everything = read_folder_tree(tiny_tree)
    data = train_data(everything[:6] + everything[-6:], batch_size=4, epochs=2)
    results = {}
    for mode in ("off", "views"):
        torch.manual_seed(0)
        det = build("univfd", epochs=2, batch_size=4, feature_cache=mode)
        det.setup(quiet_ctx())
        results[mode] = (det.fit(data, quiet_ctx()), det.trainable_state())
    np.testing.assert_allclose(results["off"][0], results["views"][0], rtol=1e-5)
    for key, value in results["off"][1].items():
        torch.testing.assert_close(value, results["views"][1][key], rtol=1e-5, atol=1e-6)
