"""Publishing work: tasks by name, after the transaction commits.

Services hand work to the workers through this module alone, so nothing below a task
imports a task (data flows one way: signal -> task -> service). Tasks are looked up by
name in the current Celery app, which honours ``task_always_eager`` (the embedded mode
runs them in-process) where ``send_task`` would not.

(Celery's ``delay_on_commit`` does the after-commit part, but needs the task object, so
the module publishing would import the tasks, and it lets a broker error escape into the
commit.)

Publishing after commit is at-most-once: a broker that is down when a save commits must
not turn a save that happened into an error page. The failure is logged and the work is
left to the sweeps, which find the rows due and publish them again once the broker is
back (``pipeline.state``, ``pipeline.bulk``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerUnavailable

logger = logging.getLogger(__name__)

PROCESS_MEDIA = "pipeline.tasks.process_media"
DELETE_OBJECTS = "pipeline.tasks.delete_objects"
FLUSH_INVALIDATIONS = "pipeline.cdn.tasks.flush_invalidations"
# The old package name, kept on the wire: messages queued before an upgrade carry it.
RUN_CHUNK = "pipeline.migration.tasks.run_chunk"
COORDINATE = "pipeline.migration.tasks.coordinate"
START_RUN = "pipeline.migration.tasks.start_run"


def send(name: str, *args: Any, countdown: float | None = None) -> bool:
    """Publish one task now; False (logged) when the broker cannot be reached."""
    try:
        current_app.tasks[name].apply_async(args, countdown=countdown)
    except BrokerUnavailable as e:
        logger.error("broker unavailable, %s%r not published (a sweep will): %s", name, args, e)
        return False
    return True


def send_many(name: str, calls: Iterable[tuple[Any, ...]]) -> int:
    """Publish several calls of one task; stops at the first broker failure (the rest
    would fail the same way). Returns how many were published."""
    sent = 0
    for args in calls:
        if not send(name, *args):
            break
        sent += 1
    return sent


def send_on_commit(name: str, *args: Any, countdown: float | None = None) -> None:
    """Publish one task once the current transaction commits (now, outside one)."""
    transaction.on_commit(lambda: send(name, *args, countdown=countdown), robust=True)


def send_many_on_commit(name: str, calls: Iterable[tuple[Any, ...]]) -> None:
    """Publish several calls of one task once the current transaction commits."""
    calls = list(calls)
    if calls:
        transaction.on_commit(lambda: send_many(name, calls), robust=True)
