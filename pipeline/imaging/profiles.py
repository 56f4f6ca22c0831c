"""Profiles: what to produce from an upload, validated once when settings load.

A profile is a frozen value. ``Profile(...)`` coerces and validates its arguments (lists
become tuples, per-format dicts are merged over the defaults and made read-only), so a
profile that exists is a profile that works: rendering never meets an impossible value.
``profile_from_dict`` is the settings-facing door: it also refuses unknown keys, because a
typo ("widht") must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from PIL import Image, ImageColor, features

from pipeline.errors import ProfileError

from .autoquality import AUTO_KEYS, QualityTarget, parse_target

#: Bumped when rendering changes in a way that should invalidate existing renditions.
#: 2: graphics kept lossless, never-bigger originals, own-width variants, animated WebP.
#: 3: wide-gamut sources keep their colour profile in AVIF and WebP.
ENGINE_VERSION = 3

#: Formats a profile may list. "fallback" is the format every browser can show: JPEG for
#: a photograph, PNG for a graphic or an image with transparency (for an animation, a
#: still poster of its first frame).
OUTPUT_FORMATS = ("jxl", "avif", "webp", "jpeg", "png", "gif")
FORMAT_TOKENS = (*OUTPUT_FORMATS, "fallback")

#: WebP cannot encode a side longer than this; AVIF and JPEG share the bound in practice.
MAX_DIMENSION = 16383

#: How a profile classifies its sources (``pipeline.imaging.content``): "auto" decides per
#: image; "photo" or "graphic" forces one class for every image of the profile.
CONTENT_CLASSES = ("auto", "photo", "graphic")

#: Fixed encoder quality per format (the default mode). JPEG XL's 75 scores about what
#: AVIF's 60 does (SSIMULACRA2 ~72 on the corpus).
DEFAULT_QUALITY: Mapping[str, int] = MappingProxyType(
    {"avif": 60, "webp": 80, "jpeg": 82, "jxl": 75}
)

#: Encoder effort, in each encoder's own unit, chosen by measurement on the corpus photos
#: (same quality setting; costs relative to the chosen effort):
#: webp = libwebp ``method`` 0-6: 2 is the knee. 4 costs 2.2-2.4x for 2-4% fewer bytes,
#:        6 costs 5.6-6.3x for 6-10% fewer, and SSIM stays within 0.003 across all three.
#: avif = libavif ``speed`` 0-10, higher is faster: 8. 6 costs 3.8x for 1% fewer bytes
#:        (SSIM +0.007); 9 costs 0.3x for 4% more bytes (SSIM -0.002): the choice when
#:        worker throughput matters more than bandwidth.
#: jpeg = 0 baseline, 1 optimized Huffman tables, 2 progressive: 2, 4.5% fewer bytes than
#:        1 for about 30 ms more on a 4 MP original.
#: png = zlib ``compress_level`` 0-9.
#: jxl = libjxl ``effort`` 1-9, higher is slower: 5. 7 (libjxl's default) costs 2x for
#:       1-2% fewer bytes at the same score; 3 is 5x faster for 10-25% more bytes.
DEFAULT_EFFORT: Mapping[str, int] = MappingProxyType(
    {"avif": 8, "webp": 2, "jpeg": 2, "png": 6, "jxl": 5}
)
EFFORT_RANGES: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"avif": (0, 10), "webp": (0, 6), "jpeg": (0, 2), "png": (0, 9), "jxl": (1, 9)}
)


def _frozen(mapping: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Profile:
    """A named recipe: which sizes and formats to render, and within which limits.

    ``widths`` are variant widths in pixels (never upscaled). ``max_original`` caps the long
    edge of the optimized original. ``aspect`` (width / height, or "16:9") crops every output
    around ``focal_point`` (fractions of width and height). ``quality`` and ``effort`` are
    per format. ``content`` is "auto" (photograph or graphic decided per image, see
    ``pipeline.imaging.content``), "photo" or "graphic". ``keep_animation`` renders
    animations as animated WebP/AVIF; off, they are rendered from their first frame.
    ``max_pixels``, ``max_bytes`` and ``max_frames`` bound the work and memory a
    single upload can cost; they are checked from the header, before any pixel is decoded.

    ``quality`` may instead ask for a visual quality: ``{"target": "high"}`` (see
    ``pipeline.imaging.autoquality``); ``auto`` then holds the parsed target and
    ``quality`` the fixed numbers still used where no target applies (graphics,
    animations, transparency). ``as_dict`` folds ``auto`` back into ``quality``.
    """

    name: str = "default"
    widths: tuple[int, ...] = (320, 640, 1024, 1600)
    formats: tuple[str, ...] = ("avif", "webp", "fallback")
    quality: Mapping[str, int] = field(default_factory=lambda: DEFAULT_QUALITY, hash=False)
    effort: Mapping[str, int] = field(default_factory=lambda: DEFAULT_EFFORT, hash=False)
    max_original: int = 2560
    aspect: float | None = None
    focal_point: tuple[float, float] = (0.5, 0.5)
    keep_animation: bool = True
    content: str = "auto"
    background: str = "#ffffff"
    keep_metadata: bool = False
    max_pixels: int = 50_000_000
    max_bytes: int = 50 * 1024 * 1024
    max_frames: int = 100
    auto: QualityTarget | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not self.name:
            raise ProfileError("name must be a non-empty string")
        set_(self, "widths", _widths(self.widths))
        set_(self, "formats", _formats(self.formats))
        quality, auto = _split_quality(self.quality, self.auto, self.formats)
        set_(self, "auto", auto)
        set_(self, "quality", _per_format("quality", quality, DEFAULT_QUALITY, _quality))
        set_(self, "effort", _per_format("effort", self.effort, DEFAULT_EFFORT, _effort))
        set_(self, "max_original", _int("max_original", self.max_original, 1, MAX_DIMENSION))
        set_(self, "aspect", _aspect(self.aspect))
        set_(self, "focal_point", _focal_point(self.focal_point))
        set_(self, "keep_animation", _bool("keep_animation", self.keep_animation))
        set_(self, "content", _content(self.content))
        set_(self, "background", _colour(self.background))
        set_(self, "keep_metadata", _bool("keep_metadata", self.keep_metadata))
        # Our budget must be stricter than Pillow's, which only warns below twice its limit.
        limit = Image.MAX_IMAGE_PIXELS or 2**31
        set_(self, "max_pixels", _int("max_pixels", self.max_pixels, 1, limit))
        set_(self, "max_bytes", _int("max_bytes", self.max_bytes, 1, 2**40))
        set_(self, "max_frames", _int("max_frames", self.max_frames, 1, 10_000))

    def as_dict(self) -> dict[str, Any]:
        """The profile as plain JSON-able data (``profile_from_dict(name, d)`` round-trips)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del data["name"], data["auto"]
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
            elif isinstance(value, Mapping):
                data[key] = dict(value)
        if self.auto is not None:
            data["quality"].update(self.auto.as_dict())
        return data

    @property
    def fingerprint(self) -> str:
        """A short digest of what the profile renders: when it changes, renditions are stale."""
        spec = json.dumps([ENGINE_VERSION, self.as_dict()], sort_keys=True)
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    def __reduce__(self) -> tuple[Any, ...]:
        # Read-only mappings do not pickle; a profile pickles as its definition.
        return (profile_from_dict, (self.name, self.as_dict()))


PROFILE_KEYS = tuple(f.name for f in dataclasses.fields(Profile) if f.name not in ("name", "auto"))


def profile_from_dict(name: str, spec: Mapping[str, Any] | None) -> Profile:
    """Build the profile ``name`` from a settings dict of overrides of the defaults.

    Raises ``ProfileError`` naming the first problem: an unknown key, a wrong type or an
    impossible value.
    """
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise ProfileError(f"must be a dict of settings, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(PROFILE_KEYS))
    if unknown:
        raise ProfileError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(PROFILE_KEYS)}"
        )
    return Profile(name=name, **spec)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(key: str, value: object, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:  # type: ignore[operator]
        raise ProfileError(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value  # type: ignore[return-value]


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ProfileError(f"{key} must be True or False, got {value!r}")
    return value


def _widths(value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or not value:
        raise ProfileError(f"widths must be a non-empty list of pixel widths, got {value!r}")
    for width in value:
        _int("each of widths", width, 1, MAX_DIMENSION)
    if len(set(value)) != len(value):
        raise ProfileError(f"widths must not repeat a width, got {list(value)!r}")
    return tuple(sorted(value))


def _formats(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or not value:
        raise ProfileError(f"formats must be a non-empty list, got {value!r}")
    formats = tuple(str(f).lower() for f in value)
    for fmt in formats:
        if fmt not in FORMAT_TOKENS:
            raise ProfileError(
                f"formats: {fmt!r} is not an output format (choose from {', '.join(FORMAT_TOKENS)})"
            )
    if len(set(formats)) != len(formats):
        raise ProfileError(f"formats must not repeat a format, got {list(formats)!r}")
    for fmt, feature in (("avif", "avif"), ("webp", "webp")):
        if fmt in formats and not features.check(feature):
            raise ProfileError(f"formats: {fmt.upper()} is not supported by the installed Pillow")
    if "jxl" in formats and not jxl_available():
        raise ProfileError(
            "formats: JPEG XL ('jxl') needs the pillow-jxl-plugin package "
            "(pip install 'django-media-pipeline[jxl]')"
        )
    return formats


def jxl_available() -> bool:
    """Whether Pillow can write JPEG XL (the pillow-jxl-plugin package registers it)."""
    if "JXL" not in Image.SAVE:
        try:
            import pillow_jxl  # noqa: F401  (registers the JXL plugin with Pillow)
        except ImportError:
            return False
    return "JXL" in Image.SAVE


def _split_quality(
    value: object, auto: QualityTarget | None, formats: tuple[str, ...]
) -> tuple[object, QualityTarget | None]:
    """``{"target": ..., "bounds": {...}, "webp": 80}`` -> fixed numbers, parsed target."""
    if auto is not None and not isinstance(auto, QualityTarget):
        raise ProfileError(
            f"auto must be a QualityTarget (or set quality's 'target'), got {auto!r}"
        )
    if not isinstance(value, Mapping) or not set(value) & set(AUTO_KEYS):
        return value, auto
    fixed = {k: v for k, v in value.items() if k not in AUTO_KEYS}
    return fixed, parse_target(value, formats)


def _per_format(
    key: str, value: object, defaults: Mapping[str, int], check: Callable[[str, object], None]
) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise ProfileError(f"{key} must be a dict of format -> value, got {value!r}")
    for fmt, setting in value.items():
        if fmt not in defaults:
            raise ProfileError(
                f"{key}: {fmt!r} has no {key} setting (set it for {', '.join(defaults)})"
            )
        check(fmt, setting)
    return _frozen({**defaults, **value})


def _quality(fmt: str, value: object) -> None:
    _int(f"quality[{fmt!r}]", value, 1, 100)


def _effort(fmt: str, value: object) -> None:
    low, high = EFFORT_RANGES[fmt]
    _int(f"effort[{fmt!r}]", value, low, high)


def _content(value: object) -> str:
    if value not in CONTENT_CLASSES:
        raise ProfileError(f"content must be one of {', '.join(CONTENT_CLASSES)}, got {value!r}")
    return value  # type: ignore[return-value]


def _aspect(value: object) -> float | None:
    """Accept 1.5, "3:2", "3/2" or [3, 2]; keep width / height as a float."""
    if value is None:
        return None
    ratio: float | None = None
    try:
        if isinstance(value, str):
            sep = ":" if ":" in value else "/"
            w, _, h = value.partition(sep)
            ratio = float(w) / float(h) if h else float(w)
        elif isinstance(value, list | tuple) and len(value) == 2:
            ratio = float(value[0]) / float(value[1])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            ratio = float(value)
    except (ValueError, ZeroDivisionError):
        ratio = None
    if ratio is None or not math.isfinite(ratio) or not 0.01 <= ratio <= 100:
        raise ProfileError(
            f"aspect must be a width:height ratio such as '16:9', [4, 3] or 1.5 "
            f"(between 1:100 and 100:1), got {value!r}"
        )
    return ratio


def _focal_point(value: object) -> tuple[float, float]:
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(0 <= v <= 1 for v in value)
    ):
        return (float(value[0]), float(value[1]))
    raise ProfileError(
        f"focal_point must be [x, y] as fractions of width and height from 0 to 1, got {value!r}"
    )


def _colour(value: object) -> str:
    if not isinstance(value, str):
        raise ProfileError(f"background must be a colour such as '#ffffff', got {value!r}")
    try:
        rgb = ImageColor.getrgb(value)
    except ValueError:
        raise ProfileError(f"background: {value!r} is not a colour") from None
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])
