"""A chunk: one task's share of a run (consecutive keys), done in one go, idempotent.

It uploads what the bucket lacks (``transfer``), re-links the rows waiting for its
contents (``linking``), imports its orphans into the media library (one ``MediaAsset`` per
content), is marked done, and tops the queue up again (``coordinator``). Outcomes are
recorded with conditional updates, so a chunk run twice (redelivered after a killed
worker) changes nothing the second time.

Then, on a process of its own (``PROCESS_IN_CHUNK``: a prefork worker, or in-process),
it processes the rows it made pending itself, from the files on disk it has just
uploaded (read again and checked against the scan's sha256): the same service and row
state as a save's task (``media_process_here``), without a task per row or a GET of each
original. The rows are pending before (with the deadline of any pending row) and leased
while rendered, so a chunk killed meanwhile leaves them to the sweep, which publishes
their tasks; a row whose attempt raises, and those after it, are handed to their tasks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any

from django.db import transaction
from django.utils import timezone

from pipeline import dispatch, storage
from pipeline import services as media_services
from pipeline import state as row_state
from pipeline.bulk import transfer
from pipeline.bulk.coordinator import is_eager, migration_top_up
from pipeline.bulk.linking import Pending, link_rows
from pipeline.bulk.options import ASSET_FIELD, ASSET_LABEL, Options, library, target_of
from pipeline.conf import pipeline_settings
from pipeline.fields import Status
from pipeline.models import MediaAsset, MigrationChunk, MigrationItem

__all__ = ["migration_run_chunk"]

PROCESS_BUDGET = 60.0
"""Seconds a chunk spends processing its rows itself; those left then get their tasks (a
chunk of large images must end well within the task's time limit and the rows' deadline)."""

Item = MigrationItem.State
Chunk = MigrationChunk.State


def migration_run_chunk(*, chunk_id: int, dry_run: bool = False) -> None:
    """Upload, link and import one chunk's contents, then top the queue up. Idempotent."""
    chunk = MigrationChunk.objects.select_related("run").filter(pk=chunk_id).first()
    if chunk is None or chunk.state == Chunk.DONE:
        return
    run = chunk.run
    opts = Options.of(run)
    items = list(chunk.items.all())
    conf = pipeline_settings()["MIGRATION"]
    uploads = [
        transfer.Upload(i.pk, i.path, i.key, i.sha256, i.md5 or None, i.size, i.format)
        for i in items
        if i.state == Item.PENDING
    ]
    outcomes = transfer.transfer(
        storage.primary(),
        run.source,
        uploads,
        threads=conf["UPLOAD_THREADS"],
        dry_run=dry_run,
        look=not run.bucket_was_empty,
    )
    _record_outcomes(outcomes)
    by_id = {i.pk: i for i in items}
    for o in outcomes:
        by_id[o.item_id].state, by_id[o.item_id].error = o.state, o.error
    stored = [i for i in items if i.state in (Item.UPLOADED, Item.PRESENT)]
    failed = [i for i in items if i.state == Item.FAILED]
    pending = link_rows(run, opts, stored, failed, dry_run=dry_run)
    if opts.orphans == "import":
        pending += _import_orphans(opts, [i for i in stored if i.orphan], dry_run=dry_run)
    MigrationChunk.objects.filter(pk=chunk_id).exclude(state=Chunk.DONE).update(
        state=Chunk.DONE, finished_at=timezone.now()
    )
    if not dry_run and not is_eager():
        migration_top_up(run_id=run.pk)
    # On a thread pool, rendering here would hold the I/O worker's threads (and the GIL):
    # the rows get the save's task on the cpu queue instead.
    here = conf["PROCESS_IN_CHUNK"] and threading.current_thread() is threading.main_thread()
    _process_here(run.source, chunk_id, pending, {i.key: i for i in stored}, here=here)


def _process_here(
    root: str,
    chunk_id: int,
    pending: list[Pending],
    by_key: dict[str, MigrationItem],
    *,
    here: bool,
) -> None:
    """Process the rows the chunk made pending, from the originals on disk (``here``),
    else publish their tasks; the rows whose file is no longer what was scanned get their
    task too (it reads the bucket)."""
    if not pending:
        return
    task_id = f"chunk-{chunk_id}-{uuid.uuid4().hex[:16]}"
    until = time.monotonic() + PROCESS_BUDGET
    grouped: defaultdict[str, list[Pending]] = defaultdict(list)
    for p in pending:
        grouped[p.key].append(p)
    # ``here`` until the budget is spent, or an attempt raised (its task took it over).
    for key, group in grouped.items():
        item = by_key.get(key)
        here = here and time.monotonic() < until
        data = transfer.read_original(root, item.path, item.sha256) if here and item else None
        for p in group:
            label, field_name = p.target.label, p.target.field.name
            if data is None:
                dispatch.send_many(
                    dispatch.PROCESS_MEDIA,
                    [(label, pk, field_name, rev) for pk, rev in p.revisions.items()],
                )
                continue
            outcomes = media_services.media_process_here(
                model_label=label,
                field_name=field_name,
                revisions=p.revisions,
                original=media_services.Original(key, data),
                task_id=task_id,
            )
            if "queued" in outcomes.values():
                here, data = False, None


def _record_outcomes(outcomes: list[transfer.Outcome]) -> None:
    by_state: defaultdict[str, list[int]] = defaultdict(list)
    for o in outcomes:
        if o.state == Item.FAILED:
            MigrationItem.objects.filter(pk=o.item_id, state=Item.PENDING).update(
                state=Item.FAILED, error=o.error
            )
        else:
            by_state[o.state].append(o.item_id)
    for state, ids in by_state.items():
        MigrationItem.objects.filter(pk__in=ids, state=Item.PENDING).update(state=state)


def _import_orphans(opts: Options, orphans: list[MigrationItem], *, dry_run: bool) -> list[Pending]:
    """One media library row per orphan content (unique ``source_sha256``: never two), and
    those never processed made pending (returned, no task published)."""
    if not orphans:
        return []
    with transaction.atomic():
        have = set(
            library(source_sha256__in=[i.sha256 for i in orphans]).values_list(
                "source_sha256", flat=True
            )
        )
        new = [i for i in orphans if i.sha256 not in have and not i.imported]
        if not dry_run:
            MediaAsset.objects.bulk_create(
                [
                    MediaAsset(
                        title=PurePosixPath(i.path).stem[:200],
                        image=i.key,
                        source_path=i.path,
                        source_sha256=i.sha256,
                    )
                    for i in new
                ],
                ignore_conflicts=True,
            )
        MigrationItem.objects.filter(pk__in=[i.pk for i in new]).update(imported=True)
        if not opts.process and not dry_run:
            # Linked, not rendered: the state describes the file (the sweep leaves it).
            fresh = library(source_sha256__in=[i.sha256 for i in new]).values_list("pk", flat=True)
            row_state.mark_unprocessed(target_of(f"{ASSET_LABEL}.{ASSET_FIELD}"), fresh)
        if opts.process and not dry_run:
            shas = {i.sha256 for i in orphans}
            unprocessed = dict(
                library(source_sha256__in=shas, image_status=Status.EMPTY).values_list(
                    "pk", "source_sha256"
                )
            )
            if unprocessed:
                revisions = media_services.media_reprocess_here(
                    model_label=ASSET_LABEL, field_name=ASSET_FIELD, pks=list(unprocessed)
                )
                old = [
                    i.pk for i in orphans if i.sha256 in set(unprocessed.values()) and i not in new
                ]
                MigrationItem.objects.filter(pk__in=old).update(requeued=True)
                key_of = {i.sha256: i.key for i in orphans}
                by_key: defaultdict[str, dict[Any, int]] = defaultdict(dict)
                for pk, revision in revisions.items():
                    by_key[key_of[unprocessed[pk]]][pk] = revision
                target = target_of(f"{ASSET_LABEL}.{ASSET_FIELD}")
                return [Pending(target, key, revs) for key, revs in by_key.items()]
    return []
