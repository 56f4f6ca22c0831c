"""Test images made in code: small, exact, and each built to make one rule fail loudly."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw

from pipeline.imaging.geometry import TRANSPOSE
from tests.conftest import PHOTOS

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def save(im: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def quadrants(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Upright reference: red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    w, h = size
    im = Image.new("RGB", size)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, w // 2 - 1, h // 2 - 1), fill=RED)
    draw.rectangle((w // 2, 0, w - 1, h // 2 - 1), fill=GREEN)
    draw.rectangle((0, h // 2, w // 2 - 1, h - 1), fill=BLUE)
    draw.rectangle((w // 2, h // 2, w - 1, h - 1), fill=YELLOW)
    return im


_INVERSE = {
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
}


def oriented_jpeg(orientation: int, upright: Image.Image) -> bytes:
    """A JPEG whose stored pixels need EXIF ``orientation`` to look like ``upright``."""
    stored = upright
    if orientation in TRANSPOSE:
        method = TRANSPOSE[orientation]
        stored = upright.transpose(_INVERSE.get(method, method))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(stored, "JPEG", quality=95, exif=exif)


def transparent_logo(size: tuple[int, int] = (80, 60), mode: str = "RGBA") -> Image.Image:
    """A red square on a fully transparent background whose hidden colour is black.

    Transparent pixels hold (0, 0, 0, 0): any code that drops alpha shows black corners.
    """
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    w, h = size
    ImageDraw.Draw(im).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(*RED, 255))
    return im.convert(mode) if mode != "RGBA" else im


def palette_with_transparency(size: tuple[int, int] = (40, 30)) -> Image.Image:
    """Palette image: index 0 transparent (black), index 1 opaque green in the middle."""
    im = Image.new("P", size, 0)
    im.putpalette([0, 0, 0, *GREEN] + [0, 0, 0] * 254)
    w, h = size
    ImageDraw.Draw(im).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=1)
    im.info["transparency"] = 0
    return im


def png_16bit_gray(size: tuple[int, int] = (32, 16), value: int = 32768) -> bytes:
    im = Image.new("I;16", size, value)
    return save(im, "PNG")


def png_16bit_rgb(size: tuple[int, int], rgb16: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow writes RGB at 8 bits)."""
    w, h = size
    row = b"\x00" + struct.pack(">" + "H" * 3 * w, *(rgb16 * w))
    return _png(w, h, bit_depth=16, colour_type=2, raw=row * h)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes (a bomb)."""
    return _png(width, height, bit_depth=8, colour_type=2, raw=b"\x00" * 16)


def _png(w: int, h: int, *, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def animation(fmt: str, colours: list[tuple[int, int, int]], size: tuple[int, int] = (40, 30)):
    frames = [Image.new("RGB", size, c) for c in colours]
    durations = [100 + 20 * i for i in range(len(frames))]
    options: dict[str, object] = {"save_all": True, "append_images": frames[1:], "loop": 0}
    options["duration"] = durations
    if fmt == "WEBP":
        options["lossless"] = True
    return save(frames[0], fmt, **options)


def photo_icc(name: str) -> bytes:
    """The ICC profile embedded in one of the shipped photos (e.g. Display P3)."""
    with Image.open(PHOTOS / name) as im:
        return im.info["icc_profile"]
