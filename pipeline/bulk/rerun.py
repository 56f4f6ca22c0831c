"""An unchanged re-run: answered at the start of its scan, and nothing stored.

When the previous run of the folder finished with the same options, its rows still
describe the database (no row newly holding a legacy path, no orphan newly referenced or
dropped, nothing failed) and the walk yields its scan unchanged, the new run is ``done``
at once with the no-op report, and stores no item, link or chunk. ``answer_unchanged``
lists everything compared; any difference, and the run is scanned and planned as usual.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.db.models import Exists, OuterRef, Q, Sum
from django.utils import timezone

from pipeline.bulk.options import BATCH, Options, library, target_of
from pipeline.bulk.planning import in_bucket
from pipeline.bulk.report import Report
from pipeline.bulk.reporting import count_output_bytes
from pipeline.bulk.scan import scan
from pipeline.bulk.scan_rows import PreviousScan, item, probe_image
from pipeline.conf import pipeline_settings
from pipeline.fields import Status
from pipeline.models import MigrationItem, MigrationLink, MigrationRun

logger = logging.getLogger(__name__)

__all__ = ["NOOP_OF", "answer_unchanged"]

Item = MigrationItem.State
Link = MigrationLink.State
Run = MigrationRun.State

NOOP_OF = "noop_of"
"""Report key of a run answered from an earlier one: the run whose rows it stood on."""

_SAME_ITEM = (
    "path", "lookup_key", "size", "mtime_ns", "sha256", "md5", "kind", "format", "width",
    "height", "reason", "via_link", "natural_key",
)  # fmt: skip


def answer_unchanged(
    run: MigrationRun, opts: Options, progress: Callable[[int], None] | None
) -> bool:
    """Finish ``run`` at once, as a no-op, when nothing changed since the last run of its
    folder; returns whether it did.

    That run finished (``done``) with the same options, left nothing failed or pending, and
    since then: the walk yields exactly its scan (same paths, sizes, mtime_ns, in order); the
    rows of the model fields that hold no stored key are exactly the ones it reported
    dangling (same values); every content it kept out of the library is still held by a
    row, no orphan is; its orphans are still in the library (processed); with ``verify``,
    the originals it stored are still in the bucket (one listing; otherwise the run history
    is trusted for that, which keeps a no-op re-run free of S3 requests). The normal path
    would then plan the same keys, re-link nothing, upload and import nothing: the report
    is the earlier one with those counts. No item, link or chunk is stored for such a run
    (it records the run it stood on, ``NOOP_OF``). Any difference: the ordinary scan and
    plan.
    """
    base = _noop_base(run)
    if base is None or not _rows_unchanged(base, opts):
        return False
    if not _tree_unchanged(run, base, opts, progress):
        return False
    stored = MigrationItem.objects.filter(run=base, canonical=True)
    if opts.verify and not all(found for _pk, found in in_bucket(stored)):
        return False
    report = _noop_report(run, base, opts)
    now = timezone.now()
    report.duration = (now - run.created).total_seconds()
    data = report.to_dict()
    data["final"], data[NOOP_OF] = True, base.pk
    MigrationRun.objects.filter(pk=run.pk, state=Run.SCANNING).update(
        state=Run.DONE, report=data, scanned_at=now, planned_at=now, finished_at=now
    )
    logger.info("migration run %s: nothing changed since run %s", run.pk, base.pk)
    return True


def _noop_base(run: MigrationRun) -> MigrationRun | None:
    """The finished run whose rows an unchanged re-run of ``run`` would reproduce, if any."""
    if MigrationItem.objects.filter(run=run).exists():  # an interrupted scan: resume it
        return None
    prior = MigrationRun.objects.filter(source=run.source, pk__lt=run.pk).order_by("-pk").first()
    if prior is None or prior.state != Run.DONE or not _same_work(prior.options, run.options):
        return None
    if not prior.report.get("final"):
        return None
    if NOOP_OF not in prior.report:
        return prior
    base = MigrationRun.objects.filter(pk=prior.report[NOOP_OF], state=Run.DONE).first()
    if base is None or not _same_work(base.options, run.options) or not base.report.get("final"):
        return None
    return base


def _same_work(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two runs' options ask for the same outcome (``verify`` only adds a check)."""
    return {k: v for k, v in a.items() if k != "verify"} == {
        k: v for k, v in b.items() if k != "verify"
    }


def _rows_unchanged(base: MigrationRun, opts: Options) -> bool:
    """Whether planning again would find what ``base`` left (see ``answer_unchanged``)."""
    canon = MigrationItem.objects.filter(run=base, canonical=True)
    if canon.exclude(state__in=[Item.UPLOADED, Item.PRESENT]).exists():
        return False  # failed (or unfinished) contents are tried again
    links = MigrationLink.objects.filter(run=base)
    settled = Q(state__in=[Link.LINKED, Link.CURRENT]) | Q(state=Link.DANGLING, key="")
    if links.exclude(settled).exists():
        return False  # rows that could not be linked to a stored file are tried again
    # Anti-joins (``Exists``), not ``NOT IN``: a hash join on PostgreSQL, whatever the size.
    held = Q(pk__in=[])
    not_orphans = canon.filter(orphan=False)
    for label in opts.targets:
        target = target_of(label)
        name = target.field.name
        rows = target.rows().exclude(**{name: ""}).exclude(**{f"{name}__isnull": True})
        keyed = MigrationItem.objects.filter(canonical=True, key=OuterRef(name))
        loose = rows.exclude(Exists(keyed)).values_list("pk", name)
        dangling = links.filter(target=label, state=Link.DANGLING).values_list("row_pk", "value")
        if {(str(pk), value) for pk, value in loose.iterator(BATCH)} != set(dangling):
            return False
        ours = Exists(canon.filter(key=OuterRef(name)))
        if opts.process and rows.filter(ours, **{target.col("status"): Status.EMPTY}).exists():
            return False  # linked without processing: the normal path queues them
        holder = Exists(rows.filter(**{name: OuterRef("key")}))
        not_orphans = not_orphans.exclude(holder)
        held |= Q(holder)
    if not_orphans.exists() or canon.filter(orphan=True).filter(held).exists():
        return False
    if opts.orphans == "import":
        imported = library(OuterRef("sha256"))
        missing = ~Exists(imported)
        if opts.process:
            missing |= Exists(imported.filter(image_status=Status.EMPTY))
        if canon.filter(orphan=True).filter(missing).exists():
            return False
    return True


def _tree_unchanged(
    run: MigrationRun, base: MigrationRun, opts: Options, progress: Callable[[int], None] | None
) -> bool:
    """Whether the walk of the folder yields exactly ``base``'s scan rows, in order (a walk of
    ``stat``: unchanged files are not read; it stops at the first difference)."""
    reuse = PreviousScan(base.pk)
    profile = pipeline_settings().profile()
    probe = functools.partial(probe_image, profile=profile)
    before = _items_in_order(base.pk, _SAME_ITEM)
    count = 0
    for entry in scan(run.source, probe=probe, reuse=reuse, max_bytes=profile.max_bytes):
        now = item(run.pk, entry, opts.prefix, reuse.natural_key(entry.path, opts.prefix))
        then = next(before, None)
        if then is None or any(then[f] != now[f] for f in _SAME_ITEM):
            return False
        count += 1
        if progress and count % BATCH == 0:
            progress(count)
    if next(before, None) is not None:
        return False
    if progress:
        progress(count)
    return True


def _items_in_order(run_id: int, fields: Sequence[str]) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        page = list(
            MigrationItem.objects.filter(run_id=run_id, pk__gt=last)
            .order_by("pk")
            .values("pk", *fields)[:BATCH]
        )
        yield from page
        if len(page) < BATCH:
            return
        last = page[-1]["pk"]


def _noop_report(run: MigrationRun, base: MigrationRun, opts: Options) -> Report:
    """The report of an unchanged re-run of ``base``: its scan and dangling rows, nothing
    uploaded, re-linked, imported or rendered; what is stored counted again."""
    r = Report.from_dict(base.report)
    r.run_id, r.dry_run = str(run.pk), False
    canon = MigrationItem.objects.filter(run=base, canonical=True)
    r.uploaded, r.already_present = 0, canon.count()
    r.failed = {}
    r.rows_relinked = r.orphans_imported = r.variants_generated = 0
    if opts.orphans == "skip":
        in_library = library(source_sha256__isnull=False).values("source_sha256")
        r.orphans_skipped = canon.filter(orphan=True).exclude(sha256__in=in_library).count()
    r.bytes_after = canon.aggregate(n=Sum("size"))["n"] or 0
    r.bytes_optimized_originals = r.bytes_processed_originals = r.bytes_variants = 0
    count_output_bytes(base, r)
    return r
