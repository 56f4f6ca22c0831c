"""Bytes and a profile in, a frozen ``Rendering`` out.

Decoded once, at the size of the largest output; every smaller output is derived from
the previous one, and each (size, format) is encoded once even when two names share it.
Only the current size is kept in memory.

What each output is made of follows from the content (``pipeline.imaging.content``): a
photograph gets lossy encodings and a JPEG fallback; a graphic gets a PNG fallback
(palette when visually lossless) and, in WebP and AVIF, whichever of the lossy and the
lossless encoding is smaller. An animation is kept in WebP and AVIF; its fallback is a
still poster of the first frame. The optimized original is never larger than a source
already in a web format: when re-encoding does not win, it is the source's own encoding
with its metadata removed.

Lossy photograph outputs use the profile's fixed quality per format, or with a target
(``profile.auto``) the lowest quality that reaches it (``pipeline.imaging.autoquality``).
A wide-gamut source is encoded in its own colours for ``WIDE_FORMATS`` and in sRGB for
the rest (``_Encoder.pixels``).
"""

from __future__ import annotations

import dataclasses

from PIL import Image, features

from .autoquality import AUTO_FORMATS, Search
from .content import Content, decide
from .detect import header_exif, label, open_image
from .encode import ANIMATED_FORMATS, NO_METADATA, Metadata, encode, fallback_format
from .geometry import crop_box, plan
from .palette import quantize
from .placeholder import make_placeholder
from .profiles import Profile
from .results import Output, Rendering, Skipped, SourceInfo
from .strip import strip_metadata
from .transform import SRGB_ICC, Decoded, decode, describes_srgb, resize, to_srgb

#: Formats browsers show as they are: a source in one of them may be published as stored.
WEB_FORMATS = frozenset({"jpeg", "png", "gif", "webp", "avif"})
#: JPEG quality of a full-size transcode: the lowest that kept SSIM >= 0.97 against the
#: iPhone HEIC of bench/everyday.py (82 gave 0.964, 86 gives 0.973 at 0.92x its bytes).
TRANSCODE_QUALITY = 86
#: WebP first: whether its lossless mode won for a graphic decides whether AVIF's
#: near-lossless mode is worth trying at the same size. The formats shown in the
#: source's own colours come before those converted to sRGB, so that auto-quality
#: measures each of the two images of a size in one go.
ENCODE_ORDER = ("webp", "avif", "png", "jxl", "jpeg", "gif")
#: Formats that keep a wide-gamut source's colours, its ICC profile embedded: browsers
#: colour-manage tagged AVIF and WebP. The rest (the JPEG and PNG fallbacks, GIF, and
#: JPEG XL, which pillow-jxl-plugin 1.3.8 cannot tag) are converted to sRGB.
WIDE_FORMATS = frozenset({"avif", "webp"})


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
    source = dataclasses.replace(source, has_alpha=decoded.has_alpha)
    content = decide(
        profile.content,
        lossless=source.lossless,
        has_alpha=decoded.has_alpha,
        traits=decoded.traits,
    )
    metadata = Metadata.of(exif, decoded.icc) if exif is not None else NO_METADATA
    encoder = _Encoder(profile, source, decoded, content, metadata)
    fallback = fallback_format(alpha=decoded.has_alpha, graphic=content == "graphic")
    formats = _formats(profile, fallback, content)
    animated = len(images) > 1
    # The original keeps an animation (as WebP); otherwise it is in the fallback format.
    original_format = "webp" if animated and features.check("webp") else fallback

    outputs: list[Output] = []
    for step in layout.steps:
        images = [resize(i, step.size) for i in images]
        wanted = {(name, fmt) for name in step.names
                  for fmt in ((original_format,) if name == "original" else formats)}  # fmt: skip
        encoded = {
            fmt: encoder.encode(images, fmt, step.size)
            for fmt in sorted({fmt for _name, fmt in wanted}, key=ENCODE_ORDER.index)
        }
        for name, fmt in sorted(wanted):
            blob, count, quality, score = encoded[fmt]
            outputs.append(Output.of(name, fmt, step.size, blob, count, quality=quality,
                                     score=score))  # fmt: skip

    if _never_bigger(outputs, data, source, decoded, animate, metadata):
        notes = (*notes, f"original published in its own {label(source.format)} encoding "
                 "(re-encoding it came out larger)")  # fmt: skip
    order = {fmt: i for i, fmt in enumerate(formats)}
    outputs.sort(key=lambda o: (o.name != "original", o.width, order.get(o.format, -1)))
    return Rendering(
        source=source,
        outputs=tuple(outputs),
        skipped=tuple(Skipped(*s) for s in layout.skipped),
        placeholder=make_placeholder(encoder.pixels(images[:1], "png")[0], profile.background),
        profile=profile.name,
        notes=notes,
        content=content,
    )


def _formats(profile: Profile, fallback: str, content: Content) -> tuple[str, ...]:
    """The profile's formats with "fallback" resolved; a graphic never becomes JPEG."""
    named = (fallback if f == "fallback" or (f == "jpeg" and content == "graphic") else f
             for f in profile.formats)  # fmt: skip
    return tuple(dict.fromkeys(named))


class _Encoder:
    """Encodes one rendering's outputs, choosing per content how each format is made."""

    def __init__(
        self,
        profile: Profile,
        source: SourceInfo,
        decoded: Decoded,
        content: Content,
        metadata: Metadata,
    ) -> None:
        self.profile = profile
        self.source = source
        self.decoded = decoded
        self.graphic = content == "graphic"
        self.metadata = metadata
        self.lossless_won: set[tuple[int, int]] = set()  # sizes where lossless WebP won
        # Auto-quality applies to photographs; graphics keep their lossless choices.
        self.search = Search(profile.auto) if profile.auto and not self.graphic else None
        self._srgb: tuple[Image.Image | None, list[Image.Image]] = (None, [])

    def encode(
        self, images: list[Image.Image], fmt: str, size: tuple[int, int]
    ) -> tuple[bytes, int, int | None, float | None]:
        """The bytes and frame count of one output, its encoder quality (None when
        lossless) and, with auto-quality, its measured score."""
        frames = images if fmt in ANIMATED_FORMATS else images[:1]  # a still poster
        frames = self.pixels(frames, fmt)
        if not self.graphic:
            quality = _jpeg_quality(fmt, size, self.source, self.profile)
            single = len(frames) == 1 and frames[0].mode != "RGBA"  # what the metric scores
            if self.search and fmt in AUTO_FORMATS and single:
                return self._auto(frames[0], fmt, size)
            return (*self._encode(frames, fmt, quality=quality), self._quality(fmt, quality), None)
        lossy = (*self._encode(frames, fmt), self._quality(fmt), None)
        if fmt == "webp":
            lossless = (*self._encode(frames, fmt, lossless=True), None, None)
            if len(lossless[0]) < len(lossy[0]):
                self.lossless_won.add(size)
                return lossless
        elif fmt == "avif" and size in self.lossless_won and len(frames) == 1:
            # Near-lossless AVIF can only win where lossless WebP did (the flattest images).
            near = (*self._encode(frames, fmt, lossless=True), 100, None)
            return min(lossy, near, key=lambda c: len(c[0]))
        elif fmt == "png" and len(frames) == 1 and (paletted := quantize(frames[0])):
            return min(lossy, (*self._encode([paletted], fmt), None, None), key=lambda c: len(c[0]))
        return lossy

    def pixels(self, frames: list[Image.Image], fmt: str) -> list[Image.Image]:
        """``frames`` in the colours ``fmt`` is written in: a wide-gamut source's own for
        ``WIDE_FORMATS``, else sRGB (converted once per size, shared by the formats)."""
        if not self.decoded.wide or fmt in WIDE_FORMATS or self.decoded.icc is None:
            return frames
        first, converted = self._srgb
        if first is not frames[0] or len(converted) < len(frames):
            converted = [to_srgb(f, self.decoded.icc) for f in frames]
            self._srgb = (frames[0], converted)
        return converted[: len(frames)]

    def _auto(
        self, image: Image.Image, fmt: str, size: tuple[int, int]
    ) -> tuple[bytes, int, int | None, float | None]:
        assert self.search is not None
        choice = self.search.choose(
            image,
            fmt,
            lambda im, q: self._encode([im], fmt, quality=q)[0],
            bounds=self.auto_bounds(fmt, size, self.search.target.bounds[fmt]),
        )
        data = choice.data
        if data is None:
            data = self._encode([image], fmt, quality=choice.quality)[0]
        return data, 1, choice.quality, choice.score

    def auto_bounds(
        self, fmt: str, size: tuple[int, int], bounds: tuple[int, int]
    ) -> tuple[int, int]:
        """The encoder qualities auto-quality may choose for ``fmt`` at ``size``: the
        profile's ``bounds``, narrowed at full size for JPEG by the rules of
        ``_jpeg_quality`` (never above a JPEG source's quality, never under
        ``TRANSCODE_QUALITY`` for a transcode). ``bench/quality_oracle.py`` sweeps them."""
        low, high = bounds
        if fmt == "jpeg" and size == (self.source.width, self.source.height):
            if self.source.jpeg_quality is not None:
                high = max(1, min(high, self.source.jpeg_quality))
                low = min(low, high)
            else:
                low = max(low, TRANSCODE_QUALITY)
                high = max(high, low)
        return low, high

    def _quality(self, fmt: str, quality: int | None = None) -> int | None:
        """The quality an encode used, for the manifest (None: a lossless format)."""
        return quality if quality is not None else self.profile.quality.get(fmt)

    def _encode(
        self,
        frames: list[Image.Image],
        fmt: str,
        *,
        quality: int | None = None,
        lossless: bool = False,
    ) -> tuple[bytes, int]:
        return encode(
            frames,
            fmt,
            self.profile,
            durations=self.decoded.durations,
            loop=self.decoded.loop,
            metadata=self._metadata(fmt),
            quality=quality,
            lossless=lossless,
            graphic=self.graphic,
        )

    def _metadata(self, fmt: str) -> Metadata:
        """A wide-gamut source's profile goes with its pixels into ``WIDE_FORMATS``,
        whether or not the profile keeps metadata: without it the colours are wrong."""
        if not self.decoded.wide:
            return self.metadata
        if fmt in WIDE_FORMATS:
            return Metadata(icc=self.decoded.icc, exif=self.metadata.exif)
        return Metadata(icc=SRGB_ICC if self.metadata.icc else None, exif=self.metadata.exif)


def _never_bigger(
    outputs: list[Output],
    data: bytes,
    source: SourceInfo,
    decoded: Decoded,
    animate: bool,
    metadata: Metadata,
) -> bool:
    """Replace the original with the source's own encoding, metadata removed, when that is
    smaller and shows exactly the same image: a web format, not resized, cropped, rotated
    or colour-converted (a grey ICC profile other than sRGB's counts: the re-encodes drop
    it), with its animation when it has one, and without a copyright the profile keeps
    (stripping would drop it). Variants at the same size in the same format get the same
    bytes. Returns whether it did."""
    at = next(i for i, o in enumerate(outputs) if o.name == "original")
    encoded = outputs[at]
    if (
        source.format not in WEB_FORMATS
        or encoded.size <= len(data) * 0.5  # re-encoding clearly won: nothing to compare
        or (encoded.width, encoded.height) != (source.width, source.height)
        or source.orientation != 1
        or decoded.converted
        or (not metadata.icc and not describes_srgb(decoded.icc))
        or metadata.exif is not None
        or (source.animated and not animate)
    ):
        return False
    stripped = strip_metadata(data, source.format)
    if stripped is None or len(stripped) >= encoded.size:
        return False
    size = (source.width, source.height)
    original = outputs[at] = Output.of("original", source.format, size, stripped, source.frames)
    for i, o in enumerate(outputs):
        if (o.width, o.height) == size and o.format == source.format and o.size > original.size:
            outputs[i] = dataclasses.replace(original, name=o.name)
    return True


def _jpeg_quality(
    fmt: str, size: tuple[int, int], source: SourceInfo, profile: Profile
) -> int | None:
    """A JPEG at the source's own size is never saved above a JPEG source's quality: that
    would only make it larger than the file it optimizes. From any other source (HEIC, a
    PNG photograph) it is a transcode people download and zoom into, kept at
    ``TRANSCODE_QUALITY`` at least. Downscaled outputs keep the profile's quality
    (downscaling averages the source's artifacts away)."""
    if fmt != "jpeg" or size[0] * size[1] < source.width * source.height:
        return None
    if source.jpeg_quality is None:
        return max(profile.quality["jpeg"], TRANSCODE_QUALITY)
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
