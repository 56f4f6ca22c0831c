"""Encode pixels to bytes: the one place that decides alpha and metadata per format.

Transparency is kept by every format that has it; only JPEG is flattened, onto the
profile's background (never onto black). Metadata leaves only through the explicit
arguments below, so outputs carry no EXIF, XMP or GPS unless the profile keeps the
copyright and ICC profile.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageColor

from .profiles import Profile

PILLOW_FORMAT = {
    "avif": "AVIF",
    "webp": "WEBP",
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "jxl": "JXL",
}
#: Formats whose outputs keep an animation; every other output (the JPEG or PNG fallback)
#: is a still poster of the first frame.
ANIMATED_FORMATS = frozenset({"avif", "webp", "gif"})
_COPYRIGHT_TAGS = (0x8298, 0x013B)  # Copyright, Artist


@dataclass(frozen=True)
class Metadata:
    """What a profile with ``keep_metadata`` copies into outputs."""

    icc: bytes | None = None
    exif: bytes | None = None

    @classmethod
    def of(cls, exif: Image.Exif, icc: bytes | None) -> Metadata:
        kept = Image.Exif()
        for tag in _COPYRIGHT_TAGS:
            if exif.get(tag):
                kept[tag] = exif[tag]
        return cls(icc=icc, exif=kept.tobytes() if len(kept) else None)


NO_METADATA = Metadata()


def fallback_format(*, alpha: bool, graphic: bool) -> str:
    """The format every browser shows: PNG for a graphic or transparency, else JPEG."""
    return "png" if alpha or graphic else "jpeg"


def encode(
    frames: Sequence[Image.Image],
    fmt: str,
    profile: Profile,
    *,
    durations: Sequence[int] = (),
    loop: int = 0,
    metadata: Metadata = NO_METADATA,
    quality: int | None = None,
    lossless: bool = False,
    graphic: bool = False,
) -> tuple[bytes, int]:
    """Encode ``frames`` (one, or an animation) as ``fmt``; returns the bytes and frame count.

    Formats without animation get the first frame. ``quality`` overrides the profile's for
    ``fmt``. ``lossless`` asks WebP for its lossless mode and AVIF for near-lossless
    (quality 100, full-resolution chroma). ``graphic`` keeps AVIF's chroma at full
    resolution: coloured edges and text bleed when it is halved.
    """
    if fmt not in ANIMATED_FORMATS:
        frames = frames[:1]
    images = [_for_format(im, fmt, profile.background) for im in frames]
    options = _options(fmt, profile, metadata)
    if fmt == "webp" and lossless:
        # In lossless mode ``quality`` is the compression effort (libwebp's default 75).
        options.update(lossless=True, quality=75)
    elif fmt == "avif" and (lossless or graphic):
        options.update(subsampling="4:4:4")
        if lossless:
            options.update(quality=100)
    if quality is not None and "quality" in options:
        options["quality"] = quality
    if len(images) > 1:
        options.update(
            save_all=True,
            append_images=images[1:],
            duration=list(durations[: len(images)]),
            loop=loop,
        )
    buffer = io.BytesIO()
    images[0].save(buffer, PILLOW_FORMAT[fmt], **options)
    return buffer.getvalue(), len(images)


def flatten(im: Image.Image, background: str) -> Image.Image:
    """Composite an RGBA image onto ``background`` (RGB); other modes are returned as they are."""
    if im.mode != "RGBA":
        return im
    flat = Image.new("RGB", im.size, ImageColor.getrgb(background)[:3])
    flat.paste(im, mask=im.getchannel("A"))
    return flat


def _for_format(im: Image.Image, fmt: str, background: str) -> Image.Image:
    if fmt == "jpeg":
        return flatten(im, background)
    if im.mode == "L" and fmt in ("avif", "webp", "gif"):
        return im.convert("RGB")
    if im.mode == "P" and fmt != "png":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    return im


def _options(fmt: str, profile: Profile, metadata: Metadata) -> dict[str, Any]:
    effort = profile.effort
    options: dict[str, Any]
    match fmt:
        case "jpeg":
            options = {
                "quality": profile.quality["jpeg"],
                "optimize": effort["jpeg"] >= 1,
                "progressive": effort["jpeg"] >= 2,
            }
        case "webp":
            options = {"quality": profile.quality["webp"], "method": effort["webp"]}
        case "avif":
            # One thread: workers run one process per core, and output stays reproducible.
            options = {
                "quality": profile.quality["avif"],
                "speed": effort["avif"],
                "max_threads": 1,
            }
        case "jxl":
            # One thread, as AVIF. pillow-jxl-plugin 1.3.8 cannot write an ICC profile:
            # JPEG XL outputs are always sRGB (see the renderer).
            options = {
                "quality": profile.quality["jxl"],
                "effort": effort["jxl"],
                "num_threads": 1,
            }
            metadata = Metadata(exif=metadata.exif)
        case "png":
            options = {"compress_level": effort["png"]}
        case _:
            options = {}
    if metadata.icc and fmt != "gif":
        options["icc_profile"] = metadata.icc
    if metadata.exif and fmt != "gif":
        options["exif"] = metadata.exif
    return options
