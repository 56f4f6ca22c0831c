"""A run of the bulk migration: created, found again, handed over, driven through its steps.

A run moves through its states, each step idempotent and resumable, its progress in the
database (``pipeline.models.migration``); each step has its module:

``scanning``
    The tree is stored as one ``MigrationItem`` per path (``scanning``); a re-run that
    would change nothing is answered there, at once (``rerun``).
``planning``
    Keys, the rows that refer to them, orphans and chunks: queries over the stored scan
    (``planning``, ``linking``).
``running``
    The coordinator keeps a bounded number of chunk tasks queued (``coordinator``); each
    chunk uploads, re-links and imports its contents, then tops the queue up (``chunks``).
``processing``
    The re-linked rows are rendered by the ordinary pipeline; the run is ``done`` when
    none of them is pending any more, and its report is stored (``reporting``).

Eager mode (no broker, the embedded default) drives the same chunks in a loop in the
caller's process (``migration_drive``), never by recursion; ``dry_run`` does the same in
a transaction it rolls back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from django.db import transaction

from pipeline import dispatch
from pipeline import services as media_services
from pipeline.bulk.chunks import migration_run_chunk
from pipeline.bulk.coordinator import (
    is_eager,
    migration_advance,
    migration_claim_chunk,
    migration_top_up,
)
from pipeline.bulk.heartbeat import Heartbeat, Superseded, take_over
from pipeline.bulk.options import BATCH, Options
from pipeline.bulk.planning import migration_plan
from pipeline.bulk.report import Report
from pipeline.bulk.reporting import migration_report, touched_rows
from pipeline.bulk.scanning import migration_scan
from pipeline.fields import Status
from pipeline.models import MigrationChunk, MigrationRun

logger = logging.getLogger(__name__)

__all__ = [
    "dry_run",
    "migration_create",
    "migration_detach",
    "migration_drive",
    "migration_find_resumable",
    "migration_requeue",
    "migration_start",
]

Chunk = MigrationChunk.State
Run = MigrationRun.State


def migration_create(*, source: str, options: Options) -> MigrationRun:
    """A new run of ``source`` (an existing directory; stored as its real path)."""
    return MigrationRun.objects.create(
        source=os.path.realpath(source), options=options.to_json(), state=Run.SCANNING
    )


def migration_find_resumable(*, source: str) -> MigrationRun | None:
    """The latest unfinished run of ``source``, if any: running the command again resumes it."""
    return (
        MigrationRun.objects.filter(source=os.path.realpath(source))
        .exclude(state=Run.DONE)
        .order_by("-id")
        .first()
    )


def migration_requeue(*, run_id: int) -> None:
    """Resuming by hand re-publishes what was in flight, since its messages may be lost (a
    killed worker's wait for the broker's visibility timeout; a publish after a commit that
    never happened): queued chunks are queued again, and the run's rows still pending are
    queued for processing again. Work that was not lost is then done twice, harmlessly: a
    chunk is idempotent, and the older processing task finds a newer revision and stops.
    A failed run continues from the step it failed in. Whoever resumes a run drives its
    scan and plan: its heartbeat is cleared, so a worker still at them stops at its next
    renewal and the sweep leaves the run to the command (``--detach`` stamps a new one)."""
    run = MigrationRun.objects.get(pk=run_id)
    MigrationRun.objects.filter(pk=run_id).update(heartbeat_at=None)
    MigrationChunk.objects.filter(run=run, state=Chunk.QUEUED).update(state=Chunk.PENDING)
    if run.state == Run.FAILED:
        state = (
            Run.SCANNING
            if run.scanned_at is None
            else Run.PLANNING
            if run.planned_at is None
            else Run.RUNNING
        )
        MigrationRun.objects.filter(pk=run_id).update(state=state, error="")
    if run.state in (Run.RUNNING, Run.PROCESSING) and Options.of(run).process:
        for rows, target in touched_rows(run):
            stuck = rows.filter(
                **{f"{target.col('status')}__in": [Status.PENDING, Status.PROCESSING]}
            ).values_list("pk", flat=True)
            pks = list(stuck)
            for start in range(0, len(pks), BATCH):
                media_services.media_reprocess(
                    model_label=target.label,
                    field_name=target.field.name,
                    pks=pks[start : start + BATCH],
                )


def migration_detach(*, run_id: int) -> None:
    """Hand a run over to the workers (``--detach``), whatever step it is at."""
    state = MigrationRun.objects.values_list("state", flat=True).get(pk=run_id)
    if state in (Run.SCANNING, Run.PLANNING):
        take_over(run_id)  # from now on, a silence is noticed by the sweep (a lost message)
        dispatch.send(dispatch.START_RUN, run_id)
    elif state in (Run.RUNNING, Run.PROCESSING):
        dispatch.send(dispatch.COORDINATE, run_id)


def migration_start(*, run_id: int) -> None:
    """Scan, plan and start the fan-out (``--detach``: all of it in a worker), with a
    heartbeat renewed all along (``heartbeat``); stops if the run is started elsewhere."""
    beat = Heartbeat(run_id)
    beat.start()
    try:
        migration_scan(run_id=run_id, heartbeat=beat)
        migration_plan(run_id=run_id, heartbeat=beat)
    except Superseded:
        logger.warning("migration run %s: started again elsewhere; this start stops", run_id)
        return
    except Exception as e:
        # A folder gone or unreadable, a bug: the sweep would start the run again every
        # STALE_START_AFTER for ever. Failed, it waits for someone to resume it
        # (`migrate_media --resume`), from the step it failed in.
        MigrationRun.objects.filter(pk=run_id, heartbeat_at=beat.last).update(
            state=Run.FAILED, error=f"{type(e).__name__}: {e}"[:2000], heartbeat_at=None
        )
        raise
    migration_drive(run_id=run_id)


def migration_drive(*, run_id: int) -> None:
    """Push a planned run forward: with workers, fill the queue; in eager mode (no broker),
    run every chunk here, one after the other."""
    if not is_eager():
        migration_top_up(run_id=run_id)
        return
    while (chunk_id := migration_claim_chunk(run_id=run_id)) is not None:
        migration_run_chunk(chunk_id=chunk_id)
    migration_advance(run_id=run_id)


def dry_run(
    *, source: str, options: Options, progress: Callable[[int], None] | None = None
) -> Report:
    """Everything a run would do, in a transaction rolled back at the end: the same report,
    nothing written anywhere (buckets are only listed). Runs in this process."""
    with transaction.atomic():
        run = migration_create(source=source, options=options)
        migration_scan(run_id=run.pk, progress=progress)
        migration_plan(run_id=run.pk)
        while (chunk_id := migration_claim_chunk(run_id=run.pk)) is not None:
            migration_run_chunk(chunk_id=chunk_id, dry_run=True)
        report = migration_report(run_id=run.pk)
        transaction.set_rollback(True)
    report.run_id = None
    report.dry_run = True
    return report
