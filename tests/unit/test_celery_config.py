"""``pipeline.celery_config()``: the app's queues, routes and beat schedule in one call, so
a project copies no internals (issue 11); the project's own app uses it too."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from datetime import timedelta

import pytest
from celery import Celery

import pipeline
from pipeline.celery import PERIODIC_TASKS, QUEUES, CDNInterval
from tests.services import REPO
from workers import app as project_app


def test_a_new_app_gets_the_queues_routes_and_beat_schedule():
    app = Celery("mysite", set_as_current=False, fixups=[])
    app.conf.update(pipeline.celery_config())
    # The pipeline's queues, plus Celery's default for the project's own tasks, so that
    # one worker started without -Q consumes everything.
    assert [q.name for q in app.conf.task_queues] == [*QUEUES, "celery"]
    assert app.conf.task_default_queue == "celery"
    route = app.amqp.router.route
    assert route({}, "pipeline.tasks.process_media")["queue"].name == "cpu"
    assert route({}, "pipeline.tasks.delete_objects")["queue"].name == "transfer"
    assert route({}, "pipeline.cdn.tasks.flush_invalidations")["queue"].name == "cdn"
    assert route({}, "pipeline.migration.tasks.run_chunk")["queue"].name == "migration"
    assert route({}, "shop.tasks.report")["queue"].name == "celery"
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert scheduled == set(PERIODIC_TASKS)
    assert app.conf.beat_schedule["sweep-stale-media"]["schedule"] == 60


def test_the_default_queue_can_be_one_of_the_pipelines():
    config = pipeline.celery_config(default_queue="cpu")
    assert [q.name for q in config["task_queues"]] == list(QUEUES)
    assert config["task_default_queue"] == "cpu"


def test_each_call_is_a_new_dict_to_extend():
    config = pipeline.celery_config()
    config["beat_schedule"]["nightly"] = {"task": "shop.tasks.report", "schedule": 86400}
    config["task_routes"]["shop.tasks.*"] = {"queue": "shop"}
    again = pipeline.celery_config()
    assert "nightly" not in again["beat_schedule"]
    assert "shop.tasks.*" not in again["task_routes"]


def test_the_project_app_is_configured_by_it():
    """One source of truth: the project's app has exactly what the app provides."""
    config = pipeline.celery_config(default_queue="cpu")
    assert [q.name for q in project_app.conf.task_queues] == list(QUEUES)
    assert project_app.conf.task_routes == config["task_routes"]
    assert project_app.conf.beat_schedule.keys() == config["beat_schedule"].keys()


def test_cdn_beat_periods_follow_the_pipeline_settings(settings):
    schedule = pipeline.celery_config()["beat_schedule"]
    flush, poll = schedule["flush-invalidations"], schedule["poll-invalidations"]
    assert flush["schedule"].run_every == timedelta(seconds=60)  # the defaults
    assert poll["schedule"].run_every == timedelta(seconds=120)
    settings.PIPELINE = {
        **settings.PIPELINE,
        "CDN": {**settings.PIPELINE.get("CDN", {}), "FLUSH_INTERVAL": 15, "POLL_INTERVAL": 45},
    }
    assert flush["schedule"].seconds == 15 and poll["schedule"].seconds == 45
    # Beat's schedule file keeps the setting, not the value of the day.
    copy = pickle.loads(pickle.dumps(flush["schedule"]))
    assert isinstance(copy, CDNInterval) and copy.key == "FLUSH_INTERVAL"
    settings.PIPELINE = {**settings.PIPELINE, "CDN": {"FLUSH_INTERVAL": 30}}
    assert copy.seconds == 30


@pytest.mark.timeout(60)
def test_building_it_reads_no_django_settings():
    """A project's celery.py calls it while its settings module is being imported."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import pipeline, sys; config = pipeline.celery_config(); "
        "assert 'django.conf' not in sys.modules or "
        "not sys.modules['django.conf'].settings.configured; print(sorted(config))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "beat_schedule" in done.stdout
