"""What rendering returns: frozen values the service layer stores without further thought."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

CONTENT_TYPES = {
    "jxl": "image/jxl",
    "avif": "image/avif",
    "webp": "image/webp",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
}
EXTENSIONS = {
    "jxl": "jxl",
    "avif": "avif",
    "webp": "webp",
    "jpeg": "jpg",
    "png": "png",
    "gif": "gif",
}


@dataclass(frozen=True)
class SourceInfo:
    """Facts about the uploaded bytes.

    ``width`` and ``height`` are as displayed (EXIF orientation applied); ``orientation`` is
    the EXIF value the engine applies (1 when none, and for TIFF, which Pillow's decoder
    turns upright itself). ``has_alpha`` says whether the image uses transparency:
    ``render`` checks the pixels, ``probe`` can only read the header. ``jpeg_quality`` is
    the quality a JPEG source was saved at, estimated from its quantization table (None
    for other formats): re-encoding above it only makes the file larger. ``lossless``
    says the file stores its pixels exactly, the first clue that it may be a graphic.
    """

    format: str
    width: int
    height: int
    size: int
    sha256: str
    mode: str
    has_alpha: bool = False
    animated: bool = False
    frames: int = 1
    orientation: int = 1
    jpeg_quality: int | None = None
    lossless: bool = False  # stored without loss (PNG, GIF, lossless WebP, BMP, TIFF)

    @property
    def bytes(self) -> int:
        """Alias of ``size``: the length of the uploaded file in bytes."""
        return self.size


@dataclass(frozen=True)
class Output:
    """One encoded file: the optimized ``original`` or a width variant such as ``w640``."""

    name: str
    format: str
    width: int
    height: int
    data: bytes = field(repr=False)
    sha256: str
    frames: int = 1
    # The encoder quality used (None: lossless, or the source's own file), and with
    # auto-quality the SSIMULACRA2 score the search measured for it.
    quality: int | None = None
    score: float | None = None

    @classmethod
    def of(
        cls,
        name: str,
        fmt: str,
        size: tuple[int, int],
        data: bytes,
        frames: int,
        *,
        quality: int | None = None,
        score: float | None = None,
    ) -> Output:
        digest = hashlib.sha256(data).hexdigest()
        return cls(name, fmt, size[0], size[1], data, digest, frames, quality, score)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        """File extension without the dot ("jpg" for JPEG)."""
        return EXTENSIONS[self.format]


@dataclass(frozen=True)
class Skipped:
    """A variant that was not produced, and why (never upscale: wider than the source)."""

    name: str
    width: int
    reason: str


@dataclass(frozen=True)
class Placeholder:
    """What a page shows while the real image loads: a colour and a blurry tiny preview.

    ``color`` is the dominant colour as "#rrggbb"; ``preview`` a ``data:image/webp;base64``
    URI of a ~16 px image (a few hundred bytes), meant to be stretched and blurred by CSS.
    """

    color: str
    preview: str
    width: int
    height: int


@dataclass(frozen=True)
class Rendering:
    """Everything one ``render`` call produced for one upload."""

    source: SourceInfo
    outputs: tuple[Output, ...]
    skipped: tuple[Skipped, ...]
    placeholder: Placeholder
    profile: str = ""
    # What the engine dropped on purpose, one line each ("animation dropped: ...").
    notes: tuple[str, ...] = ()
    # "photo" or "graphic" (pipeline.imaging.content): what decided the encodings.
    content: str = "photo"

    @property
    def original(self) -> Output:
        """The optimized original (always produced)."""
        return next(o for o in self.outputs if o.name == "original")

    def variants(self, fmt: str) -> tuple[Output, ...]:
        """The width variants in ``fmt``, narrowest first (ready for a ``srcset``)."""
        found = (o for o in self.outputs if o.format == fmt and o.name != "original")
        return tuple(sorted(found, key=lambda o: o.width))
