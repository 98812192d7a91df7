"""Issue 17 (mutation testing): NSNet's options, life cycle, projections and saved state.

Fast: CLIP is replaced (monkeypatched ``load_clip``) by a 4-dimensional stand-in whose
text tower maps each caption to a known axis, so every projection is known by hand
(removing the direction e_i zeroes feature i). LoRA is the real peft code on the
stand-in's attention.
"""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.builtin.transforms import CenterCrop, HorizontalFlip, RandomCrop, ToTensor
from bench.data.layouts import Sample
from bench.errors import BenchError
from bench.interfaces import RunContext
from bench.options import merge_options
from bench.plugins import get_registry
from nsnet_plugin.detector import NSNet, _config_image_size, _positive_or_none, _under
from nsnet_plugin.losses import nsnet_loss
from nsnet_plugin.patch_selection import PatchSelect

D = 4
AXIS = torch.eye(D)
TEXT = {"a cat": 2.0 * AXIS[0], "a dog": 3.0 * AXIS[1], "a car": AXIS[2] + AXIS[3]}


class Block(nn.Module):
    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn


class Visual(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList([Block(nn.MultiheadAttention(D, 2))])


class FakeClip(nn.Module):
    """What NSNet asks of a ClipBackbone, in 4 dimensions."""

    image_size = 32
    embed_dim = D
    mean = (0.1, 0.2, 0.3)
    std = (0.4, 0.5, 0.6)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.visual = Visual()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.cat([images.mean((2, 3)), images.amax((1, 2, 3))[:, None]], 1)
        attn = self.visual.transformer.resblocks[0].attn
        return x + attn(x[None], x[None], x[None])[0][0]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([TEXT[t] for t in texts])

    def describe(self) -> dict:
        return {"backbone": "fake-identity", "quick_gelu": False}


def options(**overrides) -> dict:
    entry = get_registry().get("detector", "nsnet")
    return merge_options("nsnet", entry.specs, entry.presets["demo"], overrides)


@pytest.fixture
def clip_calls(monkeypatch):
    """load_clip replaced by the stand-in; the calls are recorded."""
    import bench.backbones.clip as clip

    calls = []

    def fake_load_clip(model, pretrained, device, **kwargs):
        calls.append((model, pretrained, device, kwargs))
        return FakeClip()

    monkeypatch.setattr(clip, "load_clip", fake_load_clip)
    return calls


def ready(clip_calls, log=None, **overrides) -> NSNet:
    detector = NSNet(options(**{"captions": "file", **overrides}))
    detector.setup(RunContext(log=(log if log is not None else []).append))
    return detector


def ctx_with(captions: dict, log: list | None = None) -> RunContext:
    return RunContext(captions=captions, log=(log if log is not None else []).append)


def without(x: torch.Tensor, *axes: int) -> torch.Tensor:
    out = x.clone()
    out[:, list(axes)] = 0.0
    return out


PATHS = ["/d/cat/0_real/a.png", "/d/dog/1_fake/b.png", "/d/cat/1_fake/c.png"]
CAPTIONS = {PATHS[0]: "a cat", PATHS[1]: "a dog", PATHS[2]: "a cat"}
SAMPLES = [Sample(p, int("fake" in p), "gen") for p in PATHS]


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("nullspace", "batch, fixed, none"),
        ("eval_projection", "fixed, caption, own, none"),
        ("lora_mode", "qkv, mha"),
        ("lora_scaling", "clip-lora, peft"),
        ("entropy_input", "luma, rgb-mean"),
        ("normalization", "clip, imagenet"),
        ("captions", "file, blip, prompt"),
        ("missing_captions", "error, prompt"),
        ("quick_gelu", "auto, true, false"),
    ],
)
def test_each_choice_is_checked_with_its_name_and_choices(key, allowed):
    bad = {**options(), key: "Nope"}
    with pytest.raises(BenchError) as info:
        NSNet(bad)
    assert str(info.value) == f"option nsnet.{key} must be one of {allowed}, got 'Nope'"


def test_choices_are_read_case_blind():
    detector = NSNet(
        options()
        | {
            "nullspace": "FIXED",
            "eval_projection": "Own",
            "lora_mode": "MHA",
            "lora_scaling": "PEFT",
        }
        | {"entropy_input": "RGB-Mean", "normalization": "ImageNet", "quick_gelu": "TRUE"}
    )
    assert (detector.nullspace_mode, detector.eval_projection) == ("fixed", "own")
    assert (detector.lora_mode, detector.lora_scaling) == ("mha", "peft")
    assert (detector.entropy_input, detector.normalization_stats) == ("rgb-mean", "imagenet")
    assert detector.nullspace.mode == "fixed"


@pytest.mark.parametrize(("value", "expected"), [("auto", None), ("true", True), ("false", False)])
def test_quick_gelu(value, expected):
    assert NSNet(options(quick_gelu=value)).quick_gelu is expected


def test_runs_saved_before_an_option_existed_get_the_old_behaviour():
    old = {k: v for k, v in options().items() if k not in ("lora_scaling", "entropy_input")}
    del old["normalization"]
    detector = NSNet(old)
    assert (detector.lora_scaling, detector.entropy_input) == ("peft", "luma")
    assert detector.normalization_stats == "clip"
    assert NSNet(options()).lora_scaling == "clip-lora"  # today's default stays


def test_lam_and_temperature_ranges():
    for lam in (0.0, 1.0):
        NSNet({**options(), "lam": lam})
    for lam in (-0.01, 1.01):
        with pytest.raises(BenchError) as info:
            NSNet({**options(), "lam": lam})
        assert str(info.value) == f"option nsnet.lam must be in [0, 1], got {lam}"
    NSNet({**options(), "temperature": 1e-9})
    for t in (0.0, -1.0):
        with pytest.raises(BenchError) as info:
            NSNet({**options(), "temperature": t})
        assert str(info.value) == f"option nsnet.temperature must be > 0, got {t}"


def test_null_space_settings_reach_the_null_space():
    space = NSNet(options(nullspace="fixed", fixed_energy=0.5, rtol=0.25, max_rank=3)).nullspace
    assert (space.mode, space.fixed_k, space.fixed_energy) == ("fixed", None, 0.5)
    assert (space.rtol, space.max_rank) == (0.25, 3)
    space = NSNet(options(fixed_k=7)).nullspace
    assert (space.mode, space.fixed_k, space.fixed_energy, space.rtol, space.max_rank) == (
        "batch",
        7,
        None,
        None,
        None,
    )
    space = NSNet({**options(), "fixed_k": 0, "max_rank": -1}).nullspace
    assert (space.fixed_k, space.max_rank) == (None, None)


@pytest.mark.parametrize(
    ("value", "expected"), [(0, None), (0.0, None), (-2, None), (0.5, 0.5), (1, 1), (None, None)]
)
def test_positive_or_none(value, expected):
    assert _positive_or_none(value) == expected


# ----------------------------------------------------------------------------- input
def test_input_size_from_the_config_before_setup(monkeypatch, clip_calls):
    assert NSNet(options(model="bench-tiny-vit")).input_size == 224  # the tiny config's
    import open_clip

    sizes = {"a": {"vision_cfg": {"image_size": [48, 48]}}, "b": {"vision_cfg": {}}, "c": None}
    monkeypatch.setattr(open_clip, "get_model_config", lambda name: sizes[name])
    assert [_config_image_size(m) for m in "abc"] == [48, 224, 224]
    sizes["d"] = {"vision_cfg": {"image_size": 96}}
    assert NSNet(options(model="d")).input_size == 96
    monkeypatch.setattr(open_clip, "get_model_config", lambda name: 1 / 0)
    assert _config_image_size("anything") == 224  # setup names a bad model in one line
    assert ready(clip_calls).input_size == 32  # the backbone's own, once built


def test_normalization_statistics(clip_calls):
    assert NSNet(options()).normalization == (
        (0.48145466, 0.4578275, 0.40821073),
        (0.26862954, 0.26130258, 0.27577711),
    )
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert NSNet(options(normalization="imagenet")).normalization == imagenet
    assert ready(clip_calls).normalization == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert ready(clip_calls, normalization="imagenet").normalization == imagenet


def test_base_transforms_follow_the_options(clip_calls):
    detector = ready(
        clip_calls, patch_size=16, small_image="resize", odd_tile="low", entropy_input="rgb-mean"
    )
    steps = detector.base_transforms(train=True).steps
    assert [type(s) for s in steps] == [PatchSelect, ToTensor]
    select = steps[0]
    assert (select.out_size, select.patch_size, select.small_image) == (32, 16, "resize")
    assert (select.odd_tile, select.entropy_input, select.shuffle) == ("low", "rgb-mean", True)
    assert (steps[1].mean, steps[1].std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))

    detector = ready(clip_calls, patch_selection=False, hflip=True)
    train, test = detector.base_transforms(True).steps, detector.base_transforms(False).steps
    assert [type(s) for s in train] == [RandomCrop, HorizontalFlip, ToTensor]
    assert [type(s) for s in test] == [CenterCrop, HorizontalFlip, ToTensor]
    assert train[0].size == test[0].size == 32


# ----------------------------------------------------------------------------- setup
def test_setup_builds_what_the_options_say(clip_calls):
    detector = ready(
        clip_calls,
        model="m",
        pretrained="p",
        quick_gelu="false",
        lora_r=2,
        lora_alpha=8.0,
        lora_dropout=0.25,
        lora_targets=["q", "v"],
        lora_scaling="peft",
    )
    assert clip_calls == [("m", "p", "cpu", {"quick_gelu": False, "option": "nsnet.pretrained"})]
    attn = detector.backbone.visual.transformer.resblocks[0].attn
    assert not hasattr(attn.k_proj, "lora_A")  # k not targeted
    for proj in (attn.q_proj, attn.v_proj):
        assert proj.lora_A["default"].weight.shape == (2, D)
        assert proj.scaling["default"] == pytest.approx(8.0 / 2)  # peft: alpha / r
        assert proj.lora_dropout["default"].p == 0.25
    assert isinstance(detector.head, nn.Linear) and detector.head.weight.shape == (1, D)
    assert detector.bank is not None and len(detector.bank) == 0
    assert not detector.is_training() and not detector.backbone.visual.training
    assert not detector.head.training
    mha = ready(clip_calls, lora_mode="mha").backbone.visual.transformer.resblocks[0].attn
    assert hasattr(mha, "lora_A")  # peft's MultiheadAttention wrapper, not split


def test_blip_is_looked_for_before_clip_loads_only_when_captions_are_needed(
    clip_calls, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(BenchError) as info:
        ready(clip_calls, captions="blip", caption_model="nobody/blip")
    assert "BLIP captioner nobody/blip is not on this machine" in str(info.value)
    assert "--opt nsnet.caption_model=/path/to/that/folder" in str(info.value)
    assert clip_calls == []
    ready(clip_calls, captions="blip", caption_model="nobody/blip", nullspace="none")
    assert len(clip_calls) == 1


def test_nothing_runs_before_setup():
    detector = NSNet(options())
    for call in (
        lambda: detector.prepare_captions(SAMPLES, RunContext()),
        lambda: detector.plan_evaluation(SAMPLES, RunContext()),
        detector.configure_optimizer,
        lambda: detector.extract_features(torch.zeros(1, 3, 32, 32)),
        lambda: detector.encode_text(["a cat"]),
        detector.trainable_state,
        lambda: detector.load_trainable_state({}),
    ):
        with pytest.raises(RuntimeError, match=r"^NSNet\.setup\(ctx\) must run first$"):
            call()
    detector.head = nn.Linear(D, 1)  # a head alone is not set up either
    with pytest.raises(RuntimeError):
        detector.configure_optimizer()


# ----------------------------------------------------------------------------- captions
@pytest.mark.parametrize(
    ("nullspace", "eval_projection", "fits"),
    [("fixed", "caption", True), ("batch", "fixed", True), ("batch", "caption", False)],
)
def test_prepare_captions_fits_the_fixed_p_where_it_is_used(
    clip_calls, nullspace, eval_projection, fits
):
    log: list[str] = []
    detector = ready(clip_calls, nullspace=nullspace, eval_projection=eval_projection)
    detector.prepare_captions(SAMPLES, ctx_with(CAPTIONS, log))
    assert detector.bank.captions == CAPTIONS
    if fits:
        assert log == [
            "nsnet: fixed projector from 2 distinct training captions keeps 2 of 4 dimensions"
        ]
        P = detector.nullspace.fixed
        torch.testing.assert_close(P, torch.diag(torch.tensor([0.0, 0.0, 1.0, 1.0])))
    else:
        assert log == [] and detector.nullspace.fixed is None


def test_prepare_captions_uses_the_runs_captions_and_names_nsnets_options(clip_calls):
    detector = ready(clip_calls)
    with pytest.raises(BenchError) as info:
        detector.prepare_captions(SAMPLES, ctx_with({PATHS[0]: "a cat"}))
    assert str(info.value).startswith("2 of 3 training images have no caption")
    assert "--opt nsnet.caption_file=FILE" in str(info.value)
    none = ready(clip_calls, nullspace="none")
    none.prepare_captions(SAMPLES, ctx_with({}))  # needs no captions
    assert len(none.bank) == 0 and none.nullspace.fixed is None
    assert none.needs_captions() is False and detector.needs_captions() is True


def test_plan_evaluation_batches_by_generator_and_content(clip_calls, tmp_path):
    files = {}
    for name, content in [("g1a", b"zz"), ("g1b", b"a"), ("g1c", b"mm"), ("g2a", b"q")]:
        files[name] = tmp_path / f"{name}.png"
        files[name].write_bytes(content)
    samples = [
        Sample(str(files["g2a"]), 0, "g2"),
        Sample(str(files["g1a"]), 1, "g1"),
        Sample(str(files["g1b"]), 0, "g1"),
        Sample(str(files["g1c"]), 1, "g1"),
    ]
    files_in = [files[n] for n in ("g2a", "g1a", "g1b", "g1c")]
    captions = {s.path: "a cat" for s in samples}
    log: list[str] = []
    detector = ready(clip_calls, eval_projection="caption", batch_size=2)
    plan = detector.plan_evaluation(samples, ctx_with(captions, log))
    g1 = sorted([1, 2, 3], key=lambda i: hashlib.sha256(files_in[i].read_bytes()).hexdigest())
    # g1 before g2; ordered by content hash, 2 at a time
    assert plan.batches == [g1[:2], g1[2:], [0]]
    assert log == [
        "nsnet: evaluation projects each of 3 fixed batches (per generator, by content hash, "
        "2 images) by its own captions' null space"
    ]
    assert detector.bank.captions == captions  # the test images' captions, for prediction

    own = ready(clip_calls, eval_projection="own")
    assert own.plan_evaluation(samples, ctx_with(captions)) is None
    assert own.bank.captions == captions
    for kwargs in (
        {"eval_projection": "fixed"},
        {"eval_projection": "none"},
        {"nullspace": "none", "eval_projection": "caption"},
    ):
        other = ready(clip_calls, **kwargs)
        assert other.plan_evaluation(samples, ctx_with(captions)) is None
        assert len(other.bank) == 0
    with pytest.raises(BenchError, match="1 of 4 test images have no caption"):
        detector.plan_evaluation(samples, ctx_with({s.path: "a cat" for s in samples[1:]}))


def test_plan_evaluation_keeps_test_sets_apart(clip_calls, tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(b"x%d" % i)
    a = Sample(str(paths[0]), 0, "g", dataset="set2")
    b = Sample(str(paths[1]), 0, "g", dataset="set1")
    detector = ready(clip_calls, eval_projection="caption", batch_size=8)
    plan = detector.plan_evaluation([a, b], ctx_with({a.path: "a cat", b.path: "a dog"}))
    assert plan.batches == [[1], [0]]  # one batch per (test set, generator), sorted


# ----------------------------------------------------------------------------- projections
def test_projections_by_hand(clip_calls):
    U = torch.randn(3, D, generator=torch.Generator().manual_seed(0))
    batch = {"path": PATHS}
    cats = {"path": [PATHS[0], PATHS[2]]}

    detector = ready(clip_calls, nullspace="batch", eval_projection="fixed")
    detector.prepare_captions(SAMPLES, ctx_with(CAPTIONS))
    torch.testing.assert_close(detector._project(U[:2], cats, True), without(U[:2], 0))
    torch.testing.assert_close(detector._project(U, None, False), without(U, 0, 1))

    fixed = ready(clip_calls, nullspace="fixed", eval_projection="none")
    fixed.prepare_captions(SAMPLES, ctx_with(CAPTIONS))
    torch.testing.assert_close(fixed._project(U[:2], cats, True), without(U[:2], 0, 1))
    assert torch.equal(fixed._project(U, batch, False), U)  # evaluation: none

    none = ready(clip_calls, nullspace="none")
    assert torch.equal(none._project(U, batch, True), U) and torch.equal(
        none._project(U, None, False), U
    )

    own = ready(clip_calls, eval_projection="own")
    own.plan_evaluation(SAMPLES, ctx_with(CAPTIONS))
    # own: each row away from its own caption only
    want = U.clone()
    want[[0, 2], 0] = 0.0
    want[1, 1] = 0.0
    torch.testing.assert_close(own._project(U, batch, False), want)

    caption = ready(clip_calls, eval_projection="caption")
    caption.plan_evaluation(SAMPLES, ctx_with(CAPTIONS))
    torch.testing.assert_close(caption._project(U, batch, False), without(U, 0, 1))
    message = "nsnet: eval_projection needs the batch's image paths"
    for bad in (None, {"image": U}):
        with pytest.raises(BenchError) as info:
            caption._project(U, bad, False)
        assert str(info.value) == message
    caption.bank = None
    with pytest.raises(BenchError, match=message):
        caption._project(U, batch, False)

    unfitted = ready(clip_calls)
    with pytest.raises(BenchError) as info:
        unfitted._project(U, None, False)
    assert str(info.value) == (
        "nsnet: no fixed projector for evaluation (train first, load a saved state, "
        "or set --opt nsnet.eval_projection=none)"
    )


def test_training_step_and_prediction_by_hand(clip_calls):
    detector = ready(clip_calls, nullspace="fixed", lam=0.3, temperature=0.5)
    detector.prepare_captions(SAMPLES, ctx_with(CAPTIONS))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0.0, 1.0, 1.0])
    with torch.no_grad():
        U = detector.backbone.encode_image(images)
    f = without(U, 0, 1)
    logits = f @ detector.head.weight[0] + detector.head.bias
    batch = {"image": images, "label": labels, "path": PATHS}
    detector.train_mode(True)
    assert detector.backbone.visual.training and detector.head.training
    loss = detector.training_step(batch)
    want, parts = nsnet_loss(f, logits, labels, lam=0.3, temperature=0.5, contrastive=True)
    torch.testing.assert_close(loss, want)
    assert detector.last_loss_parts == pytest.approx({k: float(v) for k, v in parts.items()})
    assert set(detector.last_loss_parts) == {"supcon", "bce", "total"}

    bce_only = ready(clip_calls, nullspace="fixed", contrastive=False)
    bce_only.prepare_captions(SAMPLES, ctx_with(CAPTIONS))
    bce_only.head.load_state_dict(detector.head.state_dict())
    bce_only.train_mode(True)
    torch.testing.assert_close(
        bce_only.training_step(batch), F.binary_cross_entropy_with_logits(logits, labels)
    )
    detector.train_mode(False)
    assert not detector.backbone.visual.training and not detector.head.training
    probs = detector.predict_proba(batch)
    torch.testing.assert_close(probs, torch.sigmoid(logits).detach())
    assert not probs.requires_grad


def test_optimizer_is_adam_on_lora_and_head_at_the_options_lr(clip_calls):
    detector = ready(clip_calls, lr=0.003)
    optimizer = detector.configure_optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    (group,) = optimizer.param_groups
    assert group["lr"] == 0.003
    assert len(group["params"]) == 2 * 3 + 2  # A, B on q, k, v; head weight and bias
    assert {id(p) for p in group["params"]} >= {id(p) for p in detector.head.parameters()}


def test_encode_text_is_the_backbones(clip_calls):
    torch.testing.assert_close(ready(clip_calls).encode_text(("a dog",)), 3.0 * AXIS[1:2])


# ----------------------------------------------------------------------------- saved state
def test_trainable_state_round_trip_and_a_head_that_does_not_fit(clip_calls):
    source = ready(clip_calls, nullspace="fixed")
    source.prepare_captions(SAMPLES, ctx_with(CAPTIONS))
    with torch.no_grad():
        for p in source.configure_optimizer().param_groups[0]["params"]:
            p.normal_()
    state = source.trainable_state()
    assert {k.split(".")[0] for k in state} == {"lora", "head", "nullspace"}
    assert torch.equal(state["head.weight"], source.head.weight.detach())
    assert torch.equal(state["nullspace.fixed_projector"], source.nullspace.fixed)
    assert all(not v.requires_grad for v in state.values())

    target = ready(clip_calls, nullspace="fixed")
    target.load_trainable_state(state)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    source.train_mode(False)
    torch.testing.assert_close(
        target.predict_proba({"image": images}), source.predict_proba({"image": images})
    )
    bad = dict(state)
    bad["head.weight"] = torch.zeros(1, D + 1)
    with pytest.raises(BenchError) as info:
        target.load_trainable_state(bad)
    assert str(info.value) == (
        "saved nsnet head does not fit this model: size mismatch for weight: copying a param "
        "with shape torch.Size([1, 5]) from checkpoint, the shape in current model is "
        "torch.Size([1, 4])."
    )


def test_under():
    state = {"lora.a": 1, "head.w": 2, "lorax": 3, "x.lora.b": 4}
    assert _under(state, "lora.") == {"a": 1}


# ----------------------------------------------------------------------------- describe
def test_describe_before_and_after_setup(clip_calls):
    facts = NSNet(
        options(model="m", pretrained="p", nullspace="fixed", eval_projection="own")
    ).describe()
    assert facts == {
        "backbone": "m/p",
        "random_weights": False,
        "lora": "qkv on q+k+v, r=6 alpha=6.0 dropout=0.8 scaling=clip-lora",
        "nullspace": "fixed (evaluation: own)",
        "captions": "file",
    }
    for pretrained in ("", " None ", "RANDOM"):
        facts = NSNet(options(pretrained=pretrained, nullspace="none", lora_mode="mha")).describe()
        assert facts["random_weights"] is True
        assert facts["nullspace"] == "none" and facts["captions"] == "not used"
        assert facts["lora"] == (
            "mha on in_proj+out_proj, r=6 alpha=6.0 dropout=0.8 scaling=clip-lora"
            " (peft ignores dropout in mha mode)"
        )
    assert NSNet(options(pretrained="")).describe()["backbone"] == "bench-tiny-vit/random"
    built = ready(clip_calls, lora_targets=["v", "out"]).describe()
    assert built["backbone"] == "fake-identity" and built["quick_gelu"] is False
    assert built["lora"].startswith("qkv on v+out, ")


# ----------------------------------------------------------------------------- survivors
def test_before_setup_the_mode_switch_and_the_caption_reading_fail_cleanly():
    detector = NSNet(options(eval_projection="caption"))
    detector.train_mode(True)  # no networks yet: only the flag
    assert detector.is_training() is True
    detector.train_mode(False)
    assert detector.is_training() is False
    with pytest.raises(BenchError, match="^nsnet: eval_projection needs the batch's image paths$"):
        detector._project(torch.ones(1, D), {"path": PATHS[:1]}, False)


def test_batch_mode_training_needs_its_captions(clip_calls):
    detector = ready(clip_calls)
    with pytest.raises(AssertionError):
        detector._project(torch.ones(2, D), None, True)
    detector.bank = None
    with pytest.raises(AssertionError):
        detector._project(torch.ones(2, D), {"path": PATHS[:2]}, True)


def test_plan_evaluation_takes_any_sample_and_puts_unreadable_files_last(clip_calls, tmp_path):
    # sha256 of b"c0" starts with a digit, of b"c1" with a letter: an unreadable file's
    # key sorts after both
    for name in ("c0", "c1"):
        (tmp_path / f"{name}.png").write_bytes(name.encode())
    gone = SimpleNamespace(path=str(tmp_path / "gone.png"), label=0, generator="g")
    samples = [gone] + [
        SimpleNamespace(path=str(tmp_path / f"{n}.png"), label=1, generator="g")
        for n in ("c1", "c0")
    ]
    detector = ready(clip_calls, eval_projection="caption", batch_size=8)
    plan = detector.plan_evaluation(samples, ctx_with({s.path: "a cat" for s in samples}))
    assert plan.batches == [[2, 1, 0]]
    # a sample that names no test set is in the default one, with the Samples that don't
    mixed = [Sample(samples[1].path, 1, "g"), samples[2]]
    plan = detector.plan_evaluation(mixed, ctx_with({s.path: "a cat" for s in mixed}))
    assert plan.batches == [[1, 0]]
    with pytest.raises(BenchError) as info:
        detector.plan_evaluation(samples, ctx_with({}))
    assert "--opt nsnet.caption_file=FILE" in str(info.value)


def test_batch_mode_training_projects_by_the_batchs_captions_and_hooks_see_the_batch(
    clip_calls,
):
    seen = []

    class Doubler:
        def apply(self, features, batch, training):
            seen.append((batch, training))
            return 2 * features

    detector = ready(clip_calls, nullspace="batch", contrastive=False)
    detector.prepare_captions(SAMPLES, ctx_with(CAPTIONS))  # fixed P: e_0 and e_1 out
    detector.feature_hooks.append(Doubler())
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0.0, 1.0])
    batch = {"image": images, "label": labels, "path": [PATHS[0], PATHS[2]]}  # two cats
    with torch.no_grad():
        U = detector.backbone.encode_image(images)
    logits = 2 * without(U, 0) @ detector.head.weight[0] + detector.head.bias  # e_0 only
    detector.train_mode(True)
    loss = detector.training_step(batch)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, labels))
    assert seen == [(batch, True)]


def test_a_head_with_several_misfits_names_each(clip_calls):
    detector = ready(clip_calls)
    state = detector.trainable_state()
    state["head.weight"], state["head.bias"] = torch.zeros(1, 7), torch.zeros(3)
    with pytest.raises(BenchError) as info:
        detector.load_trainable_state(state)
    message = str(info.value)
    assert message.count("size mismatch for ") == 2 and "; size mismatch for bias" in message


def test_a_non_square_config_size_reads_its_first_side(monkeypatch):
    import open_clip

    monkeypatch.setattr(
        open_clip, "get_model_config", lambda name: {"vision_cfg": {"image_size": (48, 64)}}
    )
    assert _config_image_size("m") == 48
