"""Issue 17 (mutation testing): SAFE's recipe (baselines/safe.py, baselines/safe_net.py), pinned.

Expected values are worked by hand from SAFE's ``main_finetune.py`` rules (linear warm-up
then half-cycle cosine per step, lr scaled by batch / 128, weight decay on weights only,
label smoothing 0.1, p(fake) = softmax[:, 1]) or computed with torch's own primitives
(log-softmax, AdamW); the fallback defaults in the code are checked against registry.toml.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from baselines.safe import SAFE, decay_groups, warmup_cosine, warmup_cosine_scheduler
from baselines.safe_net import SafeNet
from bench.interfaces import RunContext
from bench.options import merge_options
from bench.plugins import get_registry

REGISTRY_DEFAULTS = {
    key: spec["default"]
    for key, spec in tomllib.loads(
        (Path(__file__).parents[1] / "registry.toml").read_text(encoding="utf-8")
    )["detectors"]["safe"]["options"].items()
}


def build(**overrides) -> SAFE:
    entry = get_registry().get("detector", "safe")
    return entry.load()(merge_options("safe", entry.specs, overrides))


def _cosine(step, warmup, total, floor):
    progress = (step - warmup) / (total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------- the lr factor
def test_warmup_is_linear_then_cosine_to_the_floor_and_stays_there():
    assert [warmup_cosine(s, 4, 12, 0.1) for s in range(4)] == [0.0, 0.25, 0.5, 0.75]
    for step in range(4, 13):
        assert warmup_cosine(step, 4, 12, 0.1) == pytest.approx(_cosine(step, 4, 12, 0.1))
    assert warmup_cosine(12, 4, 12, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(30, 4, 12, 0.1) == pytest.approx(0.1)  # past the end: the floor
    assert warmup_cosine(0, 0, 8, 0.0) == 1.0  # no warm-up: the cosine's start


def test_a_run_no_longer_than_its_warmup_drops_to_the_floor_after_it():
    """total == warmup: the cosine spans one step (max(1, 0)), so the step after the
    warm-up is already at the floor."""
    assert warmup_cosine(3, 3, 3, 0.2) == 1.0
    assert warmup_cosine(4, 3, 3, 0.2) == pytest.approx(0.2)


# ------------------------------------------------------------------- AdamW's two groups
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)  # weight decayed, bias not
        self.bn = nn.BatchNorm2d(3)  # 1-D: not decayed
        self.sub = nn.Module()
        self.sub.bias = nn.Parameter(torch.zeros(2, 2))  # named bias, 2-D: not decayed
        self.bias = nn.Parameter(torch.zeros(2, 2))  # "bias" at the top has no ".": decayed
        self.scale = nn.Parameter(torch.zeros(()))  # 0-D: not decayed


def test_decay_groups_decay_only_weights_of_two_or_more_dimensions():
    net = _Net()
    decay, no_decay = decay_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([net.conv.weight, net.bias])
    assert ids(no_decay["params"]) == ids(
        [net.conv.bias, net.bn.weight, net.bn.bias, net.sub.bias, net.scale]
    )
    assert set(decay) == {"params", "weight_decay"} == set(no_decay)


# --------------------------------------------------------------------- the per-step lr
def _factors(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _opt():
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)


def test_scheduler_warms_up_over_the_rounded_epochs_then_follows_the_cosine():
    opt = _opt()
    sched = warmup_cosine_scheduler(opt, 0.5, 5, 3, 0.1)  # warm-up round(2.5) = 2 steps of 15
    got = _factors(sched, opt, 16)
    assert got[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert got[3:] == pytest.approx([_cosine(s, 2, 15, 0.1) for s in range(3, 16)])
    opt = _opt()
    sched = warmup_cosine_scheduler(opt, 0.7, 5, 3, 0.0)  # round(3.5) = 4
    assert _factors(sched, opt, 5) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_scheduler_keeps_one_step_after_the_warmup_and_a_single_step_is_not_warmed():
    opt = _opt()
    sched = warmup_cosine_scheduler(opt, 10, 2, 2, 0.25)  # warm-up 20 > total 4: capped at 3
    assert _factors(sched, opt, 5) == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 0.25])
    opt = _opt()
    sched = warmup_cosine_scheduler(opt, 1, 1, 2, 0.25)  # two steps: one of warm-up
    assert _factors(sched, opt, 3) == pytest.approx([0.0, 1.0, 0.25])
    opt = _opt()
    sched = warmup_cosine_scheduler(opt, 1, 1, 1, 0.25)  # one step in all: no warm-up
    assert _factors(sched, opt, 2) == pytest.approx([1.0, 0.25])
    opt = _opt()
    sched = warmup_cosine_scheduler(opt, 1, 0, 3, 0.25)  # no steps: total 1, no warm-up
    assert opt.param_groups[0]["lr"] == 1.0


# ------------------------------------------------------------------------- the detector
def test_input_pipelines_for_training_and_evaluation():
    from torchvision import transforms as T

    det = build(input_size=48, rotation=30.0, jitter=0.25, mask_p=0.75, mask_patch=8)
    det.options["mask_ratio_max"] = 0.5
    assert det.input_size == 48
    assert det.transforms(train=False).describe() == [
        "CenterCrop(size=48)",
        "ToTensor(mean=None, std=None)",
    ]
    assert det.transforms(train=True).describe() == [
        "RandomCrop(size=48)",
        "HorizontalFlip(p=0.5)",
        f"TorchvisionStep({T.RandomRotation(30.0)!r})",
        f"TorchvisionStep({T.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25)!r})",
        "ToTensor(mean=None, std=None)",
        "RandomMask(p=0.75, patch=8, ratio=(0.0, 0.5))",
    ]


def test_fallback_defaults_in_the_code_are_the_registrys():
    from torchvision import transforms as T

    bare = SAFE({})
    d = REGISTRY_DEFAULTS
    assert bare.input_size == d["input_size"] == 256
    jitter = d["jitter"]
    assert bare.transforms(train=True).describe()[2:] == [
        f"TorchvisionStep({T.RandomRotation(d['rotation'])!r})",
        f"TorchvisionStep({T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)!r})",
        "ToTensor(mean=None, std=None)",
        f"RandomMask(p={d['mask_p']}, patch={d['mask_patch']}, ratio=(0.0, {d['mask_ratio_max']}))",
    ]
    assert bare.lr() == pytest.approx(d["lr"] * d["batch_size"] / d["lr_batch"])
    bare.setup(RunContext(device="cpu"))
    assert bare.net.high_freq.wavelet == d["wavelet"]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=bare.lr())
    sched = bare.configure_scheduler(opt, steps_per_epoch=2, epochs=3)  # warm-up: 1 epoch
    lrs = _factors(sched, opt, 7)
    assert lrs[:3] == pytest.approx([0.0, bare.lr() / 2, bare.lr()])
    assert lrs[6] == pytest.approx(d["min_lr"])
    decay = bare.configure_optimizer().param_groups[0]["weight_decay"]
    assert decay == d["weight_decay"]
    loss = bare.training_step(_batch(bare.net)).detach()
    assert float(loss) == pytest.approx(_smoothed_ce(bare.net, d["label_smoothing"]), rel=1e-5)


def test_setup_builds_the_two_class_net_on_the_wavelet_and_device_asked_for():
    det = build(wavelet="db2")
    det.setup(RunContext(device="meta"))  # "meta": shapes only, shows the move with no GPU
    assert isinstance(det.net, SafeNet) and det.net.high_freq.wavelet == "db2"
    assert det.net.fc.out_features == 2
    assert all(p.device.type == "meta" for p in det.net.parameters())


def test_lr_follows_the_batch_given_then_the_batch_trained_with_then_the_option():
    det = build(lr=0.01, lr_batch=64, batch_size=32)
    assert det.lr() == pytest.approx(0.005)
    assert det.lr(16) == pytest.approx(0.0025)
    det._batch_size = 8
    assert det.lr() == pytest.approx(0.00125) and det.lr(128) == pytest.approx(0.02)


def test_fit_records_the_batch_size_it_trains_with(monkeypatch):
    from bench.interfaces import Detector, TrainData

    det = build(lr=0.01, lr_batch=64, batch_size=32)
    seen = []
    monkeypatch.setattr(
        Detector, "fit", lambda self, train, ctx: seen.append((self.lr(), train, ctx)) or [1.5]
    )
    train = TrainData([], lambda *a, **k: [], batch_size=16, epochs=1)
    ctx = RunContext(device="cpu")
    assert det.fit(train, ctx) == [1.5]
    assert seen == [(pytest.approx(0.0025), train, ctx)]


def test_optimizer_is_adamw_on_the_decay_groups_at_the_scaled_lr():
    det = build(lr=0.02, lr_batch=64, batch_size=16, weight_decay=0.3)
    det.setup(RunContext(device="cpu"))
    opt = det.configure_optimizer()
    assert type(opt) is torch.optim.AdamW
    decay, no_decay = opt.param_groups
    assert decay["lr"] == pytest.approx(0.005) == no_decay["lr"]
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(p) for p in det.net.parameters() if p.ndim > 1}


def test_scheduler_warms_up_for_the_option_and_ends_at_min_lr():
    det = build(lr=0.02, lr_batch=64, batch_size=16, min_lr=0.0005, warmup_epochs=2)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=det.lr())
    sched = det.configure_scheduler(opt, steps_per_epoch=2, epochs=4)  # warm-up 4 of 8
    lrs = _factors(sched, opt, 9)
    assert lrs[:5] == pytest.approx([0.0, 0.00125, 0.0025, 0.00375, 0.005])
    assert lrs[8] == pytest.approx(0.0005)  # min_lr, not min_lr * lr
    floor = 0.0005 / 0.005
    assert lrs[6] == pytest.approx(0.005 * _cosine(6, 4, 8, floor))


def _batch(net: nn.Module):
    torch.manual_seed(7)
    return {"image": torch.rand(3, 3, 32, 32), "label": torch.tensor([0.0, 1.0, 1.0])}


def _smoothed_ce(net: nn.Module, eps: float) -> float:
    """(1 - eps) * NLL + eps * mean over classes of -log p, from log-softmax."""
    batch = _batch(net)
    with torch.no_grad():
        logp = torch.log_softmax(net(batch["image"]).double(), dim=1)
    y = batch["label"].long()
    nll = -logp[torch.arange(3), y]
    return float(((1 - eps) * nll - eps * logp.mean(dim=1)).mean())


def test_training_step_is_label_smoothed_cross_entropy():
    det = build(label_smoothing=0.3)
    det.setup(RunContext(device="cpu"))
    det.train_mode(False)  # BatchNorm on its running statistics: the same net twice
    loss = det.training_step(_batch(det.net)).detach()
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(_smoothed_ce(det.net, 0.3), rel=1e-5)


def test_probability_is_the_softmax_of_the_second_logit_and_modes_reach_the_net():
    det = build()
    det.setup(RunContext(device="cpu"))
    det.train_mode(True)
    assert det.net.training and det.net.layer1.training and det.is_training()
    det.train_mode(False)
    assert not det.net.training and not det.net.bn1.training and not det.is_training()
    batch = _batch(det.net)
    logits = det.net(batch["image"]).double()
    expected = torch.exp(logits[:, 1]) / torch.exp(logits).sum(dim=1)
    got = det.predict_proba(batch)
    assert got.shape == (3,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected.detach().numpy(), rtol=1e-5)


def test_trainable_state_is_the_whole_net_and_loads_back():
    det = build()
    det.setup(RunContext(device="cpu"))
    state = det.trainable_state()
    assert set(state) == set(det.net.state_dict())
    assert "bn1.running_mean" in state and "layer2.3.bn3.num_batches_tracked" in state
    assert all(not t.requires_grad for t in state.values())
    saved = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        det.net.fc.weight.add_(1.0)
    det.load_trainable_state(saved)
    assert torch.equal(det.net.fc.weight, saved["fc.weight"])


def test_describe_counts_the_parameters_and_gives_the_lr():
    from torchvision.models import resnet50

    det = build(lr=0.01, lr_batch=64, batch_size=32)
    assert det.describe() == {"parameters": 0, "lr": pytest.approx(0.005)}
    det.setup(RunContext(device="cpu"))
    ref = resnet50(weights=None)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expected = 3 * 64 * 3 * 3 + count(ref.bn1) + count(ref.layer1) + count(ref.layer2) + 512 * 2 + 2
    assert det.describe() == {"parameters": expected, "lr": pytest.approx(0.005)}


# ------------------------------------------------------------------------------- SafeNet
def test_safe_net_stem_pool_and_options():
    net = SafeNet(num_classes=3, layers=(1, 2), dwt_input=False)
    assert isinstance(net.high_freq, nn.Identity)
    assert net.conv1.padding == (1, 1) and net.conv1.bias is None and net.conv1.in_channels == 3
    assert net.bn1.num_features == 64
    pool = net.maxpool
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    assert len(net.layer1) == 1 and len(net.layer2) == 2
    assert net.layer1[0].conv1.in_channels == 64 and net.layer1[0].conv2.stride == (1, 1)
    assert net.layer2[0].conv1.in_channels == 256 and net.layer2[0].conv2.stride == (2, 2)
    assert net.fc.out_features == 3
    x = torch.rand(2, 3, 40, 40)
    assert net(x).shape == (2, 3)
    # 40 -> stem /2 -> 20 -> pool /2 -> 10 -> layer2 /2 -> 5: the pooled map is 5 x 5
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
    net.eval()
    with torch.no_grad():
        fmap = trunk(x)
        assert fmap.shape == (2, 512, 5, 5)
        torch.testing.assert_close(net.forward_features(x), fmap.mean(dim=(2, 3)))
        torch.testing.assert_close(net(x), net.fc(fmap.mean(dim=(2, 3))))


def test_safe_net_reads_the_hh_band_of_its_wavelet():
    from baselines.wavelet import HighFrequencyInput

    net = SafeNet(wavelet="haar").eval()
    assert isinstance(net.high_freq, HighFrequencyInput) and net.high_freq.wavelet == "haar"
    x = torch.rand(1, 3, 32, 32)
    plain = SafeNet(dwt_input=False).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(HighFrequencyInput("haar")(x)))


def test_safe_net_is_initialised_as_torchvisions_resnet():
    torch.manual_seed(0)
    net = SafeNet()
    assert torch.all(net.bn1.weight == 1) and torch.all(net.bn1.bias == 0)
    # kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (64 * 3 * 3))
    assert float(net.conv1.weight.detach().std()) == pytest.approx(math.sqrt(2 / 576), rel=0.1)
