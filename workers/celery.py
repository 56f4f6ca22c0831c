"""The project's one Celery app, configured from Django settings (``CELERY_`` namespace),
with the queues, routes and beat schedule the pipeline app provides
(``pipeline.celery_config()``: ``pipeline/celery.py`` explains the queues).
"""

from __future__ import annotations

import logging
import os

from celery import Celery

import pipeline

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

logger = logging.getLogger("workers")

app = Celery("workers")
app.config_from_object("django.conf:settings", namespace="CELERY")
# "cpu" is also the default queue: the project's own tasks (ping) need no fifth queue.
app.conf.update(pipeline.celery_config(default_queue="cpu"))
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _say_where_tasks_run(sender: Celery, **kwargs: object) -> None:
    if sender.conf.task_always_eager:
        logger.info("No REDIS_URL: Celery tasks run in-process (set REDIS_URL to use workers)")


@app.task(name="workers.ping", ignore_result=False)
def ping() -> str:
    """Answers "pong"; used by health checks and the test harness."""
    return "pong"
