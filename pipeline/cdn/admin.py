"""Admin pages of the CDN service: recent invalidations (read-only) and the backlog.

Imported by ``pipeline/admin.py`` (``import pipeline.cdn.admin  # noqa``). Rows are
written only by ``pipeline.cdn.services``: the admin can look, and delete finished
requests, but not add or edit (a queued request must be re-sent exactly as recorded).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from pipeline.models.cdn import CDNInvalidation, CDNPendingPath


@admin.register(CDNInvalidation)
class CDNInvalidationAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "status",
        "path_count",
        "wildcard_count",
        "covered_count",
        "created_at",
        "sent_at",
        "completed_at",
        "attempts",
        "short_error",
    )
    list_filter = ("status", "target", "billable")
    search_fields = ("invalidation_id", "caller_reference")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    readonly_fields = (
        "target",
        "status",
        "billable",
        "invalidation_id",
        "caller_reference",
        "path_count",
        "wildcard_count",
        "covered_count",
        "created_at",
        "sent_at",
        "completed_at",
        "checked_at",
        "next_attempt_at",
        "attempts",
        "last_error",
        "path_list",
    )
    exclude = ("paths",)

    @admin.display(description="last error")
    def short_error(self, obj: CDNInvalidation) -> str:
        return obj.last_error[:80]

    @admin.display(description="paths")
    def path_list(self, obj: CDNInvalidation) -> str:
        shown = obj.paths[:200]
        more = len(obj.paths) - len(shown)
        listing = format_html_join("", "<li><code>{}</code></li>", ((p,) for p in shown))
        suffix = format_html("<li>... and {} more</li>", more) if more > 0 else ""
        return format_html("<ul>{}{}</ul>", listing, suffix)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A queued request still owns its claimed paths: deleting it would drop them.
        if obj is not None and obj.status == CDNInvalidation.Status.QUEUED:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(CDNPendingPath)
class CDNPendingPathAdmin(admin.ModelAdmin):
    list_display = ("path", "requested_at", "batch")
    list_filter = (("batch", admin.EmptyFieldListFilter),)
    search_fields = ("path",)
    ordering = ("requested_at", "id")
    list_select_related = ("batch",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
