"""UnivFD (Ojha et al., CVPR 2023): a linear probe on frozen CLIP ViT-L/14 image features.

The claim it tests: CLIP's feature space, never trained to detect fakes, already separates
real from generated images well enough that one linear layer generalises across
generators better than a network trained end to end on one of them.

Recipe (UnivFD's public code): ``Linear(768, 1)`` with weights ~ N(0, 0.02) (bias left at
PyTorch's default, as there), BCE-with-logits, AdamW lr 1e-4, weight decay 0, batch 256;
train images: shorter side to 256, blur (p 0.5, σ ~ U[0, 3]) and JPEG (p 0.5, quality
30-100), random 224 crop, flip, CLIP normalisation; evaluation: centre 224 crop, no
resize. The original stops early on a validation split and divides the lr by 10 at each
plateau; here the epoch count is fixed (``epochs``) and ``lr_drop_epochs`` places the
drops at fixed epochs (none by default). Features are cached (``feature_cache``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from baselines.frozen_clip import FrozenClipDetector


class UnivFD(FrozenClipDetector):
    """Frozen CLIP image embedding (not L2-normalised) -> Linear(d, 1) -> sigmoid."""

    name = "univfd"

    def build_head(self, dim: int) -> nn.Module:
        head = nn.Linear(dim, 1)
        nn.init.normal_(head.weight, mean=0.0, std=float(self.options.get("init_std", 0.02)))
        return head

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).squeeze(1)

    def head_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.head_logits(features).float(), labels)

    def head_proba(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head_logits(features).float())
