"""Decode once, as small as allowed, and bring the pixels to upright sRGB.

Order matters for speed and memory, so it is fixed here:

1. shrink-on-load (JPEG ``draft``: the decoder itself scales by 1/2, 1/4 or 1/8),
2. decode, mapping Pillow's errors to one-line reasons,
3. normalise the colour mode (palette, 16-bit, bilevel, ...) and drop an unused alpha,
4. crop and resize to the largest output, in the stored image's coordinates,
5. only then rotate (EXIF orientation) and convert colours: both cost in proportion to
   the pixels, and there are now far fewer of them.

Colour: CMYK and sources whose profile LittleCMS cannot use become sRGB here. A
wide-gamut RGB source (Display P3, Adobe RGB: any RGB profile other than sRGB) keeps
its pixels and profile (``Decoded.wide``): the renderer embeds the profile in the
formats colour-managed browsers show as tagged (AVIF, WebP) and converts each size once
with ``to_srgb`` for the others (JPEG and PNG fallbacks, GIF, JPEG XL, the placeholder).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO

from PIL import Image, ImageCms, ImageFile

from pipeline.errors import ImageRejected

from .content import Traits, measure
from .detect import label
from .geometry import TRANSPOSE, Box, Size, stored_box, stored_size
from .results import SourceInfo

logger = logging.getLogger(__name__)

RESAMPLE = Image.Resampling.LANCZOS
#: Shrink-on-load decodes to at least this many times the largest output. DCT scaling is a
#: clean low-pass filter, so 1.0 loses nothing measurable (SSIM, bench/imaging.py) while a
#: 24 MP JPEG decodes 2.5-3x faster in a quarter of the memory.
DRAFT_GAP = 1.0
#: Resizes first reduce by an integer box filter down to this many times the target;
#: at 3.0 the result is indistinguishable from a plain Lanczos resize (Pillow's docs).
REDUCING_GAP = 3.0

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)
_SRGB = ImageCms.createProfile("sRGB")
SRGB_ICC = ImageCms.ImageCmsProfile(_SRGB).tobytes()


@dataclass(frozen=True)
class Decoded:
    """Facts about the decoded frames that encoding needs."""

    durations: tuple[int, ...]
    loop: int
    has_alpha: bool
    icc: bytes | None  # the ICC profile that describes the pixels now (None: assume sRGB)
    # Colours were or will be converted (to sRGB, or from CMYK): the source's own file
    # does not show the same colours as the fallback.
    converted: bool = False
    traits: Traits | None = None  # measured on lossless sources, before any resize
    wide: bool = False  # the pixels are in ``icc``, a usable RGB profile other than sRGB


def decode(
    im: ImageFile.ImageFile, source: SourceInfo, box: Box, size: Size, *, animate: bool
) -> tuple[list[Image.Image], Decoded]:
    """The frames of ``im`` cropped to ``box`` (displayed coordinates) and resized to ``size``.

    The caller owns the returned images: holding no other reference to them lets each be
    freed as soon as the next smaller size exists. Raises ``ImageRejected`` for truncated
    or corrupt data and unsupported colour modes.
    """
    icc = im.info.get("icc_profile") or None
    loop = int(im.info.get("loop", 0) or 0)
    count = source.frames if animate else 1
    if count == 1:
        _draft(im, source, box, size)
    images, durations = [], []
    traits = None
    for index in range(count):
        _load_frame(im, source, index)
        if index == 0 and source.lossless:
            traits = measure(im)
        images.append(_prepare(im, source, box, size, last=index == count - 1))
        # After the frame is loaded: WebP sets a frame's duration when decoding it.
        durations.append(int(im.info.get("duration", 100) or 100))
    images = _common_mode(images)
    has_alpha = images[0].mode == "RGBA"
    mode = images[0].mode
    wide = mode in ("RGB", "RGBA") and _is_wide(icc)
    if wide:
        converted_icc: bytes | None = icc
    else:
        images, converted_icc = _to_srgb(images, icc)
    converted = wide or mode == "CMYK" or (converted_icc is SRGB_ICC and icc is not SRGB_ICC)
    for image in images:
        image.info = {}  # metadata leaves only through the encoder's explicit arguments
    return images, Decoded(
        tuple(durations), loop, has_alpha, converted_icc, converted, traits, wide=wide
    )


def to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """``image`` (RGB or RGBA, in the RGB profile ``icc``) converted to sRGB."""
    transform = _transform(icc, image.mode)
    if transform is None:  # _is_wide checked it builds; never reached in practice
        return image
    out = ImageCms.applyTransform(image, transform)
    out.info = {}
    return out


#: A wide-gamut profile travels with every AVIF and WebP output; one larger than this (a
#: LUT profile: the corpus has a 400 KB one on a 425 px photo) would cost more than the
#: image, so such a source is converted to sRGB as before. Display P3 and Adobe RGB
#: matrix profiles are about 0.5 KB.
MAX_KEPT_ICC = 8 * 1024


def _is_wide(icc: bytes | None) -> bool:
    """A compact RGB profile other than sRGB that LittleCMS can convert from."""
    return bool(
        icc
        and len(icc) <= MAX_KEPT_ICC
        and _colour_space(icc) == "RGB"
        and not _is_srgb(icc)
        and _transform(icc, "RGB") is not None
    )


def _load_frame(im: ImageFile.ImageFile, source: SourceInfo, index: int) -> None:
    """Decode frame ``index``; bad data becomes a one-line reason (never a partial image)."""
    try:
        if index:
            im.seek(index)
        im.load()
    except Image.DecompressionBombError as e:
        raise ImageRejected(f"{label(source.format)} frame exceeds Pillow's safety limit") from e
    except _DECODE_ERRORS as e:
        raise ImageRejected(_decode_reason(source.format, e)) from e


def resize(im: Image.Image, size: Size) -> Image.Image:
    """A smaller copy (the same object when already that size: no work twice)."""
    if im.size == size:
        return im
    out = im.resize(size, RESAMPLE, reducing_gap=REDUCING_GAP)
    out.info = {}
    return out


def _draft(im: ImageFile.ImageFile, source: SourceInfo, box: Box, size: Size) -> None:
    """Let the JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding."""
    if source.format != "jpeg":
        return
    shown = (source.width, source.height)
    x0, y0, x1, y1 = stored_box(box, source.orientation, shown)
    tw, th = stored_size(size, source.orientation)
    sw, sh = im.size
    need = (
        max(1, math.ceil(sw * tw / (x1 - x0) * DRAFT_GAP)),
        max(1, math.ceil(sh * th / (y1 - y0) * DRAFT_GAP)),
    )
    im.draft(im.mode, need)


def _prepare(
    im: Image.Image, source: SourceInfo, box: Box, size: Size, *, last: bool
) -> Image.Image:
    """One decoded frame -> cropped, resized, upright, in L, RGB, RGBA or CMYK.

    The resize runs in two passes, width then height (what Pillow does inside one call),
    so that the full-size pixels can be freed in between: at the peak, memory holds two
    images instead of three (-18 MiB on a 24 MP photo). ``last`` says the decoder's image
    will not be needed again (no further frame to seek to).
    """
    frame = _normalise_mode(im, source)
    shown = (source.width, source.height)
    # The decoder may have scaled (draft, rounding up): map the box onto the decoded pixels.
    stored_w, stored_h = stored_size(shown, source.orientation)
    sx, sy = frame.width / stored_w, frame.height / stored_h
    x0, y0, x1, y1 = stored_box(box, source.orientation, shown)
    x0, y0, x1, y1 = x0 * sx, y0 * sy, x1 * sx, y1 * sy
    width, height = stored_size(size, source.orientation)
    narrow = _resample(frame, (width, frame.height), (x0, 0, x1, frame.height))
    if narrow is not frame:
        if frame is not im:
            frame.close()
        if last:
            im.close()
    out = _resample(narrow, (width, height), (0, y0, width, y1))
    if source.orientation in TRANSPOSE:
        out = out.transpose(TRANSPOSE[source.orientation])
    # Never hand out the decoder's own image: closing it or seeking would change it.
    return out.copy() if out is im else out


def _resample(im: Image.Image, size: Size, box: Box) -> Image.Image:
    if im.size == size and box == (0, 0, *size):
        return im
    return im.resize(size, RESAMPLE, box=box, reducing_gap=REDUCING_GAP)


def _normalise_mode(im: Image.Image, source: SourceInfo) -> Image.Image:
    mode = im.mode
    if mode in ("L", "RGB") and "transparency" in im.info:
        return im.convert("RGBA")  # a colour key (PNG tRNS): that colour is transparent
    if mode in ("L", "RGB", "RGBA", "CMYK"):
        return im
    if mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if mode in ("PA", "LA", "La", "RGBa"):
        return im.convert("RGBA")
    if mode in ("1", "RGBX", "YCbCr"):
        return im.convert("L" if mode == "1" else "RGB")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples: scale to 8 bits (convert("L") would clip everything above 255).
        return im.convert("I").point(lambda v: v / 257).convert("L")
    if mode == "F":
        return im.point(lambda v: v * 255).convert("L")
    raise ImageRejected(f"unsupported colour mode {mode} in {label(source.format)}")


def _common_mode(images: list[Image.Image]) -> list[Image.Image]:
    """Drop an alpha channel nobody uses; give every frame of an animation the same mode."""
    modes = {i.mode for i in images}
    if "RGBA" in modes and all(_opaque(i) for i in images):
        images = [i.convert("RGB") if i.mode == "RGBA" else i for i in images]
        modes = {i.mode for i in images}
    if len(modes) > 1:
        common = "RGBA" if "RGBA" in modes else "RGB"
        images = [i if i.mode == common else i.convert(common) for i in images]
    return images


def _opaque(im: Image.Image) -> bool:
    return im.mode != "RGBA" or im.getchannel("A").getextrema()[0] == 255


def _to_srgb(
    images: list[Image.Image], icc: bytes | None
) -> tuple[list[Image.Image], bytes | None]:
    """Convert to sRGB when the embedded profile says otherwise; CMYK always becomes RGB.

    Returns the images and the ICC profile that now describes them (None when unknown).
    """
    mode = images[0].mode
    if icc and mode in ("RGB", "RGBA", "CMYK") and _colour_space(icc) == _space(mode):
        if mode != "CMYK" and _is_srgb(icc):
            return images, icc
        transform = _transform(icc, mode)
        if transform is not None:
            return [ImageCms.applyTransform(i, transform) for i in images], SRGB_ICC
    if mode == "CMYK":
        return [i.convert("RGB") for i in images], None
    return images, (icc if mode == "L" else None)


def describes_srgb(icc: bytes | None) -> bool:
    """Whether pixels tagged ``icc`` show as untagged ones do (no profile, or an sRGB one)."""
    return icc is None or (_colour_space(icc) == "RGB" and _is_srgb(icc))


def _space(mode: str) -> str:
    return "CMYK" if mode == "CMYK" else "RGB"


@lru_cache(maxsize=64)
def _colour_space(icc: bytes) -> str:
    try:
        return _profile(icc).profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        logger.info("ignoring an unreadable ICC profile: %s", e)
        return ""


@lru_cache(maxsize=64)
def _is_srgb(icc: bytes) -> bool:
    """sRGB primaries and white point: converting would change nothing but cost time."""
    prof = _profile(icc).profile
    pairs = (
        (prof.red_colorant, _SRGB.red_colorant),
        (prof.green_colorant, _SRGB.green_colorant),
        (prof.blue_colorant, _SRGB.blue_colorant),
    )
    try:
        return prof.is_matrix_shaper and all(
            abs(a - b) < 0.003
            for ours, srgb in pairs
            for a, b in zip(ours[0], srgb[0], strict=True)
        )
    except TypeError:  # a LUT profile without colorant tags
        return False


@lru_cache(maxsize=16)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    out = "RGBA" if mode == "RGBA" else "RGB"
    try:
        return ImageCms.buildTransform(
            _profile(icc), _SRGB, mode, out, renderingIntent=ImageCms.Intent.PERCEPTUAL
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        logger.info("ignoring an ICC profile LittleCMS cannot use: %s", e)
        return None


def _profile(icc: bytes) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(BytesIO(icc))


def _decode_reason(fmt: str, error: BaseException) -> str:
    name = label(fmt)
    message = str(error)
    if "truncated" in message or isinstance(error, EOFError):
        return f"truncated {name}"
    return f"corrupt {name} ({message.rstrip('.')})" if message else f"corrupt {name}"
