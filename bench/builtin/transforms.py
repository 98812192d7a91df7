"""Core transforms: crops, resize, flip and tensor conversion (PIL in, PIL or tensor out).

Crops pad images smaller than the target instead of resizing them: resizing smooths away
the high-frequency traces detectors look for (the argument SAFE makes).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from bench.interfaces import Transform


def _pad_to(image: Any, size: int) -> Any:
    """Centre-pad a PIL image with zeros up to ``size`` on each side that is shorter."""
    from PIL import Image

    w, h = image.size
    if w >= size and h >= size:
        return image
    canvas = Image.new(image.mode, (max(w, size), max(h, size)))
    canvas.paste(image, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
    return canvas


def _centre_box(w: int, h: int, size: int) -> tuple[int, int, int, int]:
    left, top = (w - size) // 2, (h - size) // 2
    return left, top, left + size, top + size


class CenterCrop(Transform):
    """Centre crop to ``size`` at train and evaluation (UnivFD's evaluation crop)."""

    role = "geometry"

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        image = _pad_to(image, self.size)
        return image.crop(_centre_box(*image.size, self.size))

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class RandomCrop(Transform):
    """Random crop at train time, centre crop at evaluation; pads images that are too small."""

    role = "geometry"

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        image = _pad_to(image, self.size)
        w, h = image.size
        if not train:
            return image.crop(_centre_box(w, h, self.size))
        rng = random.Random(seed)
        left, top = rng.randint(0, w - self.size), rng.randint(0, h - self.size)
        return image.crop((left, top, left + self.size, top + self.size))

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class Resize(Transform):
    """Resize to ``size`` x ``size`` (bicubic, antialiased), or the shorter side when ``shorter``."""

    role = "geometry"

    def __init__(self, size: int, shorter: bool = False):
        self.size = int(size)
        self.shorter = bool(shorter)

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        from PIL import Image

        w, h = image.size
        if self.shorter:
            scale = self.size / min(w, h)
            target = (max(1, round(w * scale)), max(1, round(h * scale)))
        else:
            target = (self.size, self.size)
        if target == (w, h):
            return image
        return image.resize(target, Image.Resampling.BICUBIC)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, shorter={self.shorter})"


class HorizontalFlip(Transform):
    """Mirror with probability ``p`` at train time; never at evaluation."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        from PIL import Image

        if train and random.Random(seed).random() < self.p:
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class ToTensor(Transform):
    """PIL image to a float (C, H, W) tensor in [0, 1], then optional mean/std normalisation."""

    role = "tensor"

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        import numpy as np
        import torch

        if isinstance(image, torch.Tensor):
            tensor = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        else:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
            tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean).view(-1, 1, 1)
            std = torch.tensor(self.std).view(-1, 1, 1)
            tensor = (tensor - mean) / std
        return tensor

    def __repr__(self) -> str:
        return f"ToTensor(mean={self.mean}, std={self.std})"
