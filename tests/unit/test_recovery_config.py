"""What the defaults promise (issue 10): lost work runs again within five minutes,
transient trouble is retried for at least thirty, nothing waits on S3 for ever, every
task goes to its queue, and a field naming an unknown profile fails the checks."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import models
from django.test.utils import isolate_apps

from pipeline.checks import check_field_profiles
from pipeline.conf import DEFAULTS
from pipeline.fields import MediaImageField
from workers import app


def test_lost_work_runs_again_within_five_minutes_with_the_defaults():
    sweep = app.conf.beat_schedule["sweep-stale-media"]["schedule"]
    assert sweep <= 60
    assert DEFAULTS["LEASE"] + sweep <= 300  # a whole worker killed mid-render
    assert DEFAULTS["STALE_AFTER"] + sweep <= 300  # a message lost with the broker
    # A whole task fits in the lease: a live worker is never taken for dead.
    assert DEFAULTS["LEASE"] >= app.conf.task_soft_time_limit


def test_transient_trouble_is_retried_for_a_window_not_a_count():
    assert DEFAULTS["RETRY_WINDOW"] >= 30 * 60
    assert (
        DEFAULTS["RETRY_BACKOFF_MAX"] * 2 < app.conf.broker_transport_options["visibility_timeout"]
    )


def test_every_s3_call_has_connect_and_read_timeouts():
    for alias in ("primary", "public"):
        options = settings.STORAGES[alias]["OPTIONS"]
        if "client_config" not in options:
            pytest.skip("folder buckets: no network")
        config = options["client_config"]
        assert 0 < config.connect_timeout <= 10 and 0 < config.read_timeout <= 60


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("pipeline.tasks.process_media", "cpu"),
        ("pipeline.tasks.sweep_stale_media", "transfer"),
        ("pipeline.tasks.delete_objects", "transfer"),
        ("pipeline.cdn.tasks.flush_invalidations", "cdn"),
        ("pipeline.cdn.tasks.poll_invalidations", "cdn"),
        ("pipeline.migration.tasks.run_chunk", "migration"),
        ("pipeline.migration.tasks.coordinate", "migration"),
        ("pipeline.migration.tasks.sweep_runs", "migration"),
    ],
)
def test_each_task_is_routed_to_its_queue_by_the_router(task, queue):
    assert task in app.tasks
    assert app.amqp.router.route({}, task)["queue"].name == queue


def test_a_field_with_an_unknown_profile_fails_the_checks():
    with isolate_apps("demo") as registry:

        class Typo(models.Model):  # noqa: DJ008
            image = MediaImageField(profile="prodcut")

            class Meta:
                app_label = "demo"

        class Fine(models.Model):  # noqa: DJ008
            image = MediaImageField(profile="product")

            class Meta:
                app_label = "demo"

        errors = check_field_profiles(app_configs=[registry.get_app_config("demo")])
    assert [e.id for e in errors] == ["pipeline.E001"]
    assert "demo.Typo.image" in errors[0].msg and "'prodcut'" in errors[0].msg
    assert "product" in errors[0].hint


@pytest.mark.parametrize(
    "task",
    [
        "pipeline.tasks.process_media",
        "pipeline.tasks.delete_objects",
        "pipeline.migration.tasks.run_chunk",
    ],
)
def test_tasks_retried_within_a_window_have_no_retry_count(task):
    """Celery reads retry(max_retries=None) as "the task's own", 3 by default: a fourth
    retry during an outage would re-raise and strand the row. The window is the bound."""
    assert app.tasks[task].max_retries is None


@pytest.mark.parametrize("task", ["pipeline.tasks.process_media", "pipeline.tasks.delete_objects"])
def test_row_tasks_are_acknowledged_late_whatever_the_project_sets(task):
    assert app.tasks[task].acks_late and app.tasks[task].reject_on_worker_lost
