"""Decoding one image file into the RGB picture every detector takes, or a reason it cannot be.

The one reader the data loader, ``bench predict`` and captioning share, so a file is either
read the same way everywhere or listed with the same reason everywhere:

- Only regular files are opened (a FIFO or device named ``x.png`` is refused at once).
- Decompression bombs (more than twice PIL's ``MAX_IMAGE_PIXELS``, about 179 million
  pixels) are refused before decoding; so is anything PIL cannot decode completely.
- Pixels are converted by the range their format declares, never clipped: 16-bit grey
  (0..65535) is divided by 257; 32-bit integer pixels are read when the file says they hold
  8 or 16 bits; float pixels must lie in [0, 1] (the convention of float image files) and
  are refused otherwise, with their range in the reason. 16-bit RGB is reduced by PIL
  to its high byte. Alpha is dropped (the stored colour values are kept, not composited),
  palettes are expanded, CMYK/YCbCr converted by PIL; multi-frame files give frame 0.
- EXIF orientation is NOT applied: the detector sees the pixel grid as stored, as the
  authors' loaders do (``Image.open(path).convert("RGB")`` in UnivFD, NPR, AIGIBench) and as
  torchvision's ``pil_loader`` does. A generator's traces live in that grid; rotating it
  would also make results depend on metadata a re-encoder may drop.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

#: PIL modes holding 16-bit unsigned grey pixels (0..65535).
UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: TIFF tag BitsPerSample.
TIFF_BITS_PER_SAMPLE = 258


class UnreadableImage(Exception):
    """An image that is listed as skipped: ``reason`` says why in one line."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _int_bits(im: Any) -> int | None:
    """How many bits the file says an integer ("I") pixel holds, when it says so."""
    tags = getattr(im, "tag_v2", None)
    if tags is not None and TIFF_BITS_PER_SAMPLE in tags:
        bits = tags[TIFF_BITS_PER_SAMPLE]
        bits = bits[0] if isinstance(bits, tuple) else bits
        return int(bits)
    if im.format in {"PNG", "PPM"}:  # 16-bit grey PNG (older Pillow) and PGM with maxval > 255
        return 16
    return None


def _grey_to_rgb(values: Any) -> Any:
    """uint8 (H, W) -> RGB PIL image."""
    from PIL import Image

    return Image.fromarray(values, mode="L").convert("RGB")


def to_rgb(im: Any) -> Any:
    """A loaded PIL image as 8-bit RGB, by the range its pixel format declares.

    Raises ValueError with the reason for pixels whose range is not known.
    """
    import numpy as np

    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode in UINT16_MODES:
        values = np.asarray(im).astype(np.float64)
        return _grey_to_rgb(np.rint(values / 257.0).astype(np.uint8))
    if mode == "I":
        values = np.asarray(im).astype(np.int64)
        bits = _int_bits(im)
        if bits not in (8, 16):
            raise ValueError(
                f"{bits or 'unknown'}-bit integer pixels (values {values.min()}..{values.max()}) "
                "have no known 8-bit equivalent"
            )
        top = 2**bits - 1
        if values.min() < 0 or values.max() > top:
            raise ValueError(f"{bits}-bit pixels outside 0..{top}")
        return _grey_to_rgb(np.rint(values * (255.0 / top)).astype(np.uint8))
    if mode == "F":
        values = np.asarray(im).astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("float pixels include NaN or infinity")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"float pixels range over {low:g}..{high:g}, outside [0, 1]: no known 8-bit "
                "equivalent"
            )
        return _grey_to_rgb(np.rint(values * 255.0).astype(np.uint8))
    return im.convert("RGB")  # 1, L, P, LA, PA, RGBA, RGBX, CMYK, YCbCr, ...; others raise


def load_rgb(path: str | os.PathLike[str]) -> Any:
    """The image at ``path`` as a fully decoded 8-bit RGB PIL image, or UnreadableImage."""
    from PIL import Image, UnidentifiedImageError

    from bench.fileio import open_regular

    name = os.fsdecode(path)
    try:
        with open_regular(path) as fh, warnings.catch_warnings():
            # Palette-transparency and bomb-threshold warnings are facts about one file,
            # not something to print once per image; the refusals below are errors.
            warnings.simplefilter("ignore")
            with Image.open(fh) as im:
                im.load()
                return to_rgb(im)
    except UnidentifiedImageError:
        raise UnreadableImage(name, "not an image format PIL can identify") from None
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(name, f"decompression bomb refused ({_one_line(exc)})") from None
    except OSError as exc:
        reason = exc.strerror if exc.strerror and exc.filename else _one_line(exc)
        raise UnreadableImage(name, reason) from None
    except MemoryError:
        raise UnreadableImage(name, "MemoryError: too large to decode") from None
    except Exception as exc:  # decoders raise many types (SyntaxError, struct.error, ...)
        raise UnreadableImage(name, _one_line(exc)) from None
