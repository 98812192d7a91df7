"""SAFE's network: the HH wavelet band into a ResNet-50 cut after its second stage.

Keeping only layer1 and layer2 (with a 3×3 stride-2 stem instead of the 7×7 one) keeps the
receptive field small: SAFE argues that the traces of generators are local pixel
correlations, which a deep, wide receptive field would average away. Built from
torchvision's ``Bottleneck`` so the blocks are the standard ones; trained from scratch.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from baselines.resnet_trunk import init_resnet_, resnet_stage
from baselines.wavelet import HighFrequencyInput


class SafeNet(nn.Module):
    """DWT-HH input -> 3×3/2 stem, BN, ReLU, max-pool -> layer1 (3) -> layer2 (4) -> pool -> fc."""

    def __init__(
        self,
        num_classes: int = 2,
        layers: tuple[int, int] = (3, 4),
        wavelet: str = "bior1.3",
        dwt_input: bool = True,
    ):
        super().__init__()
        self.high_freq = HighFrequencyInput(wavelet) if dwt_input else nn.Identity()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = resnet_stage(64, 64, layers[0], stride=1)
        self.layer2 = resnet_stage(64 * Bottleneck.expansion, 128, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128 * Bottleneck.expansion, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's ResNet initialisation (SAFE's code uses the same, no zero-init)."""
        init_resnet_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 512) pooled feature."""
        x = self.high_freq(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, num_classes) logits."""
        return self.fc(self.forward_features(x))
