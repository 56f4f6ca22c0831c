"""Remove metadata from an encoded file without touching its pixels.

When re-encoding would not make a web image smaller, the engine publishes the source's
own encoding instead (``renderer``); it must still not carry GPS, serial numbers or
owners' names to the public bucket. Each function walks its container and copies what
draws the image (and the ICC profile) byte for byte, dropping EXIF, XMP, IPTC, comments,
text chunks, thumbnails and anything it does not know. ``None`` means the file cannot be
rewritten safely (an unexpected structure): the caller then re-encodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

_SOI, _EOI, _SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG chunks that draw the image or describe its colours or animation. Everything else
#: is text, time, EXIF or private data.
_PNG_KEEP = frozenset(
    b"IHDR PLTE IDAT IEND tRNS cHRM gAMA iCCP sBIT sRGB cICP mDCV cLLI bKGD pHYs acTL fcTL "
    b"fdAT".split()
)
#: PNG chunks that change how the pixels look, which the engine's decoding (Pillow) does
#: not apply: a file carrying them other than as sRGB's values is not published as it is.
_PNG_COLOUR_TAGS = frozenset({b"gAMA", b"cHRM", b"cICP", b"mDCV", b"cLLI"})
_SRGB_GAMMA = 45455
_SRGB_CHROMATICITIES = (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
#: GIF application extensions that drive animation (loop count); others are XMP or private.
_GIF_APPS = (b"NETSCAPE2.0", b"ANIMEXTS1.0")
_WEBP_KEEP = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
_WEBP_EXIF_XMP_FLAGS = 0x08 | 0x04


def strip_metadata(data: bytes, fmt: str) -> bytes | None:
    """``data`` without metadata (ICC profile kept), or None when that cannot be done safely."""
    strip: Callable[[bytes], bytes | None] | None = _STRIPPERS.get(fmt)
    if strip is None:
        return None
    try:
        return strip(data)
    except IndexError:  # a length field pointing past the end: not a file to copy from
        return None


def _jpeg(data: bytes) -> bytes | None:
    if not data.startswith(_SOI):
        return None
    out, pos, end = [_SOI], 2, len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # end of the image: drop what trails it (MPO frames, gain maps)
            out.append(_EOI)
            return b"".join(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        stop = pos + 2 + length
        if length < 2 or stop > end:
            return None
        if marker == 0xE0 and length >= 16 and data[pos + 4 : pos + 9] == b"JFIF\x00":
            # JFIF's header, without the thumbnail it may carry (a preview of the photo
            # before it was cropped or edited).
            out.append(b"\xff\xe0\x00\x10" + data[pos + 4 : pos + 16] + b"\x00\x00")
        elif _keep_jpeg_segment(marker, data[pos + 4 : pos + 4 + 14]):
            out.append(data[pos:stop])
        pos = stop
        if marker == _SOS:  # entropy-coded data runs to the next real marker
            scan_end = _entropy_end(data, pos)
            out.append(data[pos:scan_end])
            pos = scan_end
    return None  # no end-of-image marker: truncated


def _keep_jpeg_segment(marker: int, head: bytes) -> bool:
    if marker == 0xFE:  # comment
        return False
    if not 0xE0 <= marker <= 0xEF:  # not an APPn: tables, frame, scan headers
        return True
    return (
        (marker == 0xE2 and head.startswith(b"ICC_PROFILE\x00"))
        # Adobe's segment says how to read the colour channels (CMYK, YCCK)
        or (marker == 0xEE and head.startswith(b"Adobe"))
    )


def _entropy_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data starting at ``pos`` ends: the next marker that is not
    a stuffed byte (FF 00) or a restart marker (FF D0-D7)."""
    while True:
        i = data.find(b"\xff", pos)
        if i < 0 or i + 1 >= len(data):
            return len(data)
        following = data[i + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos = i + 2
            continue
        return i


def _png(data: bytes) -> bytes | None:
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out, pos = [_PNG_SIGNATURE], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        stop = pos + 12 + length
        if stop > len(data):
            return None
        if kind in _PNG_COLOUR_TAGS and not _png_tag_is_srgb(kind, data[pos + 8 : stop - 4]):
            return None  # colours the engine's decoding ignores: the re-encodes would differ
        if kind in _PNG_KEEP:
            out.append(data[pos:stop])
        elif kind[0:1].isupper():  # an unknown critical chunk: the image may need it
            return None
        pos = stop
        if kind == b"IEND":
            return b"".join(out)
    return None


def _png_tag_is_srgb(kind: bytes, body: bytes) -> bool:
    if kind == b"gAMA":
        return abs(int.from_bytes(body[:4], "big") - _SRGB_GAMMA) <= 500
    if kind == b"cHRM":
        values = [int.from_bytes(body[i : i + 4], "big") for i in range(0, 32, 4)]
        return all(abs(a - b) <= 1000 for a, b in zip(values, _SRGB_CHROMATICITIES, strict=True))
    return False  # cICP, mDCV, cLLI: wide gamut or HDR


def _gif(data: bytes) -> bytes | None:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    packed = data[10]
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    out = [data[:pos]]
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            out.append(b";")
            return b"".join(out)
        if block == 0x21:
            label = data[pos + 1]
            stop = _after_sub_blocks(data, pos + 2)
            app = data[pos + 3 : pos + 14] if label == 0xFF else b""
            # Graphic control (timing, transparency), plain text, and the loop count.
            if label in (0xF9, 0x01) or app in _GIF_APPS:
                out.append(data[pos:stop])
        elif block == 0x2C:
            packed = data[pos + 9]
            table = 3 << ((packed & 7) + 1) if packed & 0x80 else 0
            stop = _after_sub_blocks(data, pos + 10 + table + 1)
            out.append(data[pos:stop])
        else:
            return None
        pos = stop
    return None


def _after_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def _webp(data: bytes) -> bytes | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        stop = pos + 8 + size + (size & 1)
        if pos + 8 + size > len(data):
            return None
        if kind == b"VP8X":
            flags = data[pos + 8] & ~_WEBP_EXIF_XMP_FLAGS
            chunks.append(data[pos : pos + 8] + bytes([flags]) + data[pos + 9 : stop])
        elif kind in _WEBP_KEEP:
            chunks.append(data[pos:stop])
        pos = stop
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _avif(data: bytes) -> bytes | None:
    """AVIF keeps EXIF and XMP as items of its ``meta`` box, located by ``iloc``: their
    bytes are overwritten in place (every offset stays valid), the EXIF with an empty
    TIFF directory (decoders check its header), the XMP with spaces. A file whose colour
    box (``nclx``) says other than sRGB/BT.709 (wide gamut, HDR) is refused: the engine's
    decoding ignores that box."""
    meta = _child(data, 0, len(data), b"meta")
    if meta is None:
        return None
    start, end = meta[0] + 4, meta[1]  # a full box: version and flags first
    at = data.find(b"colrnclx", start, end)
    while at >= 0:
        primaries = int.from_bytes(data[at + 8 : at + 10], "big")
        transfer = int.from_bytes(data[at + 10 : at + 12], "big")
        if primaries not in (1, 2) or transfer not in (1, 2, 13):  # BT.709/sRGB, unspecified
            return None
        at = data.find(b"colrnclx", at + 8, end)
    private = _metadata_items(data, start, end)
    if not private:
        return data
    extents = _item_extents(data, start, end, set(private))
    if extents is None:
        return None
    out = bytearray(data)
    for item, offset, length in extents:
        if offset + length > len(out):
            return None
        if private[item] == "exif":
            if length < len(_EMPTY_EXIF):
                return None
            blank = _EMPTY_EXIF + bytes(length - len(_EMPTY_EXIF))
        else:
            blank = b" " * length
        out[offset : offset + length] = blank
    return bytes(out)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, body end) of the ISO-BMFF boxes between ``start`` and ``end``."""
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = pos + 8
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            body = pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos or pos + size > end:
            raise IndexError("box past its parent")
        yield kind, body, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((b, e) for k, b, e in _boxes(data, start, end) if k == kind), None)


#: An AVIF EXIF item with nothing in it: no offset to the TIFF header, which is little-endian
#: with one directory of no entries and no next directory.
_EMPTY_EXIF = bytes(4) + b"II*\x00" + (8).to_bytes(4, "little") + bytes(2) + bytes(4)


def _metadata_items(data: bytes, start: int, end: int) -> dict[int, str]:
    """The EXIF and XMP items listed in ``iinf``: id -> "exif" or "xmp"."""
    iinf = _child(data, start, end, b"iinf")
    if iinf is None:
        return {}
    version = data[iinf[0]]
    first = iinf[0] + 4 + (2 if version == 0 else 4)
    found: dict[int, str] = {}
    for kind, body, stop in _boxes(data, first, iinf[1]):
        if kind != b"infe" or data[body] < 2:
            continue
        id_size = 2 if data[body] == 2 else 4
        item = int.from_bytes(data[body + 4 : body + 4 + id_size], "big")
        item_type = data[body + 6 + id_size : body + 10 + id_size]
        content = data[body + 10 + id_size : stop]
        if item_type == b"Exif":
            found[item] = "exif"
        elif item_type == b"mime" and b"rdf+xml" in content:
            found[item] = "xmp"
    return found


def _item_extents(
    data: bytes, start: int, end: int, items: set[int]
) -> list[tuple[int, int, int]] | None:
    """(item, file offset, length) of ``items``' data, from ``iloc``; None when an item's
    data is not a plain range of the file (another construction method)."""
    iloc = _child(data, start, end, b"iloc")
    if iloc is None:
        return None
    pos, version = iloc[0] + 4, data[iloc[0]]
    offset_size, length_size = data[pos] >> 4, data[pos] & 15
    base_size, index_size = data[pos + 1] >> 4, (data[pos + 1] & 15 if version else 0)
    pos += 2

    def number(size: int) -> int:
        nonlocal pos
        value = int.from_bytes(data[pos : pos + size], "big")
        pos += size
        return value

    extents: list[tuple[int, int, int]] = []
    for _ in range(number(2 if version < 2 else 4)):
        item = number(2 if version < 2 else 4)
        method = number(2) & 15 if version else 0
        number(2)  # data reference index
        base = number(base_size)
        for _ in range(number(2)):
            number(index_size)
            offset, length = number(offset_size), number(length_size)
            if item in items:
                if method != 0:
                    return None
                extents.append((item, base + offset, length))
        if pos > iloc[1]:
            return None
    return extents


_STRIPPERS: dict[str, Callable[[bytes], bytes | None]] = {
    "jpeg": _jpeg,
    "png": _png,
    "gif": _gif,
    "webp": _webp,
    "avif": _avif,
}
