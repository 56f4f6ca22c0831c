"""The pipeline's Celery configuration, for the project's Celery app to take in one call.

    app = Celery("mysite")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(pipeline.celery_config())

Queues are split by the resource a task uses, so each can be sized on its own hosts:
``cpu`` renders images (prefork, one process per core), ``transfer`` moves bytes
(threads), ``cdn`` talks to CloudFront (concurrency 1, so batches stay batches),
``migration`` coordinates bulk migrations.

Nothing here reads Django settings when the config is built: a project's ``celery.py``
runs while its settings module is still being imported (``mysite/__init__.py`` imports
it). The CDN's beat periods, which ``PIPELINE["CDN"]`` holds, are read when beat asks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import BaseSchedule, schedule
from kombu import Exchange, Queue

QUEUES = ("cpu", "transfer", "cdn", "migration")

# Routes by task name, first match wins.
ROUTES: dict[str, dict[str, str]] = {
    "pipeline.cdn.tasks.*": {"queue": "cdn"},
    # pipeline.bulk's tasks, by the wire names they kept (queued messages carry them).
    "pipeline.migration.tasks.*": {"queue": "migration"},
    "pipeline.tasks.delete_*": {"queue": "transfer"},
    # Not behind a backlog of renders: the sweep is what recovers lost work.
    "pipeline.tasks.sweep_*": {"queue": "transfer"},
    "pipeline.tasks.*": {"queue": "cpu"},
}

# The periodic tasks the pipeline needs (``manage.py check`` warns when one is missing).
SWEEP_STALE_MEDIA = "pipeline.tasks.sweep_stale_media"
SWEEP_RUNS = "pipeline.migration.tasks.sweep_runs"
FLUSH_INVALIDATIONS = "pipeline.cdn.tasks.flush_invalidations"
POLL_INVALIDATIONS = "pipeline.cdn.tasks.poll_invalidations"
PERIODIC_TASKS = (SWEEP_STALE_MEDIA, SWEEP_RUNS, FLUSH_INVALIDATIONS, POLL_INVALIDATIONS)


class CDNInterval(schedule):
    """Every ``PIPELINE["CDN"][key]`` seconds, read from the settings each time beat asks.

    A plain number would have to be read when ``celery.py`` builds its config, while the
    settings are still loading; this also follows ``override_settings``."""

    def __init__(self, key: str, nowfun: Any = None, app: Any = None) -> None:
        self.key = key
        self.relative = False
        # Not schedule.__init__: run_every is the property below, not a stored value.
        BaseSchedule.__init__(self, nowfun=nowfun, app=app)

    @property
    def run_every(self) -> timedelta:  # type: ignore[override]
        from pipeline.conf import pipeline_settings

        return timedelta(seconds=pipeline_settings()["CDN"][self.key])

    def __reduce__(self) -> tuple[type, tuple[str]]:  # type: ignore[override]
        # Beat's schedule file pickles entries: keep the key, not today's value.
        return self.__class__, (self.key,)

    def __repr__(self) -> str:
        return f"<CDNInterval: PIPELINE['CDN'][{self.key!r}]>"


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The pipeline's periodic tasks, as ``beat_schedule`` entries."""
    return {
        # Rows whose deadline passed (lost message, dead worker, transient failure) are
        # published again; with the default LEASE and STALE_AFTER, within 5 minutes.
        # (A sweep not started within its period is dropped: the next one does its work.)
        "sweep-stale-media": {
            "task": SWEEP_STALE_MEDIA,
            "schedule": 60.0,
            "options": {"expires": 55.0},
        },
        # Chunks of unfinished migration runs whose messages were lost are published again.
        "sweep-migration-runs": {"task": SWEEP_RUNS, "schedule": 300.0},
        "flush-invalidations": {
            "task": FLUSH_INVALIDATIONS,
            "schedule": CDNInterval("FLUSH_INTERVAL"),
        },
        "poll-invalidations": {
            "task": POLL_INVALIDATIONS,
            "schedule": CDNInterval("POLL_INTERVAL"),
        },
    }


def celery_config(*, default_queue: str = "celery") -> dict[str, Any]:
    """``task_queues``, ``task_routes``, ``task_default_queue`` and ``beat_schedule`` for
    ``app.conf.update(...)``; a new dict on each call, for the caller to extend.

    ``update`` replaces these keys: add your own routes and periodic tasks to the dict
    (``config["beat_schedule"]["nightly"] = {...}``) rather than to ``CELERY_TASK_ROUTES``
    or ``CELERY_BEAT_SCHEDULE`` (``manage.py check`` warns about entries it would lose).

    ``default_queue``: where your own unrouted tasks go (Celery's default, ``celery``).
    It is listed in ``task_queues``, so a worker started without ``-Q`` consumes every
    queue; pass one of ``QUEUES`` to add none.
    """
    names = [*QUEUES, *([] if default_queue in QUEUES else [default_queue])]
    return {
        # One direct exchange per queue: a message routed to a queue lands there only.
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in names],
        "task_default_queue": default_queue,
        "task_routes": dict(ROUTES),
        "beat_schedule": beat_schedule(),
    }
