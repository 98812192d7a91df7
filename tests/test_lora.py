"""LoRA on CLIP's image attention: it reaches the attention, trains, and only it trains."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn

from bench.backbones.clip import TINY_MODEL, load_clip
from bench.errors import BenchError
from nsnet_plugin.lora import (
    SplitAttention,
    apply_lora,
    is_lora_name,
    load_lora_state,
    lora_parameters,
    lora_state,
)

IMAGES = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def fresh(seed: int = 0):
    torch.manual_seed(seed)
    return load_clip(TINY_MODEL, "")


def loss_of(backbone) -> torch.Tensor:
    return backbone.encode_image(IMAGES).square().mean()


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_attention_equals_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    causal = torch.triu(torch.full((7, 7), float("-inf")), diagonal=1)
    blocked = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)
    split = SplitAttention(mha).eval()
    for mask in (None, causal, blocked):
        want = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = split(x, x, x, need_weights=False, attn_mask=mask)[0]
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("mode", ["qkv", "mha"])
def test_lora_starts_as_the_identity(mode):
    backbone = fresh()
    before = backbone.encode_image(IMAGES)
    apply_lora(backbone.visual, 6, 6, 0.8, mode=mode)
    backbone.visual.eval()
    assert torch.allclose(backbone.encode_image(IMAGES), before, atol=1e-5)


@pytest.mark.parametrize("mode", ["qkv", "mha"])
def test_every_lora_weight_gets_a_gradient_and_nothing_else_does(mode):
    backbone = fresh()
    apply_lora(backbone.visual, 6, 6, 0.8, mode=mode)
    backbone.visual.train()
    names = {n for n, _ in backbone.named_parameters() if is_lora_name(n)}
    assert names and all(n.startswith("model.visual.") for n in names)  # text tower untouched
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == names

    # step 0: lora_B = 0, so only lora_B sees a gradient (lora_A's is B^T-weighted: zero)
    torch.manual_seed(1)
    loss_of(backbone).backward()
    grads = {n: p.grad for n, p in backbone.named_parameters() if is_lora_name(n)}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if "lora_A" in n)
    frozen = [p for n, p in backbone.named_parameters() if not is_lora_name(n)]
    assert all(p.grad is None for p in frozen)

    # after one optimiser step both factors learn
    optimizer = torch.optim.Adam(lora_parameters(backbone.visual), lr=1e-2)
    optimizer.step()
    optimizer.zero_grad()
    torch.manual_seed(2)
    loss_of(backbone).backward()
    for name, p in backbone.named_parameters():
        if is_lora_name(name):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in frozen)


def test_targeting_out_proj_alone_trains_nothing():
    """Why apply_lora never does it: MultiheadAttention bypasses out_proj.forward."""
    from peft import LoraConfig, inject_adapter_in_model

    backbone = fresh()
    before = backbone.encode_image(IMAGES)
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=r"transformer\.resblocks\.\d+\.attn\.out_proj"
    )
    inject_adapter_in_model(config, backbone.visual)
    with torch.no_grad():
        for name, p in backbone.visual.named_parameters():
            if "lora_" in name:
                p.normal_()
    assert torch.equal(backbone.encode_image(IMAGES), before)
    assert not backbone.encode_image(IMAGES).requires_grad


def test_dropout_acts_in_qkv_mode_and_not_in_peft_mha_mode():
    """peft merges MultiheadAttention adapters into the weights: its dropout never runs."""
    outputs = {}
    for mode in ("qkv", "mha"):
        backbone = fresh()
        apply_lora(backbone.visual, 6, 6, 0.8, mode=mode)
        with torch.no_grad():
            for p in lora_parameters(backbone.visual):
                p.normal_(std=0.2)
        backbone.visual.train()
        torch.manual_seed(3)
        a = backbone.encode_image(IMAGES)
        b = backbone.encode_image(IMAGES)
        outputs[mode] = (a - b).abs().max().item()
    assert outputs["qkv"] > 1e-4
    assert outputs["mha"] == 0.0


def test_lora_state_round_trip_and_mismatch():
    source = fresh()
    apply_lora(source.visual, 6, 6, 0.8)
    with torch.no_grad():
        for p in lora_parameters(source.visual):
            p.normal_(std=0.1)
    state = lora_state(source.visual)
    assert state and all(is_lora_name(k) for k in state)
    assert all(not v.requires_grad and v.device.type == "cpu" for v in state.values())

    target = fresh()  # same seed: same base weights; its adapters start afresh
    apply_lora(target.visual, 6, 6, 0.8)
    source.visual.eval()
    target.visual.eval()
    assert not torch.allclose(target.encode_image(IMAGES), source.encode_image(IMAGES))
    load_lora_state(target.visual, state)
    assert torch.allclose(target.encode_image(IMAGES), source.encode_image(IMAGES), atol=1e-6)

    other = fresh()
    apply_lora(other.visual, 4, 4, 0.8)
    with pytest.raises(BenchError, match="shape"):
        load_lora_state(other.visual, state)
    with pytest.raises(BenchError, match="do not fit"):
        load_lora_state(other.visual, {k: v for k, v in list(state.items())[1:]})


def test_bad_lora_options_are_refused():
    backbone = fresh()
    with pytest.raises(BenchError, match="mode"):
        apply_lora(backbone.visual, mode="all")
    with pytest.raises(BenchError, match="targets"):
        apply_lora(backbone.visual, targets=("q", "w"))
    with pytest.raises(BenchError, match="dropout"):
        apply_lora(backbone.visual, dropout=1.0)
    with pytest.raises(BenchError, match="scaling"):
        apply_lora(backbone.visual, scaling="alpha")


@pytest.mark.parametrize(
    ("r", "alpha", "scaling", "expected"),
    [
        (6, 6.0, "clip-lora", 6 / 6**0.5),  # CLIP-LoRA loralib/layers.py: alpha / sqrt(r) = 2.449
        (6, 6.0, "peft", 1.0),  # peft's default alpha / r
        (4, 8.0, "clip-lora", 4.0),
        (4, 8.0, "peft", 2.0),
    ],
)
@pytest.mark.parametrize("mode", ["qkv", "mha"])
def test_adapter_scale_is_the_formula(r, alpha, scaling, expected, mode):
    """W x + s · B A x: with A, B set by hand, the change of a q projection's output over
    B A x (computed here) is s, the formula's value."""
    from nsnet_plugin.lora import scale_factor

    assert scale_factor(r, alpha, scaling) == pytest.approx(expected)
    backbone = fresh()
    apply_lora(backbone.visual, r, alpha, 0.0, mode=mode, scaling=scaling)
    attn = backbone.visual.transformer.resblocks[0].attn
    layer = attn.q_proj if mode == "qkv" else attn
    A = layer.lora_A["default"].weight
    B = layer.lora_B["default"].weight
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        A.copy_(torch.randn(A.shape, generator=g))
        B.copy_(torch.randn(B.shape, generator=g) * 0.1)
    layer.eval()
    d = A.shape[1]
    x = torch.randn(3, d, generator=g)
    if mode == "qkv":
        with torch.no_grad():
            delta = layer(x) - layer.base_layer(x)
        update = x @ A.T @ B.T
    else:  # peft's MultiheadAttention merges s · B A into in_proj_weight for the forward
        with torch.no_grad():
            delta = layer.get_delta_weight("default")
        update = B @ A
    update = update.detach()
    ratio = (delta * update).sum() / (update * update).sum()
    assert float(ratio) == pytest.approx(expected, rel=1e-4)
