"""A placeholder a page can show before the image arrives: a colour and a tiny preview.

Both come from the smallest rendered size, which is already in memory: a few hundred
microseconds, and a preview of a few hundred bytes that fits in the database row.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from .encode import flatten
from .results import Placeholder

PREVIEW_EDGE = 16
PREVIEW_QUALITY = 50


def make_placeholder(im: Image.Image, background: str) -> Placeholder:
    """``im`` is an upright sRGB image in L, RGB or RGBA."""
    preview = im.copy()
    preview.thumbnail((PREVIEW_EDGE, PREVIEW_EDGE), Image.Resampling.BOX)
    if preview.mode == "L":
        preview = preview.convert("RGB")
    buffer = io.BytesIO()
    preview.save(buffer, "WEBP", quality=PREVIEW_QUALITY, method=6)
    uri = "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return Placeholder(
        color=dominant_colour(im, background),
        preview=uri,
        width=preview.width,
        height=preview.height,
    )


def dominant_colour(im: Image.Image, background: str) -> str:
    """The most common of a few representative colours, as "#rrggbb".

    Transparent areas count as the background they will be shown on.
    """
    small = flatten(im, background).convert("RGB")
    small.thumbnail((64, 64), Image.Resampling.BOX)
    palette_image = small.quantize(colors=8)
    _count, index = max(palette_image.getcolors() or [(1, 0)])
    palette = palette_image.getpalette() or [0, 0, 0]
    r, g, b = palette[index * 3 : index * 3 + 3]
    return f"#{r:02x}{g:02x}{b:02x}"
