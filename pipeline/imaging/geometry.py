"""Pure arithmetic on sizes and boxes: crops, output sizes, and EXIF orientation.

Everything here is decided before a pixel is decoded, so the decoder can be told how
small it may decode (shrink-on-load) and the crop can be done in the stored image's own
coordinates, before the rotation, when the image is already small.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

Size = tuple[int, int]
Box = tuple[float, float, float, float]

#: EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Step:
    """One output size and the output names rendered at that size."""

    size: Size
    names: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """Output sizes, largest first (each is derived from the previous), and what was skipped."""

    box: Box
    steps: tuple[Step, ...]
    skipped: tuple[tuple[str, int, str], ...]


def crop_box(size: Size, aspect: float | None, focal: tuple[float, float]) -> Box:
    """The largest box of ``aspect`` (width / height) inside ``size``, centred on ``focal``
    as far as the edges allow. Without an aspect, the whole image."""
    width, height = size
    if aspect is None:
        return (0, 0, width, height)
    if width / height > aspect:
        w, h = min(width, max(1, round(height * aspect))), height
    else:
        w, h = width, min(height, max(1, round(width / aspect)))
    x = min(max(round(focal[0] * width - w / 2), 0), width - w)
    y = min(max(round(focal[1] * height - h / 2), 0), height - h)
    return (x, y, x + w, y + h)


def plan(box: Box, widths: tuple[int, ...], max_original: int) -> Plan:
    """The optimized original (long edge capped), one variant per width no wider than the
    cropped source, and one at the source's own width when it is narrower than a width;
    all share the box's aspect, so sorting by width orders them by area."""
    bw, bh = round(box[2] - box[0]), round(box[3] - box[1])
    scale = min(1.0, max_original / max(bw, bh))
    sizes: dict[Size, list[str]] = {}
    original = (max(1, round(bw * scale)), max(1, round(bh * scale)))
    sizes.setdefault(original, []).append("original")
    skipped = []
    for width in widths:
        if width > bw:
            skipped.append((f"w{width}", width, f"wider than the {bw}px source"))
            continue
        size = (width, max(1, round(width * bh / bw)))
        sizes.setdefault(size, []).append(f"w{width}")
    if skipped and bw not in widths:
        # A source narrower than some widths gets one variant at its own width, so that
        # every image has every format and a srcset that reaches its full sharpness.
        sizes.setdefault((bw, bh), []).append(f"w{bw}")
    steps = tuple(Step(size, tuple(names)) for size, names in sorted(sizes.items(), reverse=True))
    return Plan(box=box, steps=steps, skipped=tuple(skipped))


def stored_size(size: Size, orientation: int) -> Size:
    """``size`` as displayed -> the same size in the stored (unrotated) image."""
    return (size[1], size[0]) if orientation >= 5 else size


def stored_box(box: Box, orientation: int, shown: Size) -> Box:
    """A box in displayed coordinates -> the same region in stored coordinates.

    ``shown`` is the displayed size. Each branch undoes the transpose in ``TRANSPOSE``.
    """
    w, h = shown
    x0, y0, x1, y1 = box
    match orientation:
        case 2:
            x0, x1 = w - x1, w - x0
        case 3:
            x0, y0, x1, y1 = w - x1, h - y1, w - x0, h - y0
        case 4:
            y0, y1 = h - y1, h - y0
        case 5:
            x0, y0, x1, y1 = y0, x0, y1, x1
        case 6:
            x0, y0, x1, y1 = y0, w - x1, y1, w - x0
        case 7:
            x0, y0, x1, y1 = h - y1, w - x1, h - y0, w - x0
        case 8:
            x0, y0, x1, y1 = h - y1, x0, h - y0, x1
    return (x0, y0, x1, y1)
