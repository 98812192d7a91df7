"""LaDeDa's network: a ResNet-50 whose receptive field is cut to a 9 × 9 patch.

The claim it tests (Cavia et al. 2024): generation artefacts are local, so a classifier
that sees only 9 × 9 pixels at a time, scoring every patch and averaging the scores over
the image, detects fakes as well as one that sees the whole image. The cut is done on a
Bottleneck ResNet-50 ([3, 4, 6, 3] blocks, strides 2, 2, 2, 1, no max-pool): every 3 × 3
convolution becomes 1 × 1 except the stem's and the first block of the first stages, and
none is padded, so each output position depends on one q × q window of the input.

Written from the code the AIGIBench authors trained (``networks/LaDeDa.py``, LaDeDa9,
NPR input): stem 1 × 1 conv (3 → 64), 3 × 3 conv (64 → 64), BatchNorm (momentum 0.001),
ReLU; blocks whose 3 × 3 or 1 × 1 middle convolution is unpadded, the shortcut cropped at
the bottom right to the main path's size; a linear layer on the average of the 2048-d
patch features (equal to the average of the patch logits: the layer is linear).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Which stages have a 3 × 3 first block, by receptive field (LaDeDa5/9/17/33).
KERNEL3 = {5: (1, 0, 0, 0), 9: (1, 1, 0, 0), 17: (1, 1, 1, 0), 33: (1, 1, 1, 1)}
STRIDES = (2, 2, 2, 1)
DEPTHS = (3, 4, 6, 3)
PREPROCESS = ("NPR", "raw", "x_grad", "y_grad", "left_diag", "right_diag")
#: The 3 × 3 gradient filters LaDeDa's code offers as alternative inputs (depthwise).
GRAD_KERNELS = {
    "x_grad": ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1)),
    "y_grad": ((-1, -2, -1), (0, 0, 0), (1, 2, 1)),
    "left_diag": ((0, 1, 2), (-1, 0, 1), (-2, -1, 0)),
    "right_diag": ((-2, -1, 0), (-1, 0, 1), (0, 1, 2)),
}


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x − up(down(x)), nearest, factor 2: each pixel minus the top-left pixel of its 2 × 2 cell.

    For even sizes this is LaDeDa's (and NPR's) ``x - interpolate(interpolate(x, 0.5), 2)``;
    an odd last row or column is its own cell's top-left, so its residual is 0 (the
    original fails on odd sizes).
    """
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device) // 2 * 2
    cols = torch.arange(w, device=x.device) // 2 * 2
    return x - x[..., rows, :][..., cols]


def receptive_field(kernel3: tuple[int, ...], strides: tuple[int, ...] = STRIDES) -> int:
    """Side of the input window one output position sees: the stem's 3 × 3, then each
    stage's 3 × 3 first block widened by the stride accumulated before it."""
    field, jump = 3, 1
    for has3, stride in zip(kernel3, strides, strict=True):
        if has3:
            field += 2 * jump
        jump *= stride
    return field


class PatchBottleneck(nn.Module):
    """A ResNet bottleneck whose middle convolution (k × k, stride s) is not padded."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, kernel: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        diff = shortcut.shape[-1] - out.shape[-1]
        if diff:  # the unpadded k × k shrank the map: keep the shortcut's top-left part
            shortcut = shortcut[:, :, :-diff, :-diff]
        return self.relu(out + shortcut)


class LaDeDaNet(nn.Module):
    """Image (N, 3, H, W), ImageNet-normalised -> (N, 1) logit = mean of the patch logits."""

    def __init__(
        self,
        receptive: int = 9,
        preprocess: str = "NPR",
        num_classes: int = 1,
        stem_bn_momentum: float = 0.001,
    ):
        super().__init__()
        if receptive not in KERNEL3:
            raise ValueError(f"receptive field must be one of {sorted(KERNEL3)}, got {receptive}")
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS)}")
        self.preprocess = preprocess
        self.kernel3 = KERNEL3[receptive]
        self.conv1 = nn.Conv2d(3, 64, 1, bias=False)
        self.conv2 = nn.Conv2d(64, 64, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=stem_bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), DEPTHS, strict=True)):
            layers = []
            for b in range(blocks):
                kernel = 3 if b == 0 and self.kernel3[i] else 1
                stride = STRIDES[i] if b == 0 else 1
                layers.append(PatchBottleneck(inplanes, planes, stride, kernel))
                inplanes = planes * PatchBottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.fc = nn.Linear(inplanes, num_classes)
        self.reset_parameters()

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.kernel3)

    def reset_parameters(self) -> None:
        """LaDeDa's initialisation: convolutions N(0, 2 / (k² · out)), BatchNorm 1 and 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input representation: NPR residual (default), raw pixels or a gradient."""
        if self.preprocess == "raw":
            return x
        if self.preprocess == "NPR":
            return npr_residual(x)
        kernel = torch.tensor(GRAD_KERNELS[self.preprocess], dtype=x.dtype, device=x.device)
        weight = kernel.expand(x.shape[1], 1, 3, 3)
        return F.conv2d(x, weight, padding=1, groups=x.shape[1])

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2048, h, w): one feature per q × q input window."""
        x = self.relu(self.bn1(self.conv2(self.conv1(self.prepare(x)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, classes, h, w): the score of every patch (LaDeDa's ``pool=False``)."""
        return self.fc(self.patch_features(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.patch_features(x).mean(dim=(2, 3)))
