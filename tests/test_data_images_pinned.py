"""Issue 17 (mutation testing): integer and float pixels of bench/data/images.py, by hand.

Each expected value is worked out in the test from the pixel range the format declares
(v * 255 / (2**bits - 1), rounded half to even as numpy's rint does).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from bench.data.images import UnreadableImage, _one_line, load_rgb, to_rgb
from tests.bad_inputs import png_bomb

GREY = [[0, 1, 100, 32767], [32768, 40000, 65534, 65535]]


def expected(values, top: int) -> list[list[int]]:
    return [[int(np.rint(v * 255 / top)) for v in row] for row in values]


def grey(rgb: Image.Image) -> list[list[int]]:
    pixels = np.asarray(rgb)
    assert rgb.mode == "RGB" and pixels.shape[2] == 3
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    return pixels[..., 0].tolist()


def int_image(values, fmt: str | None = None, tags: dict | None = None) -> Image.Image:
    im = Image.fromarray(np.asarray(values, dtype=np.int32))
    assert im.mode == "I"
    im.format = fmt
    if tags is not None:
        im.tag_v2 = tags
    return im


def test_a_16_bit_pgm_is_read_as_its_maxval_says(tmp_path):
    path = tmp_path / "g.pgm"
    rows = np.asarray(GREY, dtype=">u2")
    path.write_bytes(b"P5\n4 2\n65535\n" + rows.tobytes())
    with Image.open(path) as im:  # Pillow opens it as 32-bit "I" with no TIFF tags
        assert (im.mode, im.format, hasattr(im, "tag_v2")) == ("I", "PPM", False)
    # by hand: 1 -> 0.0039 -> 0; 100 -> 0.389 -> 0; 32767 -> 127.498 -> 127; 32768 -> 127.502
    # -> 128; 40000 -> 155.6 -> 156; 65534 -> 254.996 -> 255
    assert grey(load_rgb(path)) == [[0, 0, 0, 127], [128, 156, 255, 255]]
    assert grey(load_rgb(path)) == expected(GREY, 65535)


def test_integer_pixels_use_the_bits_the_file_declares():
    eight = [[0, 1, 127], [128, 254, 255]]
    for tags in ({258: (8,)}, {258: 8}, {258: (8, 8, 8)}):
        assert grey(to_rgb(int_image(eight, "TIFF", tags))) == eight  # 8 bits: as stored
    assert grey(to_rgb(int_image(GREY, "TIFF", {258: (16,)}))) == expected(GREY, 65535)
    # a 16-bit PNG read by an older Pillow: "I" with no tags, 16 bits by format
    assert grey(to_rgb(int_image(GREY, "PNG"))) == expected(GREY, 65535)
    assert grey(to_rgb(int_image(GREY, "PPM"))) == expected(GREY, 65535)
    # the tag wins over the format
    assert grey(to_rgb(int_image(eight, "PNG", {258: 8}))) == eight


@pytest.mark.parametrize(
    ("values", "fmt", "tags", "message"),
    [
        (
            [[0, 300]],
            None,
            None,
            "unknown-bit integer pixels (values 0..300) have no known 8-bit equivalent",
        ),
        (
            [[-5, 7]],
            "TIFF",
            {258: (32,)},
            "32-bit integer pixels (values -5..7) have no known 8-bit equivalent",
        ),
        ([[0, 256]], "TIFF", {258: (8,)}, "8-bit pixels outside 0..255"),
        ([[-1, 255]], "TIFF", {258: (8,)}, "8-bit pixels outside 0..255"),
        ([[-1, 3]], "PNG", None, "16-bit pixels outside 0..65535"),
        ([[0, 65536]], "PPM", None, "16-bit pixels outside 0..65535"),
        ([[9, 9]], "TIFF", {258: (9,)}, "9-bit integer pixels (values 9..9) have no known"),
        ([[17, 17]], "TIFF", {258: 17}, "17-bit integer pixels (values 17..17) have no known"),
    ],
)
def test_integer_pixels_outside_their_range_are_refused_with_it(values, fmt, tags, message):
    with pytest.raises(ValueError) as info:
        to_rgb(int_image(values, fmt, tags))
    assert str(info.value).startswith(message)


def test_float_pixels_must_lie_in_0_1(tmp_path):
    ok = np.array([[0.0, 0.002, 0.5, 1.0]], dtype=np.float32)
    # 0.002 * 255 = 0.51 -> 1; 0.5 * 255 = 127.5 -> 128 (half to even)
    assert grey(to_rgb(Image.fromarray(ok, mode="F"))) == [[0, 1, 128, 255]]
    for values, message in (
        ([[0.0, 1.5]], "float pixels range over 0..1.5, outside [0, 1]: no known 8-bit"),
        ([[-0.25, 1.0]], "float pixels range over -0.25..1, outside [0, 1]: no known 8-bit"),
        ([[0.0, np.inf]], "float pixels include NaN or infinity"),
        ([[np.nan, 0.5]], "float pixels include NaN or infinity"),
    ):
        with pytest.raises(ValueError) as info:
            to_rgb(Image.fromarray(np.array(values, dtype=np.float32), mode="F"))
        assert str(info.value).startswith(message), str(info.value)
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0.0, 1.5]], dtype=np.float32), mode="F").save(wide)
    with pytest.raises(UnreadableImage) as info:
        load_rgb(wide)
    assert info.value.reason == (
        "ValueError: float pixels range over 0..1.5, outside [0, 1]: no known 8-bit equivalent"
    )


def test_an_unreadable_image_carries_its_path_and_reason():
    err = UnreadableImage("/d/x.png", "truncated")
    assert (err.path, err.reason, str(err)) == ("/d/x.png", "truncated", "/d/x.png: truncated")


def test_one_line_reasons_name_the_exception():
    assert _one_line(ValueError()) == "ValueError"
    assert _one_line(KeyError("")) == "KeyError: ''"
    assert _one_line(OSError("broken\n   data  stream")) == "OSError: broken data stream"
    assert _one_line(SyntaxError("   ")) == "SyntaxError"


def refusal(path) -> UnreadableImage:
    with pytest.raises(UnreadableImage) as info:
        load_rgb(path)
    return info.value


def test_each_refusal_names_the_file_and_its_reason(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    err = refusal(garbage)
    assert (err.path, err.reason) == (str(garbage), "not an image format PIL can identify")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    err = refusal(os.fsencode(fifo))  # a bytes path comes back as the str the log shows
    assert (err.path, err.reason) == (str(fifo), "not a regular file (a named pipe (FIFO))")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(tmp_path / "b.png").read_bytes())
    err = refusal(bomb)
    assert err.path == str(bomb)
    assert err.reason.startswith("decompression bomb refused (DecompressionBombError: Image size (")
    assert err.reason.endswith(" pixels, could be decompression bomb DOS attack.)")


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (MemoryError(), "MemoryError: too large to decode"),
        (OSError(5, "Input/output error"), "OSError: [Errno 5] Input/output error"),
        (OSError(5, "Input/output error", "/elsewhere"), "Input/output error"),
        (SyntaxError("not a TIFF file"), "SyntaxError: not a TIFF file"),
        (OSError("image file is truncated"), "OSError: image file is truncated"),
    ],
)
def test_decoder_failures_become_one_line_reasons(tmp_path, monkeypatch, raised, reason):
    path = tmp_path / "x.png"
    Image.new("RGB", (2, 2)).save(path)

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(Image, "open", fail)
    err = refusal(path)
    assert (err.path, err.reason) == (str(path), reason)
