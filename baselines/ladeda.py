"""LaDeDa (Cavia et al., 2024): a 9 × 9-patch ResNet-50 on the NPR residual, trained from scratch.

The claim it tests: deepfake traces are local, so scoring every 9 × 9 patch and averaging
the scores detects them (see ``baselines.ladeda_net``).

Recipe (the AIGIBench authors' copy of LaDeDa's code, ``train.py``, ``networks/trainer.py``,
``data/datasets.py``, ``test.py``): LaDeDa9 with NPR input, randomly initialised (no
pretrained weights anywhere in that code), its classifier replaced by ``Linear(2048, 1)``
with weights ~ N(0, 0.02); BCE-with-logits; Adam lr 2e-4, β1 0.9, batch 64; train input:
resize to 256 × 256 (bilinear, aspect not kept), random 224 crop, flip, ImageNet
normalisation, no other augmentation (``--is_aug`` off; rotation, jitter and masking are
commented out); evaluation: resize to 256 × 256, no crop (``test.py``: ``no_crop``). The
original early-stops on a validation split and multiplies the lr by 0.9 on each plateau
(see ``baselines.finetune``); here the epoch count is fixed.
"""

from __future__ import annotations

from torch import nn

from baselines.augment import ResizeSquare
from baselines.finetune import BinaryNetDetector
from baselines.ladeda_net import LaDeDaNet
from bench.builtin.transforms import CenterCrop, HorizontalFlip, RandomCrop, ToTensor
from bench.interfaces import IMAGENET_MEAN, IMAGENET_STD, RunContext, TransformChain


class LaDeDa(BinaryNetDetector):
    """Patch features of a 9 × 9-receptive-field ResNet -> mean -> Linear(2048, 1)."""

    name = "ladeda"

    @property
    def input_size(self) -> int:
        """The training crop (the network itself takes any size)."""
        return int(self.options.get("input_size", 224))

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return IMAGENET_MEAN, IMAGENET_STD

    def base_transforms(self, train: bool) -> TransformChain:
        """Resize and crops are the "geometry" steps (Patch Selection replaces them)."""
        o = self.options
        steps: list = []
        load = int(o.get("load_size", 256))
        if load > 0:
            steps.append(ResizeSquare(load))
        if train:
            steps += [RandomCrop(self.input_size), HorizontalFlip()]
        elif int(o.get("eval_crop", 0)) > 0:
            steps.append(CenterCrop(int(o["eval_crop"])))
        return TransformChain([*steps, ToTensor(*self.normalization)])

    def build_net(self, ctx: RunContext) -> nn.Module:
        receptive = int(self.options.get("receptive_field", 9))
        preprocess = str(self.options.get("preprocess", "NPR"))
        momentum = float(self.options.get("stem_bn_momentum", 0.001))
        net = LaDeDaNet(receptive, preprocess, stem_bn_momentum=momentum)
        net.fc = nn.Linear(net.fc.in_features, 1)
        nn.init.normal_(net.fc.weight, 0.0, float(self.options.get("init_std", 0.02)))
        self.init_facts = {
            "init": "random (LaDeDa trains from scratch, as its authors' code)",
            "receptive_field": net.receptive_field,
        }
        return net
