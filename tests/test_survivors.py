"""Issue 17: the bugs that passed every test before, each pinned against an independent value.

Each test names the planted bug it was shown to catch (see the README's test strategy).
Expected values come from a formula in the test (a projector I - qqᵀ, a hand-written
bilinear resize, sigmoid of a linear head), from PyWavelets, or from hand arithmetic;
never from the function under test.
"""

from __future__ import annotations

import itertools
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from bench.data.layouts import read_dataset
from bench.data.pipeline import make_loader
from bench.errors import BenchError
from bench.interfaces import Detector, RunContext, TrainData, Transform, TransformChain
from bench.options import merge_options
from bench.plugins import get_registry


def quiet_ctx(**kw) -> RunContext:
    return RunContext(device="cpu", seed=0, workers=0, log=lambda _m: None, **kw)


def options(kind: str, name: str, preset: str | None = "demo", **overrides):
    entry = get_registry().get(kind, name)
    presets = [entry.presets.get(preset, {})] if preset else []
    return merge_options(name, entry.specs, *presets, overrides)


def build(name: str, **overrides):
    return get_registry().get("detector", name).load()(options("detector", name, **overrides))


def factory(samples, chain, **kw):
    return make_loader(samples, chain, workers=0, seed=0, **kw)


def projector_without(q: torch.Tensor) -> torch.Tensor:
    """I - q qᵀ for a unit q: removes one direction (a projector by construction)."""
    q = q / q.norm()
    return torch.eye(q.numel()) - torch.outer(q, q)


@pytest.fixture(scope="module")
def samples(tiny_tree):
    everything = read_dataset(str(tiny_tree))
    picked = []
    for gen, label in itertools.product(("gan_a", "gan_b"), (0, 1)):
        picked += [s for s in everything if s.generator == gen and s.label == label][:2]
    return picked


# ------------------------------------------------------------- 1, 7: NS-Net's fixed projector
def test_nsnet_evaluation_is_sigmoid_of_head_of_u_times_the_saved_p(samples):
    """Caught: ``_project`` returning U unprojected under eval_projection = "fixed"."""
    torch.manual_seed(0)
    detector = build("nsnet", captions="prompt")
    detector.setup(quiet_ctx())
    detector.prepare_captions(samples, quiet_ctx())
    P = detector.trainable_state()["nullspace.fixed_projector"]
    assert float(torch.trace(P)) < P.shape[0] - 0.5  # it removes something
    chain = detector.transforms(train=False)
    batch = next(iter(factory(samples, chain, train=False, shuffle=False, batch_size=8)))
    U = detector.extract_features(batch["image"]).detach()
    with torch.no_grad():
        expected = torch.sigmoid(U @ P @ detector.head.weight[0] + detector.head.bias[0])
        unprojected = torch.sigmoid(U @ detector.head.weight[0] + detector.head.bias[0])
    got = detector.predict_proba(batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - unprojected).abs().max() > 1e-4  # the projection changes the answer


def test_a_loaded_fixed_projector_replaces_the_one_already_used(samples):
    """Caught: the per-device copy of the fixed P kept after ``load_state`` / ``fit_fixed``."""
    torch.manual_seed(0)
    detector = build("nsnet", captions="prompt", nullspace="fixed")
    detector.setup(quiet_ctx())
    d = detector.backbone.embed_dim
    images = torch.rand(3, 3, 224, 224)
    U = detector.extract_features(images).detach()
    w, b = detector.head.weight[0].detach(), detector.head.bias[0].detach()
    state = detector.trainable_state()
    for seed in (1, 2):  # the first P is used (and cached), then a second one is loaded
        P = projector_without(torch.randn(d, generator=torch.Generator().manual_seed(seed)))
        detector.load_trainable_state({**state, "nullspace.fixed_projector": P})
        got = detector.predict_proba({"image": images})
        torch.testing.assert_close(got, torch.sigmoid(U @ P @ w + b), atol=1e-5, rtol=1e-5)


def test_fit_fixed_again_replaces_the_projector_in_use():
    """NullSpace on its own: fit on e0, project, fit on e1: the second P must be the one used."""
    from nsnet_plugin.nullspace import NullSpace

    space = NullSpace("fixed", fixed_k=1)
    x = torch.arange(1.0, 6.0).repeat(2, 1)  # rows (1, 2, 3, 4, 5)
    for axis in (0, 1, 3):
        V = torch.zeros(1, 5)
        V[0, axis] = 2.0
        space.fit_fixed(V)
        expected = x.clone()
        expected[:, axis] = 0.0  # removing the e_axis direction zeroes that coordinate
        torch.testing.assert_close(space(x, None, training=False), expected, atol=1e-6, rtol=0)
    space.load_state({"fixed_projector": projector_without(torch.ones(5))})
    torch.testing.assert_close(space(x), x - 3.0, atol=1e-5, rtol=0)  # mean removed


# ------------------------------------------------------------- 2: the addon in frozen CLIPs
@pytest.mark.parametrize("name", ["univfd", "vibnet"])
def test_nullspace_addon_output_is_what_the_head_receives(name):
    """Caught: ``FrozenClipDetector._features`` skipping the feature hooks (Table 7's path)."""
    from nsnet_plugin.nullspace_addon import NullSpaceAddon

    torch.manual_seed(0)
    detector = build(name, feature_cache="off")
    addon = NullSpaceAddon(options("addon", "nullspace"))
    addon.attach(detector)
    detector.setup(quiet_ctx())
    q = torch.randn(detector.backbone.embed_dim)
    P = projector_without(q)
    addon.load_state({"fixed_projector": P})
    received: list[torch.Tensor] = []
    detector.head.register_forward_hook(lambda _m, args, _out: received.append(args[0].detach()))
    images = torch.rand(4, 3, 224, 224)
    U = detector.extract_features(images)
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    paths = [f"/x/{i}.png" for i in range(4)]
    detector.train_mode(True)
    detector.training_step({"image": images, "label": labels, "path": paths})
    detector.training_step({"features": U, "label": labels, "path": paths})  # cached features
    detector.train_mode(False)
    detector.predict_proba({"image": images, "path": paths})
    detector.predict_proba({"features": U, "path": paths})
    assert len(received) == 4
    for seen in received:
        torch.testing.assert_close(seen, U @ P, atol=1e-5, rtol=1e-5)
        assert (seen @ (q / q.norm())).abs().max() < 1e-4


# ------------------------------------------------------------- 3: SAFE's HH band and resize
def _bilinear_half_pixel(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, edges clamped (align_corners=False)."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, fr = axis(a.shape[0], out_h)
    c0, c1, fc = axis(a.shape[1], out_w)
    top = a[r0][:, c0] * (1 - fc) + a[r0][:, c1] * fc
    bottom = a[r1][:, c0] * (1 - fc) + a[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bottom * fr[:, None]


def _patterns(h: int = 20, w: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows = rng.random(h)[:, None].repeat(w, 1)  # varies along the height only
    cols = rng.random(w)[None, :].repeat(h, 0)  # along the width only
    return {
        "height": rows,
        "width": cols,
        "diagonal": ((i + j) % 2) * 1.0 + 0.1 * rng.random((h, w)),
        "product": rows * cols,
    }


@pytest.mark.parametrize("pattern", ["height", "width", "diagonal", "product"])
def test_safe_input_is_pywavelets_hh_band_bilinearly_resized(pattern):
    """Caught: dwt_hh returning cH (or cV) instead of HH, and a nearest-neighbour resize."""
    import pywt

    from baselines.wavelet import HighFrequencyInput, dwt_hh

    x = _patterns()[pattern]
    _cA, (_cH, _cV, cD) = pywt.dwt2(x, "bior1.3", mode="symmetric")
    np.testing.assert_allclose(dwt_hh(torch.from_numpy(x)).numpy(), cD, atol=1e-10)
    image = torch.from_numpy(np.stack([x, 2 * x, -x])).float()[None]
    out = HighFrequencyInput("bior1.3")(image)[0].double().numpy()
    for channel, scale in enumerate((1, 2, -1)):
        expected = _bilinear_half_pixel(scale * cD, *x.shape)
        np.testing.assert_allclose(out[channel], expected, atol=1e-5)


def test_hh_band_is_zero_for_one_axis_patterns_and_not_for_a_product():
    """By hand: the HH band high-passes both axes, so a pattern along one axis has none."""
    from baselines.wavelet import dwt_hh

    p = _patterns()
    assert dwt_hh(torch.from_numpy(p["height"])).abs().max() < 1e-12
    assert dwt_hh(torch.from_numpy(p["width"])).abs().max() < 1e-12
    assert dwt_hh(torch.from_numpy(p["product"])).abs().max() > 1e-2


# ------------------------------------------------------------- 4, 9: evaluate's contract
class _Record(Transform):
    role = "geometry"

    def __init__(self, log: list):
        self.log = log

    def __call__(self, image, *, train: bool, seed: int):
        self.log.append(("step", train))
        return image.resize((8, 8))


class _Probe(Detector):
    """Records the chain it was asked for, the flag its steps got and its training mode."""

    def __init__(self, answer: float = 0.25):
        super().__init__({"eval_batch_size": 4})
        self.log: list = []
        self.answer = answer

    @property
    def input_size(self) -> int:
        return 8

    def base_transforms(self, train: bool) -> TransformChain:
        from bench.builtin.transforms import ToTensor

        self.log.append(("chain", train))
        return TransformChain([_Record(self.log), ToTensor()])

    def setup(self, ctx) -> None:
        self.train_mode(True)  # a careless setup leaves training on

    def predict_proba(self, batch):
        self.log.append(("predict", self.is_training()))
        return torch.full((len(batch["path"]),), self.answer)

    def trainable_state(self):
        return {}

    def load_trainable_state(self, state) -> None:
        pass


def test_evaluate_uses_evaluation_transforms_and_evaluation_mode(samples, tmp_path):
    """Caught: ``evaluate`` with transforms(train=True), or not switching training mode off."""
    from bench.evaluation import evaluate

    probe = _Probe()
    probe.setup(quiet_ctx())
    result = evaluate(probe, samples, factory, tmp_path, quiet_ctx())
    assert ("chain", True) not in probe.log and ("chain", False) in probe.log
    assert [e for e in probe.log if e[0] == "step"] == [("step", False)] * len(samples)
    assert [e for e in probe.log if e[0] == "predict"] == [("predict", False)] * 2
    mean = result.table[result.table["kind"] == "mean"].iloc[0]
    assert mean["acc"] == 0.5  # p = 0.25 everywhere: every real right, every fake wrong


def test_nan_probabilities_stop_the_run_before_any_metric(samples, tmp_path):
    """Caught: NaN (which fails both p >= 0 and p <= 1 silently) reaching the metrics."""
    from bench.evaluation import evaluate

    with pytest.raises(BenchError, match="invalid probabilities"):
        evaluate(_Probe(answer=math.nan), samples, factory, tmp_path, quiet_ctx())
    assert not (tmp_path / "metrics.csv").exists()
    with pytest.raises(BenchError, match="invalid probabilities"):
        evaluate(_Probe(answer=1.5), samples, factory, tmp_path, quiet_ctx())


def test_lam_one_is_pure_bce_in_a_training_step(samples):
    """Caught: lam = 1.0 rejected, or its SupCon weight left non-zero."""
    torch.manual_seed(0)
    detector = build("nsnet", captions="prompt", lam=1.0)
    detector.setup(quiet_ctx())
    detector.prepare_captions(samples, quiet_ctx())
    chain = detector.transforms(train=False)
    batch = next(iter(factory(samples, chain, train=False, shuffle=False, batch_size=8)))
    logits: list[torch.Tensor] = []
    detector.head.register_forward_hook(lambda _m, _a, out: logits.append(out.detach()))
    loss = float(
        detector.training_step(batch).detach()
    )  # eval mode: LoRA dropout off, deterministic
    z, y = logits[0].squeeze(1).double(), batch["label"].double()
    bce = float(torch.mean(torch.log1p(torch.exp(-z)) * y + torch.log1p(torch.exp(z)) * (1 - y)))
    assert loss == pytest.approx(bce, rel=1e-5)
    assert detector.last_loss_parts["supcon"] != 0.0  # SupCon computed, weighted 0


# ------------------------------------------------------------- 5: the learning-rate schedule
class _LrProbe(_Probe):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.lrs: list[float] = []

    def configure_optimizer(self):
        self.optimizer = torch.optim.SGD([self.weight], lr=1.0)
        return self.optimizer

    def configure_scheduler(self, optimizer, steps_per_epoch: int, epochs: int):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))

    def training_step(self, batch):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        return (self.weight**2).sum() + 1.0


def test_the_standard_loop_steps_the_scheduler_once_per_step(samples):
    """Caught: a scheduler built but never stepped (lr stays at its first value)."""
    from bench.training import fit_loop

    probe = _LrProbe()
    fit_loop(probe, TrainData(samples[:6], factory, batch_size=2, epochs=2), quiet_ctx())
    assert probe.lrs == pytest.approx([1.0 / (k + 1) for k in range(6)])


def test_univfd_lr_drops_tenfold_at_the_listed_epoch(samples, monkeypatch):
    """Caught: UnivFD's lr dropping one epoch early/late, or its scheduler never stepped.

    8 images, batch 4: 2 steps per epoch; lr_drop_epochs = [2] gives lr 1e-4 for epochs 0-1
    and 1e-5 from epoch 2 (the third) on, through the cached-feature loop.
    """
    torch.manual_seed(0)
    detector = build("univfd", feature_cache="eval-view", lr_drop_epochs=[2], lr=1e-4)
    detector.setup(quiet_ctx())
    lrs: list[float] = []
    make = detector.configure_optimizer

    def remember():
        detector.optimizer_seen = make()
        return detector.optimizer_seen

    step = detector.training_step

    def recording(batch):
        lrs.append(detector.optimizer_seen.param_groups[0]["lr"])
        return step(batch)

    monkeypatch.setattr(detector, "configure_optimizer", remember)
    monkeypatch.setattr(detector, "training_step", recording)
    train = TrainData(samples[:8], factory, batch_size=4, epochs=4)
    detector.fit(train, quiet_ctx())
    assert lrs == pytest.approx([1e-4] * 4 + [1e-5] * 4, rel=1e-9)


# ------------------------------------------------------------- 6: UnivFD's augmentation
def test_univfd_evaluation_chain_never_blurs_or_compresses():
    """Caught: blur / JPEG applied at evaluation (both probabilities 1, train=False)."""
    from PIL import Image

    from bench.interfaces import CLIP_MEAN, CLIP_STD

    detector = build("univfd", blur_p=1.0, jpeg_p=1.0, blur_sigma=[2.0, 3.0])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (240, 250, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    out = detector.transforms(train=False)(image, train=False, seed=3)
    top, left = (240 - 224) // 2, (250 - 224) // 2
    crop = pixels[top : top + 224, left : left + 224].astype(np.float64) / 255.0
    expected = (crop - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(out.numpy(), expected.transpose(2, 0, 1), atol=1e-5)
    trained = detector.transforms(train=True)(image, train=True, seed=3)
    assert trained.shape == out.shape and not torch.allclose(trained, out, atol=1e-2)


def test_blur_jpeg_step_is_identity_at_evaluation_and_not_in_training():
    from PIL import Image

    from baselines.augment import BlurJpeg

    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    step = BlurJpeg(blur_p=1.0, sigma=(2.0, 2.0), jpeg_p=1.0, quality=(30, 30))
    assert np.array_equal(np.asarray(step(image, train=False, seed=0)), pixels)
    changed = np.asarray(step(image, train=True, seed=0)).astype(float)
    assert np.abs(changed - pixels).mean() > 10  # sigma 2 blur of noise: far from identity


# ------------------------------------------------------------- 8: caption look-up by file
def test_captions_are_found_through_symlinks_and_relative_paths(tmp_path, monkeypatch):
    """Caught: captions keyed by the path as spelled, not the file it names."""
    import json
    from types import SimpleNamespace

    from nsnet_plugin.captions import FileCaptions

    real = tmp_path / "data" / "gen" / "1_fake"
    real.mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        (real / name).write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "data")
    caption_file = tmp_path / "data" / "captions.json"
    caption_file.write_text(json.dumps({"gen/1_fake/a.png": "a cat", "gen/1_fake/b.png": "a dog"}))
    sidecar = {str(real / "c.png"): "a bird"}  # what a run's sidecar holds: the real path
    monkeypatch.chdir(tmp_path)
    spelled = [
        str(tmp_path / "link" / "gen" / "1_fake" / "a.png"),  # through the symlink
        "data/gen/1_fake/b.png",  # relative to the working folder
        "link/gen/1_fake/c.png",  # relative and through the symlink
    ]
    ctx = SimpleNamespace(captions=sidecar)
    found = FileCaptions(str(caption_file))([SimpleNamespace(path=p) for p in spelled], ctx)
    assert found == dict(zip(spelled, ["a cat", "a dog", "a bird"], strict=True))
