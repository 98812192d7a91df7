"""DFFreq (Yan et al., arXiv 2501.15253, TIFS 2026): dual-frequency block + truncated ResNet-50.

The claim it tests: forgery traces are local and spread over frequency sub-bands, so
attention restricted to small windows over the DWT sub-bands and over the FFT phase
exposes them to a small CNN better than pixels alone (``dffreq_net``).

Recipe (HorizonTEL/AIGIBench ``detector_codes/DFFreq-main``, identical to
HorizonTEL/DFFreq-main): train on a random 256 crop (no resize), horizontal flip, ImageNet
mean/std; evaluate on the centre 256 crop (its ``binary_dataset`` crops at test whatever
``no_resize``/``no_crop`` say). Adam lr 1e-4, batch 128, 101 epochs, lr × 0.9 after the
11th, 21st, ... epoch, BCE on one logit (``binary_cnn``). torchvision's RandomCrop there
fails on images under 256 px; here they are zero-padded (as its CenterCrop does). The
block's constants (4×4 DWT windows, 8×8 FFT windows, 0.6/0.4 mix) are the method, not options.
"""

from __future__ import annotations

from torch import nn

from baselines.binary_cnn import BinaryCNNDetector
from baselines.dffreq_net import DFFreqNet
from bench.builtin.transforms import CenterCrop, HorizontalFlip, RandomCrop, ToTensor
from bench.errors import BenchError
from bench.interfaces import TransformChain


class DFFreq(BinaryCNNDetector):
    """Crop -> DualFrequencyBlock -> truncated ResNet-50 -> sigmoid."""

    name = "dffreq"

    @property
    def input_size(self) -> int:
        """DFFreq crops 256 (its ``cropSize``), not the 224 of NPR and FreqNet."""
        return int(self.options.get("input_size", 256))

    def __init__(self, options: dict):
        super().__init__(options)
        if self.input_size % 4:
            raise BenchError(
                f"dffreq.input_size must be a multiple of 4 (Haar DWT of 2x2 blocks of "
                f"sub-band coefficients), got {self.input_size}"
            )

    def base_transforms(self, train: bool) -> TransformChain:
        """The crop is the "geometry" step (Patch Selection replaces it)."""
        to_tensor = ToTensor(*self.normalization)
        if not train:
            return TransformChain([CenterCrop(self.input_size), to_tensor])
        flip = [HorizontalFlip()] if bool(self.options.get("hflip", True)) else []
        return TransformChain([RandomCrop(self.input_size), *flip, to_tensor])

    def build_net(self) -> nn.Module:
        return DFFreqNet(num_classes=1)
