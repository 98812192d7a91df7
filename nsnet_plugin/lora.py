"""LoRA on the attention of CLIP's image tower, through peft (NS-Net: r=6, alpha=6, dropout=0.8).

open_clip's blocks use ``nn.MultiheadAttention``, which peft cannot reach the usual way:
the q/k/v weights are one fused parameter and ``out_proj``'s ``forward`` is never called
(targeting ``out_proj`` alone changes nothing and trains nothing; tests/test_lora.py shows
it). Two ways in, chosen by ``mode``:

  "qkv" (default): each attention module is rebuilt, with identical outputs, as separate
      q/k/v/out ``nn.Linear`` layers, and peft puts LoRA on the ``targets`` among them.
      LoRA's dropout then acts on the adapter's input, as in CLIP-LoRA (Zanella & Ben
      Ayed 2024), which the paper follows; default targets q, k, v as there.
  "mha": peft's own MultiheadAttention wrapper (LoRA on the fused in_proj and on
      out_proj). peft merges the adapter into the weights for each forward pass, so
      ``lora_dropout`` has no effect in this mode (measured, peft 0.21).

Only the image tower gets LoRA; everything else stays frozen.

Scaling (``scaling``): the adapter adds ``s · B A x``. CLIP-LoRA, which the paper follows,
uses s = alpha / sqrt(r) (MaxZanella/CLIP-LoRA ``loralib/layers.py``: ``self.scaling =
self.lora_alpha / math.sqrt(self.r)``), 2.45 at r = alpha = 6; peft's default is alpha / r
(1.0 there). "clip-lora" (default) asks peft for rank-stabilised LoRA (``use_rslora``),
which is exactly alpha / sqrt(r); "peft" keeps peft's default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError

MODES = ("qkv", "mha")
SCALINGS = ("clip-lora", "peft")
TARGETS = ("q", "k", "v", "out")
ADAPTER = "default"


class SplitAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention form) with separate q/k/v/out projections.

    Same call signature and outputs as the module it replaces, for the way open_clip calls
    it; attention weights are never returned (open_clip asks for none).
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise BenchError("LoRA mode 'qkv' needs plain self-attention (no bias_k, no zero attn)")
        d = mha.embed_dim
        bias = mha.in_proj_bias is not None
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.dropout = mha.dropout
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = nn.Linear(d, d, bias=bias)
        self.v_proj = nn.Linear(d, d, bias=bias)
        self.out_proj = nn.Linear(d, d, bias=mha.out_proj.bias is not None)
        ref = mha.in_proj_weight
        self.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * d : (i + 1) * d])
                if bias:
                    proj.bias.copy_(mha.in_proj_bias[i * d : (i + 1) * d])
            self.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                self.out_proj.bias.copy_(mha.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        return x.view(n, length, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        **_: object,
    ) -> tuple[torch.Tensor, None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, length, d = query.shape
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        mask = _additive_mask(attn_mask, key_padding_mask, q.dtype, n, self.num_heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.transpose(1, 2).reshape(n, length, d))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, None


def _additive_mask(
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    dtype: torch.dtype,
    n: int,
    heads: int,
) -> torch.Tensor | None:
    """MultiheadAttention's masks (bool True = blocked, or additive float) as one float mask."""

    def as_float(m: torch.Tensor) -> torch.Tensor:
        if m.dtype == torch.bool:
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
        return m.to(dtype)

    mask = None
    if attn_mask is not None:
        mask = as_float(attn_mask)
        if mask.dim() == 3:  # (n * heads, L, S)
            mask = mask.view(n, heads, *mask.shape[-2:])
    if key_padding_mask is not None:
        pad = as_float(key_padding_mask)[:, None, None, :]
        mask = pad if mask is None else mask + pad
    return mask


def _attention_blocks(visual: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, block) of every residual block with an ``attn`` in the image transformer."""
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None:
        raise BenchError(
            f"LoRA needs an open_clip VisionTransformer (visual.transformer.resblocks); "
            f"got {type(visual).__name__}"
        )
    found = [(f"transformer.resblocks.{i}", b) for i, b in enumerate(blocks) if hasattr(b, "attn")]
    if not found:
        raise BenchError("LoRA found no attention modules in the image transformer")
    return found


def split_attention(visual: nn.Module) -> int:
    """Replace each block's MultiheadAttention by an equivalent SplitAttention; returns count."""
    count = 0
    for _, block in _attention_blocks(visual):
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = SplitAttention(block.attn)
            count += 1
    return count


def apply_lora(
    visual: nn.Module,
    r: int = 6,
    alpha: float = 6,
    dropout: float = 0.8,
    *,
    mode: str = "qkv",
    targets: tuple[str, ...] | list[str] = ("q", "k", "v"),
    scaling: str = "clip-lora",
) -> nn.Module:
    """Put LoRA adapters on the attention of every block of ``visual`` (in place).

    Afterwards only LoRA parameters (lora_A / lora_B) require gradients. Returns ``visual``.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if mode not in MODES:
        raise BenchError(f"LoRA mode must be one of {', '.join(MODES)}, got {mode!r}")
    if scaling not in SCALINGS:
        raise BenchError(f"LoRA scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    if r < 1:
        raise BenchError(f"LoRA rank must be >= 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise BenchError(f"LoRA dropout must be in [0, 1), got {dropout}")
    # peft finds no target in attention of another kind and fails with a traceback
    usable = (nn.MultiheadAttention,) if mode == "mha" else (nn.MultiheadAttention, SplitAttention)
    attention = [block.attn for _, block in _attention_blocks(visual)]
    if not any(isinstance(a, usable) for a in attention):
        kinds = ", ".join(sorted({type(a).__name__ for a in attention}))
        raise BenchError(
            f"LoRA mode {mode!r} needs nn.MultiheadAttention in the image transformer; "
            f"its attention modules are {kinds}"
        )
    blocks = r"transformer\.resblocks\.\d+\.attn"
    if mode == "mha":
        pattern = blocks
    else:
        unknown = sorted(set(targets) - set(TARGETS))
        if unknown or not targets:
            raise BenchError(
                f"LoRA targets must be a non-empty subset of {', '.join(TARGETS)}, got {list(targets)}"
            )
        split_attention(visual)
        pattern = rf"{blocks}\.({'|'.join(f'{t}_proj' for t in targets)})"
    for p in visual.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=int(r),
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        target_modules=pattern,
        bias="none",
        use_rslora=scaling == "clip-lora",
    )
    inject_adapter_in_model(config, visual, adapter_name=ADAPTER)
    for name, p in visual.named_parameters():
        p.requires_grad_(is_lora_name(name))
    return visual


def scale_factor(r: int, alpha: float, scaling: str) -> float:
    """The factor s in W x + s · B A x: alpha / sqrt(r) (CLIP-LoRA) or alpha / r (peft)."""
    return float(alpha) / (math.sqrt(r) if scaling == "clip-lora" else float(r))


def is_lora_name(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA parameters, in a stable order."""
    return [p for n, p in module.named_parameters() if is_lora_name(n)]


def lora_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA weights, detached copies on the CPU."""
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if is_lora_name(n)}


def load_lora_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of ``lora_state``; refuses, in one line, a state of another LoRA layout."""
    params = {n: p for n, p in module.named_parameters() if is_lora_name(n)}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise BenchError(
            f"saved LoRA weights do not fit this model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]}): were "
            "lora_r / lora_mode / lora_targets or the model changed?"
        )
    with torch.no_grad():
        for name, p in params.items():
            value = state[name]
            if value.shape != p.shape:
                raise BenchError(
                    f"saved LoRA weight {name} has shape {tuple(value.shape)}, "
                    f"the model's is {tuple(p.shape)} (was lora_r changed?)"
                )
            p.copy_(value.to(device=p.device, dtype=p.dtype))
