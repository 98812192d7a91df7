"""Real images of the demo benchmark: offline photographs cut into distinct 256x256 crops.

The sources ship inside scikit-image and scikit-learn, so the demo needs no network. A crop
is identified by (source, box, flip); sampling never returns the same identity twice, which
is what the leakage checks of the benchmark rely on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

CROP_SIZE = 256

#: skimage.data loaders that read from the installed package (no pooch, no download).
SKIMAGE_SOURCES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
)
#: Files of `sklearn.datasets.load_sample_images`, by stem.
SKLEARN_SOURCES: tuple[str, ...] = ("china", "flower")
SOURCES: tuple[str, ...] = SKIMAGE_SOURCES + SKLEARN_SOURCES

_CAPTIONS = Path(__file__).with_name("captions.json")


@dataclass(frozen=True, order=True)
class CropSpec:
    """Identity of one crop: a square of side `size` at (`x`, `y`) in `source`, maybe mirrored."""

    source: str
    x: int
    y: int
    size: int
    flip: bool

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in source pixels, as PIL expects."""
        return (self.x, self.y, self.x + self.size, self.y + self.size)

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "box": list(self.box), "flip": self.flip}


def _as_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 image, got {arr.dtype}")
    return np.ascontiguousarray(arr)


@cache
def load_source(name: str) -> np.ndarray:
    """One source photograph as an HxWx3 uint8 array, read from the installed packages only."""
    if name in ("motorcycle_left", "motorcycle_right"):
        from skimage import data

        left, right, _disp = data.stereo_motorcycle()
        return _as_rgb_uint8(left if name == "motorcycle_left" else right)
    if name in SKIMAGE_SOURCES:
        from skimage import data

        return _as_rgb_uint8(getattr(data, name)())
    if name in SKLEARN_SOURCES:
        from sklearn.datasets import load_sample_image

        return _as_rgb_uint8(load_sample_image(f"{name}.jpg"))
    raise KeyError(f"unknown demo source {name!r}; known: {', '.join(SOURCES)}")


def load_captions() -> dict[str, str]:
    """Human-written caption of every source photograph (shipped as captions.json)."""
    captions = json.loads(_CAPTIONS.read_text(encoding="utf-8"))
    missing = [s for s in SOURCES if s not in captions]
    if missing:
        raise KeyError(f"captions.json lacks {missing}")
    return {s: captions[s] for s in SOURCES}


def sample_crop_specs(
    n: int,
    rng: np.random.Generator,
    shapes: dict[str, tuple[int, int]],
    taken: set[CropSpec],
    crop_size: int = CROP_SIZE,
) -> list[CropSpec]:
    """`n` new crops: source uniform, side uniform in [crop_size, min(H, W)], position uniform.

    Identities already in `taken` are redrawn, and the new ones are added to it, so
    successive calls sharing `taken` never repeat a crop.
    """
    names = sorted(shapes)
    out: list[CropSpec] = []
    while len(out) < n:
        name = names[int(rng.integers(len(names)))]
        h, w = shapes[name]
        side = int(rng.integers(crop_size, min(h, w) + 1))
        x = int(rng.integers(0, w - side + 1))
        y = int(rng.integers(0, h - side + 1))
        flip = bool(rng.integers(2))
        spec = CropSpec(name, x, y, side, flip)
        if spec in taken:
            continue
        taken.add(spec)
        out.append(spec)
    return out


def render_crop(image: Image.Image, spec: CropSpec, crop_size: int = CROP_SIZE) -> np.ndarray:
    """The crop as crop_size x crop_size x 3 uint8 (Lanczos resampling, exact for side == size)."""
    if spec.size == crop_size:
        out = image.crop(spec.box)
    else:
        out = image.resize((crop_size, crop_size), Image.Resampling.LANCZOS, box=spec.box)
    if spec.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8).copy()
