"""Watching a run, and its report: progress while it goes, its counters (``report``) when
asked and once it is done.

``report`` (pure) holds the counters and how they are shown; here they are counted from
the run's rows. ``touched_rows``, the rows a run queued for processing, is also what the
coordinator waits on and what a resumed run queues again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from pipeline import services as media_services
from pipeline.bulk.options import ASSET_FIELD, ASSET_LABEL, BATCH, Options, library, target_of
from pipeline.bulk.report import Report
from pipeline.bulk.scan import Kind
from pipeline.fields import Status
from pipeline.models import MigrationChunk, MigrationItem, MigrationLink, MigrationRun

__all__ = [
    "Progress",
    "count_output_bytes",
    "migration_progress",
    "migration_report",
    "touched_rows",
]

Item = MigrationItem.State
Chunk = MigrationChunk.State
Link = MigrationLink.State
Run = MigrationRun.State


@dataclass(frozen=True)
class Progress:
    state: str
    scanned: int
    objects_total: int  # contents with work to do (in chunks)
    objects_done: int
    rows_total: int  # rows queued for processing by this run
    rows_settled: int


def migration_progress(*, run_id: int) -> Progress:
    run = MigrationRun.objects.get(pk=run_id)
    chunks = MigrationChunk.objects.filter(run=run).aggregate(
        total=Sum("size"), done=Sum("size", filter=Q(state=Chunk.DONE))
    )
    rows_total = rows_settled = 0
    if run.state in (Run.PROCESSING, Run.DONE) and Options.of(run).process:
        for rows, _target_ in touched_rows(run):
            status = _target_.col("status")
            counts = rows.aggregate(
                total=Count("pk"),
                open=Count(
                    "pk", filter=Q(**{f"{status}__in": [Status.PENDING, Status.PROCESSING]})
                ),
            )
            rows_total += counts["total"]
            rows_settled += counts["total"] - counts["open"]
    return Progress(
        state=run.state,
        scanned=MigrationItem.objects.filter(run=run).count(),
        objects_total=chunks["total"] or 0,
        objects_done=chunks["done"] or 0,
        rows_total=rows_total,
        rows_settled=rows_settled,
    )


def touched_rows(run: MigrationRun) -> Iterator[tuple[models.QuerySet, media_services.Target]]:
    """The rows this run queued for processing, per model field (querysets, not lists)."""
    links = MigrationLink.objects.filter(run=run, state__in=[Link.LINKED, Link.CURRENT])
    for label in Options.of(run).targets:
        target = target_of(label)
        pk_field = target.model._meta.pk
        row_pks = (
            links.filter(target=label)
            .annotate(as_pk=Cast("row_pk", output_field=_cast_field(pk_field)))
            .values("as_pk")
        )
        yield target.rows().filter(pk__in=row_pks), target
    asset = target_of(f"{ASSET_LABEL}.{ASSET_FIELD}")
    shas = MigrationItem.objects.filter(Q(imported=True) | Q(requeued=True), run=run).values(
        "sha256"
    )
    yield asset.rows().filter(source_sha256__in=shas), asset


def _cast_field(pk_field: models.Field) -> models.Field:
    if isinstance(pk_field, models.BigAutoField | models.BigIntegerField):
        return models.BigIntegerField()
    if isinstance(pk_field, models.AutoField | models.IntegerField):
        return models.IntegerField()
    return pk_field.__class__()


def migration_report(*, run_id: int, final: bool = False) -> Report:
    """The run's counters, from its rows. ``final`` adds what processing produced
    (variants and their bytes, read from the manifests of the rows this run processed)."""
    run = MigrationRun.objects.get(pk=run_id)
    if run.report.get("final"):
        return Report.from_dict(run.report)
    final = final or run.state == Run.DONE
    opts = Options.of(run)
    items = MigrationItem.objects.filter(run=run)
    r = Report(run_id=str(run.pk), source=run.source)
    by_kind = dict(items.values_list("kind").annotate(n=Count("pk")).values_list("kind", "n"))
    r.files_scanned = sum(by_kind.values())
    r.images = by_kind.get(Kind.IMAGE, 0)
    r.junk_skipped = by_kind.get(Kind.JUNK, 0)
    r.not_images = by_kind.get(Kind.NOT_IMAGE, 0)
    for path, reason in items.filter(kind=Kind.REJECTED).values_list("path", "reason"):
        r.add_rejected(path, reason or "rejected")
    canon = items.filter(kind=Kind.IMAGE, canonical=True)
    states = dict(canon.values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    r.uploaded = states.get(Item.UPLOADED, 0)
    r.already_present = states.get(Item.PRESENT, 0)
    for path, error in canon.filter(state=Item.FAILED).values_list("path", "error"):
        r.add_failed(path, error)
    r.duplicates_folded = r.images - sum(states.values())
    links = MigrationLink.objects.filter(run=run)
    r.rows_relinked = links.filter(state=Link.LINKED).count()
    for label, row_pk, value, reason in (
        links.filter(state=Link.DANGLING)
        .order_by("pk")
        .values_list("target", "row_pk", "value", "reason")
    ):
        r.add_dangling(f"{label} pk={row_pk}", value, reason)
    r.orphans_imported = items.filter(imported=True).count()
    if opts.orphans == "skip":
        in_library = library(source_sha256=OuterRef("sha256"))  # EXISTS: see planning
        r.orphans_skipped = canon.filter(orphan=True).exclude(Exists(in_library)).count()
    r.bytes_before = items.filter(kind=Kind.IMAGE).aggregate(n=Sum("size"))["n"] or 0
    stored = canon.filter(state__in=[Item.UPLOADED, Item.PRESENT])
    r.bytes_after = stored.aggregate(n=Sum("size"))["n"] or 0
    if final:
        _count_outputs(run, r)
    end = run.finished_at or timezone.now()
    r.duration = (end - run.created).total_seconds()
    return r


def _count_outputs(run: MigrationRun, r: Report) -> None:
    """What processing produced: variants rendered for the rows this run queued (and which
    of those failed), and the bytes of every output of every row pointing at this tree's
    objects (what the tree occupies in the public bucket, whichever run rendered it)."""
    for rows, target in touched_rows(run):
        cols = (target.col("status"), target.col("manifest"), target.col("error"))
        for pk, status, manifest, error in rows.values_list("pk", *cols).iterator(BATCH):
            if status == Status.READY:
                r.variants_generated += len(manifest.get("variants", ()))
            elif status == Status.FAILED:
                r.add_failed(f"{target.label}.{target.field.name} pk={pk}", error or "failed")
    count_output_bytes(run, r)


def count_output_bytes(run: MigrationRun, r: Report) -> None:
    """Add the bytes of every output of every processed row pointing at the run's objects
    to ``r.bytes_after``, and count optimized originals and variants apart, with the
    originals the optimized ones were made from (so the report compares like with like)."""
    canon = MigrationItem.objects.filter(run=run, canonical=True).exclude(key="")
    counted = r.bytes_optimized_originals + r.bytes_variants
    for target in _row_targets(run):
        rows = target.rows().filter(
            **{f"{target.field.name}__in": canon.values("key"), target.col("status"): Status.READY}
        )
        page: list[tuple[str, dict[str, Any]]] = []
        for row in rows.values_list(target.field.name, target.col("manifest")).iterator(BATCH):
            page.append(row)
            if len(page) == BATCH:
                _count_page(canon, page, r)
                page = []
        _count_page(canon, page, r)
    r.bytes_after += r.bytes_optimized_originals + r.bytes_variants - counted


def _count_page(
    canon: models.QuerySet[MigrationItem], page: list[tuple[str, dict[str, Any]]], r: Report
) -> None:
    """One page of processed rows (their key and manifest) into ``r``'s output counters."""
    sizes = dict(canon.filter(key__in={key for key, _ in page}).values_list("key", "size"))
    for key, manifest in page:
        r.bytes_variants += sum(int(v.get("bytes", 0)) for v in manifest.get("variants", ()))
        if manifest.get("original"):
            r.bytes_optimized_originals += int(manifest["original"].get("bytes", 0))
            r.bytes_processed_originals += sizes.get(key, 0)


def _row_targets(run: MigrationRun) -> list[media_services.Target]:
    """The model fields whose rows may point at the run's objects (the library's too)."""
    labels = [*Options.of(run).targets, f"{ASSET_LABEL}.{ASSET_FIELD}"]
    return [target_of(label) for label in dict.fromkeys(labels)]
