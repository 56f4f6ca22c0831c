"""Palette PNGs: up to 256 colours in one byte a pixel, when that changes nothing visible.

A graphic with at most 256 colours maps onto a palette exactly. One with more (the
anti-aliased edges of text, a soft shadow) is quantized, and the palette is used only
when the result is visually lossless: a peak signal-to-noise ratio of at least
``MIN_PSNR`` dB over every channel, alpha included. Without dithering: dither noise
costs bytes and is what makes quantized graphics look grainy.
"""

from __future__ import annotations

import math

from PIL import Image, ImageChops

#: 45 dB: above what viewers tell apart from the source on graphics; the benchmark's SSIM
#: of palette outputs against their sources stays above 0.99 (bench/everyday.py).
MIN_PSNR = 45.0
COLOURS = 256


def quantize(im: Image.Image) -> Image.Image | None:
    """``im`` (L, RGB or RGBA) as a P image, or None when a palette would show."""
    if im.mode == "L":
        return None  # 8-bit grey is already one byte a pixel
    # MAXCOVERAGE keeps every colour of an image that has at most 256 and errs by a level
    # or two beyond; Pillow quantizes RGBA only with FASTOCTREE.
    method = Image.Quantize.FASTOCTREE if im.mode == "RGBA" else Image.Quantize.MAXCOVERAGE
    paletted = im.quantize(COLOURS, method=method, dither=Image.Dither.NONE)
    return paletted if psnr(im, paletted.convert(im.mode)) >= MIN_PSNR else None


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of ``b`` against ``a`` (same size and mode), in dB."""
    histogram = ImageChops.difference(a, b).histogram()  # 256 bins per band
    squared = sum((i % 256) ** 2 * count for i, count in enumerate(histogram))
    mse = squared / (a.width * a.height * len(a.getbands()))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
