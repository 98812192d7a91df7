"""The truncated ResNet-50 that SAFE, NPR and DFFreq share, trained from scratch.

Their authors' code keeps only a ResNet-50's first two stages (layer1 with 3 bottlenecks,
layer2 with 4) behind a 3×3 stride-2 stem: a small receptive field for local pixel
correlations, which a deep network would average away. What differs between them is the
step in front of the stem (SAFE: the HH wavelet band; NPR: the up-sampling residual;
DFFreq: its dual-frequency block) and the head. Blocks are torchvision's ``Bottleneck``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck


def resnet_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """A ResNet stage of ``blocks`` bottlenecks; the first projects the shortcut if needed."""
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out),
        )
    layers = [Bottleneck(inplanes, planes, stride=stride, downsample=downsample)]
    layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_resnet_(module: nn.Module) -> None:
    """torchvision's ResNet initialisation over every sub-module (no zero-init of the last BN).

    The authors' code runs this loop over the whole network, so convolutions inside an
    input step (DFFreq's attention) get Kaiming-normal weights too.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class TruncatedResNet50(nn.Module):
    """input step -> 3×3/2 stem, BN, ReLU, max-pool -> layer1 (3) -> layer2 (4) -> pool -> fc1.

    Attribute names follow NPR's and DFFreq's code (``conv1`` ... ``layer2``, ``fc1``), so a
    state dict has the same keys as theirs for the trunk.
    """

    def __init__(
        self,
        num_classes: int = 1,
        layers: tuple[int, int] = (3, 4),
        input_step: nn.Module | None = None,
    ):
        super().__init__()
        self.input_step = input_step if input_step is not None else nn.Identity()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = resnet_stage(64, 64, layers[0], stride=1)
        self.layer2 = resnet_stage(64 * Bottleneck.expansion, 128, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(128 * Bottleneck.expansion, num_classes)
        init_resnet_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 512) pooled feature."""
        x = self.input_step(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_classes) logits."""
        return self.fc1(self.forward_features(x))
