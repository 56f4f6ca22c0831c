"""Thin Celery tasks of the CDN service: no arguments, one service call, retries.

Routed to the ``cdn`` queue (``pipeline/celery.py``) and scheduled by beat. Both are
idempotent: a redelivered or concurrent run finds nothing to claim twice. Only
``CDNUnavailable`` is retried (including ``FlushDeferred`` for a batch refused fewer than
``MAX_REFUSALS`` times); the batch itself remembers its backoff, so a retry that arrives
early finds it not yet due and returns.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from pipeline.cdn.batching import backoff_delay
from pipeline.cdn.services import (
    BACKOFF_BASE,
    FlushDeferred,
    invalidations_flush,
    invalidations_poll,
)
from pipeline.conf import pipeline_settings
from pipeline.errors import CDNUnavailable


def _retry(task: Task, error: CDNUnavailable) -> Any:
    conf = pipeline_settings()
    if isinstance(error, FlushDeferred):
        countdown = error.retry_after
    else:
        countdown = backoff_delay(
            task.request.retries + 1,
            base=BACKOFF_BASE,
            cap=float(conf["RETRY_BACKOFF_MAX"]),
        )
    return task.retry(exc=error, countdown=countdown, max_retries=conf["MAX_RETRIES"])


@shared_task(
    bind=True,
    name="pipeline.cdn.tasks.flush_invalidations",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def flush_invalidations(self: Task) -> None:
    """Send pending paths in batches (periodic, and early when the backlog is large)."""
    try:
        invalidations_flush()
    except CDNUnavailable as e:
        raise _retry(self, e) from e


@shared_task(
    bind=True,
    name="pipeline.cdn.tasks.poll_invalidations",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def poll_invalidations(self: Task) -> None:
    """Record which invalidations in progress have completed."""
    try:
        invalidations_poll()
    except CDNUnavailable as e:
        raise _retry(self, e) from e
