"""NS-Net end to end on the tiny CLIP: it trains, saves only what trains, and every
Table-4 switch builds and steps; the NULL-space addon plugs into a CLIP detector."""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from bench.data.layouts import read_dataset
from bench.data.pipeline import make_loader
from bench.errors import BenchError
from bench.interfaces import RunContext, TrainData
from bench.options import merge_options
from bench.plugins import get_registry
from nsnet_plugin.detector import NSNet
from nsnet_plugin.nullspace_addon import NullSpaceAddon


def quiet_ctx(**kw) -> RunContext:
    return RunContext(seed=0, log=lambda _m: None, **kw)


def nsnet_options(**overrides):
    entry = get_registry().get("detector", "nsnet")
    return merge_options("nsnet", entry.specs, entry.presets["demo"], overrides)


def addon_options(**overrides):
    entry = get_registry().get("addon", "nullspace")
    return merge_options("nullspace", entry.specs, entry.presets["demo"], overrides)


def built(seed: int = 0, **overrides) -> NSNet:
    torch.manual_seed(seed)
    detector = NSNet(nsnet_options(**{"captions": "prompt", **overrides}))
    detector.setup(quiet_ctx())
    return detector


def train_data(samples, batch_size: int, epochs: int) -> TrainData:
    def factory(s, chain, **kw):
        return make_loader(s, chain, seed=0, **kw)

    return TrainData(samples, factory, batch_size=batch_size, epochs=epochs)


def first_batch(detector: NSNet, samples, train: bool, n: int = 8):
    chain = detector.transforms(train=train)
    return next(iter(make_loader(samples, chain, train=train, shuffle=False, batch_size=n)))


@pytest.fixture(scope="module")
def samples(tiny_tree):
    # 4 real + 4 fake per generator keeps every step small
    everything = read_dataset(str(tiny_tree))
    picked = []
    for gen, label in itertools.product(("gan_a", "gan_b"), (0, 1)):
        picked += [s for s in everything if s.generator == gen and s.label == label][:4]
    return picked


def test_registry_defaults_build_cheaply_and_follow_the_paper():
    options = get_registry().get("detector", "nsnet").defaults
    detector = NSNet(options)
    assert detector.backbone is None  # construction loads no weights
    assert detector.input_size == 224
    assert (options["lora_r"], options["lora_alpha"], options["lora_dropout"]) == (6, 6.0, 0.8)
    assert (options["lr"], options["batch_size"], options["epochs"], options["lam"]) == (
        2e-4,
        32,
        2,
        0.2,
    )
    assert options["model"] == "ViT-L-14" and options["pretrained"] == "openai"
    demo = nsnet_options()
    assert demo["model"] == "bench-tiny-vit" and demo["pretrained"] == ""
    assert NSNet(demo).describe()["random_weights"] is True


@pytest.mark.parametrize(
    ("key", "value"),
    [("nullspace", "sometimes"), ("eval_projection", "batch"), ("captions", "gpt"), ("lam", 2.0)],
)
def test_bad_options_are_one_line_errors(key, value):
    with pytest.raises(BenchError, match=key):
        NSNet(nsnet_options(**{key: value}))


def test_training_lowers_the_loss(samples):
    """20 steps of the standard loop on 8 images (new crops and tilings every epoch).

    lr 1e-2 rather than the paper's 2e-4: a random tiny CLIP needs larger steps to move
    in 20 of them; the test is of the machinery (gradients reach LoRA and head).
    """
    detector = built(lr=1e-2)
    eight = [s for s in samples if s.generator == "gan_a"][:8]
    losses = detector.fit(train_data(eight, batch_size=8, epochs=20), quiet_ctx())
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1, (first, last)
    assert detector.describe()["random_weights"] is True


def test_checkpoint_round_trip_gives_identical_predictions(samples, tmp_path):
    from safetensors.torch import load_file, save_file

    detector = built(lr=1e-2)
    detector.fit(train_data(samples, batch_size=8, epochs=1), quiet_ctx())
    state = detector.trainable_state()
    assert all(k.startswith(("lora.", "head.", "nullspace.")) for k in state)
    assert "nullspace.fixed_projector" in state  # batch mode: the evaluation P is saved
    n_base = sum(p.numel() for p in detector.backbone.parameters())
    assert sum(v.numel() for v in state.values()) < n_base / 20
    save_file(state, str(tmp_path / "state.safetensors"))

    restored = built(seed=123)
    restored.load_trainable_state(load_file(str(tmp_path / "state.safetensors")))
    batch = first_batch(detector, samples, train=False)
    want = detector.predict_proba(batch)
    got = restored.predict_proba(batch)
    assert want.shape == (8,) and ((want >= 0) & (want <= 1)).all()
    assert torch.equal(got, want)


SWITCHES = list(itertools.product([True, False], ["batch", "fixed", "none"], [True, False]))


@pytest.mark.parametrize(("patch_selection", "nullspace", "contrastive"), SWITCHES)
def test_table4_switches_build_and_train_one_step(samples, patch_selection, nullspace, contrastive):
    detector = built(
        patch_selection=patch_selection, nullspace=nullspace, contrastive=contrastive, lr=1e-2
    )
    detector.prepare_captions(samples, quiet_ctx())
    four = [samples[0], samples[1], samples[-2], samples[-1]]  # two real, two fake
    batch = first_batch(detector, four, train=True, n=4)
    assert batch["image"].shape == (4, 3, 224, 224)
    optimizer = detector.configure_optimizer()
    detector.train_mode(True)
    loss = detector.training_step(batch)
    assert torch.isfinite(loss)
    assert ("supcon" in detector.last_loss_parts) == contrastive
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    detector.train_mode(False)
    probs = detector.predict_proba(first_batch(detector, four, train=False, n=4))
    assert probs.shape == (4,) and torch.isfinite(probs).all()
    assert ("nullspace.fixed_projector" in detector.trainable_state()) == (nullspace != "none")


def test_nullspace_none_needs_no_captions_and_eval_projection_none_skips_p(samples):
    plain = built(nullspace="none", captions="file")  # no captions.json anywhere: not needed
    plain.prepare_captions(samples, quiet_ctx())
    assert plain.describe()["captions"] == "not used"

    detector = built(eval_projection="none")
    detector.prepare_captions(samples, quiet_ctx())
    assert "nullspace.fixed_projector" not in detector.trainable_state()
    batch = first_batch(detector, samples, train=False)
    U = detector.extract_features(batch["image"])
    assert torch.allclose(detector.predict_proba(batch), torch.sigmoid(detector.head(U)[:, 0]))


def test_missing_captions_stop_training_before_it_starts(samples):
    detector = built(captions="file")
    with pytest.raises(BenchError, match="have no caption"):
        detector.fit(train_data(samples, batch_size=8, epochs=1), quiet_ctx())


def test_nullspace_addon_projects_any_clip_detector(samples):
    from bench.builtin.spectral_logreg import SpectralLogReg

    with pytest.raises(BenchError, match="clip-text"):
        NullSpaceAddon.check_compatible("nullspace", "spectral_logreg", SpectralLogReg)
    NullSpaceAddon.check_compatible("nullspace", "nsnet", NSNet)

    detector = built(nullspace="none")
    addon = NullSpaceAddon(addon_options(captions="prompt", prompt_template="a {label} {class}"))
    addon.attach(detector)
    addon.prepare(detector, train_data(samples, batch_size=8, epochs=1), quiet_ctx())
    P = addon.state()["fixed_projector"]
    V = detector.encode_text(["a real gan a", "a fake gan a", "a real gan b", "a fake gan b"])
    assert (V @ P).abs().max() < 1e-4 * V.abs().max()

    batch = first_batch(detector, samples, train=True)
    detector.train_mode(True)
    loss = detector.training_step(batch)  # the hook runs inside the detector's forward
    loss.backward()
    detector.train_mode(False)
    restored = NullSpaceAddon(addon_options())
    restored.load_state(addon.state())
    features = torch.randn(5, detector.backbone.embed_dim)
    assert torch.allclose(restored.apply(features, None, False), features @ P, atol=1e-6)
    with pytest.raises(BenchError, match="no projector"):
        NullSpaceAddon(addon_options()).apply(features, None, False)


def test_a_bf16_autocast_step_works(samples):
    """The core's loop wraps training_step in bf16 autocast on CUDA; the CPU flavour here."""
    detector = built()
    detector.prepare_captions(samples, quiet_ctx())
    batch = first_batch(detector, samples, train=True, n=4)
    detector.train_mode(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert detector.extract_features(batch["image"]).dtype == torch.bfloat16
        loss = detector.training_step(batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    detector.train_mode(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = detector.predict_proba(first_batch(detector, samples, train=False, n=4))
    assert probs.dtype == torch.float32 and torch.isfinite(probs).all()


def test_missing_blip_offline_fails_before_clip_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    detector = NSNet(nsnet_options(captions="blip"))
    with pytest.raises(BenchError, match="BLIP captioner .* offline") as info:
        detector.setup(quiet_ctx())
    assert detector.backbone is None and "\n" not in str(info.value)
    assert "--opt nsnet.caption_model=" in str(info.value)
