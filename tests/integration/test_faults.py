"""Faults injected for real, against the real worker, Redis and S3 over HTTP (issue 10).

S3 is cut or hung by the TCP proxy between the worker and moto_server; workers are
SIGKILLed; the broker loses its queue and every connection. Afterwards every row is
checked against the buckets: ready, public objects exactly its manifest, its original
still there byte for byte. Slow on purpose: the outage lasts as long as the issue says.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.core.files.base import ContentFile

from demo.models import Photo
from pipeline import services
from pipeline.fields import Status
from tests.conftest import kill_worker, replace_worker, wait_for
from tests.integration.test_pipeline import LARGE, MEDIUM, SMALL
from tests.integration.test_row_state import assert_exactly_the_manifest
from tests.services import PRIMARY_BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SOURCES = [SMALL, MEDIUM, LARGE]


def make_rows(count: int, label: str) -> tuple[list[Photo], dict[int, bytes]]:
    """Rows saved as users save them, each with its own original (distinct bytes)."""
    photos, originals = [], {}
    for i in range(count):
        data = SOURCES[i % len(SOURCES)].read_bytes() + f"{label}-{i}".encode()  # after EOI
        photo = Photo(title=f"{label} {i}")
        photo.image.save(f"{label}-{i}.jpg", ContentFile(data), save=True)
        photos.append(photo)
        originals[photo.pk] = data
    return photos, originals


def statuses(photos: list[Photo]) -> dict[str, int]:
    found: dict[str, int] = {}
    for status in Photo.objects.filter(pk__in=[p.pk for p in photos]).values_list(
        "image_status", flat=True
    ):
        found[status] = found.get(status, 0) + 1
    return found


def hold(seconds: float, photos: list[Photo]) -> None:
    """Let the fault last; no row may fail meanwhile (a brief outage is not bad input)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert Status.FAILED not in statuses(photos), [
            (p.image_error) for p in Photo.objects.filter(pk__in=[p.pk for p in photos])
        ]
        time.sleep(5)


def converge(
    s3: Any,
    photos: list[Photo],
    originals: dict[int, bytes],
    *,
    timeout: float = 240,
    between: Callable[[], object] = lambda: None,
) -> None:
    """Every row ends ready with exactly its outputs, and no original was lost. ``between``
    runs while waiting (the beat's sweep, in the tests that need it)."""

    def all_ready() -> bool:
        between()
        return statuses(photos) == {Status.READY: len(photos)}

    try:
        wait_for(all_ready, timeout=timeout, what=f"{len(photos)} rows to be ready")
    except pytest.fail.Exception:
        rows = Photo.objects.filter(pk__in=[p.pk for p in photos]).values_list(
            "pk", "image_status", "image_attempts", "image_due_at", "image_error"
        )
        pytest.fail("rows not ready:\n" + "\n".join(map(str, rows)))
    for photo in photos:
        assert_exactly_the_manifest(s3, photo)
        name = Photo.objects.get(pk=photo.pk).image.name
        body = s3.get_object(Bucket=PRIMARY_BUCKET, Key=name)["Body"].read()
        assert body == originals[photo.pk]


def sweep_every(seconds: float) -> Callable[[], object]:
    """What beat does: the sweep, at most every ``seconds``."""
    last = [0.0]

    def tick() -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            services.media_sweep()

    return tick


def test_s3_unreachable_for_150_seconds_fails_no_row(celery_worker, s3_proxy, s3, clean_buckets):
    s3_proxy.stop()  # connection refused, for the worker only
    try:
        photos, originals = make_rows(8, "refused")
        hold(150, photos)
        assert statuses(photos).get(Status.PENDING), "the rows should be waiting for a retry"
    finally:
        s3_proxy.start()
    converge(s3, photos, originals)
    assert all(p.image_attempts <= 1 for p in Photo.objects.filter(pk__in=[p.pk for p in photos]))


def test_s3_that_accepts_and_never_answers_fails_no_row(celery_worker, s3_proxy, s3, clean_buckets):
    s3_proxy.hang()  # every request times out (read timeout 3 s in the tests)
    try:
        photos, originals = make_rows(6, "hung")
        hold(60, photos)
    finally:
        s3_proxy.resume()
    converge(s3, photos, originals)


def test_a_whole_worker_killed_mid_render_is_taken_over(celery_worker, s3_proxy, s3, clean_buckets):
    photos, originals = make_rows(4, "orphaned")
    wait_for(lambda: statuses(photos).get(Status.PROCESSING), what="the worker to claim a row")
    kill_worker(celery_worker)  # its messages stay unacknowledged until the visibility timeout
    assert statuses(photos).get(Status.READY, 0) < len(photos)

    replace_worker(celery_worker, s3_endpoint=s3_proxy.url)
    converge(s3, photos, originals, between=sweep_every(2))


def test_the_broker_losing_its_queue_and_connections_loses_no_row(celery_worker, s3, clean_buckets):
    photos, originals = make_rows(6, "flushed")
    wait_for(lambda: statuses(photos).get(Status.PROCESSING), what="a render to start")
    # What a restart of a Redis that keeps nothing on disk does to its clients: every
    # queued message gone, every connection dropped.
    broker = redis.Redis.from_url(os.environ["REDIS_URL"])
    broker.flushdb()
    broker.client_kill_filter(_type="normal", skipme=True)

    converge(s3, photos, originals, between=sweep_every(2))
