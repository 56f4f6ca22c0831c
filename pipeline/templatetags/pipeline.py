"""``{% picture obj.image sizes="..." alt="..." class="..." %}``

Renders ``<picture>`` with one ``<source>`` per modern format and an ``<img>`` fallback
(width, height, lazy loading, async decoding) from the row's manifest: no storage call.
While the row is pending or failed it renders the placeholder instead: the tiny preview
on the dominant colour, at the original's aspect ratio when known.
"""

from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from pipeline.fields import MediaFieldFile
from pipeline.imaging.results import CONTENT_TYPES

register = template.Library()

# <source> order: the browser takes the first type it supports; JPEG XL is the smallest
# at the same visual quality, and browsers without it fall through to AVIF.
MODERN = ("jxl", "avif", "webp")
FALLBACKS = ("jpeg", "png", "gif")


@register.simple_tag
def picture(
    file: MediaFieldFile | None,
    sizes: str = "100vw",
    alt: str = "",
    **attrs: str,
) -> SafeString:
    css_class = attrs.get("class", "")
    if not file or not file.is_ready or not (file.variants or file.optimized):
        return _placeholder(file, alt, css_class)
    if not file.variants:  # a manifest from before own-width variants: the original alone
        return _original_only(file, sizes, alt, css_class)
    formats = file.formats()
    fallback_fmt = next((f for f in FALLBACKS if f in formats), formats[-1])
    fallback = sorted(
        (v for v in file.variants if v["format"] == fallback_fmt), key=lambda v: v["width"]
    )
    largest = fallback[-1]
    sources = format_html_join(
        "",
        '<source type="{}" srcset="{}" sizes="{}">',
        ((CONTENT_TYPES[f], file.srcset(f), sizes) for f in MODERN if f in formats),
    )
    return format_html(
        '<picture>{}<img src="{}" srcset="{}" sizes="{}" width="{}" height="{}" alt="{}"'
        '{} loading="lazy" decoding="async"></picture>',
        sources,
        largest["url"],
        file.srcset(fallback_fmt),
        sizes,
        largest["width"],
        largest["height"],
        alt,
        format_html(' class="{}"', css_class) if css_class else "",
    )


def _original_only(file: MediaFieldFile, sizes: str, alt: str, css_class: str) -> SafeString:
    original = file.optimized or {}
    return format_html(
        '<picture><img src="{}" srcset="{} {}w" sizes="{}" width="{}" height="{}" alt="{}"'
        '{} loading="lazy" decoding="async"></picture>',
        original["url"],
        original["url"],
        original["width"],
        sizes,
        original["width"],
        original["height"],
        alt,
        format_html(' class="{}"', css_class) if css_class else "",
    )


def _placeholder(file: MediaFieldFile | None, alt: str, css_class: str) -> SafeString:
    placeholder = file.placeholder if file else {}
    width, height = file.original_dimensions if file else (None, None)
    style = f"background-color:{placeholder['color']}" if placeholder.get("color") else ""
    # A transparent 1x1 GIF when there is no preview yet (never processed).
    src = placeholder.get("preview") or (
        "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
    )
    status = file.status if file else "empty"
    return format_html(
        '<img src="{}"{}{} alt="{}"{}{} data-status="{}" loading="lazy" decoding="async">',
        src,
        format_html(' width="{}"', width) if width else "",
        format_html(' height="{}"', height) if height else "",
        alt,
        format_html(' class="{}"', css_class) if css_class else "",
        format_html(' style="{}"', style) if style else "",
        status,
    )
