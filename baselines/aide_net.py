"""AIDE's trained network: SRM filters, two patch ResNet-50s and the fusion MLP.

Written from the code the AIGIBench authors trained (``models/AIDE.py``): the four
patches go through the 30 fixed SRM filters (each filter summed over the RGB channels,
5 × 5, zero padding 2); the lowest-scoring two through one ResNet-50 (``model_min``), the
highest-scoring two through another (``model_max``), both with a 30-channel 7 × 7 stem,
zero-initialised last BatchNorm of every block and no classifier; the four 2048-d
features are averaged. The frozen ConvNeXt's pooled feature (computed by the detector)
goes through ``Linear(C, 256)``; the concatenation (2304-d) through
``Linear(2304, 1024) → GELU → Linear(1024, 2)``.

The ResNets are torchvision's ResNet-50 (the same Bottleneck v1.5 layout and
initialisation as AIDE's own copy) with the stem swapped and the classifier removed.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.aide_patches import srm_filters, srm_residuals

RESNET_FEATURES = 2048


def patch_resnet(in_channels: int = 30) -> nn.Module:
    """torchvision ResNet-50 with an ``in_channels`` 7 × 7 stem and no classifier."""
    from torchvision.models import resnet50

    net = resnet50(weights=None, zero_init_residual=True)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.fc = nn.Identity()
    return net


class AideNet(nn.Module):
    """(N, 5, 3, S, S) views + (N, C) semantic feature -> (N, 2) logits."""

    def __init__(
        self,
        semantic_dim: int,
        proj_dim: int = 256,
        hidden: int = 1024,
        train_semantic_proj: bool = False,
    ):
        super().__init__()
        bank = srm_filters()  # (30, 5, 5), applied to each of R, G, B and summed
        self.register_buffer(
            "srm", bank[:, None].expand(-1, 3, -1, -1).contiguous(), persistent=False
        )
        self.model_min = patch_resnet(bank.shape[0])
        self.model_max = patch_resnet(bank.shape[0])
        self.convnext_proj = nn.Linear(semantic_dim, proj_dim)
        self.fc = nn.Sequential(
            nn.Linear(RESNET_FEATURES + proj_dim, hidden), nn.GELU(), nn.Linear(hidden, 2)
        )
        self.train_semantic_proj = bool(train_semantic_proj)

    def high_pass(self, x: torch.Tensor) -> torch.Tensor:
        return srm_residuals(x, self.srm)

    def patch_feature(self, views: torch.Tensor) -> torch.Tensor:
        """The mean of the four patch features; each ResNet call sees one view of the batch
        at a time, as in AIDE (BatchNorm statistics are per call)."""
        lowest, highest, lowest2, highest2 = (self.high_pass(views[:, i]) for i in range(4))
        feats = (
            self.model_min(lowest)
            + self.model_max(highest)
            + self.model_min(lowest2)
            + self.model_max(highest2)
        )
        return feats / 4

    def forward(self, views: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        # AIDE projects the semantic feature inside torch.no_grad(), so the projection
        # keeps its random initialisation; train_semantic_proj lets it learn.
        with torch.set_grad_enabled(self.train_semantic_proj and torch.is_grad_enabled()):
            projected = self.convnext_proj(semantic)
        return self.fc(torch.cat([projected, self.patch_feature(views)], dim=1))
