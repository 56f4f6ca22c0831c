"""The project's one Celery app, configured from Django settings (``CELERY_`` namespace).

Queues are split by the resource a task uses so each can be sized on its own hosts:
``cpu`` renders images (prefork, one process per core), ``transfer`` moves bytes (threads),
``cdn`` talks to CloudFront (concurrency 1, so batches stay batches), ``migration``
coordinates bulk migrations.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

logger = logging.getLogger("workers")

QUEUES = ("cpu", "transfer", "cdn", "migration")

# Routes by task name; anything unrouted lands on the default "cpu" queue.
ROUTES = {
    "pipeline.cdn.tasks.*": {"queue": "cdn"},
    "pipeline.migration.tasks.*": {"queue": "migration"},
    "pipeline.tasks.delete_*": {"queue": "transfer"},
    "pipeline.tasks.*": {"queue": "cpu"},
}

app = Celery("workers")
app.config_from_object("django.conf:settings", namespace="CELERY")
# One direct exchange per queue, so a message routed to a queue lands in that queue only.
app.conf.task_queues = [Queue(name, Exchange(name), routing_key=name) for name in QUEUES]
app.conf.task_routes = ROUTES
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _say_where_tasks_run(sender: Celery, **kwargs: object) -> None:
    if sender.conf.task_always_eager:
        logger.info("No REDIS_URL: Celery tasks run in-process (set REDIS_URL to use workers)")


@app.task(name="workers.ping", ignore_result=False)
def ping() -> str:
    """Answers "pong"; used by health checks and the test harness."""
    return "pong"
