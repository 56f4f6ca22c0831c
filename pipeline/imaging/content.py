"""Photograph or graphic: the one decision that picks the encodings of an image.

JPEG and lossy WebP/AVIF suit photographs: noise and smooth gradients hide their loss.
Graphics (logos, screenshots, charts, icons, product shots on flat backgrounds) are
made of flat areas, hard edges and text: as JPEG they ring and grow, while PNG, a
palette and lossless WebP store them exactly and smaller.

The rule, in order (``decide``):

1. A profile may force it (``"content": "photo"`` or ``"graphic"``).
2. A source stored lossily (JPEG, HEIC, AVIF, lossy WebP) is a photograph: its pixels
   already carry a lossy codec's noise, and a lossy output costs nothing more.
3. A lossless source (PNG, GIF, lossless WebP, BMP, TIFF) is a graphic when it uses
   transparency, has at most 256 colours, or is flat: at least ``FLAT_SHARE`` of its
   pixels equal their right-hand neighbour exactly. A photograph saved as PNG has
   sensor noise and gradients everywhere, so almost no two neighbours are equal (under
   10% on the corpus photos); screenshots, charts and product shots on white are above
   60%.

The measurement samples at most ``SAMPLE_EDGE`` pixels a side with nearest-neighbour
(which makes no new colours), so it costs the same on a 24 MP PNG as on an icon.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Literal

from PIL import Image, ImageChops

Content = Literal["photo", "graphic"]

FLAT_SHARE = 0.5
PALETTE_COLOURS = 256
SAMPLE_EDGE = 512
LOSSLESS_SOURCES = frozenset({"png", "gif", "bmp", "tiff"})


@dataclass(frozen=True)
class Traits:
    """What the pixels of the first frame look like (measured on a sample)."""

    colours: int | None  # distinct colours, None when more than PALETTE_COLOURS
    flat: float  # share of pixels equal to their right-hand neighbour


def measure(im: Image.Image) -> Traits:
    """Sample ``im`` (any mode) and count its colours and flat neighbours."""
    sample = im
    if max(im.size) > SAMPLE_EDGE:
        scale = SAMPLE_EDGE / max(im.size)
        size = (max(2, round(im.width * scale)), max(1, round(im.height * scale)))
        sample = im.resize(size, Image.Resampling.NEAREST)
    if sample.mode not in ("RGB", "RGBA", "L"):
        sample = sample.convert("RGBA" if "A" in sample.getbands() or "transparency"
                                in sample.info else "RGB")  # fmt: skip
    found = sample.getcolors(PALETTE_COLOURS)
    return Traits(colours=len(found) if found else None, flat=_flat_share(sample))


def _flat_share(im: Image.Image) -> float:
    if im.width < 2:
        return 1.0
    left = im.crop((0, 0, im.width - 1, im.height))
    right = im.crop((1, 0, im.width, im.height))
    # A pixel is flat when every channel equals its neighbour's: the largest difference
    # over the channels is zero.
    biggest = reduce(ImageChops.lighter, ImageChops.difference(left, right).split())
    return biggest.histogram()[0] / (left.width * left.height)


def decide(forced: str, *, lossless: bool, has_alpha: bool, traits: Traits | None) -> Content:
    """The content class of a source (see the module docstring for the rule)."""
    if forced in ("photo", "graphic"):
        return forced  # type: ignore[return-value]
    if not lossless or traits is None:
        return "photo"
    if has_alpha or traits.colours is not None or traits.flat >= FLAT_SHARE:
        return "graphic"
    return "photo"
