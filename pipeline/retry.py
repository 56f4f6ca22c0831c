"""How the pipeline's tasks retry transient errors: one policy for every queue.

Exponential backoff with full jitter, capped (``RETRY_BACKOFF_MAX``) below the broker's
visibility timeout, for at most ``MAX_RETRIES`` attempts. Kept apart from the task
modules so that each of them can use it without importing the others.
"""

from __future__ import annotations

import random
from typing import NoReturn

from celery import Task

from pipeline.conf import pipeline_settings
from pipeline.errors import TransientError


def backoff(retries: int) -> float:
    """Seconds before the next attempt, after ``retries`` failed ones."""
    cap = pipeline_settings()["RETRY_BACKOFF_MAX"]
    return random.uniform(0, min(cap, 2 ** (retries + 1)))


def retries_exhausted(task: Task) -> bool:
    return task.request.retries >= pipeline_settings()["MAX_RETRIES"]


def retry_later(task: Task, error: TransientError) -> NoReturn:
    """Called while handling a transient ``error``: schedule a retry after the backoff,
    or re-raise the error once the retries are used up."""
    if retries_exhausted(task):
        raise error
    raise task.retry(exc=error, countdown=backoff(task.request.retries)) from error
