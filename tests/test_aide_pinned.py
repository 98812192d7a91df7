"""Issue 17 (mutation testing): AIDE's network wiring and its detector, pinned.

AideNet is checked against the fusion written out here (SRM residuals as one convolution
of the channel sum, the two experts called view by view, the mean of the four features,
Linear → GELU → Linear on the concatenation); the detector around it against hand-written
formulas (CLIP re-normalisation, label-smoothed cross-entropy, softmax, AIDE's lr rule)
and the catalogue's declared defaults. A small stand-in for the frozen ConvNeXt (a fixed
convolution with the same interface) keeps these tests far from the 10 s CLIP build; the
real one is covered by test_aide.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from baselines.aide import AIDE
from baselines.aide_net import AideNet, patch_resnet
from baselines.aide_patches import srm_filters
from bench.interfaces import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from bench.options import merge_options
from bench.plugins import get_registry

# tiny tensors: one torch thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


REGISTRY = get_registry(refresh=True)


class StandInConvNeXt(nn.Module):
    """The interface AIDE uses of its frozen ConvNeXt: feature_map, channels, describe."""

    channels = 6
    random_weights = True

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, self.channels, 3, stride=2)
        self.requires_grad_(False)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def describe(self) -> dict:
        return {"semantic": "stand-in"}


@pytest.fixture(scope="module")
def net() -> AideNet:
    torch.manual_seed(0)
    return AideNet(StandInConvNeXt.channels, proj_dim=4, hidden=8).eval()


def _high_pass(x: torch.Tensor) -> torch.Tensor:
    """The 30 SRM residuals of R + G + B: the filters are linear, so summing first is the same."""
    return F.conv2d(x.sum(dim=1, keepdim=True), srm_filters()[:, None], padding=2)


def _fused(net: AideNet, views: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
    experts = (net.model_min, net.model_max, net.model_min, net.model_max)
    patch = sum(expert(_high_pass(views[:, k])) for k, expert in enumerate(experts)) / 4
    projected = semantic @ net.convnext_proj.weight.T + net.convnext_proj.bias
    hidden = torch.cat([projected, patch], dim=1) @ net.fc[0].weight.T + net.fc[0].bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
    return hidden @ net.fc[2].weight.T + net.fc[2].bias


def test_the_network_is_the_written_out_fusion(net):
    views = torch.randn(2, 5, 3, 16, 16)
    semantic = torch.randn(2, StandInConvNeXt.channels)
    with torch.no_grad():
        torch.testing.assert_close(net(views, semantic), _fused(net, views, semantic))
    assert "srm" not in net.state_dict()  # a fixed bank, rebuilt at construction
    bank = srm_filters()[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(net.srm, bank) and net.srm.is_contiguous()
    assert (net.convnext_proj.out_features, net.fc[0].out_features, net.fc[2].out_features) == (
        4,
        8,
        2,
    )
    assert net.fc[0].in_features == 2048 + 4 and isinstance(net.fc[1], nn.GELU)
    assert net.fc[1].approximate == "none"


def test_the_semantic_projection_trains_only_when_asked(net):
    views = torch.randn(1, 5, 3, 16, 16)
    semantic = torch.randn(1, StandInConvNeXt.channels)
    seen = []
    hook = net.convnext_proj.register_forward_hook(lambda m, i, out: seen.append(out.requires_grad))
    try:
        assert net.train_semantic_proj is False
        assert net(views, semantic).requires_grad  # the rest of the network trains
        net.train_semantic_proj = True
        net(views, semantic)
        with torch.no_grad():
            net(views, semantic)
    finally:
        net.train_semantic_proj = False
        hook.remove()
    assert seen == [False, True, False]
    assert AideNet(3, proj_dim=2, hidden=4, train_semantic_proj=True).train_semantic_proj is True


def test_patch_resnets_have_a_30_channel_stem_zero_residuals_and_no_classifier():
    torch.manual_seed(0)
    resnet = patch_resnet()
    conv = resnet.conv1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (30, 64, (7, 7))
    assert (conv.stride, conv.padding, conv.bias) == ((2, 2), (3, 3), None)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 49)), rel=0.05)
    assert isinstance(resnet.fc, nn.Identity)
    blocks = [m for m in resnet.modules() if hasattr(m, "bn3")]
    assert len(blocks) == 16 and all(torch.all(b.bn3.weight == 0) for b in blocks)
    assert patch_resnet(5).conv1.in_channels == 5


# ------------------------------------------------------------------------ the detector
def build(preset: str | None = None, **overrides) -> AIDE:
    entry = REGISTRY.get("detector", "aide")
    presets = [entry.presets[preset]] if preset else []
    return entry.load()(merge_options("aide", entry.specs, *presets, overrides))


@pytest.fixture()
def detector(net) -> AIDE:
    det = AIDE({"blr": 2e-4, "batch_size": 64})
    det.semantic = StandInConvNeXt()
    det.net = net
    return det


def test_semantic_feature_renormalises_to_clip_and_pools(detector):
    views = torch.randn(2, 5, 3, 16, 16)
    inet_mean, inet_std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    clip_mean, clip_std = (torch.tensor(v).view(3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    pixels = views[:, 4] * inet_std + inet_mean
    expected = detector.semantic.conv((pixels - clip_mean) / clip_std).mean(dim=(2, 3))
    feature = detector.semantic_feature(views)
    torch.testing.assert_close(feature, expected)
    assert not feature.requires_grad
    state = detector.semantic.state_dict()
    detector.semantic = StandInConvNeXt()
    detector.semantic.load_state_dict(state)
    detector.semantic.to(torch.bfloat16)  # the constants follow the pixels' dtype
    half = detector.semantic_feature(views.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), expected, rtol=0.05, atol=0.05)


def test_loss_and_probability_are_smoothed_cross_entropy_and_softmax(detector):
    torch.manual_seed(1)
    views = torch.randn(3, 5, 3, 16, 16)
    labels = torch.tensor([0.0, 1.0, 1.0])
    detector.net.eval()
    with torch.no_grad():
        logits = _fused(detector.net, views, detector.semantic_feature(views))
        out = detector.logits(views)
        torch.testing.assert_close(out, logits)
        assert out.dtype == torch.float32
    # the loss and the probability on the logits just checked, for these views only
    detector.logits = lambda v: {id(views): logits}[id(v)]
    with torch.no_grad():
        log_p = torch.log_softmax(logits, dim=1)
        target = F.one_hot(labels.long(), 2).float() * 0.9 + 0.1 / 2  # smoothing 0.1
        expected = -(target * log_p).sum(dim=1).mean()
        torch.testing.assert_close(
            detector.training_step({"image": views, "label": labels}), expected
        )
        p = torch.exp(logits[:, 1]) / torch.exp(logits).sum(dim=1)
        torch.testing.assert_close(detector.predict_proba({"image": views}), p)
    detector.options["label_smoothing"] = 0.0
    with torch.no_grad():
        plain = -log_p[torch.arange(3), labels.long()].mean()
        torch.testing.assert_close(detector.training_step({"image": views, "label": labels}), plain)


def test_lr_follows_the_batch_really_used(detector, monkeypatch):
    assert detector.lr() == pytest.approx(2e-4 * 64 / 256)
    assert detector.lr(8) == pytest.approx(2e-4 * 8 / 256)
    assert AIDE({}).lr() == pytest.approx(1e-4 * 32 / 256)
    import bench.training

    monkeypatch.setattr(bench.training, "fit_loop", lambda det, train, ctx: [det.lr(), train, ctx])
    train, ctx = SimpleNamespace(batch_size=16), SimpleNamespace()
    lr, passed_train, passed_ctx = detector.fit(train, ctx)
    assert lr == pytest.approx(2e-4 * 16 / 256) and passed_train is train and passed_ctx is ctx
    assert detector.lr() == pytest.approx(2e-4 * 16 / 256)


def test_optimizer_and_cosine_schedule_to_the_floor(detector):
    detector.options.update({"weight_decay": 0.05, "min_lr": 1e-5})
    optimizer = detector.configure_optimizer()
    assert isinstance(optimizer, torch.optim.AdamW)
    lr = 2e-4 * 64 / 256
    decayed, plain = optimizer.param_groups
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.05, 0.0)
    assert decayed["lr"] == pytest.approx(lr) and decayed["eps"] == 1e-8
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    scheduler = detector.configure_scheduler(optimizer, steps_per_epoch=2, epochs=3)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1e-5 + (lr - 1e-5) * 0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)]
    assert seen == pytest.approx(expected)
    detector.options["warmup_epochs"] = 1
    optimizer = detector.configure_optimizer()
    scheduler = detector.configure_scheduler(optimizer, steps_per_epoch=2, epochs=3)
    assert optimizer.param_groups[0]["lr"] == 0.0  # a linear warm-up from 0 over 2 steps


def test_modes_state_and_description(detector):
    assert not detector.is_training()
    detector.train_mode(True)
    assert detector.is_training()
    assert detector.net.training and detector.semantic.training  # AIDE's model.train()
    detector.options["semantic_train_mode"] = False
    detector.train_mode(True)
    assert detector.net.training and not detector.semantic.training
    detector.train_mode(False)
    assert not detector.net.training and not detector.semantic.training
    state = detector.trainable_state()
    assert set(state) == set(detector.net.state_dict())
    assert all(v.device.type == "cpu" and not v.requires_grad for v in state.values())
    detector.load_trainable_state({k: v.clone() for k, v in state.items()})
    with pytest.raises(RuntimeError):
        detector.load_trainable_state({})
    facts = detector.describe()
    assert facts["semantic"] == "stand-in" and facts["lr"] == pytest.approx(2e-4 * 64 / 256)
    assert facts["weights"].startswith("random ConvNeXt")
    assert facts["parameters"] == sum(p.numel() for p in detector.net.parameters())
    detector.semantic.random_weights = False
    assert "weights" not in detector.describe()
    detector.semantic.random_weights = True
    bare = AIDE({})
    bare.train_mode(True)  # nothing built yet: no error
    assert bare.describe() == {"lr": pytest.approx(1e-4 * 32 / 256)}
    assert (bare.net, bare.semantic, bare.device, bare.init_facts) == (None, None, "cpu", {})


def test_inputs_follow_the_catalogue_and_the_authors_code():
    """Built without the catalogue, AIDE has the catalogue's defaults (stated by hand here)."""
    views = "AideViews(view_size=256, window=32, stride=16, bands=6, antialias=False)"
    blur = (
        "BlurJpeg(blur_p=0.1, sigma=(0.1, 3.0), jpeg_p=0.1, quality=(30, 100), kernel=3, "
        "draws='independent', jpeg='cv2-bgr')"
    )
    for det in (AIDE({}), build()):
        assert det.transforms(False).describe() == [views]
        assert det.transforms(True).describe() == [blur, views]
        assert det.input_size == 256 and det.normalization == (IMAGENET_MEAN, IMAGENET_STD)
    other = build(
        view_size=64,
        window=16,
        stride=8,
        bands=4,
        antialias=True,
        blur_p=0.3,
        blur_sigma=[0.5, 1.0],
        jpeg_p=0.2,
        jpeg_quality=[50, 90],
        blur_kernel=5,
    )
    assert other.transforms(True).describe() == [
        "BlurJpeg(blur_p=0.3, sigma=(0.5, 1.0), jpeg_p=0.2, quality=(50, 90), kernel=5, "
        "draws='independent', jpeg='cv2-bgr')",
        "AideViews(view_size=64, window=16, stride=8, bands=4, antialias=True)",
    ]


def test_setup_without_the_catalogue_uses_its_defaults(tmp_path, monkeypatch):
    """Built from no options: AIDE's ConvNeXt by name (offline: a one-line error naming
    it), random ResNets, a projection that does not train, the frozen branch in eval mode."""
    from bench.errors import BenchError
    from bench.interfaces import RunContext

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(BenchError) as info:
        AIDE({}).setup(RunContext(log=lambda m: None))
    assert "convnext_xxlarge/laion2b_s34b_b82k_augreg_soup" in str(info.value)
    assert "--opt aide.convnext_pretrained=" in str(info.value)
    torch.manual_seed(0)
    det = AIDE({"convnext_model": "bench-tiny-convnext", "convnext_pretrained": ""})
    det.device = "unset"
    det.setup(RunContext(device="cpu", log=lambda m: None))
    assert det.device == "cpu" and not det.semantic.training
    assert det.semantic.describe()["semantic_backbone"].startswith("bench-tiny-convnext")
    assert det.net.train_semantic_proj is False
    assert det.net.convnext_proj.in_features == det.semantic.channels
    assert det.init_facts == {"patch_resnets": "resnet50/random"}
    assert det.describe()["weights"].startswith("random ConvNeXt")


def test_setup_passes_the_projection_and_resnet_options_on(tmp_path, monkeypatch):
    import bench.backbones.imagenet as imagenet
    from bench.interfaces import RunContext

    seen = []
    monkeypatch.setattr(imagenet, "read_state_dict", lambda path: seen.append(path) or {})
    monkeypatch.setattr(imagenet, "load_matching", lambda *a, **k: [])
    path = tmp_path / "r50.pth"
    path.write_bytes(b"")
    options = {"convnext_model": "bench-tiny-convnext", "convnext_pretrained": ""}
    det = AIDE({**options, "train_semantic_proj": True, "resnet_pretrained": str(path)})
    det.setup(RunContext(device="cpu", log=lambda m: None))
    assert det.net.train_semantic_proj is True
    assert seen == [str(path)] and det.init_facts["patch_resnets"].startswith(f"resnet50@{path}:")


def test_optimizer_defaults_without_the_catalogue(net):
    """weight decay 0, cosine from blr · 32 / 256 to 1e-6, no warm-up."""
    det = AIDE({})
    det.net = net
    optimizer = det.configure_optimizer()
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.0]
    lr = 1e-4 * 32 / 256
    scheduler = det.configure_scheduler(optimizer, steps_per_epoch=1, epochs=4)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1e-6 + (lr - 1e-6) * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert seen == pytest.approx([*expected, 1e-6])


def test_window_and_bands_that_give_nan_scores_are_refused_before_any_work():
    from bench.errors import BenchError

    message = (
        "^aide.bands = 6 leaves a DCT band of the 4 x 4 window without a frequency "
        "\\(its patch scores would be 0/0\\): lower aide.bands or raise aide.window$"
    )
    with pytest.raises(BenchError, match=message):
        build(window=4)
    with pytest.raises(BenchError, match="^aide.bands = 40 leaves a DCT band of the 32 x 32"):
        AIDE({"bands": 40})
    assert build(window=6, bands=6).options["window"] == 6
    assert AIDE({"bands": 32}).options["bands"] == 32


def test_default_widths_and_the_resnet_weights_go_into_both_experts(net, tmp_path, monkeypatch):
    """AIDE's widths: Linear(C, 256), Linear(2048 + 256, 1024), Linear(1024, 2). A weights
    file loads into both experts but not their 30-channel stems (read through a stand-in
    reader here; test_aide.py reads a real file)."""
    import bench.backbones.imagenet as imagenet

    torch.manual_seed(0)
    wide = AideNet(StandInConvNeXt.channels)
    assert (wide.convnext_proj.in_features, wide.convnext_proj.out_features) == (6, 256)
    assert (wide.fc[0].in_features, wide.fc[0].out_features, wide.fc[2].in_features) == (
        2304,
        1024,
        1024,
    )
    # a torchvision-shaped file: every tensor of the experts (shifted by 1), a 3-channel stem
    state = {k: v + 1 for k, v in wide.model_min.state_dict().items() if k != "conv1.weight"}
    state["conv1.weight"] = torch.zeros(64, 3, 7, 7)
    monkeypatch.setattr(imagenet, "read_state_dict", lambda path: state)
    path = tmp_path / "r50.pth"
    path.write_bytes(b"")
    det = AIDE({})
    det.net = wide
    stem = wide.model_min.conv1.weight.detach().clone()
    facts = det._load_resnets(str(path))
    assert list(facts) == ["patch_resnets"]
    assert facts["patch_resnets"].startswith(f"resnet50@{path}:")
    for expert in (wide.model_min, wide.model_max):
        assert torch.equal(expert.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert torch.equal(wide.model_min.conv1.weight, stem)
    assert det._load_resnets("none") == {"patch_resnets": "resnet50/random"}


def test_default_bands_are_six_without_the_catalogue():
    """Six bands (AIDE's code) at 5 x 5 leave a band empty; seven would be refused on 6 x 6
    windows too, so both sides of the default are visible."""
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="^aide.bands = 6 leaves a DCT band of the 5 x 5"):
        AIDE({"window": 5})
    assert AIDE({"window": 6}).options == {"window": 6}  # 6 bands fit a 6 x 6 window


def test_resnet_weights_errors_name_the_option_and_the_file(net, tmp_path, monkeypatch):
    """A bad value names `aide.resnet_pretrained`; a file that is not a ResNet-50 is named
    by its label (resnet50@PATH:digest) in the one-line error."""
    import bench.backbones.imagenet as imagenet
    from bench.errors import BenchError

    det = AIDE({})
    with pytest.raises(BenchError, match=r"^aide\.resnet_pretrained: 'no-such-weights' is"):
        det._load_resnets("no-such-weights")
    monkeypatch.setattr(imagenet, "read_state_dict", lambda path: {"fc.weight": torch.ones(1)})
    path = tmp_path / "other.pth"
    path.write_bytes(b"")
    det.net = net
    with pytest.raises(BenchError, match=rf"^resnet50@{path}:\S* does not fit this network"):
        det._load_resnets(str(path))
