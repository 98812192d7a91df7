"""Method-specific transform steps of the baselines (the core's crops and flips are reused).

Every step is deterministic given the seed the chain hands it, so a cached feature of
"view v of image x" is well defined, and has a ``repr`` that names all its parameters,
because ``TransformChain.describe()`` (a cache key) is built from those reprs.
Library transforms do the image work wherever one exists: albumentations for blur and
JPEG, torchvision for rotation and colour jitter. SAFE's RandomMask (which NPR's AIGIBench
code uses too) has no library equivalent (torchvision's RandomErasing erases one rectangle, not a set of grid patches),
so it is written here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from bench.interfaces import Transform, TransformChain


class ResizeShorter(Transform):
    """Shorter side to ``size``, aspect kept (UnivFD's ``TF.resize(img, 256)``, bilinear).

    The long side is truncated as torchvision does (``int(size * long / short)``); PIL's
    bilinear filter antialiases when it shrinks, like torchvision's on PIL images.
    """

    role = "geometry"

    def __init__(self, size: int, interpolation: str = "bilinear"):
        self.size = int(size)
        self.interpolation = interpolation

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        from PIL import Image

        w, h = image.size
        short, long = min(w, h), max(w, h)
        if short == self.size:
            return image
        new_long = int(self.size * long / short)
        target = (self.size, new_long) if w <= h else (new_long, self.size)
        resample = Image.Resampling[self.interpolation.upper()]
        return image.resize(target, resample)

    def __repr__(self) -> str:
        return f"ResizeShorter(size={self.size}, interpolation={self.interpolation!r})"


class ResizeSquare(Transform):
    """Both sides to ``size``, aspect not kept: torchvision's ``Resize((size, size))`` on PIL.

    NPR's and FreqNet's code resizes every image this way before cropping (and instead of
    cropping at evaluation); LaDeDa's loader squashes every image to 256 x 256 this way.
    PIL's bilinear filter antialiases when it shrinks, as torchvision's does on PIL images;
    an image already at the size is left untouched.
    """

    role = "geometry"

    def __init__(self, size: int, interpolation: str = "bilinear"):
        self.size = int(size)
        self.interpolation = interpolation

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        from PIL import Image

        if image.size == (self.size, self.size):
            return image
        resample = Image.Resampling[self.interpolation.upper()]
        return image.resize((self.size, self.size), resample)

    def __repr__(self) -> str:
        return f"ResizeSquare(size={self.size}, interpolation={self.interpolation!r})"


class BlurJpeg(Transform):
    """UnivFD's train-time degradation: Gaussian blur, then JPEG, each with its probability.

    UnivFD blurs with scipy (σ ~ U[0, 3]) and compresses with cv2 or PIL at random
    (quality 30..100). Here albumentations does both: its GaussianBlur (kernel radius 3.5σ,
    as PIL) and its cv2-based ImageCompression, fed the image in BGR order as CNNDetection's
    ``cv2_jpg`` does (cv2 reads any 3-channel array as BGR, so an RGB array would be
    encoded with red and blue swapped in its luma). albumentations cannot blur with σ = 0
    exactly (its kernel divides by σ), so the lower bound is clamped to 1e-3; every σ below
    2/7 is a one-tap kernel, an identity, as σ = 0 is. ``kernel`` > 0 fixes the kernel
    size instead (AIDE blurs with a 3×3 kernel). Evaluation leaves images untouched.
    """

    def __init__(
        self,
        blur_p: float = 0.5,
        sigma: Sequence[float] = (0.0, 3.0),
        jpeg_p: float = 0.5,
        quality: Sequence[int] = (30, 100),
        kernel: int = 0,
    ):
        import albumentations as A

        self.blur_p = float(blur_p)
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.jpeg_p = float(jpeg_p)
        self.quality = (int(quality[0]), int(quality[1]))
        self.kernel = int(kernel)
        # One Compose per step: Compose.set_random_seed gives every child the same seed, so
        # in one Compose the blur and JPEG draws (whether, σ, quality) would be identical.
        self._blur = A.Compose(
            [
                A.GaussianBlur(
                    sigma_limit=(max(self.sigma[0], 1e-3), max(self.sigma[1], 1e-3)),
                    blur_limit=(self.kernel, self.kernel) if self.kernel else 0,
                    p=self.blur_p,
                )
            ]
        )
        self._jpeg = A.Compose([A.ImageCompression(quality_range=self.quality, p=self.jpeg_p)])

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        if not train or (self.blur_p <= 0 and self.jpeg_p <= 0):
            return image
        import numpy as np
        from PIL import Image

        blur_seed, jpeg_seed = np.random.SeedSequence(seed).generate_state(2)
        self._blur.set_random_seed(int(blur_seed))
        self._jpeg.set_random_seed(int(jpeg_seed))
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
        out = self._jpeg(image=self._blur(image=bgr)["image"])["image"]
        return Image.fromarray(np.ascontiguousarray(out[..., ::-1]))

    def __repr__(self) -> str:
        kernel = f", kernel={self.kernel}" if self.kernel else ""
        return (
            f"BlurJpeg(blur_p={self.blur_p}, sigma={self.sigma}, "
            f"jpeg_p={self.jpeg_p}, quality={self.quality}{kernel}, draws='independent', jpeg='cv2-bgr')"
        )


class TorchvisionStep(Transform):
    """A random torchvision transform, run at train time only under a seeded torch RNG.

    torchvision draws its parameters from torch's global generator; forking it keeps the
    draw a function of the chain's seed and leaves the caller's RNG state untouched.
    """

    def __init__(self, transform: Any):
        self.transform = transform

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        if not train:
            return image
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image)

    def __repr__(self) -> str:
        return f"TorchvisionStep({self.transform!r})"


class RandomMask(Transform):
    """SAFE's RandomMask on a (C, H, W) tensor: zero random grid patches, train time only.

    With probability ``p``, draw a ratio r ~ U(ratio) and zero ⌊H·W·r / s²⌋ distinct
    cells of the s×s grid (SAFE's rejection loop draws the same uniform set of cells).
    """

    def __init__(self, p: float = 0.5, patch: int = 16, ratio: Sequence[float] = (0.0, 0.75)):
        self.p = float(p)
        self.patch = int(patch)
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        if not train:
            return image
        rng = random.Random(seed)
        if rng.random() >= self.p:
            return image
        _, h, w = image.shape
        rows, cols = h // self.patch, w // self.patch
        ratio = rng.uniform(*self.ratio)
        count = min(int(h * w * ratio / self.patch**2), rows * cols)
        if count == 0:
            return image
        out = image.clone()
        s = self.patch
        for cell in rng.sample(range(rows * cols), count):
            top, left = (cell // cols) * s, (cell % cols) * s
            out[:, top : top + s, left : left + s] = 0
        return out

    def __repr__(self) -> str:
        return f"RandomMask(p={self.p}, patch={self.patch}, ratio={self.ratio})"


def cnndetection_transforms(
    train: bool, options: dict[str, Any], size: int, mean: Sequence[float], std: Sequence[float]
) -> TransformChain:
    """CNNDetection's input pipeline, which UnivFD inherited and CNN-Spot is.

    Train: shorter side to ``load_size`` (bilinear), blur / JPEG, random crop, flip,
    normalisation. Evaluation: centre crop without resizing (smaller images are padded),
    as CNNDetection's ``eval.py`` (``no_resize = True``) and UnivFD test. The resize and
    the crops are the "geometry" steps an input addon replaces.
    """
    from bench.builtin.transforms import CenterCrop, HorizontalFlip, RandomCrop, ToTensor

    to_tensor = ToTensor(mean, std)
    if not train:
        return TransformChain([CenterCrop(size), to_tensor])
    o = options
    return TransformChain(
        [
            ResizeShorter(int(o.get("load_size", 256))),
            BlurJpeg(
                blur_p=float(o.get("blur_p", 0.5)),
                sigma=tuple(o.get("blur_sigma", (0.0, 3.0))),
                jpeg_p=float(o.get("jpeg_p", 0.5)),
                quality=tuple(o.get("jpeg_quality", (30, 100))),
            ),
            RandomCrop(size),
            HorizontalFlip(),
            to_tensor,
        ]
    )
