"""Issue 17 (mutation testing): NSNet's options, life cycle, projections and saved state.

Fast: CLIP is replaced (monkeypatched ``load_clip``) by a 4-dimensional stand-in whose
text tower maps each caption to a known axis, so every projection is known by hand
(removing the direction e_i zeroes feature i). LoRA is the real peft code on the
stand-in's attention.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn

from bench.data.layouts import Sample
from bench.errors import BenchError
from bench.interfaces import RunContext
from bench.options import merge_options
from bench.plugins import get_registry
from nsnet_plugin.detector import NSNet

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
