"""Celery tasks: ids in, one service call, retries for transient errors only.

Every task here is idempotent (deterministic keys, conditional row updates), which is
what makes ``acks_late`` + ``reject_on_worker_lost`` (settings) safe: a task whose worker
died is simply run again.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from pipeline import retry, services, storage
from pipeline.bulk import tasks as migration_tasks  # noqa: F401  (registers them)
from pipeline.cdn import tasks as cdn_tasks  # noqa: F401  (registers the CDN tasks)
from pipeline.errors import TransientError

logger = logging.getLogger(__name__)


@worker_process_init.connect(dispatch_uid="pipeline:prepare-storage")
def _prepare_storage(**kwargs: Any) -> None:
    """A worker process makes its S3 clients as it starts, not in its first task: about
    0.2 s of CPU (botocore's service model, the CRT's client) that every process pays once."""
    storage.prepare()


# acks_late + reject_on_worker_lost on the tasks themselves, whatever the project sets:
# a message whose worker died is redelivered at once (the lease and the sweep would
# recover it anyway, minutes later).
@shared_task(
    bind=True,
    name="pipeline.tasks.process_media",
    max_retries=None,
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def process_media(
    self: Task,
    model_label: str,
    pk: Any,
    field_name: str,
    revision: int,
    retrying_since: float | None = None,
) -> str:
    """Render one row's managed image (CPU queue). The outcome is recorded on the row
    (status, error, timings): a result row per image would only duplicate it.

    Every exception ends here, recorded on the row: transient ones are retried within
    the window; time limits and anything unexpected are counted (``MAX_ATTEMPTS``). None
    escapes into a worker's redelivery loop, or into the caller in the embedded mode."""
    row = {
        "model_label": model_label,
        "pk": pk,
        "field_name": field_name,
        "revision": revision,
        "task_id": self.request.id or "",
    }
    try:
        return services.media_process(**row)
    except TransientError as e:
        error, transient, reason = e, True, str(e)
    except SoftTimeLimitExceeded as e:  # counted: an image that is always too slow must end
        error, transient = e, False
        limit = self.soft_time_limit or self.app.conf.task_soft_time_limit
        reason = f"took longer than the soft time limit ({limit} s)"
    except Exception as e:  # the task boundary: a bug must fail the row, not loop
        logger.exception("%s %s rev %s: unexpected error", model_label, pk, revision)
        error, transient = e, False
        reason = f"unexpected error: {type(e).__name__}: {e}"
    retry_in = retry.next_retry(self)
    services.media_attempt_failed(**row, reason=reason, transient=transient, retry_in=retry_in)
    if retry_in is None:
        return "failed"
    retry.retry(self, error, retry_in)


@shared_task(
    bind=True,
    name="pipeline.tasks.delete_objects",
    max_retries=None,
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def delete_objects(self: Task, deletion_id: int, retrying_since: float | None = None) -> None:
    """Carry out one recorded deletion of public objects (transfer queue): a deleted or
    cleared row's, or a superseded render's."""
    try:
        services.media_run_deletion(deletion_id=deletion_id)
    except TransientError as e:
        if self.request.is_eager:  # in-process: the deletion stays recorded for the sweep
            logger.error("deletion %s postponed: %s", deletion_id, e)
            return
        retry.retry_within_window(self, e)


@shared_task(name="pipeline.tasks.sweep_stale_media", ignore_result=True)
def sweep_stale_media() -> int:
    """Periodic (beat, every minute): publish again the rows whose deadline passed."""
    return services.media_sweep()


@shared_task(name="pipeline.tasks.check_storage")
def check_storage(key: str) -> dict[str, object]:
    """Write, read back and describe a small probe object in the public bucket (ops check)."""
    return services.storage_check(key=key)
