"""Bytes and a profile in, a frozen ``Rendering`` out.

Decoded once, at the size of the largest output; every smaller output is derived from
the previous one, and each (size, format) is encoded once even when two names share it.
Only the current size is kept in memory.
"""

from __future__ import annotations

import dataclasses

from PIL import Image

from .detect import header_exif, open_image
from .encode import NO_METADATA, Metadata, encode, fallback_format
from .geometry import crop_box, plan
from .placeholder import make_placeholder
from .profiles import Profile
from .results import Output, Rendering, Skipped, SourceInfo
from .transform import decode, resize


def render(data: bytes, profile: Profile) -> Rendering:
    """Render ``data`` with ``profile``: optimized original, variants, placeholder.

    Raises ``ImageRejected`` with a one-line reason for input that cannot be rendered.
    The same bytes and profile always give the same output bytes.
    """
    im, source = open_image(data, profile)
    animate = source.animated and profile.keep_animation and _within_budget(source, profile)
    layout = plan(
        crop_box((source.width, source.height), profile.aspect, profile.focal_point),
        profile.widths,
        profile.max_original,
    )
    exif = header_exif(im, source.format) if profile.keep_metadata else None
    notes = _notes(im, source, profile, animate)
    images, decoded = decode(im, source, layout.box, layout.steps[0].size, animate=animate)
    im.close()
    metadata = Metadata.of(exif, decoded.icc) if exif is not None else NO_METADATA
    source = dataclasses.replace(source, has_alpha=decoded.has_alpha)

    fallback = fallback_format(alpha=decoded.has_alpha, animated=len(images) > 1)
    formats = tuple(dict.fromkeys(fallback if f == "fallback" else f for f in profile.formats))
    outputs: list[Output] = []
    for step in layout.steps:
        images = [resize(i, step.size) for i in images]
        encoded: dict[str, tuple[bytes, int]] = {}
        for name in step.names:
            for fmt in (fallback,) if name == "original" else formats:
                if fmt not in encoded:
                    encoded[fmt] = encode(
                        images,
                        fmt,
                        profile,
                        durations=decoded.durations,
                        loop=decoded.loop,
                        metadata=metadata,
                        quality=_jpeg_quality(fmt, step.size, source, profile),
                    )
                blob, count = encoded[fmt]
                outputs.append(Output.of(name, fmt, step.size, blob, count))

    order = {fmt: i for i, fmt in enumerate((fallback, *formats))}
    outputs.sort(key=lambda o: (o.name != "original", o.width, order[o.format]))
    return Rendering(
        source=source,
        outputs=tuple(outputs),
        skipped=tuple(Skipped(*s) for s in layout.skipped),
        placeholder=make_placeholder(images[0], profile.background),
        profile=profile.name,
        notes=notes,
    )


def _jpeg_quality(
    fmt: str, size: tuple[int, int], source: SourceInfo, profile: Profile
) -> int | None:
    """A JPEG at the source's own size is never saved above the source's quality: that
    would only make it larger than the file it optimizes. Downscaled outputs keep the
    profile's quality (downscaling averages the source's artifacts away)."""
    if fmt != "jpeg" or source.jpeg_quality is None:
        return None
    if size[0] * size[1] < source.width * source.height:
        return None
    return min(profile.quality["jpeg"], source.jpeg_quality)


# Header entries that carry metadata about the photo or its owner (EXIF holds GPS and
# device serials, XMP and comments free text).
_METADATA_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "comment")


def _notes(im: Image.Image, source: SourceInfo, profile: Profile, animate: bool) -> tuple[str, ...]:
    """What the public outputs leave out on purpose, for the row to say."""
    notes = []
    if source.animated and not animate:
        if not profile.keep_animation:
            notes.append(
                "animation not kept (the profile's keep_animation is off): first frame only"
            )
        else:
            notes.append(
                f"animation dropped: {source.frames} frames of {source.width}x{source.height} "
                f"exceed the budget ({profile.max_frames} frames, {profile.max_pixels} pixels "
                "in all): first frame only"
            )
    if not profile.keep_metadata and any(im.info.get(k) for k in _METADATA_KEYS):
        notes.append("metadata removed from the public outputs (EXIF, XMP, comments)")
    return tuple(notes)


def _within_budget(source: SourceInfo, profile: Profile) -> bool:
    """Animations past the frame or pixel budget are rendered from their first frame."""
    pixels = source.width * source.height * source.frames
    return source.frames <= profile.max_frames and pixels <= profile.max_pixels
