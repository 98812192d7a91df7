"""FreqNet (Tan et al., AAAI 2024): a small CNN that learns on high frequencies, in the frequency domain.

The claim it tests: restricting a detector to the high-frequency content of the image and
of its feature maps, and letting it learn directly on spectra, keeps it from fitting the
source-specific low-frequency content and so generalises across generators
(``freqnet_net``). Trained from scratch.

Recipe (HorizonTEL/AIGIBench ``detector_codes/FreqNet-DeepfakeDetection-main``; the
method's own repository publishes no code besides its README): train images resized to
256×256 (bilinear, aspect not kept), random 224 crop, flip, ImageNet mean/std (the
rotation, jitter and mask lines there are commented out). Evaluation: resize to 256×256, no
crop (its ``test.py``: ``no_resize = False``, ``no_crop = True``). Adam lr 1e-4, batch 128,
101 epochs, lr × 0.9 after the 11th, 21st, ... epoch, BCE on one logit (``binary_cnn``).
"""

from __future__ import annotations

from torch import nn

from baselines.binary_cnn import BinaryCNNDetector, check_resize_crop, resize_then_crop
from baselines.freqnet_net import FreqNet as FreqNetwork
from bench.builtin.transforms import HorizontalFlip, ToTensor
from bench.interfaces import TransformChain


class FreqNet(BinaryCNNDetector):
    """Resize (+ crop) -> FreqNet network -> sigmoid."""

    name = "freqnet"

    def __init__(self, options: dict):
        super().__init__(options)
        check_resize_crop(self.options, self.name)

    def base_transforms(self, train: bool) -> TransformChain:
        """The resize and the crop are the "geometry" steps (Patch Selection replaces them)."""
        to_tensor = ToTensor(*self.normalization)
        geometry = resize_then_crop(self.options, train)
        flip = [HorizontalFlip()] if train and bool(self.options.get("hflip", True)) else []
        return TransformChain([*geometry, *flip, to_tensor])

    def build_net(self) -> nn.Module:
        return FreqNetwork(num_classes=1)
