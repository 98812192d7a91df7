"""Issue 17 (mutation testing): what UnivFD and VIB-Net share (baselines/frozen_clip.py), pinned.

A stand-in backbone (a linear map of each image's channel means: cheap, exact, frozen)
replaces CLIP, so every test is a unit test: features are computed by numpy from the
image files, losses by hand from the head's weights, batch orders from torch's own
``randperm`` with the seed the docstrings name, learning rates from UnivFD's rules.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from baselines.feature_cache import CacheMode, weights_fingerprint
from baselines.univfd import UnivFD
from bench.data.layouts import Sample
from bench.data.pipeline import make_loader
from bench.errors import BenchError
from bench.interfaces import CLIP_MEAN, CLIP_STD, Addon, RunContext, TrainData
from tests.pinned_helpers import bce as _bce


class _Backbone(nn.Module):
    """CLIP's interface: ``encode_image`` = a fixed linear map of the channel means, in
    float64 (a real CLIP's may come back in another precision too)."""

    image_size = 8
    embed_dim = 4
    identity = "stub-backbone"
    model_name = "stub"

    def __init__(self, random_weights: bool = False):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        with torch.no_grad():
            self.proj.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]))
            self.proj.bias.copy_(torch.tensor([0.0, 0.5, -0.5, 0.25]))
        self.random_weights = random_weights
        self.calls = 0
        for p in self.parameters():
            p.requires_grad_(False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += images.shape[0]
        return self.proj(images.float().mean(dim=(2, 3))).double()  # not float32, as bf16

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.full((len(texts), 4), 2.0)

    def describe(self) -> dict:
        return {"backbone": self.identity, "random_weights": self.random_weights}


PROJ = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
BIAS = np.array([0.0, 0.5, -0.5, 0.25])


def _feature(pixels: np.ndarray) -> np.ndarray:
    """The stand-in's feature of an 8 x 8 RGB image after CLIP normalisation."""
    x = (pixels.astype(np.float64) / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    return PROJ @ x.mean(axis=(0, 1)) + BIAS


def quiet(messages: list[str] | None = None, **kw) -> RunContext:
    log = messages.append if messages is not None else (lambda m: None)
    return RunContext(**{"device": "cpu", "seed": 0, "workers": 0, "log": log, **kw})


def detector(backbone: _Backbone | None = None, **options) -> UnivFD:
    """A UnivFD on the stand-in backbone, as ``setup`` would leave it."""
    options = {"input_size": 8, "load_size": 8, "blur_p": 0.0, "jpeg_p": 0.0, **options}
    det = UnivFD(options)
    det.backbone = backbone or _Backbone()
    torch.manual_seed(0)
    det.head = det.build_head(4)
    return det


def _samples(tmp_path: Path, n: int = 6, h: int = 8, w: int = 8) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        out.append(Sample(str(path), i % 2, "g"))
    return out


def _train(samples, batch_size=2, epochs=2, root=None) -> TrainData:
    def factory(s, chain, **kw):
        return make_loader(s, chain, workers=0, seed=0, **kw)

    return TrainData(samples, factory, batch_size=batch_size, epochs=epochs, root=root)


def _pixels(sample: Sample) -> np.ndarray:
    return np.asarray(Image.open(sample.path).convert("RGB"))


def _head_np(det) -> tuple[np.ndarray, float]:
    return det.head.weight.detach().double().numpy()[0], float(det.head.bias.detach())


# --------------------------------------------------------------------------- construction
def test_construction_reads_the_cache_mode_and_loads_nothing():
    bare = UnivFD({})
    assert bare.cache_mode == CacheMode("off", None)  # the code's fallback: no cache
    assert bare.backbone is None and bare.head is None and bare.device == "cpu"
    assert bare._ctx is None and bare.input_size == 224
    assert UnivFD({"feature_cache": "views:3"}).cache_mode == CacheMode("views", 3)
    with pytest.raises(BenchError, match=r"^option univfd\.feature_cache must be"):
        UnivFD({"feature_cache": "always"})
    assert UnivFD({"input_size": 32}).input_size == 32
    assert bare.normalization == (CLIP_MEAN, CLIP_STD)


def test_input_pipelines_are_cnndetections_with_clip_normalisation():
    tensor = f"ToTensor(mean={tuple(CLIP_MEAN)}, std={tuple(CLIP_STD)})"
    det = UnivFD({"input_size": 32, "load_size": 40, "blur_p": 0.25})
    assert det.transforms(train=False).describe() == ["CenterCrop(size=32)", tensor]
    train = det.transforms(train=True).describe()
    assert train[0] == "ResizeShorter(size=40, interpolation='bilinear')"
    assert train[1].startswith("BlurJpeg(blur_p=0.25, ")
    assert train[2:] == ["RandomCrop(size=32)", "HorizontalFlip(p=0.5)", tensor]


def test_setup_loads_clip_by_its_options_and_checks_its_image_size(monkeypatch):
    import bench.backbones.clip as clip

    seen = []

    def fake_load(model, pretrained, device, *, option):
        seen.append((model, pretrained, device, option))
        return _Backbone()

    monkeypatch.setattr(clip, "load_clip", fake_load)
    det = UnivFD({"input_size": 8, "model": "M", "pretrained": "P"})
    ctx = quiet()
    det.setup(ctx)
    assert seen == [("M", "P", "cpu", "univfd.pretrained")]
    assert det._ctx is ctx and det.device == "cpu"
    assert isinstance(det.head, nn.Linear) and det.head.in_features == 4
    UnivFD({"input_size": 8}).setup(ctx)
    assert seen[-1] == ("ViT-L-14", "openai", "cpu", "univfd.pretrained")
    on_meta = UnivFD({"input_size": 8})
    on_meta.setup(quiet(device="meta"))  # "meta": shapes only, shows the move with no GPU
    assert on_meta.device == "meta" and on_meta.head.weight.device.type == "meta"
    with pytest.raises(BenchError) as err:
        UnivFD({"input_size": 16}).setup(ctx)
    assert str(err.value) == (
        "univfd: CLIP stub takes 8px images but input_size is 16; set univfd.input_size=8"
    )


# ------------------------------------------------------------------------- features, steps
class _Twice(Addon):
    hook = "features"

    def apply(self, features, batch, training):
        return features * 2.0


def test_features_come_from_the_batch_or_the_frozen_backbone_then_the_hooks():
    det = detector()
    images = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    out = det.extract_features(images)
    assert out.dtype == torch.float32 and not out.requires_grad
    expected = images.mean(dim=(2, 3)) @ torch.from_numpy(PROJ).T + torch.from_numpy(BIAS)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)
    assert torch.equal(det.encode_text(["a", "b"]), torch.full((2, 4), 2.0))
    _Twice({}).attach(det)
    given = torch.arange(8.0).view(2, 4)
    assert torch.equal(det._features({"features": given, "image": None}), given * 2)
    from_images = det._features({"features": None, "image": images.float()})
    torch.testing.assert_close(from_images, 2 * expected.float())


def test_batch_features_go_to_the_device_and_the_hooks_see_the_batch():
    det = detector()
    det.device = "meta"  # shapes only: shows the move with no GPU
    assert det._features({"features": torch.ones(2, 4)}).device.type == "meta"
    seen = []

    class _Sees(Addon):
        hook = "features"

        def apply(self, features, batch, training):
            seen.append(batch)
            return features

    det = detector()
    _Sees({}).attach(det)
    batch = {"features": torch.ones(2, 4), "path": ["a", "b"]}
    det._features(batch)
    assert seen == [batch]


def test_training_step_and_probability_by_hand():
    det = detector()
    f = torch.tensor([[0.5, -1.0, 0.25, 2.0], [1.0, 0.0, -0.5, 0.5], [0.0, 0.25, 1.0, -1.0]])
    y = torch.tensor([1, 0, 1])  # integer labels are made float
    w, b = _head_np(det)
    z = f.double().numpy() @ w + b
    loss = det.training_step({"features": f, "label": y}).detach()
    assert float(loss) == pytest.approx(_bce(z, y.numpy()), rel=1e-6)
    proba = det.predict_proba({"features": f})
    assert proba.dtype == torch.float32 and not proba.requires_grad
    np.testing.assert_allclose(proba.numpy(), 1 / (1 + np.exp(-z)), rtol=1e-6)


def test_optimizer_is_adamw_on_the_head_with_univfds_settings():
    opt = detector().configure_optimizer()
    assert type(opt) is torch.optim.AdamW
    (group,) = opt.param_groups
    assert group["lr"] == 1e-4 and group["betas"] == (0.9, 0.999)
    assert group["weight_decay"] == 0.0 and len(group["params"]) == 2
    group = detector(lr=0.5, weight_decay=0.25).configure_optimizer().param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.5, 0.25)


def _lrs(det, steps_per_epoch, epochs, steps):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = det.configure_scheduler(opt, steps_per_epoch, epochs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_fixed_schedule_divides_by_ten_from_each_listed_epoch():
    assert detector().configure_scheduler(None, 3, 4) is None
    lrs = _lrs(detector(lr_drop_epochs=[3, 1]), 2, 4, 8)  # epochs 0-based: from 1 and 3
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert _lrs(detector(lr_drop_epochs=[2]), 0, 4, 4) == pytest.approx([1, 1, 0.1, 0.1])
    assert _lrs(detector(lr_drop_epochs=[0, 1]), 1, 2, 2) == pytest.approx([1.0, 0.1])


def test_modes_state_and_description():
    det = detector()
    det.train_mode(True)
    assert det.head.training and det.is_training()
    det.train_mode(False)
    assert not det.head.training and not det.is_training()
    UnivFD({}).train_mode(True)  # no head yet: nothing to switch
    state = det.trainable_state()
    assert set(state) == {"weight", "bias"}
    other = detector()
    with torch.no_grad():
        other.head.weight.fill_(3.0)
    other.load_trainable_state(state)
    assert torch.equal(other.head.weight, det.head.weight)
    assert UnivFD({}).describe() == {"feature_cache": "off"}
    assert detector(feature_cache="views").describe() == {
        "backbone": "stub-backbone",
        "random_weights": False,
        "feature_cache": "views",
    }
    facts = detector(_Backbone(random_weights=True)).describe()
    assert facts["weights"] == "random (no pretrained CLIP weights: results mean nothing)"


def test_feature_key_names_everything_a_feature_depends_on():
    det = detector()
    assert det.feature_key(quiet()) == {
        "feature": "clip.encode_image(normalize=False)",
        "backbone": "stub-backbone",
        "weights": weights_fingerprint(det.backbone),
        "device": "cpu",
        "autocast": None,
    }
    key = det.feature_key(RunContext(device="cuda:1", amp_dtype=torch.bfloat16))
    assert key["device"] == "cuda" and key["autocast"] == "torch.bfloat16"
    assert det.feature_key(RunContext(device="mps"))["device"] == "mps"


def test_encoding_for_the_cache_runs_under_the_runs_autocast():
    det = detector()
    images = torch.rand(2, 3, 8, 8)
    plain = det._encode_for_cache(images)  # no run context yet: full precision
    assert plain.dtype == torch.float32 and not plain.requires_grad
    torch.testing.assert_close(plain, det.extract_features(images))
    det._ctx = quiet(amp_dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = det.backbone.proj(images.mean(dim=(2, 3))).float()
    low = det._encode_for_cache(images)
    assert torch.equal(low, expected) and not torch.equal(low, plain)


def test_batches_are_the_standard_loaders_order_over_the_readable_rows():
    """The order ``make_loader`` draws (``bench.data.pipeline.batch_order``) over the rows
    that have a feature, for the run's seed and the epoch."""
    from baselines.frozen_clip import FrozenClipDetector
    from bench.data.pipeline import batch_order

    found = torch.tensor([True, False, True, True, False, True, True])
    rows = [0, 2, 3, 5, 6]
    orders = []
    for seed, epoch in ((5, 0), (5, 3), (6, 0)):
        batches = [b.tolist() for b in FrozenClipDetector._batches(found, 2, seed, epoch)]
        expected = [[rows[i] for i in b] for b in batch_order(5, 2, True, False, seed, epoch)]
        assert batches == expected
        orders.append(batches)
    assert orders[0] != orders[1] and orders[0] != orders[2]


# -------------------------------------------------------------------------------- fit
def test_no_cache_and_fixed_schedule_is_the_standard_loop(monkeypatch):
    import bench.training

    det = detector(feature_cache="off")
    monkeypatch.setattr(bench.training, "fit_loop", lambda d, t, c: [d is det, t, c])
    ctx, train = quiet(), _train([])
    assert det.fit(train, ctx) == [True, train, ctx] and det._ctx is ctx


def _expected_losses(det0, feats, labels, found, epochs, batch_size, lr=1e-4):
    """UnivFD's head trained by hand (AdamW over the sampler's batches), in float64."""
    w = torch.from_numpy(_head_np(det0)[0]).clone().requires_grad_()
    b = torch.tensor(_head_np(det0)[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    from bench.data.pipeline import batch_order

    rows = found.nonzero().squeeze(1).tolist()
    losses = []
    for epoch in range(epochs):
        for batch in batch_order(len(rows), batch_size, True, False, 0, epoch):
            idx = [rows[i] for i in batch]
            z = feats[idx] @ w + b
            loss = nn.functional.binary_cross_entropy_with_logits(z, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses, w.detach(), b.detach()


def test_eval_view_cache_trains_on_the_centre_crops_in_the_samplers_order(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _samples(tmp_path, 5)
    feats = torch.from_numpy(np.array([_feature(_pixels(s)) for s in samples]))
    labels = torch.tensor([float(s.label) for s in samples], dtype=torch.float64)
    det = detector(feature_cache="eval-view", lr=0.05)
    start = detector()
    messages: list[str] = []
    losses = det.fit(_train(samples, batch_size=2, epochs=3), quiet(messages))
    want, w, b = _expected_losses(start, feats, labels, torch.ones(5, dtype=torch.bool), 3, 2, 0.05)
    np.testing.assert_allclose(losses, want, rtol=1e-4)
    np.testing.assert_allclose(_head_np(det)[0], w.numpy(), rtol=1e-4, atol=1e-6)
    assert not det.is_training() and not det.head.training
    assert det.backbone.calls == 5  # one view, encoded once for all three epochs
    views = [m for m in messages if m.startswith("univfd: features")]
    assert views == ["univfd: features view 1/1: 5 images, 5 computed, 0 from the cache"]
    means = [sum(losses[3 * e : 3 * e + 3]) / 3 for e in range(3)]
    assert [m for m in messages if m.startswith("epoch")] == [
        f"epoch {e + 1}/3: mean loss {means[e]:.4f}" for e in range(3)
    ]


def test_views_cache_draws_one_augmented_view_per_epoch_and_drops_the_lr(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _samples(tmp_path, 4)
    det = detector(feature_cache="views:2", lr_drop_epochs=[1])
    seen_lrs = []
    original = det.training_step

    def recording(batch):
        seen_lrs.append(det._opt.param_groups[0]["lr"])
        assert batch["features"].shape[1] == 4 and len(batch["path"]) == len(batch["index"])
        assert batch["generator"] == ["g"] * len(batch["path"])
        assert batch["label"].tolist() == [float(samples[i].label) for i in batch["index"]]
        return original(batch)

    make_opt = det.configure_optimizer

    def remember():
        det._opt = make_opt()
        return det._opt

    monkeypatch.setattr(det, "configure_optimizer", remember)
    monkeypatch.setattr(det, "training_step", recording)
    messages: list[str] = []
    losses = det.fit(_train(samples, batch_size=3, epochs=3), quiet(messages))
    assert len(losses) == 6  # 2 steps per epoch
    assert seen_lrs == pytest.approx([1e-4, 1e-4] + [1e-5] * 4)
    assert det.backbone.calls == 8  # views 1 and 2 of 4 images; epoch 3 reuses view 1
    views = [m for m in messages if m.startswith("univfd: features view")]
    assert views == [
        "univfd: features view 1/2: 4 images, 4 computed, 0 from the cache",
        "univfd: features view 2/2: 4 images, 4 computed, 0 from the cache",
        "univfd: features view 1/2: 4 images, 0 computed, 4 from the cache",
    ]
    folders = sorted(p.parent for p in (tmp_path / "cache").rglob("meta.json"))
    import json

    metas = [json.loads((f / "meta.json").read_text()) for f in folders]
    assert sorted((m["train"], m["view"]) for m in metas) == [(True, 0), (True, 1)]
    assert metas[0]["chain"] == det.transforms(train=True).describe()


def test_a_cache_with_no_readable_image_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(BenchError) as err:
        detector(feature_cache="views").fit(_train([Sample(str(bad), 1, "g")]), quiet())
    assert str(err.value) == "univfd: no training image could be read"


def test_official_schedule_validates_every_epoch_and_keeps_the_best_head(tmp_path, monkeypatch):
    """Without a cache (the standard loader) and with a held-out split: the accuracies are
    made up, so the stopping rule decides; the head kept is the one saved at the best epoch."""
    import baselines.frozen_clip as frozen

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _samples(tmp_path, 8)
    det = detector(
        feature_cache="off",
        schedule="official",
        val_set="split",
        val_fraction=0.5,
        patience=1,
        min_lr=0.5e-5,
    )
    accuracies = iter([0.5, 0.75, 0.5, 0.5, 0.25])
    heads = []

    def accuracy(d, feats, labels):
        assert feats.shape == (4, 4) and sorted(labels.tolist()) == [0.0, 0.0, 1.0, 1.0]
        heads.append(d.head.weight.detach().clone())
        return next(accuracies)

    monkeypatch.setattr(frozen, "validation_accuracy", accuracy)
    messages: list[str] = []
    ctx = quiet(messages)
    losses = det.fit(_train(samples, batch_size=2, epochs=10), ctx)
    # epoch 1 saves, 2 improves (saved), 3 plateau: lr 1e-5 and a new stopper; 4 saves
    # (a new stopper's first epoch), 5 plateau: lr 1e-6 < 0.5e-5: stop after 5 epochs
    assert len(heads) == 5 and len(losses) == 5 * 2
    assert torch.equal(det.head.weight, heads[3])
    record = ctx.notes["schedule"]
    assert record["epochs_run"] == 5 and record["chosen_epoch"] == 4
    assert messages[0] == (
        "univfd: official schedule: validation on 4 images "
        "(0.5 of the training set, per generator and class), training on 4; at most 10 epochs"
    )
    assert messages[-1] == (
        "univfd: stopped after 5 epochs; keeps epoch 4 (what UnivFD's early stopper saved last)"
    )
    tail = [m for m in messages if m.startswith("epoch 2/10")]
    assert len(tail) == 1 and tail[0].endswith(", validation acc 0.7500")
    assert not det.is_training()


# ------------------------------------------------------------------ evaluation plan
def test_evaluation_plan_from_cached_features_lists_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    assert detector(feature_cache="off").plan_evaluation([], quiet()) is None
    samples = _samples(tmp_path, 3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    samples.insert(1, Sample(str(bad), 1, "g"))
    samples.append(Sample(str(tmp_path / "gone.png"), 0, "g"))
    det = detector(feature_cache="views", eval_batch_size=2)
    messages: list[str] = []
    ctx = quiet(messages)
    plan = det.plan_evaluation(samples, ctx)
    assert det._ctx is ctx
    expected = [_feature(_pixels(samples[i])) for i in (0, 2, 3)]
    np.testing.assert_allclose(plan.features[[0, 2, 3]].numpy(), expected, rtol=1e-5)
    assert set(plan.missing) == {1, 4} and plan.missing[1] != "unreadable"
    assert messages[-1] == "univfd: test features: 3 images, 3 computed, 0 from the cache"
    again: list[str] = []
    detector(feature_cache="views").plan_evaluation(samples, quiet(again))
    assert again[-1] == "univfd: test features: 3 images, 0 computed, 3 from the cache"
    none = detector(feature_cache="eval-view").plan_evaluation([samples[1]], quiet())
    assert torch.equal(none.features, torch.zeros(1, 4)) and set(none.missing) == {0}


def test_evaluation_plan_marks_a_row_with_no_feature_unreadable(tmp_path, monkeypatch):
    import baselines.frozen_clip as frozen

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # image digests are indexed
    samples = _samples(tmp_path, 2)

    def one_found(*args, **kwargs):
        assert kwargs["train"] is False and kwargs["view"] == 0 and kwargs["batch_size"] == 7
        return torch.ones(2, 4), torch.tensor([True, False]), 1

    monkeypatch.setattr(frozen, "cached_features", one_found)
    plan = detector(feature_cache="views", batch_size=7).plan_evaluation(samples, quiet())
    assert plan.missing == {1: "unreadable"}
    assert math.isclose(float(plan.features.sum()), 8.0)


# ------------------------------------------------------------- the official schedule's inputs
class _Recording(TrainData):
    """TrainData that remembers how its loaders were asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: list[tuple] = []

    def loader(self, chain, **kwargs):
        self.asked.append((chain.describe(), kwargs))
        return super().loader(chain, **kwargs)

    def subset(self, samples):
        out = _Recording(samples, self._factory, self.batch_size, self.epochs, self.root)
        self.children = [*getattr(self, "children", []), out]
        return out


def _recording(samples, batch_size=2, epochs=2, root=None) -> _Recording:
    def factory(s, chain, **kw):
        return make_loader(s, chain, workers=0, seed=0, **kw)

    return _Recording(samples, factory, batch_size=batch_size, epochs=epochs, root=root)


def test_official_schedule_defaults_are_univfds(tmp_path, monkeypatch):
    """No schedule options given but "official": a held-out 5 % (11 images of each class
    -> 1 each), patience 5, lr / 10 down to 1e-6 (1e-4 / 100 is not below it, / 1000 is):
    1 + 5 epochs, a drop; 1 + 5, a drop; 1 + 5, the last drop ends the run at 18."""
    import baselines.frozen_clip as frozen

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _samples(tmp_path, 22)
    det = UnivFD(
        {"input_size": 8, "load_size": 8, "blur_p": 0.0, "jpeg_p": 0.0, "schedule": "official"}
    )
    det.backbone = _Backbone()
    det.head = det.build_head(4)
    monkeypatch.setattr(frozen, "validation_accuracy", lambda d, f, y: 0.5)
    ctx = quiet()
    det.fit(_train(samples, batch_size=20, epochs=30), ctx)
    record = ctx.notes["schedule"]
    assert record["epochs_run"] == 18 and record["chosen_epoch"] == 13
    assert [h["lr"] for h in record["history"]][::6] == pytest.approx([1e-4, 1e-5, 1e-6])


def _tree(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for folder in ("0_real", "1_fake"):
        (root / folder).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i}.png")


def test_official_schedule_validates_on_the_sibling_val_folder_or_the_seeded_split(
    tmp_path, monkeypatch
):
    import baselines.frozen_clip as frozen
    from baselines.schedule import validation_split
    from bench.data.layouts import read_folder_tree

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    _tree(tmp_path / "train", 4, seed=1)
    _tree(tmp_path / "val", 2, seed=2)
    samples = read_folder_tree(tmp_path / "train")
    beside = read_folder_tree(tmp_path / "val")
    seen = []
    monkeypatch.setattr(frozen, "validation_accuracy", lambda d, f, y: seen.append(f) or 0.5)
    root = str(tmp_path / "train")
    base = {"feature_cache": "eval-view", "schedule": "official", "patience": 1, "min_lr": 1e-3}

    def features(chosen):
        return torch.tensor(np.array([_feature(_pixels(s)) for s in chosen]), dtype=torch.float32)

    # val_set "auto" (the default) with a val/ folder beside train/: that folder
    detector(**base).fit(_train(samples, epochs=1, root=root), quiet())
    torch.testing.assert_close(seen[-1], features(beside), rtol=1e-5, atol=1e-6)
    # "split" asked for: the seeded held-out part, for the run's seed, whatever is beside
    detector(**base, val_set="split", val_fraction=0.5).fit(
        _train(samples, epochs=1, root=root), quiet(seed=4)
    )
    _, held, _ = validation_split(samples, root, "split", 0.5, seed=4)
    torch.testing.assert_close(seen[-1], features(held), rtol=1e-5, atol=1e-6)


def test_official_schedule_without_a_cache_trains_on_the_training_chain(tmp_path, monkeypatch):
    """The standard loader, asked for the training chain, shuffled, epoch by epoch; the
    lr moves on plateaus only (lr_drop_epochs is the fixed schedule's); the head is in
    training mode throughout; the data wait is kept under "train"."""
    import baselines.frozen_clip as frozen

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _samples(tmp_path, 8)
    det = detector(
        feature_cache="off", schedule="official", val_set="split", val_fraction=0.5,
        lr_drop_epochs=[1], patience=5,
    )  # fmt: skip
    monkeypatch.setattr(frozen, "validation_accuracy", lambda d, f, y: 0.5)
    modes = []
    original = det.training_step
    monkeypatch.setattr(
        det, "training_step", lambda batch: modes.append(det.is_training()) or original(batch)
    )
    train = _recording(samples, batch_size=4, epochs=2)
    messages: list[str] = []
    ctx = quiet(messages)
    losses = det.fit(train, ctx)
    (child,) = train.children
    assert [kw for _, kw in child.asked] == [
        {"train": True, "shuffle": True, "epoch": 0},
        {"train": True, "shuffle": True, "epoch": 1},
    ]
    assert all(chain == det.transforms(train=True).describe() for chain, _ in child.asked)
    assert len(losses) == 2 and modes == [True, True]
    assert [h["lr"] for h in ctx.notes["schedule"]["history"]] == [1e-4, 1e-4]
    assert "train" in ctx.notes["data_wait"]
    assert [m for m in messages if m.startswith("epoch ")] == [
        f"epoch {e + 1}/2: mean loss {losses[e]:.4f}, validation acc 0.5000" for e in range(2)
    ]


def test_losses_are_all_kept_when_read_in_several_goes(tmp_path, monkeypatch):
    import baselines.frozen_clip as frozen
    import bench.training

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench.training, "READ_EVERY", 1)  # read after every step
    samples = _samples(tmp_path, 5)
    for mode in ("eval-view", "off"):
        det = detector(feature_cache=mode, schedule="official", val_set="split", val_fraction=0.4)
        det.options["patience"] = 5
        monkeypatch.setattr(frozen, "validation_accuracy", lambda d, f, y: 0.5)
        losses = det.fit(_train(samples, batch_size=1, epochs=2), quiet())
        assert len(losses) == 2 * 3, mode  # 3 training images, one a step, two epochs
        assert all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("read_every", [1, 25])
@pytest.mark.parametrize("mode", ["eval-view", "off"])
def test_a_diverging_loss_names_its_epoch(tmp_path, monkeypatch, mode, read_every):
    """Read after every step (1) or at the epoch's end (25): the epoch is named either way."""
    import baselines.frozen_clip as frozen
    import bench.training

    monkeypatch.setattr(bench.training, "READ_EVERY", read_every)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(frozen, "validation_accuracy", lambda d, f, y: 0.5)
    samples = _samples(tmp_path, 4)
    det = detector(feature_cache=mode, schedule="official", val_set="split", val_fraction=0.5)
    original = det.training_step
    calls = []

    def nan_later(batch):
        calls.append(1)
        loss = original(batch)
        return loss * float("nan") if len(calls) > 2 else loss

    monkeypatch.setattr(det, "training_step", nan_later)
    with pytest.raises(BenchError) as err:
        det.fit(_train(samples, batch_size=1, epochs=3), quiet())
    assert str(err.value) == "training diverged: loss is nan at epoch 2"


def test_batches_go_to_the_detectors_device(tmp_path, monkeypatch):
    """A stand-in ``step`` records where the batch tensors are: "meta" shows the move."""
    import bench.training

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _samples(tmp_path, 3)
    seen = []

    def fake_step(detector, batch, optimizer, scheduler, ctx):
        seen.append({k: batch[k].device.type for k in ("image", "features", "label") if k in batch})
        return torch.tensor(0.5)

    monkeypatch.setattr(bench.training, "step", fake_step)
    det = detector(feature_cache="eval-view")
    feats = torch.ones(3, 4)
    monkeypatch.setattr(
        det, "_view_features", lambda *a: (feats, torch.ones(3, dtype=torch.bool), 0)
    )
    det.device = "meta"
    det._epoch_runner(_train(samples, batch_size=3), quiet(device="meta"))[0](0, None, None)
    assert seen == [{"features": "meta", "label": "meta"}]
    seen.clear()
    off = detector(feature_cache="off")
    off._epoch_runner(_train(samples, batch_size=3), quiet(device="meta"))[0](0, None, None)
    assert seen == [{"image": "meta", "label": "meta"}]


def test_one_batch_an_epoch_gives_each_epoch_its_own_mean(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _samples(tmp_path, 3)
    messages: list[str] = []
    det = detector(feature_cache="eval-view", lr=0.5)
    losses = det.fit(_train(samples, batch_size=4, epochs=2), quiet(messages))
    assert len(losses) == 2 and losses[0] != losses[1]
    assert [m for m in messages if m.startswith("epoch ")] == [
        f"epoch {e + 1}/2: mean loss {losses[e]:.4f}" for e in range(2)
    ]


def test_image_loop_gives_each_epoch_its_own_mean(tmp_path, monkeypatch):
    """The official schedule without a cache runs the image loop: 4 training images in one
    batch of 4 is one step an epoch, so each epoch's line is that step's loss alone (lr
    0.5 makes the two differ)."""
    import baselines.frozen_clip as frozen

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(frozen, "validation_accuracy", lambda d, f, y: 0.5)
    samples = _samples(tmp_path, 8)
    det = detector(
        feature_cache="off", schedule="official", val_set="split", val_fraction=0.5,
        patience=5, lr=0.5,
    )  # fmt: skip
    messages: list[str] = []
    losses = det.fit(_train(samples, batch_size=4, epochs=2), quiet(messages))
    assert len(losses) == 2 and f"{losses[0]:.4f}" != f"{losses[1]:.4f}"
    assert [m for m in messages if m.startswith("epoch ")] == [
        f"epoch {e + 1}/2: mean loss {losses[e]:.4f}, validation acc 0.5000" for e in range(2)
    ]


def test_images_are_encoded_on_the_detectors_device(monkeypatch):
    det = detector()
    seen = []

    class _Where(nn.Module):
        def encode_image(self, images):
            seen.append(images.device.type)
            return torch.zeros(images.shape[0], 4)

    det.backbone = _Where()
    det.device = "meta"
    det._encode_for_cache(torch.rand(2, 3, 8, 8))
    assert seen == ["meta"]


def _count_encodes(det) -> list[int]:
    calls: list[int] = []
    encode = det.backbone.encode_image
    det.backbone.encode_image = lambda images: calls.append(len(images)) or encode(images)
    return calls


def test_evaluation_plan_reads_the_evaluation_chain_in_eval_batches(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    (one,) = _samples(tmp_path, 1, h=12, w=10)
    pixels = _pixels(one)[2:10, 1:9]  # the centre 8 x 8 of 12 x 10
    for options, sizes in (
        ({"eval_batch_size": 2, "batch_size": 3}, [2, 2, 1]),
        ({"batch_size": 3}, [3, 2]),
    ):
        det = detector(feature_cache="views", **options)
        calls = _count_encodes(det)
        plan = det.plan_evaluation([one] * 5, quiet(seed=len(sizes) + 10 * len(options)))
        assert calls == sizes, options
        np.testing.assert_allclose(plan.features[0].numpy(), _feature(pixels), rtol=1e-5)
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("meta.json")]
    assert all(m["chain"] == det.transforms(train=False).describe() for m in metas)
    assert all(m["train"] is False and m["view"] == 0 for m in metas)
    det = detector(feature_cache="views")  # neither batch size given: 256
    calls = _count_encodes(det)
    det.plan_evaluation([one] * 257, quiet(seed=99))
    assert calls == [256, 1]


def test_evaluation_plan_with_nothing_readable_has_zero_features(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    plan = detector(feature_cache="eval-view").plan_evaluation(
        [Sample(str(bad), 1, "g")] * 2, quiet()
    )
    assert plan.features.dtype == torch.float32 and torch.equal(plan.features, torch.zeros(2, 4))
    assert set(plan.missing) == {0, 1}
