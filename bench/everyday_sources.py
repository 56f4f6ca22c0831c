"""The files real sites hold besides photographs, made in code so every run is the same.

Product shots on white and on transparency, logos (palette, with and without
transparency), a screenshot with text, a chart, icons, a static and an animated GIF, a
lossless WebP graphic, small low-quality JPEGs and lossy WebPs cut from the repository's
photos, and a HEIC written with pillow-heif. ``bench/everyday.py`` renders them; the
imaging tests use a few of the same makers.

Only Pillow (and pillow-heif for the HEIC) is needed; text uses Pillow's embedded font.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageCms, ImageDraw, ImageFilter, ImageFont, ImageOps

NAVY, ORANGE, TEAL, GREY = (20, 40, 90), (240, 120, 20), (0, 140, 140), (90, 90, 90)


def save(im: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def product_shot(size: int = 600, *, transparent: bool = False) -> Image.Image:
    """A bottle with a gradient body, a printed label and a soft shadow, on white or on
    nothing: what a shop's catalogue PNGs look like."""
    im = Image.new("RGBA", (size, size), (255, 255, 255, 0 if transparent else 255))
    shadow = Image.new("L", (size, size), 0)
    ImageDraw.Draw(shadow).ellipse((size * 0.28, size * 0.86, size * 0.72, size * 0.93), fill=110)
    shadow = shadow.filter(ImageFilter.GaussianBlur(size / 60))
    im.paste((0, 0, 0, 255), mask=shadow)
    body = Image.new("RGBA", (size, size))
    draw = ImageDraw.Draw(body)
    for x in range(int(size * 0.35), int(size * 0.65)):
        t = (x - size * 0.35) / (size * 0.3)
        shade = 0.55 + 0.45 * math.sin(t * math.pi)
        colour = (*tuple(int(c * shade) for c in TEAL), 255)
        draw.line((x, size * 0.3, x, size * 0.88), fill=colour)
    mask = Image.new("L", (size, size), 0)
    shape = ImageDraw.Draw(mask)
    shape.rounded_rectangle((size * 0.35, size * 0.3, size * 0.65, size * 0.88), size // 20, 255)
    shape.rectangle((size * 0.45, size * 0.12, size * 0.55, size * 0.32), 255)
    draw.rectangle((size * 0.45, size * 0.12, size * 0.55, size * 0.32), fill=(*GREY, 255))
    im.paste(body, mask=mask)
    label = ImageDraw.Draw(im)
    label.rectangle((size * 0.37, size * 0.5, size * 0.63, size * 0.68), fill=(250, 248, 240, 255))
    label.text((size * 0.5, size * 0.56), "AQUA", fill=(*NAVY, 255), font=font(size // 14),
               anchor="mm")  # fmt: skip
    label.text((size * 0.5, size * 0.63), "500 ml", fill=(*GREY, 255), font=font(size // 28),
               anchor="mm")  # fmt: skip
    return im if transparent else im.convert("RGB")


def logo(*, transparent: bool = False) -> Image.Image:
    """A flat two-colour wordmark, saved as a palette image (as logo tools export it)."""
    im = Image.new("RGBA", (400, 160), (255, 255, 255, 0 if transparent else 255))
    draw = ImageDraw.Draw(im)
    draw.ellipse((16, 24, 128, 136), fill=(*ORANGE, 255))
    draw.polygon([(48, 110), (72, 50), (96, 110)], fill=(255, 255, 255, 255))
    draw.text((148, 80), "Northwind", fill=(*NAVY, 255), font=font(44), anchor="lm")
    if transparent:
        return im.quantize(colors=32, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    return im.convert("RGB").quantize(colors=32, dither=Image.Dither.NONE)


def screenshot() -> Image.Image:
    """An application window: title bar, sidebar, buttons and lines of anti-aliased text."""
    im = Image.new("RGB", (1280, 800), (246, 247, 249))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, 1280, 44), fill=(32, 36, 44))
    for i, colour in enumerate(((237, 94, 87), (245, 190, 79), (98, 197, 85))):
        draw.ellipse((16 + i * 22, 15, 30 + i * 22, 29), fill=colour)
    draw.text((640, 22), "Orders — Northwind Admin", fill=(220, 220, 220), font=font(16),
              anchor="mm")  # fmt: skip
    draw.rectangle((0, 44, 240, 800), fill=(236, 238, 242))
    for i, item in enumerate(("Dashboard", "Orders", "Products", "Customers", "Reports")):
        if i == 1:
            draw.rectangle((8, 60 + i * 40, 232, 92 + i * 40), fill=(210, 225, 250))
        draw.text((24, 76 + i * 40), item, fill=(40, 44, 52), font=font(17), anchor="lm")
    text = font(15)
    for row in range(14):
        y = 120 + row * 44
        draw.line((272, y + 30, 1248, y + 30), fill=(225, 227, 232))
        draw.text((280, y + 12), f"#{10412 + row}", fill=(60, 64, 72), font=text, anchor="lm")
        draw.text((400, y + 12), f"Customer {row * 7 % 23} — {3 + row % 5} items",
                  fill=(60, 64, 72), font=text, anchor="lm")  # fmt: skip
        draw.text((900, y + 12), f"€{(row * 37.5) % 400 + 12:.2f}", fill=(60, 64, 72),
                  font=text, anchor="lm")  # fmt: skip
        status = ("Paid", (46, 160, 67)) if row % 3 else ("Pending", (210, 140, 20))
        draw.rounded_rectangle((1080, y, 1180, y + 24), 12, fill=status[1])
        draw.text((1130, y + 12), status[0], fill="white", font=font(13), anchor="mm")
    draw.rounded_rectangle((1100, 64, 1248, 100), 6, fill=(37, 99, 235))
    draw.text((1174, 82), "New order", fill="white", font=font(15), anchor="mm")
    return im


def chart() -> Image.Image:
    """A bar chart with axes, grid lines, labels and a line series."""
    im = Image.new("RGB", (800, 500), "white")
    draw = ImageDraw.Draw(im)
    draw.text((400, 24), "Monthly revenue", fill=(30, 30, 30), font=font(22), anchor="mm")
    for i in range(6):
        y = 440 - i * 70
        draw.line((70, y, 770, y), fill=(230, 230, 230))
        draw.text((60, y), f"{i * 20}k", fill=(90, 90, 90), font=font(13), anchor="rm")
    values = [34, 52, 47, 80, 65, 92, 88, 71, 60, 99, 105, 120]
    points = []
    for i, v in enumerate(values):
        x = 90 + i * 56
        draw.rectangle((x, 440 - v * 3, x + 36, 440), fill=(66, 133, 244))
        draw.text((x + 18, 456), "JFMAMJJASOND"[i], fill=(90, 90, 90), font=font(13),
                  anchor="mm")  # fmt: skip
        points.append((x + 18, 440 - v * 3.3))
    draw.line(points, fill=(234, 67, 53), width=3)
    draw.line((70, 440, 770, 440), fill=(60, 60, 60), width=2)
    return im


def icon(size: int) -> Image.Image:
    """A rounded app icon with a glyph, on transparency."""
    im = Image.new("RGBA", (size * 4, size * 4), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    draw.rounded_rectangle((0, 0, size * 4 - 1, size * 4 - 1), size * 0.8, fill=(*ORANGE, 255))
    draw.ellipse((size, size, size * 3, size * 3), outline="white", width=max(4, size // 3))
    draw.line((size * 2.6, size * 2.6, size * 3.3, size * 3.3), fill="white", width=size // 3)
    return im.resize((size, size), Image.Resampling.LANCZOS)


def banner() -> Image.Image:
    """A 468x60 static GIF banner with flat colours and text."""
    im = Image.new("RGB", (468, 60), NAVY)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, 90, 60), fill=ORANGE)
    draw.text((45, 30), "SALE", fill="white", font=font(24), anchor="mm")
    draw.text((110, 30), "Up to 40% off all summer items", fill="white", font=font(20),
              anchor="lm")  # fmt: skip
    return im.quantize(colors=16, dither=Image.Dither.NONE)


def animation_frames(size: int = 160, count: int = 12) -> list[Image.Image]:
    """A ball bouncing across a flat background: what an animated GIF usually holds."""
    frames = []
    for i in range(count):
        im = Image.new("RGB", (size, size), (250, 245, 230))
        draw = ImageDraw.Draw(im)
        x = size * 0.15 + size * 0.7 * i / (count - 1)
        y = size * 0.75 - abs(math.sin(i / (count - 1) * math.pi * 2)) * size * 0.5
        r = size * 0.1
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(220, 50, 50))
        draw.line((0, size * 0.86, size, size * 0.86), fill=(80, 80, 80), width=2)
        frames.append(im.quantize(colors=16, dither=Image.Dither.NONE))
    return frames


def animated_gif(size: int = 160, count: int = 12) -> bytes:
    frames = animation_frames(size, count)
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)


def heic(photo: Image.Image, quality: int = 60) -> bytes:
    """``photo`` as an iPhone would store it (needs pillow-heif)."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    return save(photo.convert("RGB"), "HEIF", quality=quality)


def photo_crops(folder: Path, count: int = 3) -> Iterator[tuple[str, Image.Image]]:
    """Upright 800 px sRGB copies of the first ``count`` photos in ``folder``, no metadata
    (a Display P3 photo would otherwise lend its profile to every file made from it)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    for path in paths[:count]:
        with Image.open(path) as im:
            yield path.stem, to_srgb(ImageOps.exif_transpose(im), 800)


def to_srgb(im: Image.Image, edge: int) -> Image.Image:
    """``im`` shrunk to ``edge`` px, its colours converted to sRGB, its metadata dropped."""
    icc = im.info.get("icc_profile")
    im = im.convert("RGB")
    if icc:
        srgb = ImageCms.createProfile("sRGB")
        im = ImageCms.profileToProfile(im, io.BytesIO(icc), srgb, outputMode="RGB")
    im.thumbnail((edge, edge), Image.Resampling.LANCZOS)
    im.info = {}
    return im


def everyday_sources(photos: Path) -> dict[str, bytes]:
    """Every source of the set, by file name."""
    sources = {
        "product_white.png": save(product_shot(), "PNG", optimize=True),
        "product_alpha.png": save(product_shot(transparent=True), "PNG", optimize=True),
        "logo.png": save(logo(), "PNG", optimize=True),
        "logo_alpha.png": save(logo(transparent=True), "PNG", optimize=True),
        "screenshot.png": save(screenshot(), "PNG", optimize=True),
        "chart.png": save(chart(), "PNG", optimize=True),
        "chart_lossless.webp": save(chart(), "WEBP", lossless=True, quality=100, method=6),
        "banner.gif": save(banner(), "GIF", optimize=True),
        "bounce.gif": animated_gif(),
    }
    for size in (32, 64, 128):
        sources[f"icon_{size}.png"] = save(icon(size), "PNG", optimize=True)
    for stem, im in photo_crops(photos):
        sources[f"{stem}_q70.jpg"] = save(im, "JPEG", quality=70)
        sources[f"{stem}_q75.webp"] = save(im, "WEBP", quality=75, method=4)
    crops = dict(photo_crops(photos, count=99))
    iphone = next(
        (im for stem, im in crops.items() if "iphone" in stem), next(iter(crops.values()))
    )
    with contextlib.suppress(ImportError):  # without pillow-heif the set has no HEIC
        sources["iphone.heic"] = heic(iphone)
    return sources
