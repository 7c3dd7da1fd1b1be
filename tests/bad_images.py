"""A corpus of awkward and broken image files, generated on the fly for the bad-input tests (nothing downloaded).

``write_corpus(folder)`` returns ``{name: (path, expected)}`` where ``expected`` is ``"bad_header"`` (refused when
indexing), ``"bad_decode"`` (passes the header check, fails when decoded) or an ``(H, W)`` decoded shape.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny valid-looking PNG whose IHDR claims ``width`` x ``height`` pixels (a decompression bomb header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def write_corpus(folder: str | Path) -> dict[str, tuple[Path, object]]:
    """Write every case into ``folder`` (created) and return ``{name: (path, expected)}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_noise(24, 40))
    png, jpeg = _encoded(rgb, "PNG"), _encoded(rgb, "JPEG", quality=90)

    palette = Image.fromarray(_noise(20, 30, 1)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    gray16 = Image.fromarray((np.arange(18 * 22, dtype=np.uint16).reshape(18, 22) * 150))
    cases: dict[str, tuple[bytes, object]] = {
        "empty.png": (b"", "bad_header"),
        "text.jpg": (b"this is not an image, just text with a .jpg name\n" * 4, "bad_header"),
        "bomb.png": (png_bomb_bytes(), "bad_header"),
        "truncated.png": (png[: len(png) // 2], "bad_decode"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "bad_decode"),
        "gray16.png": (_encoded(gray16, "PNG"), (18, 22)),
        "palette_transparent.png": (_encoded(palette, "PNG", transparency=0), (20, 30)),
        "cmyk.jpg": (_encoded(Image.fromarray(_noise(16, 12, 2)).convert("CMYK"), "JPEG"), (16, 12)),
        "exif_rotated.jpg": (_encoded(Image.fromarray(_noise(10, 30, 3)), "JPEG", exif=exif), (30, 10)),
        "one_pixel.png": (_encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), (1, 1)),
        "gray.png": (_encoded(Image.fromarray(_noise(14, 15, 4)[..., 0]), "PNG"), (14, 15)),
        "rgba.png": (_encoded(Image.fromarray(_noise(12, 13, 5)).convert("RGBA"), "PNG"), (12, 13)),
    }
    out = {}
    for name, (data, expected) in cases.items():
        path = folder / name
        path.write_bytes(data)
        out[name] = (path, expected)
    return out
