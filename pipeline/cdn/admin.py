"""Admin pages of the CDN service: recent invalidations (read-only) and the backlog.

Imported by ``pipeline/admin.py`` (``import pipeline.cdn.admin  # noqa``). Rows are
written only by ``pipeline.cdn.services``: the admin can look, and delete finished
requests, but not add or edit (a queued request must be re-sent exactly as recorded).
Requests the CDN refused for good are *set aside*; the actions "Retry selected batches"
and "Discard selected batches" (change permission required) call the services that
re-queue or drop them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from pipeline.cdn.services import invalidations_discard, invalidations_retry
from pipeline.models.cdn import CDNInvalidation, CDNPendingPath

Status = CDNInvalidation.Status


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
        "refusals",
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
        "refusals",
        "set_aside_at",
        "last_error",
        "path_list",
    )
    exclude = ("paths",)
    actions = ("retry_batches", "discard_batches")

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

    @admin.action(description="Retry selected batches", permissions=["resend"])
    def retry_batches(self, request: HttpRequest, queryset: QuerySet[CDNInvalidation]) -> None:
        selected = queryset.count()
        with transaction.atomic():
            aside = list(queryset.filter(status=Status.SET_ASIDE).select_for_update())
            retried = invalidations_retry(batch_ids=[b.pk for b in aside])
            for batch in aside:
                self.log_change(request, batch, "Retried: queued again after being set aside.")
        self._report(request, selected, retried, "queued again, unchanged")

    @admin.action(description="Discard selected batches", permissions=["resend"])
    def discard_batches(self, request: HttpRequest, queryset: QuerySet[CDNInvalidation]) -> None:
        selected = queryset.count()
        with transaction.atomic():
            ids = list(
                queryset.filter(status=Status.SET_ASIDE)
                .select_for_update()
                .values_list("pk", flat=True)
            )
            # Logged first: the admin's history reads the rows it records.
            self.log_deletions(request, CDNInvalidation.objects.filter(pk__in=ids))
            discarded = invalidations_discard(batch_ids=ids)
        self._report(request, selected, discarded, "discarded with their paths (not invalidated)")

    def _report(self, request: HttpRequest, selected: int, done: int, what: str) -> None:
        self.message_user(request, f"{done} set-aside batch(es) {what}.")
        if selected > done:
            self.message_user(
                request,
                f"{selected - done} selected batch(es) not set aside: left alone.",
                messages.WARNING,
            )

    def has_resend_permission(self, request: HttpRequest) -> bool:
        # The model's change permission, although the pages stay read-only: the actions
        # go through the services, which keep each batch's request exactly as recorded.
        opts = self.opts
        codename = get_permission_codename("change", opts)
        return request.user.has_perm(f"{opts.app_label}.{codename}")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A queued request still owns its claimed paths: deleting it would drop them; a
        # set-aside one is dropped with "Discard selected batches", which deletes its paths.
        if obj is not None and obj.status in (Status.QUEUED, Status.SET_ASIDE):
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
