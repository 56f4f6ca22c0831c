"""Scanning, a run's first step: its folder stored as one ``MigrationItem`` per path.

The tree is streamed (``scan.scan``) into rows, in batches. Files whose (path, size,
mtime_ns) match the previous scan of the same folder are not read again: the previous
run's rows are merge-joined with the walk (both are in the scan's deterministic order;
``scan_rows.PreviousScan``), so a re-run of an unchanged tree is a walk of ``stat``. A
re-run that would change nothing at all is answered before any row is stored (``rerun``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from pipeline.bulk.options import BATCH, Options
from pipeline.bulk.rerun import answer_unchanged
from pipeline.bulk.scan import scan
from pipeline.bulk.scan_rows import PreviousScan, item, probe_image
from pipeline.conf import pipeline_settings
from pipeline.models import MigrationItem, MigrationRun

logger = logging.getLogger(__name__)

__all__ = ["migration_scan"]

Run = MigrationRun.State


def migration_scan(
    *,
    run_id: int,
    progress: Callable[[int], None] | None = None,
    heartbeat: Callable[[], None] | None = None,
) -> int:
    """Store the scan of the run's folder; returns the number of entries stored.

    Resumable: entries already stored are kept (and not read again), the rest are added.
    ``heartbeat`` is called at every entry (``heartbeat.Heartbeat`` writes when due).
    """
    run = MigrationRun.objects.get(pk=run_id)
    if run.state != Run.SCANNING:
        return 0
    opts = Options.of(run)
    if answer_unchanged(run, opts, _beating(progress, heartbeat)):
        return 0
    reference = _reference_run(run)
    reuse = PreviousScan(reference) if reference else None
    profile = pipeline_settings().profile()
    probe = functools.partial(probe_image, profile=profile)
    writer = _ItemWriter()
    count = 0
    for entry in scan(run.source, probe=probe, reuse=reuse, max_bytes=profile.max_bytes):
        natural = reuse.natural_key(entry.path, opts.prefix) if reuse else None
        writer.add(item(run.pk, entry, opts.prefix, natural))
        count += 1
        if heartbeat:
            heartbeat()
        if len(writer.rows) >= BATCH:
            writer.flush()
            if progress:
                progress(count)
    writer.flush()
    if progress:
        progress(count)
    MigrationRun.objects.filter(pk=run_id, state=Run.SCANNING).update(
        state=Run.PLANNING, scanned_at=timezone.now()
    )
    logger.info("migration run %s: scanned %d entries of %s", run_id, count, run.source)
    return count


def _beating(
    progress: Callable[[int], None] | None, heartbeat: Callable[[], None] | None
) -> Callable[[int], None] | None:
    """``progress`` that also renews the heartbeat (the unchanged-tree walk reports every
    ``BATCH`` entries of ``stat`` alone: often enough)."""
    if heartbeat is None:
        return progress

    def both(count: int) -> None:
        heartbeat()
        if progress:
            progress(count)

    return both


def _reference_run(run: MigrationRun) -> int | None:
    """Whose scan a (re-)scan may reuse: this run's own rows when it was interrupted while
    scanning, else the latest earlier scan of the same folder."""
    if MigrationItem.objects.filter(run=run).exists():
        return run.pk
    return (
        MigrationRun.objects.filter(source=run.source, pk__lt=run.pk, scanned_at__isnull=False)
        .filter(Exists(MigrationItem.objects.filter(run=OuterRef("pk"))))  # not a no-op run
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )


class _ItemWriter:
    """Inserts scan rows in batches of plain SQL, skipping paths already stored.

    On a re-run nothing is read, and the ORM's per-field preparation of ``bulk_create``
    would cost more than the whole walk: rows go in as tuples instead.
    """

    def __init__(self) -> None:
        fields = [f for f in MigrationItem._meta.concrete_fields if not f.primary_key]
        self._names = [f.attname for f in fields]
        self._defaults = {f.attname: f.get_default() for f in fields}
        qn = connection.ops.quote_name
        columns = ", ".join(qn(f.column) for f in fields)
        marks = ", ".join(["%s"] * len(fields))
        self._sql = (
            f"INSERT INTO {qn(MigrationItem._meta.db_table)} ({columns}) "
            f"VALUES ({marks}) ON CONFLICT DO NOTHING"
        )
        self.rows: list[tuple[Any, ...]] = []

    def add(self, values: dict[str, Any]) -> None:
        self.rows.append(tuple(values.get(n, self._defaults[n]) for n in self._names))

    def flush(self) -> None:
        if self.rows:
            # One transaction per batch (in autocommit, SQLite would commit every row).
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(self._sql, self.rows)
            self.rows = []
