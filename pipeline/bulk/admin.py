"""Admin pages of the bulk migration: runs with a live progress bar and their report
(read-only).

Imported by ``pipeline/admin.py``. Rows are written only by the migration services; the
admin looks, and may delete old runs (their items and links go with them). A run's page
polls ``<run>/progress/`` (JSON from ``reporting.migration_progress``) while the run goes
on, and reloads itself once when it ends, to show the final report.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet, Sum
from django.http import Http404, HttpRequest, JsonResponse
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone

from pipeline.bulk.report import Report, _bytes
from pipeline.bulk.reporting import migration_progress, migration_report
from pipeline.models import MigrationChunk, MigrationItem, MigrationRun

# How many paths (per reason) and dangling references the report table lists; the full
# lists are in ``--report FILE`` and the item pages.
REPORT_PATHS = 50
REPORT_DANGLING = 200

_WHERE = re.compile(r"^(?P<app>\w+)\.(?P<model>\w+)\.\w+ pk=(?P<pk>.+)$")


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
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "source",
                    "state",
                    "options",
                    "created",
                    "scanned_at",
                    "planned_at",
                    "uploaded_at",
                    "finished_at",
                    "duration",
                    "error",
                )
            },
        ),
        ("Progress", {"fields": ("progress_bar",)}),
        ("Report", {"fields": ("report_table",)}),
    )
    # The page only shows: every field of the fieldsets is read-only.
    readonly_fields = tuple(name for _title, options in fieldsets for name in options["fields"])

    class Media:
        css = {"all": ("pipeline/admin/pipeline.css",)}
        js = ("pipeline/admin/migration_progress.js",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                objects_total=Sum("chunks__size"),
                objects_done=Sum("chunks__size", filter=Q(chunks__state=MigrationChunk.State.DONE)),
            )
        )

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.progress_view)
        info = self.opts.app_label, self.opts.model_name
        return [
            path("<path:object_id>/progress/", view, name="{}_{}_progress".format(*info)),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The run's progress as JSON, for the page's progress bar (view permission)."""
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404("no such migration run")
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return JsonResponse(progress_data(run))

    @admin.display(description="objects done / total")
    def progress(self, run: MigrationRun) -> str:
        total = getattr(run, "objects_total", None) or 0
        done = getattr(run, "objects_done", None) or 0
        if run.state in (MigrationRun.State.SCANNING, MigrationRun.State.PLANNING):
            return "-"
        percent = 100 * done // total if total else 100
        return f"{done:,} / {total:,} ({percent}%)"

    @admin.display(description="progress")
    def progress_bar(self, run: MigrationRun) -> str:
        url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_progress",
            args=[quote(run.pk)],
            current_app=self.admin_site.name,
        )
        p = progress_data(run)
        return render_to_string(
            "admin/pipeline/migration_progress.html",
            {
                "url": url,
                "p": p,
                "bars": [
                    ("objects", "originals stored or linked", p["objects"]),
                    ("rows", "images processed", p["rows"]),
                ],
                "interval_ms": 1000,
            },
        )

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
        report = Report.from_dict(run.report) if run.report else migration_report(run_id=run.pk)
        return render_to_string(
            "admin/pipeline/migration_report.html",
            report_context(report, final=bool(run.report), site_name=self.admin_site.name),
        )


def progress_data(run: MigrationRun) -> dict[str, Any]:
    """What the progress bars show: the phase, then originals stored or linked (objects of
    the chunks done), then images processed (rows this run queued that settled)."""
    p = migration_progress(run_id=run.pk)
    State = MigrationRun.State
    finished = p.state in (State.DONE, State.FAILED)
    before_chunks = p.state in (State.SCANNING, State.PLANNING)
    processing = p.state in (State.PROCESSING, State.DONE)
    return {
        "state": p.state,
        "state_label": State(p.state).label,
        "finished": finished,
        "scanned": p.scanned,
        "objects": _bar(
            p.objects_done,
            p.objects_total,
            waiting="counted once the folder is planned" if before_chunks else "",
            busy=before_chunks and not finished,
        ),
        "rows": _bar(
            p.rows_settled,
            p.rows_total,
            waiting="" if processing or finished else "starts after the uploads",
        ),
    }


def _bar(done: int, total: int, *, waiting: str = "", busy: bool = False) -> dict[str, Any]:
    """One ``<progress>``: ``value`` None makes it indeterminate (busy, nothing counted)."""
    if busy:
        value: float | None = None
    else:
        value = done / total if total else (0.0 if waiting else 1.0)
    text = waiting or f"{done:,} / {total:,}"
    return {"done": done, "total": total, "value": value, "text": text}


def report_context(report: Report, *, final: bool, site_name: str = "admin") -> dict[str, Any]:
    """The report as rows for the template: counts, rejections and failures by reason
    (most frequent first), dangling references with a link to their row's admin page."""
    counts = [
        ("files scanned", report.files_scanned),
        ("images", report.images),
        ("skipped junk", report.junk_skipped),
        ("not images", report.not_images),
        ("rejected", report.rejected_count),
        ("uploaded", report.uploaded),
        ("already present, linked", report.already_present),
        ("failed", report.failed_count),
        ("duplicates folded", report.duplicates_folded),
        ("rows re-linked", report.rows_relinked),
        ("dangling references", len(report.dangling)),
        ("orphans imported", report.orphans_imported),
        ("orphans skipped", report.orphans_skipped),
        ("variants generated", report.variants_generated),
    ]
    return {
        "final": final,
        "dry_run": report.dry_run,
        "counts": [(label, f"{n:,}") for label, n in counts],
        "sizes": [
            ("bytes before", _bytes(report.bytes_before)),
            ("bytes after", _bytes(report.bytes_after)),
            ("duration", f"{report.duration:,.1f} s"),
            ("throughput", f"{report.files_per_second:,.1f} files/s"),
        ],
        "rejected": _by_reason(report.rejected),
        "failed": _by_reason(report.failed),
        "dangling": [
            {
                "where": d.where,
                "url": _row_url(d.where, site_name),
                "value": d.value,
                "why": d.reason,
            }
            for d in report.dangling[:REPORT_DANGLING]
        ],
        "dangling_more": max(0, len(report.dangling) - REPORT_DANGLING),
    }


def _by_reason(groups: dict[str, list[str]]) -> list[dict[str, Any]]:
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [
        {
            "reason": reason,
            "count": len(paths),
            "paths": sorted(paths)[:REPORT_PATHS],
            "more": max(0, len(paths) - REPORT_PATHS),
        }
        for reason, paths in ordered
    ]


def _row_url(where: str, site_name: str) -> str:
    """The admin page of a report's "app.Model.field pk=N", when the model has one."""
    match = _WHERE.match(where)
    if not match:
        return ""
    name = f"admin:{match['app']}_{match['model'].lower()}_change"
    try:
        return reverse(name, args=[quote(match["pk"])], current_app=site_name)
    except NoReverseMatch:
        return ""


@admin.register(MigrationItem)
class MigrationItemAdmin(_ReadOnly):
    list_display = ("path", "run", "kind", "state", "key", "size", "reason", "error")
    list_filter = ("state", "kind", "canonical", "orphan")
    search_fields = ("path", "key", "sha256")
    list_select_related = ("run",)
    raw_id_fields = ("run", "chunk")
