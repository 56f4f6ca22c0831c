"""The harness itself: a task published after commit runs in the real worker process,
writes to the moto-served bucket over HTTP, and leaves a result row; a rollback publishes
nothing."""

from __future__ import annotations

import os
import uuid

import pytest
from celery.signals import before_task_publish
from django.db import transaction
from django_celery_results.models import TaskResult

from pipeline import tasks
from tests.conftest import wait_for
from tests.services import PUBLIC_BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def published() -> list[str]:
    """Task ids this process publishes to the broker."""
    ids: list[str] = []

    def record(headers: dict, **kwargs: object) -> None:
        ids.append(headers["id"])

    before_task_publish.connect(record, weak=False)
    yield ids
    before_task_publish.disconnect(record)


def test_task_after_commit_runs_in_worker_and_writes_to_s3(
    celery_worker, s3, published, clean_buckets
):
    key = f"checks/{uuid.uuid4().hex}.txt"
    with transaction.atomic():
        transaction.on_commit(lambda: tasks.check_storage.delay(key))
        assert published == [], "published before the commit"

    assert len(published) == 1
    result = wait_for(
        lambda: TaskResult.objects.filter(task_id=published[0], status="SUCCESS").first(),
        what="the worker's result row",
    )
    assert result.worker.startswith("tests-")  # ran in the worker process, not here
    assert '"ok": true' in result.result
    obj = s3.get_object(Bucket=PUBLIC_BUCKET, Key=key)  # over HTTP, from moto
    assert obj["Body"].read() == f"pipeline storage check {key}\n".encode()
    assert obj["ContentType"] == "text/plain"
    assert os.environ["AWS_S3_ENDPOINT_URL"].startswith("http://127.0.0.1:")


def test_rollback_enqueues_nothing(celery_worker, s3, published, clean_buckets):
    key = f"checks/{uuid.uuid4().hex}.txt"
    with pytest.raises(RuntimeError), transaction.atomic():
        transaction.on_commit(lambda: tasks.check_storage.delay(key))
        raise RuntimeError("roll back")
    assert published == []

    # A task published afterwards completes; the rolled-back one never ran.
    later = tasks.check_storage.delay(f"checks/{uuid.uuid4().hex}.txt")
    wait_for(lambda: TaskResult.objects.filter(task_id=later.id, status="SUCCESS").exists())
    assert s3.list_objects_v2(Bucket=PUBLIC_BUCKET, Prefix=key)["KeyCount"] == 0


def test_worker_settings_are_production_shaped():
    from workers import app

    conf = app.conf
    assert conf.task_always_eager is False
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert {q.name for q in conf.task_queues} == {"cpu", "transfer", "cdn", "migration"}
    # Every periodic task exists, and the sweeps that recover from lost messages are there.
    scheduled = {entry["task"] for entry in conf.beat_schedule.values()}
    assert scheduled <= set(app.tasks)
    assert {
        "pipeline.tasks.sweep_stale_media",
        "pipeline.migration.tasks.sweep_runs",
    } <= scheduled
