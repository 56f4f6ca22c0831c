"""Celery tasks of the bulk migration (routed to the ``migration`` queue): ids in, one
service call each, transient errors retried with backoff.

Every task is idempotent: a chunk records its outcomes with conditional updates and is
marked done last, so ``acks_late`` redelivery after a killed worker simply runs it again.
Nobody reads their results.
"""

from __future__ import annotations

from celery import Task, shared_task

from pipeline.bulk.chunks import migration_run_chunk
from pipeline.bulk.coordinator import migration_coordinate, migration_sweep
from pipeline.bulk.runs import migration_start
from pipeline.errors import TransientError
from pipeline.retry import retry_within_window

# Wire names keep the package's old name: messages queued before an upgrade carry them.


@shared_task(
    bind=True, name="pipeline.migration.tasks.run_chunk", max_retries=None, ignore_result=True
)
def run_chunk(self: Task, chunk_id: int, retrying_since: float | None = None) -> None:
    """Upload, re-link and import one chunk, then top the queue up again."""
    try:
        migration_run_chunk(chunk_id=chunk_id)
    except TransientError as e:
        # After the retry window the chunk stays queued; the sweep publishes it again.
        retry_within_window(self, e)


@shared_task(name="pipeline.migration.tasks.coordinate", ignore_result=True)
def coordinate(run_id: int) -> None:
    """Fill the queue with chunk tasks, or follow a processing run until it is done."""
    migration_coordinate(run_id=run_id)


@shared_task(name="pipeline.migration.tasks.sweep_runs", ignore_result=True)
def sweep_runs() -> None:
    """Periodic (beat): publish lost chunks again and finish runs whose work is over."""
    migration_sweep()


@shared_task(
    name="pipeline.migration.tasks.start_run",
    ignore_result=True,
    # A scan of a large tree is long: acknowledged on receipt, so that it is never
    # redelivered to a second worker while it runs (a lost scan is resumed by re-running
    # the command), and not bound by the short limits of the other tasks.
    acks_late=False,
    soft_time_limit=24 * 3600,
    time_limit=24 * 3600 + 60,
)
def start_run(run_id: int) -> None:
    """Scan, plan and fan out a run created with ``--detach``."""
    migration_start(run_id=run_id)
