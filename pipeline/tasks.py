"""Celery tasks: ids in, one service call, retries for transient errors only.

Every task here is idempotent (deterministic keys, conditional row updates), which is
what makes ``acks_late`` + ``reject_on_worker_lost`` (settings) safe: a task whose worker
died is simply run again.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from pipeline import services
from pipeline.cdn import tasks as cdn_tasks  # noqa: F401  (registers the CDN tasks)
from pipeline.errors import TransientError
from pipeline.migration import tasks as migration_tasks  # noqa: F401  (registers them)
from pipeline.retry import retries_exhausted, retry_later


@shared_task(bind=True, name="pipeline.tasks.process_media", max_retries=None, ignore_result=True)
def process_media(self: Task, model_label: str, pk: Any, field_name: str, revision: int) -> str:
    """Render one row's managed image (CPU queue). The outcome is recorded on the row
    (status, error, timings): a result row per image would only duplicate it, a million
    of them for a million-file migration."""
    try:
        return services.media_process(
            model_label=model_label, pk=pk, field_name=field_name, revision=revision
        )
    except TransientError as e:
        if retries_exhausted(self):
            services.media_give_up(
                model_label=model_label,
                pk=pk,
                field_name=field_name,
                revision=revision,
                reason=str(e),
            )
            return "failed"
        retry_later(self, e)


@shared_task(bind=True, name="pipeline.tasks.delete_objects", max_retries=None, ignore_result=True)
def delete_objects(self: Task, keys: list[str], original: str = "") -> None:
    """Delete public objects of a deleted row or a superseded render (transfer queue)."""
    try:
        services.media_delete_objects(keys=keys, original=original)
    except TransientError as e:
        retry_later(self, e)


@shared_task(name="pipeline.tasks.sweep_stale_media")
def sweep_stale_media() -> int:
    """Periodic (beat): re-enqueue rows stuck pending or processing."""
    return services.media_sweep_stale()


@shared_task(name="pipeline.tasks.check_storage")
def check_storage(key: str) -> dict[str, object]:
    """Write, read back and describe a small probe object in the public bucket (ops check)."""
    return services.storage_check(key=key)
