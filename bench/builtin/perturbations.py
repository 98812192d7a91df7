"""The built-in test-time perturbations: JPEG, resizing, Gaussian blur, Gaussian noise.

Each takes a decoded PIL RGB image and returns one; a level is the one number the field's
robustness figures put on the x axis (CNNDetection onward: JPEG quality, blur σ). Library
code does the image work: PIL encodes and decodes JPEG and resamples, scipy blurs (as
CNNDetection's ``gaussian_blur`` does), numpy draws the noise from the per-image generator
the sweep hands over.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from bench.interfaces import Perturbation


def _as_rgb(image: Any) -> Any:
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_image(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="RGB")


class Jpeg(Perturbation):
    """Encode as JPEG with PIL at quality ``level`` (1-100), decode again."""

    level_name = "JPEG quality"
    stronger = "lower"

    def apply(self, image: Any, level: float, rng: Any) -> Any:
        from PIL import Image

        buffer = io.BytesIO()
        _as_rgb(image).save(
            buffer,
            format="JPEG",
            quality=int(level),
            subsampling=str(self.options.get("subsampling", "4:2:0")),
        )
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")


class Resize(Perturbation):
    """Scale both sides by ``level`` with PIL's ``filter``; optionally back to the original size.

    Without ``restore`` the detector gets the smaller image, as a thumbnail or a shared,
    downsized copy would reach it; its own crop then pads what is missing. With
    ``restore`` the image goes back to its size, a down-up resampling that removes the
    high frequencies but keeps the geometry.
    """

    level_name = "scale factor"
    stronger = "lower"

    def apply(self, image: Any, level: float, rng: Any) -> Any:
        from PIL import Image

        image = _as_rgb(image)
        resample = Image.Resampling[str(self.options.get("filter", "bilinear")).upper()]
        w, h = image.size
        size = (max(1, int(w * level + 0.5)), max(1, int(h * level + 0.5)))
        out = image.resize(size, resample)
        if self.options.get("restore", False):
            out = out.resize((w, h), resample)
        return out


class GaussianBlur(Perturbation):
    """Gaussian blur with standard deviation ``level`` pixels, per channel (scipy.ndimage)."""

    level_name = "blur σ (px)"
    stronger = "higher"

    def apply(self, image: Any, level: float, rng: Any) -> Any:
        from scipy.ndimage import gaussian_filter

        array = np.asarray(_as_rgb(image), dtype=np.float64)
        truncate = float(self.options.get("truncate", 4.0))
        blurred = gaussian_filter(array, sigma=(level, level, 0), truncate=truncate)
        return _to_image(blurred)


class GaussianNoise(Perturbation):
    """Add N(0, (level·255)²) noise to every pixel and channel, then round and clip to 0-255."""

    level_name = "noise σ (fraction of 255)"
    stronger = "higher"

    def apply(self, image: Any, level: float, rng: Any) -> Any:
        array = np.asarray(_as_rgb(image), dtype=np.float64)
        return _to_image(array + rng.normal(0.0, level * 255.0, size=array.shape))
