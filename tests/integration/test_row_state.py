"""The state contract (issue 10): ordinary Django use never leaves a row wrong, stuck or
littered. Real worker, real Redis, S3 over HTTP; every row checked against the bucket.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.template import Context, Template
from django.test import override_settings
from django.utils import timezone
from PIL import Image

from demo.models import FeaturedPhoto, Photo
from pipeline import services, state, storage
from pipeline.fields import Status
from pipeline.models import CDNPendingPath, PendingDeletion
from tests.conftest import database_url_for_worker, wait_for
from tests.integration.test_pipeline import (
    LARGE,
    MEDIUM,
    SMALL,
    assert_outputs_in_bucket,
    new_photo,
    public_keys_of,
    settled,
)
from tests.services import PRIMARY_BUCKET, REPO

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def drawn_jpeg(width: int, height: int, colour: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def unpublished_pending_row(name: str, data: bytes) -> tuple[Photo, int]:
    """A pending row no message was published for (bulk_create sends no signal), so the
    test alone drives it; its original is in the primary bucket."""
    storage.write(storage.primary(), name, data, content_type="image/jpeg")
    photo = Photo.objects.bulk_create([Photo(title=name, image=name)])[0]
    target = state.Target.of("demo.Photo", "image")
    return photo, state.mark_pending(target, [photo.pk])[photo.pk]


def run_without_broker(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in ``manage.py shell`` in a process whose broker is unreachable; it
    must succeed, and say that it could not publish."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_worker(),
        "REDIS_URL": "redis://127.0.0.1:9/0",  # nothing listens on port 9
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "broker unavailable" in done.stderr
    return done


def fresh(photo: Photo) -> Photo:
    return Photo.objects.get(pk=photo.pk)


def quiet_bucket(s3: Any, photo: Photo, expected: set[str]) -> None:
    """The row's public objects reach ``expected`` and stay there (deletes are tasks)."""
    wait_for(lambda: public_keys_of(s3, photo) == expected, what="the public objects to settle")
    time.sleep(2)
    assert public_keys_of(s3, photo) == expected


def assert_exactly_the_manifest(s3: Any, photo: Photo) -> None:
    """Ready, and (once the deletes of what it replaced are done: they are tasks) the
    public objects are exactly those the manifest lists, each as described."""
    row = fresh(photo)
    assert row.image_status == Status.READY, row.image_error
    assert row.image_source == row.image.name
    quiet_bucket(s3, row, services.manifest_keys(row.image_manifest))
    assert_outputs_in_bucket(s3, row)


# --- Saves never overwrite the pipeline's state ------------------------------------------


def test_saving_the_instance_that_uploaded_keeps_the_finished_state(celery_worker, s3):
    photo = new_photo("Owl", SMALL.read_bytes())
    ready = settled(photo)
    assert ready.image_status == Status.READY
    # The instance is stale in memory (what the save started, or the claim right after).
    assert photo.image_status in (Status.PENDING, Status.PROCESSING)

    photo.title = "Renamed"
    photo.save()

    row = fresh(photo)
    assert row.title == "Renamed"
    assert row.image_status == Status.READY and row.image_revision == ready.image_revision
    assert row.image_manifest == ready.image_manifest
    assert_exactly_the_manifest(s3, photo)


def test_an_edit_through_an_instance_loaded_while_processing_keeps_the_state(celery_worker, s3):
    photo = new_photo("Big", LARGE.read_bytes())
    wait_for(lambda: fresh(photo).image_status == Status.PROCESSING, what="the claim")
    loaded_while_processing = fresh(photo)
    settled(photo)

    loaded_while_processing.title = "Edited"
    loaded_while_processing.save()

    row = fresh(photo)
    assert row.title == "Edited" and row.image_status == Status.READY
    assert_exactly_the_manifest(s3, photo)


def test_image_b_saved_through_the_instance_that_saved_a_leaves_no_orphans(celery_worker, s3):
    photo = new_photo("A", SMALL.read_bytes(), "a.jpg")
    first = settled(photo)
    a_keys = services.manifest_keys(first.image_manifest)

    photo.image.save("b.jpg", ContentFile(MEDIUM.read_bytes()), save=True)

    row = settled(photo)
    assert row.image.name.startswith("photos/b-")
    assert row.image_revision == first.image_revision + 1
    assert_exactly_the_manifest(s3, photo)
    assert not a_keys & public_keys_of(s3, photo)


def test_a_stale_instance_writing_an_old_file_back_converges_to_that_file(celery_worker, s3):
    stale = new_photo("Stale", SMALL.read_bytes(), "old.jpg")
    settled(stale)
    stale = fresh(stale)  # loaded while the row holds old.jpg
    other = fresh(stale)
    other.image.save("new.jpg", ContentFile(MEDIUM.read_bytes()), save=True)
    newer = settled(other)
    assert newer.image.name.startswith("photos/new-")

    stale.title = "written back"
    stale.save()  # writes old.jpg back: the user's column, the user's choice

    wait_for(lambda: fresh(stale).image_revision > newer.image_revision, what="a new revision")
    row = settled(stale)
    assert row.image.name.startswith("photos/old-")
    assert row.image_manifest["source"] == row.image.name
    assert_exactly_the_manifest(s3, stale)


def test_a_copy_made_with_pk_none_starts_its_own_state(celery_worker, s3):
    original = settled(new_photo("Original", SMALL.read_bytes()))
    copy = fresh(original)
    copy.pk = None
    copy.title = "Copy"
    copy.save()

    # Never the other row's objects (the copy may be rendered already, in its own folder).
    theirs = services.manifest_keys(original.image_manifest)
    assert not services.manifest_keys(fresh(copy).image_manifest) & theirs
    copied = settled(copy)
    assert_exactly_the_manifest(s3, copied)
    assert_exactly_the_manifest(s3, original)  # nothing of the original's was deleted


# --- Deletes remove everything public ----------------------------------------------------


def test_deleting_through_an_instance_loaded_before_processing_removes_every_object(
    celery_worker, s3
):
    photo = new_photo("Gone", SMALL.read_bytes())  # in memory: pending, no manifest
    ready = settled(photo)
    assert public_keys_of(s3, ready)

    pk = photo.pk
    photo.delete()
    photo.pk = pk
    quiet_bucket(s3, photo, set())


def test_deleting_while_processing_removes_the_outputs_written_after_the_delete(celery_worker, s3):
    photos = [new_photo(f"Busy {i}", LARGE.read_bytes(), f"busy-{i}.jpg") for i in range(3)]
    wait_for(lambda: fresh(photos[0]).image_status == Status.PROCESSING, what="a render to start")
    for photo in photos:
        pk = photo.pk
        photo.delete()
        photo.pk = pk
    # The render in flight finished after the delete, found no row and discarded what it
    # had written (its worker says so), and nothing of any row is left.
    wait_for(
        lambda: f"demo.Photo {photos[0].pk}: superseded while processing" in celery_worker.log(),
        what="the render in flight to finish",
    )
    for photo in photos:
        quiet_bucket(s3, photo, set())


def test_clearing_the_image_removes_its_public_objects(celery_worker, s3):
    photo = settled(new_photo("Clear", SMALL.read_bytes()))
    photo.image = None
    photo.save()

    row = fresh(photo)
    assert row.image_status == Status.EMPTY and row.image_manifest == {}
    quiet_bucket(s3, photo, set())


def test_a_shared_original_is_deleted_only_with_its_last_row(celery_worker, s3):
    data = SMALL.read_bytes()
    first, second = new_photo("One", data, "same.jpg"), new_photo("Two", data, "same.jpg")
    assert first.image.name == second.image.name  # content-addressed: one object
    name = first.image.name
    settled(first), settled(second)

    def original_exists() -> bool:
        return bool(s3.list_objects_v2(Bucket=PRIMARY_BUCKET, Prefix=name).get("KeyCount"))

    with override_settings(PIPELINE={"DELETE_ORIGINALS": True}):
        first.delete()
        quiet_bucket(s3, first, set())
        assert original_exists(), "the other row's original was deleted"
        second.delete()
        wait_for(lambda: not original_exists(), what="the last row's original to go")


# --- Proxies, checks, rendering ----------------------------------------------------------


def test_a_row_saved_through_a_proxy_model_is_processed(celery_worker, s3):
    featured = FeaturedPhoto(title="Proxy")
    featured.image.save("proxy.jpg", ContentFile(SMALL.read_bytes()), save=True)

    row = settled(Photo.objects.get(pk=featured.pk))
    assert_exactly_the_manifest(s3, row)
    labels = [t.label for t in state.managed_targets()]
    assert labels.count("demo.Photo") == 1 and "demo.FeaturedPhoto" not in labels


def test_a_ready_image_narrower_than_every_width_is_shown_at_its_own_width(celery_worker, s3):
    photo = settled(new_photo("Icon", drawn_jpeg(200, 150), "icon.jpg"))
    assert photo.image_status == Status.READY
    variants = photo.image_manifest["variants"]
    assert {v["width"] for v in variants} == {200}  # every format, at the image's own width
    assert {"avif", "webp"} <= {v["format"] for v in variants}

    html = Template('{% load pipeline %}{% picture photo.image alt="icon" %}').render(
        Context({"photo": photo})
    )
    avif = next(v for v in variants if v["format"] == "avif")
    assert '<source type="image/avif"' in html and f"{avif['url']} 200w" in html
    assert "data:image" not in html


def test_reprocessing_an_unchanged_image_pays_no_invalidation(celery_worker, s3):
    photo = settled(new_photo("Same", SMALL.read_bytes()))
    identity = f"demo.photo-{photo.pk}/"
    CDNPendingPath.objects.filter(path__contains=identity).delete()

    services.media_reprocess(model_label="demo.Photo", field_name="image", pks=[photo.pk])
    wait_for(
        lambda: (
            fresh(photo).image_revision == photo.image_revision + 1
            and fresh(photo).image_status == Status.READY
        ),
        what="the re-render",
    )
    assert not CDNPendingPath.objects.filter(path__contains=identity).exists()
    assert_exactly_the_manifest(s3, photo)


# --- Every row ends ready or failed, in bounded time --------------------------------------


def test_the_broker_down_at_commit_neither_fails_the_save_nor_loses_the_row(celery_worker, s3):
    """The save runs in a process whose broker is unreachable: it succeeds, logs, and
    leaves the row pending; the sweep publishes it once a broker answers."""
    script = (
        "from django.core.files.base import ContentFile\n"
        "from demo.models import Photo\n"
        "p = Photo(title='No broker')\n"
        f"p.image.save('nb.jpg', ContentFile(open({str(SMALL)!r}, 'rb').read()))\n"
        "print('saved', p.pk)\n"
    )
    done = run_without_broker(script)
    pk = int(done.stdout.split()[-1])
    photo = Photo.objects.get(pk=pk)
    assert photo.image_status == Status.PENDING

    time.sleep(6)  # past STALE_AFTER (5 s in the tests)
    assert services.media_sweep() >= 1
    assert_exactly_the_manifest(s3, settled(photo))


def test_a_worker_lost_on_every_attempt_fails_the_row_after_max_attempts():
    """Attempts that end without a word (OOM killer, SIGKILL) are counted on the claim."""
    photo, revision = unpublished_pending_row("photos/doomed.jpg", SMALL.read_bytes())
    target = state.Target.of("demo.Photo", "image")
    for attempt in range(5):
        claim = state.claim(target, photo.pk, revision, f"lost-{attempt}")
        assert claim is not None and claim.attempts == attempt + 1
        past = timezone.now() - timedelta(seconds=1)
        Photo.objects.filter(pk=photo.pk).update(image_due_at=past)  # its lease ran out

    outcome = services.media_process(
        model_label="demo.Photo", pk=photo.pk, field_name="image", revision=revision, task_id="x"
    )
    row = fresh(photo)
    assert outcome == "failed" and row.image_status == Status.FAILED
    assert row.image_error == f"gave up after 5 attempts: {state.WORKER_LOST}"
    assert row.image_due_at is None  # failed for good: the sweep leaves it alone


def test_a_duplicate_message_does_nothing_while_the_lease_holds():
    photo, revision = unpublished_pending_row("photos/once.jpg", SMALL.read_bytes())
    target = state.Target.of("demo.Photo", "image")

    assert state.claim(target, photo.pk, revision, "first") is not None
    assert state.claim(target, photo.pk, revision, "duplicate") is None
    again = state.claim(target, photo.pk, revision, "first")  # its own redelivery
    assert again is not None and again.attempts == 2 and again.last_error == state.WORKER_LOST


def test_an_unexpected_error_in_process_is_recorded_not_raised(monkeypatch):
    """The embedded mode runs tasks inside the save: a bug must not become its 500."""
    from pipeline import imaging
    from pipeline.tasks import process_media

    photo, revision = unpublished_pending_row("photos/bug.jpg", SMALL.read_bytes())

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug nobody planned for")

    monkeypatch.setattr(imaging, "render", broken)
    result = process_media.apply(("demo.Photo", photo.pk, "image", revision))

    row = fresh(photo)
    assert result.get() == "failed"
    assert row.image_status == Status.FAILED and row.image_attempts == 1
    assert row.image_error == "unexpected error: RuntimeError: a bug nobody planned for"


def test_a_soft_time_limit_is_a_counted_failure(monkeypatch):
    """An image that is always too slow must end failed, not cycle through retries."""
    from celery.exceptions import SoftTimeLimitExceeded

    from pipeline import imaging
    from pipeline.tasks import process_media

    photo, revision = unpublished_pending_row("photos/slow.jpg", SMALL.read_bytes())

    def too_slow(*args: Any, **kwargs: Any) -> None:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(imaging, "render", too_slow)
    assert process_media.apply(("demo.Photo", photo.pk, "image", revision)).get() == "failed"

    row = fresh(photo)
    assert row.image_status == Status.FAILED and row.image_attempts == 1
    assert row.image_error.startswith("took longer than the soft time limit")
    assert row.image_due_at is None  # not a transient failure: the sweep leaves it


def test_rows_left_in_flight_by_an_older_version_are_swept():
    """Rows pending or processing from before deadlines existed have none: still swept."""
    photo, revision = unpublished_pending_row("photos/legacy.jpg", SMALL.read_bytes())
    Photo.objects.filter(pk=photo.pk).update(image_status=Status.PROCESSING, image_due_at=None)
    target = state.Target.of("demo.Photo", "image")

    assert state.due_rows(target, 100) == {photo.pk: revision}
    row = fresh(photo)
    assert row.image_status == Status.PENDING and row.image_due_at is not None


def test_a_late_delete_keeps_what_the_row_uses_now(celery_worker, s3):
    """A delete queued for a file the row holds again (cleared, then the same photo
    re-uploaded) runs late: the newer render's objects, at the same keys, stay."""
    photo = settled(new_photo("Back", SMALL.read_bytes(), "back.jpg"))
    keys = sorted(services.manifest_keys(photo.image_manifest))

    services.media_delete_objects(keys=keys, owner=["demo.Photo", photo.pk, "image"])

    assert_exactly_the_manifest(s3, photo)


def test_a_file_changed_behind_the_save_handler_is_processed_by_the_sweep(celery_worker, s3):
    first = settled(new_photo("Drift", SMALL.read_bytes(), "drift.jpg"))
    other = settled(new_photo("Other", MEDIUM.read_bytes(), "other.jpg"))
    # A queryset update sends no signal (as a process dying after a save's commit).
    Photo.objects.filter(pk=first.pk).update(image=other.image.name)
    assert fresh(first).image_status == Status.READY  # still describing drift.jpg

    assert services.media_sweep() >= 1
    row = settled(first)
    assert row.image_manifest["source"] == other.image.name
    assert_exactly_the_manifest(s3, row)


def test_an_attempt_taken_over_cannot_fail_the_row_another_worker_finished():
    photo, revision = unpublished_pending_row("photos/taken.jpg", SMALL.read_bytes())
    target = state.Target.of("demo.Photo", "image")
    assert state.claim(target, photo.pk, revision, "slow") is not None
    Photo.objects.filter(pk=photo.pk).update(image_due_at=timezone.now() - timedelta(seconds=1))
    assert state.claim(target, photo.pk, revision, "taker") is not None
    assert state.finish_ready(target, photo.pk, revision, manifest={"variants": []})

    state.finish_failed(target, photo.pk, revision, "slow", "S3 timed out")
    state.back_to_pending(target, photo.pk, revision, "slow", "S3", due_in=1, counted=False)
    assert fresh(photo).image_status == Status.READY


def test_a_file_cleared_between_a_save_and_its_handler_does_not_break_the_save():
    photo, _ = unpublished_pending_row("photos/racy.jpg", SMALL.read_bytes())
    target = state.Target.of("demo.Photo", "image")
    # Our save wrote racy.jpg over old.jpg; another writer cleared the file before our
    # handler ran.
    Photo.objects.filter(pk=photo.pk).update(image="", image_source="photos/old.jpg")

    change = state.file_saved(target, photo.pk, "photos/racy.jpg")
    assert change is not None and change.revision is None
    assert fresh(photo).image_status == Status.EMPTY


def test_linking_without_processing_discards_renders_in_flight_and_old_outputs():
    photo, revision = unpublished_pending_row("photos/linked.jpg", SMALL.read_bytes())
    target = state.Target.of("demo.Photo", "image")
    manifest = {"original": {"key": "media/x/demo.photo-1/a/original.jpg"}, "variants": []}
    assert state.finish_ready(target, photo.pk, revision, manifest=manifest)

    dropped = state.mark_unprocessed(target, [photo.pk])

    assert dropped == {photo.pk: manifest}
    row = fresh(photo)
    assert row.image_revision == revision + 1 and row.image_status == Status.EMPTY
    assert row.image_source == row.image.name


def test_a_delete_while_the_broker_is_down_is_carried_out_by_the_sweep(celery_worker, s3):
    """The deletion is recorded with the delete; its message is not needed to happen."""
    photo = settled(new_photo("Delete offline", SMALL.read_bytes()))
    assert public_keys_of(s3, photo)
    script = f"from demo.models import Photo\nPhoto.objects.get(pk={photo.pk}).delete()\n"
    run_without_broker(script)
    assert not Photo.objects.filter(pk=photo.pk).exists()
    assert PendingDeletion.objects.count() == 1
    assert public_keys_of(s3, photo)  # nothing deleted yet

    time.sleep(6)  # past STALE_AFTER (5 s in the tests)
    services.media_sweep()
    quiet_bucket(s3, photo, set())
    wait_for(lambda: not PendingDeletion.objects.exists(), what="the deletion to be done")
