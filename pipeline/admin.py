"""Admin: a mixin for any model admin whose model has a ``MediaImageField``, and the
pipeline's own models.

``MediaAdminMixin`` adds, for the model's (first) managed field: a status column and
filter, a preview from the manifest (no storage call), and on the change page the status
details, the last error, what the engine left out on purpose (the manifest's ``notes``)
and every variant with its size and format. Re-processing (change permission required)
is the action "Re-process selected media" on the list and a "Re-process" button on the
change page; both say how many images they queued, skipped and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join

import pipeline.cdn.admin  # noqa: F401  (registers the CDN admin pages)
from pipeline import services
from pipeline.bulk import admin as migration_admin  # noqa: F401  (registers its pages)
from pipeline.fields import MediaImageField, Status, media_fields
from pipeline.models import MediaAsset

# Work already on its way for the file the row holds: a task queued or running, or a retry
# scheduled (and the sweep publishes again whatever was lost). Queueing it again would
# only throw that work away, so re-processing leaves these rows alone.
IN_FLIGHT = (Status.PENDING, Status.PROCESSING)

# The companion state shown on the change page, in one fieldset of its own.
MEDIA_FIELDS = (
    "media_status",
    "media_details",
    "media_preview",
    "media_error",
    "media_notes",
    "media_variants",
)

_STATUS_COLORS = {
    Status.EMPTY: "#767676",
    Status.PENDING: "#b35c00",
    Status.PROCESSING: "#205fa8",
    Status.READY: "#1d7a35",
    Status.FAILED: "#ba2121",
}


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


@dataclass(frozen=True)
class Reprocessed:
    """What re-processing did with the selected images (one per row and managed field)."""

    queued: int = 0
    no_file: int = 0  # nothing to process: the field is empty (or was cleared meanwhile)
    in_flight: int = 0  # already pending or processing for the file the row holds

    def message(self) -> str:
        parts = [f"Queued {self.queued} image(s) for re-processing."]
        if self.no_file:
            parts.append(f"Skipped {self.no_file} with no image.")
        if self.in_flight:
            parts.append(
                f"Left {self.in_flight} alone: already pending or processing for their "
                "current file."
            )
        return " ".join(parts)


def reprocess_media(queryset: models.QuerySet) -> Reprocessed:
    """Queue the images of ``queryset``'s rows again, except those with no file and those
    whose work is already in flight for the file they hold. Ready and failed rows *are*
    queued: the user asked (a changed profile, a fixed bucket).

    One query reads what to skip; ``services.media_reprocess`` (one UPDATE per field) says
    how many it queued. A row changing between the two is harmless: at worst a row that
    just became pending is queued once more, which is what re-processing did for every
    row before the skips were counted.
    """
    fields = media_fields(queryset.model)
    columns = [c for f in fields for c in (f.name, f.companion("status"), f.companion("source"))]
    rows = list(queryset.values_list("pk", *columns))
    label = queryset.model._meta.label
    queued = no_file = in_flight = 0
    for i, field in enumerate(fields):
        wanted = []
        for pk, *values in rows:
            name, status, source = values[3 * i : 3 * i + 3]
            if not name:
                no_file += 1
            elif status in IN_FLIGHT and source == name:
                in_flight += 1
            else:
                wanted.append(pk)
        done = (
            services.media_reprocess(model_label=label, field_name=field.name, pks=wanted)
            if wanted
            else 0
        )
        queued += done
        no_file += len(wanted) - done  # cleared or deleted since they were read
    return Reprocessed(queued=queued, no_file=no_file, in_flight=in_flight)


class MediaAdminMixin:
    """Mix into a ``ModelAdmin`` (before it) to manage the model's images.

    The change page uses ``admin/pipeline/media_change_form.html`` (the stock change form
    plus the "Re-process" button); an admin with a ``change_form_template`` of its own
    can extend that one to keep the button.
    """

    media_preview_width = 160
    change_form_template = "admin/pipeline/media_change_form.html"

    def get_list_display(self, request: HttpRequest) -> Any:
        return [*super().get_list_display(request), "media_thumbnail", "media_status"]  # type: ignore[misc]

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [*super().get_list_filter(request), StatusFilter]  # type: ignore[misc]

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> Any:
        base = super().get_readonly_fields(request, obj)  # type: ignore[misc]
        return [*base, *MEDIA_FIELDS]

    def get_fieldsets(self, request: HttpRequest, obj: models.Model | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)  # type: ignore[misc]
        if self.fieldsets:  # type: ignore[attr-defined]
            return fieldsets  # the admin lays its page out itself
        # The generated single fieldset: the pipeline's state goes in a fieldset of its
        # own, and only once there is a row (an add page has no state to show).
        (name, options), *rest = fieldsets
        own = [f for f in options["fields"] if f not in MEDIA_FIELDS]
        result = [(name, {**options, "fields": own}), *rest]
        if obj is not None:
            title = f"Image processing: {_first_field(obj).verbose_name}"
            result.append((title, {"fields": list(MEDIA_FIELDS)}))
        return result

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

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts  # type: ignore[attr-defined]
        view = self.admin_site.admin_view(self.media_reprocess_view)  # type: ignore[attr-defined]
        return [
            path(
                "<path:object_id>/reprocess/",
                view,
                name=f"{opts.app_label}_{opts.model_name}_reprocess",
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: models.Model | None = None,
    ) -> TemplateResponse:
        if obj is not None and self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            opts = self.opts  # type: ignore[attr-defined]
            context["media_reprocess_url"] = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_reprocess",
                args=[quote(obj.pk)],
                current_app=self.admin_site.name,  # type: ignore[attr-defined]
            )
        return super().render_change_form(request, context, add, change, form_url, obj)  # type: ignore[misc]

    def media_reprocess_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The change page's "Re-process" button: POST only (``admin_view`` adds the login
        check and CSRF protection), change permission on the row required."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        opts = self.opts  # type: ignore[attr-defined]
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, opts, object_id)  # type: ignore[attr-defined]
        if not self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        done = reprocess_media(type(obj)._base_manager.filter(pk=obj.pk))
        self.message_user(request, done.message(), _level(done))  # type: ignore[attr-defined]
        return HttpResponseRedirect(
            reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change",
                args=[quote(obj.pk)],
                current_app=self.admin_site.name,  # type: ignore[attr-defined]
            )
        )

    @admin.display(description="status")
    def media_status(self, obj: models.Model) -> str:
        field = _first_field(obj)
        status = getattr(obj, field.companion("status"))
        error = getattr(obj, field.companion("error")) or ""
        return format_html(
            '<span class="pipeline-status" data-status="{}" title="{}" '
            'style="color:{};font-weight:bold">{}</span>',
            status,
            error,
            _STATUS_COLORS.get(status, "inherit"),
            Status(status).label if status in Status.values else status,
        )

    @admin.display(description="details")
    def media_details(self, obj: models.Model) -> str:
        field = _first_field(obj)

        def value(what: str) -> Any:
            return getattr(obj, field.companion(what))

        width, height = value("width"), value("height")
        facts = [
            ("original", f"{width}x{height} {value('format')}" if width else "-"),
            ("attempts", value("attempts")),
            ("processed", _when(value("processed_at"))),
            ("took", f"{value('duration_ms'):,} ms" if value("duration_ms") is not None else "-"),
            ("profile", (value("manifest") or {}).get("profile") or field.profile or "default"),
        ]
        return format_html_join(" · ", "{}: <strong>{}</strong>", facts)

    @admin.display(description="preview")
    def media_thumbnail(self, obj: models.Model) -> str:
        return self._img(obj, 64)

    @admin.display(description="preview")
    def media_preview(self, obj: models.Model) -> str:
        return self._img(obj, self.media_preview_width)

    @admin.display(description="last error")
    def media_error(self, obj: models.Model) -> str:
        error = getattr(obj, _first_field(obj).companion("error"))
        if not error:
            return "-"
        return format_html('<span class="pipeline-error">{}</span>', error)

    @admin.display(description="left out on purpose")
    def media_notes(self, obj: models.Model) -> str:
        manifest = getattr(obj, _first_field(obj).name).manifest
        notes = [(n,) for n in manifest.get("notes", ())]
        notes += [
            (f"{s['name']} ({s['width']} px): {s['reason']}",) for s in manifest.get("skipped", ())
        ]
        if not notes:
            return "-"
        return format_html(
            '<ul class="pipeline-notes">{}</ul>', format_html_join("", "<li>{}</li>", notes)
        )

    @admin.display(description="variants")
    def media_variants(self, obj: models.Model) -> str:
        file = getattr(obj, _first_field(obj).name)
        entries = [("original", file.optimized)] if file.optimized else []
        entries += [("variant", v) for v in file.variants]
        if not entries:
            return "-"
        rows = format_html_join(
            "",
            '<tr><td>{}</td><td>{}</td><td>{}x{}</td><td class="num">{}</td>'
            '<td><a href="{}">{}</a></td></tr>',
            (
                (what, e["format"], e["width"], e["height"], f"{e['bytes']:,}", e["url"], e["key"])
                for what, e in entries
            ),
        )
        return format_html(
            '<table class="pipeline-variants"><thead><tr><th>output</th><th>format</th>'
            "<th>size (px)</th><th>bytes</th><th>object</th></tr></thead><tbody>{}</tbody>"
            "</table>",
            rows,
        )

    def _img(self, obj: models.Model, width: int) -> str:
        file = getattr(obj, _first_field(obj).name)
        # A manifest from before own-width variants may hold only the optimized original.
        url = (
            file.url_for(width, "webp")
            or file.url_for(width, "jpeg")
            or (file.optimized or {}).get("url")
        )
        if url:
            return format_html(
                '<img class="pipeline-preview" src="{}" width="{}" alt="" loading="lazy">',
                url,
                width,
            )
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
        done = reprocess_media(queryset)
        self.message_user(request, done.message(), _level(done))  # type: ignore[attr-defined]


def _when(moment: datetime | None) -> str:
    return formats.localize(timezone.template_localtime(moment)) if moment else "-"


def _level(done: Reprocessed) -> int:
    return messages.SUCCESS if done.queued else messages.WARNING


@admin.register(MediaAsset)
class MediaAssetAdmin(MediaAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "source_path", "created"]
    search_fields = ["title", "source_path", "image"]
