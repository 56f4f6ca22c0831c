"""Django media pipeline: optimized originals and modern-format variants in two buckets.

This package's ``__init__`` imports nothing from Django so that the pure modules
(``pipeline.imaging``, ``pipeline.naming``, ``pipeline.errors``) stay importable anywhere.
"""

from __future__ import annotations

from typing import Any


def celery_config(*, default_queue: str = "celery") -> dict[str, Any]:
    """The pipeline's queues, routes and beat schedule for ``app.conf.update(...)``
    (see ``pipeline.celery.celery_config``)."""
    # Imported here: Celery (kombu) is not needed to import the pure modules.
    from pipeline.celery import celery_config as build

    return build(default_queue=default_queue)
