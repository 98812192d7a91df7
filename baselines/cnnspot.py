"""CNN-Spot (Wang et al., CVPR 2020): an ImageNet ResNet-50 fine-tuned end to end.

The claim it tests: a plain classifier trained on one generator (ProGAN), with blur and
JPEG augmentation, generalises to other CNN generators, because they share low-level
upsampling traces.

Recipe (CNNDetection's code, the copy the AIGIBench authors ran): torchvision's ResNet-50
with ImageNet weights (it downloads ``resnet50-19c8e357.pth``, torchvision's V1 file),
its classifier replaced by ``Linear(2048, 1)`` with weights ~ N(0, 0.02); BCE-with-logits;
Adam lr 1e-4, β1 0.9, batch 128; train input: shorter side to 256 (bilinear), Gaussian
blur (p, σ ~ U[0, 3]) then JPEG (p, quality 30-100), random 224 crop, flip, ImageNet
normalisation; evaluation: centre 224 crop without resizing (``eval.py``: ``no_resize``).
The blur/JPEG probability is 0.5, the README's "Blur+JPEG(0.5)" model (its code defaults
to 0; the AIGIBench authors did not record their flags). The original early-stops on a
validation split (see ``baselines.finetune``); here the epoch count is fixed.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from baselines.augment import cnndetection_transforms
from baselines.finetune import BinaryNetDetector
from bench.interfaces import IMAGENET_MEAN, IMAGENET_STD, RunContext, TransformChain

ARCH = "resnet50"


class CNNSpot(BinaryNetDetector):
    """ImageNet ResNet-50 -> Linear(2048, 1) -> sigmoid; the whole network is trained."""

    name = "cnnspot"

    @property
    def input_size(self) -> int:
        return int(self.options.get("input_size", 224))

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return IMAGENET_MEAN, IMAGENET_STD

    def base_transforms(self, train: bool) -> TransformChain:
        return cnndetection_transforms(train, self.options, self.input_size, *self.normalization)

    def build_net(self, ctx: RunContext) -> nn.Module:
        from torchvision.models import resnet50

        from bench.backbones.imagenet import load_matching, read_state_dict, resolve_cnn_weights

        weights = resolve_cnn_weights(
            ARCH,
            str(self.options.get("pretrained", "torchvision:IMAGENET1K_V1")),
            "cnnspot.pretrained",
        )
        net = resnet50(weights=None)
        if weights.path is not None:
            load_matching(
                net, read_state_dict(weights.path), may_skip=("fc.",), source=weights.label
            )
        net.fc = nn.Linear(net.fc.in_features, 1)
        nn.init.normal_(net.fc.weight, 0.0, float(self.options.get("init_std", 0.02)))
        self.init_facts = self.weights_facts(weights.label, weights.kind == "random")
        return net

    @staticmethod
    def weights_facts(label: str, random: bool) -> dict[str, Any]:
        facts: dict[str, Any] = {"backbone": label, "random_weights": random}
        if random:
            facts["weights"] = (
                "random (no ImageNet weights: CNN-Spot is not meant to start from scratch)"
            )
        return facts
