"""How the pipeline's tasks retry transient errors: one policy for every queue.

Transient trouble (S3 or CloudFront away, throttled, timing out) is retried over a time
window (``RETRY_WINDOW``), not a number of tries: an outage of minutes must not fail work
for good, however often a quick backoff would have tried. The delays are Celery's own
exponential backoff with full jitter (``get_exponential_backoff_interval``, what
``retry_backoff`` uses), capped at ``RETRY_BACKOFF_MAX``. Celery's ``autoretry_for``
counts tries (``max_retries``), and with full jitter a count says nothing about the time
covered; so the window's start travels with the task, as the ``retrying_since`` keyword.
"""

from __future__ import annotations

import time
from typing import NoReturn

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from pipeline.conf import pipeline_settings

SINCE = "retrying_since"


def next_retry(task: Task) -> float | None:
    """Seconds until the next try of ``task``, or None when its window is over (or it
    runs in-process, where Celery would retry at once, in the caller, in a loop)."""
    if task.request.is_eager:
        return None
    conf = pipeline_settings()
    since = (task.request.kwargs or {}).get(SINCE) or time.time()
    if time.time() - since > conf["RETRY_WINDOW"]:
        return None
    return float(
        get_exponential_backoff_interval(
            factor=2,
            retries=task.request.retries,
            maximum=conf["RETRY_BACKOFF_MAX"],
            full_jitter=True,
        )
    )


def retry(task: Task, error: Exception, countdown: float) -> NoReturn:
    """Schedule the retry, carrying the window's start."""
    kwargs = dict(task.request.kwargs or {})
    kwargs.setdefault(SINCE, time.time())
    # No count here: the window is the bound. The tasks are declared max_retries=None
    # (unlimited); None passed to retry() would mean the task's own, Celery's default 3.
    raise task.retry(exc=error, countdown=countdown, kwargs=kwargs) from error


def retry_within_window(task: Task, error: Exception) -> NoReturn:
    """Retry ``task`` after the backoff, or re-raise ``error`` once the window is over."""
    countdown = next_retry(task)
    if countdown is None:
        raise error
    retry(task, error, countdown)
