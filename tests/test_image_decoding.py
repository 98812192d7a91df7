"""One image reader for training, evaluation, predict and captions: bombs, odd pixel formats,
EXIF orientation and special files, each built here."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from bench.data.images import UnreadableImage, load_rgb
from tests.bad_inputs import bmp_bomb, png_bomb


def _refused(path) -> str:
    with pytest.raises(UnreadableImage) as info:
        load_rgb(path)
    assert "\n" not in info.value.reason
    return info.value.reason


@pytest.mark.parametrize("build", [png_bomb, bmp_bomb], ids=["png-30000x30000", "bmp-header"])
def test_decompression_bombs_are_refused_with_a_reason(tmp_path, build):
    path = build(tmp_path / "bomb.img")
    assert path.stat().st_size < 200
    assert "decompression bomb" in _refused(path)


def test_16_bit_grey_is_scaled_by_its_range_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    for name in ("g16.png", "g16.tif"):
        Image.fromarray(values).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == "I;16"
        rgb = np.asarray(load_rgb(tmp_path / name))
        # 65535 / 257 = 255: by hand, 0 -> 0, 257 -> 1, 32768 -> 127.5 -> 128, 65535 -> 255
        assert rgb.shape == (4, 4, 3)
        assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
        assert (rgb[..., 0] == rgb[..., 2]).all()


def test_16_bit_rgb_keeps_its_colours(tmp_path):
    import cv2

    bgr = np.zeros((4, 4, 3), np.uint16)
    bgr[..., 2], bgr[..., 1], bgr[..., 0] = 65535, 32768, 256  # cv2 stores BGR
    cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    assert np.asarray(load_rgb(tmp_path / "c16.png"))[0, 0].tolist() == [255, 128, 1]


def test_float_pixels_in_unit_range_are_scaled_others_refused(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32).repeat(2, axis=0)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    assert np.asarray(load_rgb(tmp_path / "f.tif"))[0, :, 1].tolist() == [0, 64, 128, 255]
    Image.fromarray(values * 1000, mode="F").save(tmp_path / "wide.tif")
    assert "outside [0, 1]" in _refused(tmp_path / "wide.tif")
    values[0, 0] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    assert "NaN" in _refused(tmp_path / "nan.tif")


def test_32_bit_integer_pixels_without_a_range_are_refused(tmp_path):
    values = (np.arange(16).reshape(4, 4) * 100_000).astype(np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "i32.tif")
    assert "32-bit integer pixels" in _refused(tmp_path / "i32.tif")


def test_alpha_and_palette_images_become_rgb(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: the stored colour is kept
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.asarray(load_rgb(tmp_path / "a.png"))[0, 0].tolist() == [200, 0, 0]
    Image.fromarray(rgba[..., :3], "RGB").convert("P").save(tmp_path / "p.png")
    assert load_rgb(tmp_path / "p.png").mode == "RGB"


def test_exif_orientation_is_not_applied(tmp_path):
    """The documented choice: the stored pixel grid, as the authors' loaders read it."""
    grid = np.zeros((20, 40, 3), np.uint8)
    grid[:, :10] = 255  # a white band on the left of a wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(grid).save(tmp_path / "o.png", exif=exif.tobytes())
    assert Image.open(tmp_path / "o.png").getexif()[0x0112] == 6
    loaded = np.asarray(load_rgb(tmp_path / "o.png"))
    assert loaded.shape == (20, 40, 3)
    assert np.array_equal(loaded, grid)


def test_truncated_and_garbage_files_are_listed(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(tmp_path / "ok.jpg", quality=90)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    for name in ("cut.jpg", "junk.png"):
        assert _refused(tmp_path / name)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_png_and_dev_zero_do_not_block(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    reasons: list[str] = []

    def read() -> None:
        for path in (fifo, "/dev/zero"):
            try:
                load_rgb(path)
            except UnreadableImage as exc:
                reasons.append(exc.reason)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # unblock the reader so the test process can end, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("reading a FIFO blocked")
    assert reasons == [
        "not a regular file (a named pipe (FIFO))",
        "not a regular file (a character device)",
    ]


def test_file_digests_refuse_special_files(tmp_path):
    from bench.cache import file_digest
    from bench.fileio import NotRegularFileError

    with pytest.raises(NotRegularFileError):
        file_digest("/dev/zero")
