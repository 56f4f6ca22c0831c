"""The coordinator: chunk tasks fed to the queue a few at a time, and a run moved on when
its step is over.

``migration_top_up`` keeps at most ``MAX_CHUNKS_IN_FLIGHT`` chunk tasks queued. It is
called when a run starts, after every chunk (``chunks``), and by whoever watches the run:
the command, the coordinator task following a detached run, the periodic sweep. No group,
no chord: a million files is a bounded trickle of messages, and the state is in rows.
``migration_advance`` moves a run to ``processing`` once its chunks are done, and to
``done`` (its report stored) once the rows it queued are processed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from pipeline import dispatch
from pipeline.bulk.heartbeat import take_over
from pipeline.bulk.reporting import migration_report, touched_rows
from pipeline.conf import pipeline_settings
from pipeline.fields import Status
from pipeline.models import MigrationChunk, MigrationItem, MigrationLink, MigrationRun

logger = logging.getLogger(__name__)

__all__ = [
    "is_eager",
    "migration_advance",
    "migration_claim_chunk",
    "migration_coordinate",
    "migration_sweep",
    "migration_top_up",
]

FOLLOW_EVERY = 3
"""Seconds between two checks of a processing run by the coordinator task."""

MAX_CHUNK_ATTEMPTS = 5
"""A chunk published this many times without finishing is given up (its files fail)."""

Item = MigrationItem.State
Chunk = MigrationChunk.State
Link = MigrationLink.State
Run = MigrationRun.State


def is_eager() -> bool:
    """No broker: tasks run in-process (the embedded default)."""
    from celery import current_app

    return bool(current_app.conf.task_always_eager)


def migration_claim_chunk(*, run_id: int) -> int | None:
    """Mark the next pending chunk queued and return it (for callers running chunks inline)."""
    with transaction.atomic():
        chunk = (
            MigrationChunk.objects.select_for_update()
            .filter(run_id=run_id, state=Chunk.PENDING)
            .order_by("number")
            .first()
        )
        if chunk is None:
            return None
        MigrationChunk.objects.filter(pk=chunk.pk).update(
            state=Chunk.QUEUED, queued_at=timezone.now(), attempts=F("attempts") + 1
        )
        return chunk.pk


def migration_top_up(*, run_id: int) -> int:
    """Queue chunk tasks until ``MAX_CHUNKS_IN_FLIGHT`` are queued; returns how many were.

    Called when a run starts, after every chunk, and by whoever watches the run. Chunks
    queued longer than ``STALE_CHUNK_AFTER`` ago are published again (a lost message, a
    whole worker killed); running a chunk twice is harmless.
    """
    conf = pipeline_settings()["MIGRATION"]
    now = timezone.now()
    stale = now - timedelta(seconds=conf["STALE_CHUNK_AFTER"])
    with transaction.atomic():
        run = MigrationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.state != Run.RUNNING:
            return 0
        chunks = MigrationChunk.objects.filter(run_id=run_id)
        hopeless = chunks.filter(
            state=Chunk.QUEUED, queued_at__lt=stale, attempts__gte=MAX_CHUNK_ATTEMPTS
        )
        for chunk_id in hopeless.values_list("pk", flat=True):
            _give_up(chunk_id)
        in_flight = chunks.filter(state=Chunk.QUEUED, queued_at__gte=stale).count()
        room = conf["MAX_CHUNKS_IN_FLIGHT"] - in_flight
        picked: list[int] = []
        if room > 0:
            picked = list(
                chunks.filter(Q(state=Chunk.PENDING) | Q(state=Chunk.QUEUED, queued_at__lt=stale))
                .order_by("number")
                .values_list("pk", flat=True)[:room]
            )
            chunks.filter(pk__in=picked).update(
                state=Chunk.QUEUED, queued_at=now, attempts=F("attempts") + 1
            )
        if picked:
            dispatch.send_many_on_commit(dispatch.RUN_CHUNK, [(pk,) for pk in picked])
    if not picked and in_flight == 0:
        migration_advance(run_id=run_id)
    return len(picked)


def _give_up(chunk_id: int) -> None:
    """A chunk that never finished in ``MAX_CHUNK_ATTEMPTS`` tries (a bug, or a file that
    kills its worker): its contents fail with that reason, so the run can end."""
    reason = f"gave up after {MAX_CHUNK_ATTEMPTS} attempts of its chunk (see the worker logs)"
    keys = list(MigrationItem.objects.filter(chunk_id=chunk_id).values_list("key", flat=True))
    MigrationItem.objects.filter(chunk_id=chunk_id, state=Item.PENDING).update(
        state=Item.FAILED, error=reason
    )
    chunk = MigrationChunk.objects.get(pk=chunk_id)
    MigrationLink.objects.filter(run_id=chunk.run_id, state=Link.PENDING, key__in=keys).update(
        state=Link.DANGLING, reason=f"the file could not be stored: {reason}"
    )
    MigrationChunk.objects.filter(pk=chunk_id).update(state=Chunk.DONE, finished_at=timezone.now())
    logger.error("migration run %s: chunk %s %s", chunk.run_id, chunk.number, reason)


def migration_coordinate(*, run_id: int) -> str:
    """The coordinator task's body: fill the queue while chunks are left, then follow the
    processing until the run is done. Returns the run's state."""
    state = MigrationRun.objects.filter(pk=run_id).values_list("state", flat=True).first()
    if state == Run.RUNNING:
        migration_top_up(run_id=run_id)
    elif state == Run.PROCESSING:
        return migration_advance(run_id=run_id, follow=True)
    return state or ""


def migration_sweep() -> int:
    """Periodic (beat): push on every unfinished run, whoever is (or is not) driving it.

    A run moves when its chunks finish and while a command or a coordinator task follows
    it. One crash can stop all of them at once: a whole worker killed with the last chunks
    in flight, the broker restarted without its messages, the command interrupted. Here
    chunks queued longer than ``STALE_CHUNK_AFTER`` are published again, and a run whose
    work is over is finished (rows left pending are ``media_sweep_stale``'s). Returns how
    many runs were looked at.

    A detached run still scanning or planning whose heartbeat is older than
    ``STALE_START_AFTER`` lost its worker (and its ``start_run`` message with it): it is
    started again, and resumes where it stopped (``heartbeat``).
    """
    conf = pipeline_settings()["MIGRATION"]
    silent = timezone.now() - timedelta(seconds=conf["STALE_START_AFTER"])
    starting = MigrationRun.objects.filter(
        state__in=[Run.SCANNING, Run.PLANNING], heartbeat_at__lt=silent
    )
    restarted = list(starting.order_by("pk").values_list("pk", flat=True))
    for run_id in restarted:
        if take_over(run_id, before=silent):  # one sweep restarts it, not two
            logger.warning("migration run %s: its worker went silent; started again", run_id)
            dispatch.send(dispatch.START_RUN, run_id)
    unfinished = MigrationRun.objects.filter(state__in=[Run.RUNNING, Run.PROCESSING])
    run_ids = list(unfinished.order_by("pk").values_list("pk", flat=True))
    for run_id in run_ids:
        # No ``follow``: each sweep would start one more coordinator following the run.
        migration_top_up(run_id=run_id)
        migration_advance(run_id=run_id)
    return len(run_ids) + len(restarted)


def migration_advance(*, run_id: int, follow: bool = False) -> str:
    """Move a run on when its step is over (chunks all done; rows all processed); returns
    its state. With workers, a run that starts processing is followed by a coordinator
    task that checks again every few seconds (``follow``) until it is done, so a detached
    run finishes (and stores its report) with nobody watching."""
    run = MigrationRun.objects.get(pk=run_id)
    if run.state == Run.RUNNING:
        if MigrationChunk.objects.filter(run=run).exclude(state=Chunk.DONE).exists():
            return run.state
        moved = MigrationRun.objects.filter(pk=run_id, state=Run.RUNNING).update(
            state=Run.PROCESSING, uploaded_at=timezone.now()
        )
        run.refresh_from_db()
        follow = follow or bool(moved)
    if run.state == Run.PROCESSING:  # (with --no-process, nothing is pending: done at once)
        if _unsettled(run) == 0:
            _finish(run)
            return Run.DONE
        if follow and not is_eager():
            dispatch.send_on_commit(dispatch.COORDINATE, run_id, countdown=FOLLOW_EVERY)
    return run.state


def _unsettled(run: MigrationRun) -> int:
    total = 0
    for rows, target in touched_rows(run):
        total += rows.filter(
            **{f"{target.col('status')}__in": [Status.PENDING, Status.PROCESSING]}
        ).count()
    return total


def _finish(run: MigrationRun) -> None:
    report = migration_report(run_id=run.pk, final=True)
    with transaction.atomic():
        locked = MigrationRun.objects.select_for_update().get(pk=run.pk)
        if locked.report.get("final"):
            return
        now = timezone.now()
        report.duration = (now - locked.created).total_seconds()
        data = report.to_dict()
        data["final"] = True
        MigrationRun.objects.filter(pk=run.pk).update(state=Run.DONE, report=data, finished_at=now)
    logger.info("migration run %s: done", run.pk)
