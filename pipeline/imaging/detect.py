"""Know what the bytes are, and refuse them cheaply, before decoding a single pixel.

The format comes from the content (magic numbers), never from a file name. Only the
Pillow plugin of that format is allowed to parse the header, and the pixel budget, the
size limit and the frame count are checked from the header: a decompression bomb costs
a few microseconds, not gigabytes.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re

from PIL import Image, ImageFile, features

from pipeline.errors import ImageRejected

from .content import LOSSLESS_SOURCES
from .profiles import Profile
from .results import SourceInfo

#: Our format token -> (Pillow format id, name people know).
FORMATS: dict[str, tuple[str, str]] = {
    "jpeg": ("JPEG", "JPEG"),
    "png": ("PNG", "PNG"),
    "gif": ("GIF", "GIF"),
    "webp": ("WEBP", "WebP"),
    "tiff": ("TIFF", "TIFF"),
    "bmp": ("BMP", "BMP"),
    "avif": ("AVIF", "AVIF"),
    "heic": ("HEIF", "HEIC"),  # only when a HEIF plugin (pillow-heif) is registered
}
#: Formats whose files may hold an animation we know how to keep.
ANIMATABLE = frozenset({"gif", "webp", "png", "avif"})

#: What Pillow raises on a header it cannot parse.
_HEADER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION = 0x0112

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_AVIF_BRANDS = {b"avif", b"avis"}
_DOCTYPE_HTML = re.compile(rb"<!doctype\s+html", re.I)
_FIRST_TAG = re.compile(rb"<([a-z][\w:.-]*)", re.I)
_HTML_TAGS = frozenset(
    b"html head body script style meta link title div span p a img iframe form table".split()
)

_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "not an image: PDF"),
    (b"PK\x03\x04", "not an image: ZIP archive"),
    (b"\x1f\x8b", "not an image: gzip archive"),
    (b"\x7fELF", "not an image: executable"),
    (b"MZ", "not an image: executable"),
    (b"8BPS", "unsupported image format: Photoshop PSD"),
    (b"\x00\x00\x01\x00", "unsupported image format: ICO"),
    (b"\x00\x00\x00\x0cjP  ", "unsupported image format: JPEG 2000"),
    (b"\xff\x4f\xff\x51", "unsupported image format: JPEG 2000"),
    (b"II+\x00", "unsupported image format: BigTIFF"),
    (b"MM\x00+", "unsupported image format: BigTIFF"),
    (b"\xff\x0a", "unsupported image format: JPEG XL"),
)


def label(fmt: str) -> str:
    """The name people know for a format token ("WebP" for "webp")."""
    return FORMATS.get(fmt, (fmt, fmt.upper()))[1]


def sniff(data: bytes) -> str:
    """The format token of ``data``, or ``ImageRejected`` saying what the bytes are instead."""
    head = data[:64]
    if not head:
        raise ImageRejected("empty file")
    fmt = _image_format(head)
    if fmt is None:
        raise ImageRejected(_what_else(data))
    if fmt == "avif" and not features.check("avif"):
        raise ImageRejected("AVIF is not supported by the installed codecs")
    if fmt == "heic" and not _heif_registered():
        raise ImageRejected("HEIC is not supported by the installed codecs (install pillow-heif)")
    return fmt


def _heif_registered() -> bool:
    """Register pillow-heif's HEIF plugin the first time a HEIC arrives: loading libheif
    and its codecs costs every worker 5 MiB, and most never see a HEIC."""
    Image.init()
    if FORMATS["heic"][0] in Image.OPEN:
        return True
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _image_format(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "bmp"
    if head[4:8] == b"ftyp":
        box = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(box, len(head)), 4)}
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heic"
    return None


def _what_else(data: bytes) -> str:
    """A one-line reason for bytes that are not an image we accept."""
    head = data[:1024]
    for signature, reason in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return reason
    if head[4:8] == b"ftyp":
        return f"not an image: ISO media ({head[8:12].decode('latin-1').strip()})"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<"):
        if _DOCTYPE_HTML.match(text):
            return "not an image: HTML"
        tag = _FIRST_TAG.search(data[:4096])
        name = tag.group(1).lower() if tag else b""
        if name == b"svg" or name.endswith(b":svg"):
            return "SVG is not accepted (vector images can carry scripts)"
        return "not an image: HTML" if name in _HTML_TAGS else "not an image: XML"
    if text.startswith((b"{", b"[")):
        return "not an image: JSON"
    if _looks_like_text(head):
        return "not an image: text"
    return "not an image: unrecognised content"


def _looks_like_text(head: bytes) -> bool:
    try:
        # Incremental: a character cut in two at the end of ``head`` is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in b"\t\r\n\f" for c in head)


def open_image(data: bytes, profile: Profile) -> tuple[ImageFile.ImageFile, SourceInfo]:
    """Parse the header with the sniffed format's plugin only and enforce the limits.

    Returns the lazily-loaded image (no pixel decoded yet) and the source facts.
    """
    if len(data) > profile.max_bytes:
        raise ImageRejected(
            f"{_mib(len(data))} exceeds the {_mib(profile.max_bytes)} file size limit"
        )
    fmt = sniff(data)
    name = label(fmt)
    Image.init()
    factory, _accept = Image.OPEN[FORMATS[fmt][0]]
    try:
        # Pillow's plugin directly, not Image.open: no guessing among other plugins, and
        # no DecompressionBombError/Warning before our stricter budget below can name the
        # dimensions in its reason.
        im = factory(io.BytesIO(data), "")
        width, height = im.size
    except Image.DecompressionBombError as e:
        raise ImageRejected(f"{name} exceeds the {_megapixels(profile.max_pixels)} MP limit") from e
    except _HEADER_ERRORS as e:
        raise ImageRejected(f"corrupt {name}: unreadable header") from e
    if width < 1 or height < 1:
        raise ImageRejected(f"corrupt {name}: {width}x{height} pixels")
    if width * height > profile.max_pixels:
        raise ImageRejected(
            f"{width}x{height} exceeds the {_megapixels(profile.max_pixels)} MP limit"
        )
    frames = _frame_count(im, fmt, name)
    # Pillow's TIFF plugin applies the orientation itself (size and pixels come upright).
    orientation = 1 if fmt == "tiff" else _orientation(header_exif(im, fmt))
    if orientation > 4:
        width, height = height, width
    has_alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
    source = SourceInfo(
        format=fmt,
        width=width,
        height=height,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        mode=im.mode,
        has_alpha=has_alpha,
        animated=frames > 1,
        frames=frames,
        orientation=orientation,
        jpeg_quality=jpeg_quality(im) if fmt in ("jpeg", "mpo") else None,
        lossless=fmt in LOSSLESS_SOURCES or (fmt == "webp" and _lossless_webp(data)),
    )
    return im, source


# The luminance quantization table of the JPEG standard (Annex K), which libjpeg scales by
# quality: the sum of a file's table against this one gives the quality it was saved at.
_STANDARD_LUMINANCE_SUM = sum(
    (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57,
     69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55,
     64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100,
     103, 99)
)  # fmt: skip


def jpeg_quality(im: Image.Image) -> int | None:
    """The libjpeg quality (1-100) a JPEG was saved at, from its luminance table; an
    estimate for other encoders' tables, None when the file has no table to read."""
    tables = getattr(im, "quantization", None) or {}
    luminance = tables.get(0)
    if not luminance or len(luminance) != 64:
        return None
    scale = sum(luminance) * 100 / _STANDARD_LUMINANCE_SUM  # libjpeg's scaling, in %
    quality = 5000 / scale if scale > 100 else (200 - scale) / 2
    return max(1, min(100, round(quality)))


def probe(data: bytes, profile: Profile | None = None) -> SourceInfo:
    """Header-only facts and limit checks, for scanners that look at every file.

    Raises ``ImageRejected`` for what ``render`` would refuse from the header alone;
    a file that probes fine can still be rejected by ``render`` (a truncated body).
    """
    _im, source = open_image(data, profile or Profile())
    return source


def _frame_count(im: Image.Image, fmt: str, name: str) -> int:
    if fmt not in ANIMATABLE:
        return 1  # MPO "frames" of a JPEG are a preview or a gain map, not an animation
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Image.DecompressionBombError as e:
        raise ImageRejected(f"{name} has a frame larger than Pillow's safety limit") from e
    except _HEADER_ERRORS as e:
        raise ImageRejected(f"corrupt {name}: unreadable frames") from e


def header_exif(im: Image.Image, fmt: str) -> Image.Exif:
    """The EXIF found in the header, without decoding pixels.

    (``PngImageFile.getexif`` decodes the whole image to look for a late eXIf chunk; an
    error there would also be swallowed and leave a half-loaded image behind.)
    """
    if fmt in ("jpeg", "webp", "tiff", "avif", "heic"):
        try:
            return im.getexif()
        except _HEADER_ERRORS:
            return Image.Exif()  # unreadable EXIF: show the pixels as stored
    exif = Image.Exif()
    raw = im.info.get("exif")
    if isinstance(raw, bytes):
        try:
            exif.load(raw)
        except _HEADER_ERRORS:
            return Image.Exif()
    return exif


def _lossless_webp(data: bytes) -> bool:
    """A WebP whose image data is VP8L (lossless), not VP8 (lossy): the first image chunk
    after the optional VP8X header, ICC and animation chunks says which."""
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8L"
        if kind == b"ANMF":  # an animation frame: its own image chunks follow its header
            pos += 8 + 16
            continue
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8 + size + (size & 1)
    return False


def _orientation(exif: Image.Exif) -> int:
    value = exif.get(_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g}"


def _mib(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.3g} MiB"
    return f"{size / 1024:.3g} KiB" if size >= 1024 else f"{size} bytes"
