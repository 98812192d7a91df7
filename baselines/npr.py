"""NPR (Tan et al., CVPR 2024): the neighbouring-pixel residual into a truncated ResNet-50.

The claim it tests: the up-sampling every generator ends with ties neighbouring pixels
together, and that local trace, not the image content, generalises across generators
(``npr_net``).

Recipe (HorizonTEL/AIGIBench ``detector_codes/NPR-DeepfakeDetection-main``, the code the
benchmark's authors trained): train images resized to 256×256 (bilinear, aspect not kept),
random 224 crop, flip, rotation in [−180°, 180°], colour jitter (brightness, contrast,
saturation 0.5), ImageNet mean/std, then RandomMask (p 0.5, 16×16 cells, ratio U(0, 0.75),
on the normalised tensor, so a masked cell is the ImageNet mean colour). The rotation,
jitter and mask are the AIGIBench authors' additions (SAFE's augmentations); NPR's own repo
has only the resize, crop and flip. Evaluation: resize to 256×256, no crop (its
``test.py``: ``no_resize = False``, ``no_crop = True``). Adam lr 2e-4, batch 128, 101
epochs, lr × 0.9 after the 11th, 21st, ... epoch, BCE on one logit (``binary_cnn``).
"""

from __future__ import annotations

from torch import nn

from baselines.augment import RandomMask, TorchvisionStep
from baselines.binary_cnn import BinaryCNNDetector, check_resize_crop, resize_then_crop
from baselines.npr_net import NPRNet
from bench.builtin.transforms import HorizontalFlip, ToTensor
from bench.interfaces import TransformChain


class NPR(BinaryCNNDetector):
    """Resize (+ crop) -> x − up(down(x)) -> truncated ResNet-50 -> sigmoid."""

    name = "npr"

    def __init__(self, options: dict):
        super().__init__(options)
        check_resize_crop(self.options, self.name)

    def base_transforms(self, train: bool) -> TransformChain:
        """The resize and the crop are the "geometry" steps (Patch Selection replaces them)."""
        to_tensor = ToTensor(*self.normalization)
        geometry = resize_then_crop(self.options, train)
        if not train:
            return TransformChain([*geometry, to_tensor])
        from torchvision import transforms as T

        o = self.options
        jitter = float(o.get("jitter", 0.5))
        flip = [HorizontalFlip()] if bool(o.get("hflip", True)) else []
        return TransformChain(
            [
                *geometry,
                *flip,
                TorchvisionStep(T.RandomRotation(float(o.get("rotation", 180.0)))),
                TorchvisionStep(
                    T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)
                ),
                to_tensor,
                RandomMask(
                    p=float(o.get("mask_p", 0.5)),
                    patch=int(o.get("mask_patch", 16)),
                    ratio=(0.0, float(o.get("mask_ratio_max", 0.75))),
                ),
            ]
        )

    def build_net(self) -> nn.Module:
        return NPRNet(num_classes=1)
