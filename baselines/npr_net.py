"""NPR's network: the neighbouring-pixel residual in front of the truncated ResNet-50.

NPR (Tan et al., CVPR 2024) holds that the up-sampling layers of generators leave the same
trace everywhere: inside each 2×2 block the pixels are tied to each other. Down-sampling by
2 with nearest neighbour and up-sampling back copies each block's top-left pixel over the
block, so the residual x − up(down(x)) is each pixel minus its block's top-left pixel: zero
where a nearest-neighbour up-sampler made the block, structured where another one did.
The network sees only that residual (times 2/3, as in the authors' code), through a ResNet-50
cut after layer2 with a 3×3 stride-2 stem, trained from scratch, one logit.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.resnet_trunk import TruncatedResNet50


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x − up₂(down₂(x)) with nearest neighbour: ``x[..., i, j] − x[..., 2⌊i/2⌋, 2⌊j/2⌋]``.

    For even sides this is what NPR's code computes with ``F.interpolate`` (scale 0.5, then
    2, nearest); that code fails on odd sides, where this keeps the same rule (the last row
    or column is a block of its own).
    """
    h, w = x.shape[-2:]
    anchors = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return x - anchors[..., :h, :w]


class NPRResidual(nn.Module):
    """The input step: ``scale · npr_residual(x)``; no parameters."""

    def __init__(self, scale: float = 2.0 / 3.0):
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return npr_residual(x) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


class NPRNet(TruncatedResNet50):
    """NPR residual -> truncated ResNet-50 -> one logit (BCE). Same keys as NPR's code."""

    def __init__(self, num_classes: int = 1, scale: float = 2.0 / 3.0):
        super().__init__(num_classes=num_classes, input_step=NPRResidual(scale))
