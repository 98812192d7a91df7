"""Issue 17 (mutation testing): LoRA's split attention, masks, defaults and messages.

SplitAttention is checked against torch's own nn.MultiheadAttention (an independent
implementation) with non-zero biases, dropout, float64 and every mask form; the masks
against values written by hand.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn

from bench.errors import BenchError
from nsnet_plugin.lora import (
    SplitAttention,
    _additive_mask,
    apply_lora,
    is_lora_name,
    load_lora_state,
    lora_parameters,
    split_attention,
)

INF = float("inf")


def attention(*, bias: bool = True, dropout: float = 0.0, dtype=torch.float32, seed: int = 0):
    """A MultiheadAttention with every weight and bias random (torch zeroes the biases)."""
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(8, 2, bias=bias, dropout=dropout, batch_first=True)
    with torch.no_grad():
        for p in mha.parameters():
            p.normal_(std=0.5)
    return mha.to(dtype)


def tokens(n: int = 2, length: int = 3, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, length, 8, generator=torch.Generator().manual_seed(4)).to(dtype)


class Block(nn.Module):
    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn


class Visual(nn.Module):
    """The open_clip layout apply_lora reads: visual.transformer.resblocks[i].attn."""

    def __init__(self, *attns: nn.Module, block=Block):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList([block(a) for a in attns])


# ----------------------------------------------------------------------------- SplitAttention
@pytest.mark.parametrize("bias", [True, False])
def test_split_attention_keeps_the_biases_or_their_absence(bias):
    mha = attention(bias=bias).eval()
    split = SplitAttention(mha).eval()
    for proj in (split.q_proj, split.k_proj, split.v_proj, split.out_proj):
        assert (proj.bias is not None) == bias
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(split(x, x, x)[0], mha(x, x, x, need_weights=False)[0])


def test_split_attention_keeps_float64():
    mha = attention(dtype=torch.float64).eval()
    split = SplitAttention(mha).eval()
    assert split.q_proj.weight.dtype == torch.float64
    x = tokens(dtype=torch.float64)
    blocked = torch.tensor([[False, True, False]] * 3)
    padding = torch.tensor([[False, False, True], [False, False, False]])
    with torch.no_grad():
        got = split(x, x, x, attn_mask=blocked, key_padding_mask=padding)[0]
        want = mha(x, x, x, attn_mask=blocked, key_padding_mask=padding, need_weights=False)[0]
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_split_attention_masks_per_head_and_by_padding():
    mha = attention().eval()
    split = SplitAttention(mha).eval()
    x = tokens()
    g = torch.Generator().manual_seed(5)
    per_head = torch.randn(2 * 2, 3, 3, generator=g)  # (n * heads, L, S): all different
    padding = torch.tensor([[False, True, False], [True, False, False]])
    additive_padding = torch.tensor([[0.0, -1.5, 0.0], [2.0, 0.0, -INF]])
    with torch.no_grad():
        for kwargs in (
            {"attn_mask": per_head},
            {"key_padding_mask": padding},
            {"attn_mask": per_head, "key_padding_mask": additive_padding},
        ):
            want = mha(x, x, x, need_weights=False, **kwargs)[0]
            torch.testing.assert_close(split(x, x, x, **kwargs)[0], want)


def test_split_attention_drops_out_in_training_only():
    mha = attention(dropout=0.5).eval()
    split = SplitAttention(mha).eval()
    x = tokens()
    with torch.no_grad():
        want = mha(x, x, x, need_weights=False)[0]
        torch.testing.assert_close(split(x, x, x)[0], want)  # evaluation: no dropout
        split.train()
        torch.manual_seed(0)
        first = split(x, x, x)[0]
        second = split(x, x, x)[0]
    assert (first - want).abs().max() > 1e-3 and (first - second).abs().max() > 1e-3


@pytest.mark.parametrize(
    "mha",
    [
        nn.MultiheadAttention(8, 2, add_bias_kv=True),
        nn.MultiheadAttention(8, 2, kdim=4, vdim=4),
        nn.MultiheadAttention(8, 2, add_zero_attn=True),
    ],
)
def test_attention_it_cannot_split_is_refused_in_one_line(mha):
    with pytest.raises(BenchError) as info:
        SplitAttention(mha)
    assert str(info.value) == (
        "LoRA mode 'qkv' needs plain self-attention (no bias_k, no zero attn)"
    )


# ----------------------------------------------------------------------------- masks by hand
def test_additive_mask_by_hand():
    blocked = torch.tensor([[False, True], [False, False]])
    m = _additive_mask(blocked, None, torch.float64, 1, 1)
    assert m.dtype == torch.float64
    assert torch.equal(m, torch.tensor([[0.0, -INF], [0.0, 0.0]], dtype=torch.float64))
    additive = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    m = _additive_mask(additive, None, torch.float64, 1, 1)
    assert m.dtype == torch.float64 and torch.equal(m, additive.double())

    per_head = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(6, 2, 2)  # n=2, heads=3
    m = _additive_mask(per_head, None, torch.float32, 2, 3)
    assert m.shape == (2, 3, 2, 2)
    assert torch.equal(m[1, 2], torch.tensor([[20.0, 21.0], [22.0, 23.0]]))

    pad = torch.tensor([[0.0, -2.0], [-3.0, 0.0]])  # additive, per (batch, key)
    m = _additive_mask(None, pad, torch.float32, 2, 1)
    assert m.shape == (2, 1, 1, 2) and torch.equal(m[:, 0, 0], pad)
    both = _additive_mask(additive, pad, torch.float32, 2, 1)
    assert torch.equal(both[1, 0], torch.tensor([[-2.5, -1.0], [-1.0, 0.0]]))
    assert _additive_mask(None, None, torch.float32, 2, 1) is None


# ----------------------------------------------------------------------------- apply_lora
def test_split_attention_counts_what_it_replaces():
    visual = Visual(nn.MultiheadAttention(8, 2), nn.Identity(), nn.MultiheadAttention(8, 2))
    assert split_attention(visual) == 2
    assert isinstance(visual.transformer.resblocks[0].attn, SplitAttention)
    assert split_attention(visual) == 0  # nothing left to replace


def test_default_rank_and_alpha_are_the_papers_six_and_six():
    visual = Visual(attention())
    apply_lora(visual)
    q = visual.transformer.resblocks[0].attn.q_proj
    assert q.lora_A["default"].weight.shape == (6, 8)
    assert q.scaling["default"] == pytest.approx(6 / math.sqrt(6))  # CLIP-LoRA's alpha/sqrt(r)
    assert len(lora_parameters(visual)) == 2 * 3  # A and B on q, k, v


def test_rank_one_is_allowed_and_zero_is_not():
    visual = Visual(attention())
    apply_lora(visual, r=1)
    assert visual.transformer.resblocks[0].attn.q_proj.lora_A["default"].weight.shape == (1, 8)
    with pytest.raises(BenchError) as info:
        apply_lora(Visual(attention()), r=0)
    assert str(info.value) == "LoRA rank must be >= 1, got 0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "all"}, "LoRA mode must be one of qkv, mha, got 'all'"),
        ({"scaling": "x"}, "LoRA scaling must be one of clip-lora, peft, got 'x'"),
        (
            {"targets": ("q", "w")},
            "LoRA targets must be a non-empty subset of q, k, v, out, got ['q', 'w']",
        ),
        ({"targets": ()}, "LoRA targets must be a non-empty subset of q, k, v, out, got []"),
    ],
)
def test_bad_options_are_named_in_one_line(kwargs, message):
    with pytest.raises(BenchError) as info:
        apply_lora(Visual(attention()), **kwargs)
    assert str(info.value) == message


def test_a_visual_without_the_open_clip_layout_is_refused_in_one_line():
    with pytest.raises(BenchError) as info:
        apply_lora(nn.Linear(2, 2))
    assert str(info.value) == (
        "LoRA needs an open_clip VisionTransformer (visual.transformer.resblocks); got Linear"
    )
    no_blocks = nn.Module()
    no_blocks.transformer = nn.Module()  # a transformer without resblocks
    with pytest.raises(BenchError, match=r"\(visual.transformer.resblocks\); got Module$"):
        apply_lora(no_blocks)

    class Plain(nn.Module):
        def __init__(self, attn: nn.Module):
            super().__init__()
            self.mlp = attn  # no "attn": not an attention block

    with pytest.raises(BenchError) as info:
        apply_lora(Visual(nn.Identity(), block=Plain))
    assert str(info.value) == "LoRA found no attention modules in the image transformer"


@pytest.mark.parametrize("mode", ["qkv", "mha"])
def test_attention_of_another_kind_is_refused_in_one_line(mode):
    """Caught a bug: peft's own error (a traceback) came instead of a one-line message."""
    with pytest.raises(BenchError) as info:
        apply_lora(Visual(nn.Identity(), nn.Identity()), mode=mode)
    assert str(info.value) == (
        f"LoRA mode '{mode}' needs nn.MultiheadAttention in the image transformer; "
        "its attention modules are Identity"
    )


def test_lora_names():
    assert is_lora_name("transformer.resblocks.0.attn.q_proj.lora_A.default.weight")
    assert is_lora_name("transformer.resblocks.0.attn.q_proj.lora_B.default.weight")
    assert not is_lora_name("transformer.resblocks.0.attn.q_proj.base_layer.weight")
    assert not is_lora_name("lora_A.weight")  # only as a part of a dotted name


def test_a_state_of_another_layout_is_refused_in_one_line():
    visual = Visual(attention())
    apply_lora(visual, r=2)
    with pytest.raises(BenchError) as info:
        load_lora_state(visual, {})
    assert str(info.value) == (
        "saved LoRA weights do not fit this model (6 missing, 0 unexpected, e.g. "
        "transformer.resblocks.0.attn.k_proj.lora_A.default.weight): were "
        "lora_r / lora_mode / lora_targets or the model changed?"
    )
    state = {n: p.detach() for n, p in visual.named_parameters() if is_lora_name(n)}
    state["x.lora_B.y"] = torch.zeros(1)
    with pytest.raises(BenchError, match=r"\(0 missing, 1 unexpected, e\.g\. x\.lora_B\.y\)"):
        load_lora_state(visual, state)


def test_a_float_mask_is_cast_to_the_attentions_dtype():
    mha = attention(dtype=torch.bfloat16).eval()
    split = SplitAttention(mha).eval()
    x = tokens(length=5, dtype=torch.bfloat16)
    mask = torch.randn(5, 5, generator=torch.Generator().manual_seed(6)) * 3.3  # float32
    with torch.no_grad():
        got = split(x, x, x, attn_mask=mask)[0]
        want = split(x, x, x, attn_mask=mask.to(torch.bfloat16))[0]
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def test_an_already_split_visual_takes_qkv_lora_but_not_peft_mha():
    visual = Visual(attention(), attention(seed=1))
    split_attention(visual)
    with pytest.raises(BenchError) as info:
        apply_lora(visual, mode="mha")
    assert str(info.value) == (
        "LoRA mode 'mha' needs nn.MultiheadAttention in the image transformer; "
        "its attention modules are SplitAttention"
    )
    apply_lora(visual)  # qkv: the split layers are what it adapts
    assert len(lora_parameters(visual)) == 2 * 2 * 3


def test_every_kind_of_attention_found_is_named():
    with pytest.raises(BenchError) as info:
        apply_lora(Visual(nn.Linear(2, 2), nn.Identity(), nn.Identity()))
    assert str(info.value).endswith("its attention modules are Identity, Linear")
