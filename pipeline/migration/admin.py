"""Admin pages of the bulk migration: runs with their progress and report (read-only).

Imported by ``pipeline/admin.py``. Rows are written only by the migration services; the
admin looks, and may delete old runs (their items and links go with them).
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q, QuerySet, Sum
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from pipeline.migration import services
from pipeline.migration.report import Report
from pipeline.models import MigrationChunk, MigrationItem, MigrationRun


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(MigrationRun)
class MigrationRunAdmin(_ReadOnly):
    list_display = ("__str__", "state", "progress", "scanned", "created", "duration")
    list_filter = ("state",)
    search_fields = ("source",)
    date_hierarchy = "created"
    fields = (
        "source",
        "state",
        "progress",
        "options",
        "created",
        "scanned_at",
        "planned_at",
        "uploaded_at",
        "finished_at",
        "duration",
        "error",
        "report_table",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                objects_total=Sum("chunks__size"),
                objects_done=Sum("chunks__size", filter=Q(chunks__state=MigrationChunk.State.DONE)),
            )
        )

    @admin.display(description="objects done / total")
    def progress(self, run: MigrationRun) -> str:
        total = getattr(run, "objects_total", None) or 0
        done = getattr(run, "objects_done", None) or 0
        if run.state in (MigrationRun.State.SCANNING, MigrationRun.State.PLANNING):
            return "-"
        percent = 100 * done // total if total else 100
        return f"{done:,} / {total:,} ({percent}%)"

    @admin.display(description="files scanned")
    def scanned(self, run: MigrationRun) -> str:
        if run.report:
            return f"{run.report.get('files_scanned', 0):,}"
        return f"{MigrationItem.objects.filter(run=run).count():,}"

    @admin.display(description="duration")
    def duration(self, run: MigrationRun) -> str:
        end = run.finished_at or timezone.now()
        return f"{(end - run.created).total_seconds():,.1f} s"

    @admin.display(description="report")
    def report_table(self, run: MigrationRun) -> str:
        report = (
            Report.from_dict(run.report) if run.report else services.migration_report(run_id=run.pk)
        )
        note = "" if run.report else " (so far)"
        return format_html(
            "<pre style='white-space:pre-wrap'>{}{}</pre>", report.render_table(max_paths=20), note
        )


@admin.register(MigrationItem)
class MigrationItemAdmin(_ReadOnly):
    list_display = ("path", "run", "kind", "state", "key", "size", "reason", "error")
    list_filter = ("state", "kind", "canonical", "orphan")
    search_fields = ("path", "key", "sha256")
    list_select_related = ("run",)
    raw_id_fields = ("run", "chunk")
