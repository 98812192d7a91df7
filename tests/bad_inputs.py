"""Builders of hostile or odd input files, shared by the hardening tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A few dozen bytes of PNG whose header claims width x height 8-bit grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )
    return path


def bmp_bomb(path: Path, width: int = 50000, height: int = 50000) -> Path:
    """The 54-byte BMP header of a 24-bit width x height image, and no pixels."""
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    data = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + dib
    assert len(data) == 54
    path.write_bytes(data)
    return path
