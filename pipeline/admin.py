"""Admin: a mixin for any model admin whose model has a ``MediaImageField``, and the
pipeline's own models.

``MediaAdminMixin`` adds, for every managed field: a status column and filter, a preview
from the manifest (no storage call), the last error, and the action "Re-process selected
media" (change permission required; one UPDATE plus one message per row, so hundreds of
rows are queued well within a request).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

import pipeline.cdn.admin  # noqa: F401  (registers the CDN admin pages)
from pipeline import services
from pipeline.fields import MediaImageField, Status, media_fields
from pipeline.migration import admin as migration_admin  # noqa: F401  (registers its pages)
from pipeline.models import MediaAsset


class StatusFilter(admin.SimpleListFilter):
    """Filter by the processing status of the model's first managed field."""

    title = "media status"
    parameter_name = "media_status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(Status.choices)

    def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        if not self.value():
            return queryset
        field = media_fields(queryset.model)[0]
        return queryset.filter(**{field.companion("status"): self.value()})


def _first_field(obj: models.Model) -> MediaImageField:
    return media_fields(type(obj))[0]


class MediaAdminMixin:
    """Mix into a ``ModelAdmin`` (before it) to manage the model's images."""

    media_preview_width = 160

    def get_list_display(self, request: HttpRequest) -> Any:
        return [*super().get_list_display(request), "media_thumbnail", "media_status"]  # type: ignore[misc]

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [*super().get_list_filter(request), StatusFilter]  # type: ignore[misc]

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> Any:
        base = super().get_readonly_fields(request, obj)  # type: ignore[misc]
        return [*base, "media_status", "media_preview", "media_error", "media_variants"]

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)  # type: ignore[misc]
        if self.has_change_permission(request):  # type: ignore[attr-defined]
            func = type(self).reprocess_selected_media
            actions["reprocess_selected_media"] = (
                func,
                "reprocess_selected_media",
                func.short_description,
            )
        return actions

    @admin.display(description="status")
    def media_status(self, obj: models.Model) -> str:
        return getattr(obj, _first_field(obj).companion("status"))

    @admin.display(description="preview")
    def media_thumbnail(self, obj: models.Model) -> str:
        return self._img(obj, 64)

    @admin.display(description="preview")
    def media_preview(self, obj: models.Model) -> str:
        return self._img(obj, self.media_preview_width)

    @admin.display(description="last error")
    def media_error(self, obj: models.Model) -> str:
        return getattr(obj, _first_field(obj).companion("error")) or "-"

    @admin.display(description="variants")
    def media_variants(self, obj: models.Model) -> str:
        variants = getattr(obj, _first_field(obj).name).variants
        if not variants:
            return "-"
        return format_html_join(
            "",
            '<div><a href="{}">{} {}x{}</a> ({} bytes)</div>',
            ((v["url"], v["format"], v["width"], v["height"], v["bytes"]) for v in variants),
        )

    def _img(self, obj: models.Model, width: int) -> str:
        file = getattr(obj, _first_field(obj).name)
        # An image narrower than every variant width has only its optimized original.
        url = (
            file.url_for(width, "webp")
            or file.url_for(width, "jpeg")
            or (file.optimized or {}).get("url")
        )
        if url:
            return format_html('<img src="{}" width="{}" alt="" loading="lazy">', url, width)
        color = file.placeholder.get("color")
        if color:
            return format_html(
                '<span style="display:inline-block;width:{}px;height:{}px;background:{}"></span>',
                width // 2,
                width // 2,
                color,
            )
        return "-"

    @admin.action(description="Re-process selected media", permissions=["change"])
    def reprocess_selected_media(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        label = queryset.model._meta.label
        pks = list(queryset.values_list("pk", flat=True))
        queued = sum(
            services.media_reprocess(model_label=label, field_name=f.name, pks=pks)
            for f in media_fields(queryset.model)
        )
        self.message_user(  # type: ignore[attr-defined]
            request, f"Queued {queued} image(s) for re-processing.", messages.SUCCESS
        )


@admin.register(MediaAsset)
class MediaAssetAdmin(MediaAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "source_path", "created"]
    search_fields = ["title", "source_path", "image"]
