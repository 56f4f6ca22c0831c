"""The automatic pipeline end to end: real Redis, a real worker process, moto over HTTP."""

from __future__ import annotations

import io
import os
import signal
from html.parser import HTMLParser
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.template import Context, Template
from django.urls import reverse
from django_celery_results.models import TaskResult
from PIL import Image

from demo.models import Photo
from pipeline.fields import Status
from tests.conftest import PHOTOS, wait_for
from tests.services import PRIMARY_BUCKET, PUBLIC_BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# A camera file: 2688x2016 stored, EXIF orientation 6, Display P3; renders take seconds.
LARGE = PHOTOS / "02_iphone_5mp_orient6_p3.jpg"
SMALL = PHOTOS / "20_owl_600.jpg"
MEDIUM = PHOTOS / "13_family_970.jpg"


@pytest.fixture
def published() -> Any:
    """Process-media tasks this test process publishes."""
    sent: list[dict[str, Any]] = []

    def record(sender: str, headers: dict, body: Any, **kwargs: Any) -> None:
        if sender == "pipeline.tasks.process_media":
            sent.append(headers)

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def new_photo(title: str, data: bytes, name: str = "Photo.JPG") -> Photo:
    photo = Photo(title=title)
    photo.image.save(name, ContentFile(data), save=False)
    photo.save()
    return photo


def settled(photo: Photo, timeout: float = 120) -> Photo:
    """Wait until the row is ready or failed, and return it fresh."""

    def done() -> Photo | None:
        row = Photo.objects.get(pk=photo.pk)
        return row if row.image_status in (Status.READY, Status.FAILED) else None

    return wait_for(done, timeout=timeout, what=f"photo {photo.pk} to settle")


def public_keys_of(s3: Any, photo: Photo) -> set[str]:
    """Every public object under the row's identity (all its source folders)."""
    identity = f"demo.photo-{photo.pk}/"
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=PUBLIC_BUCKET, Prefix="media/"):
        keys |= {o["Key"] for o in page.get("Contents", ()) if identity in o["Key"]}
    return keys


def assert_outputs_in_bucket(s3: Any, photo: Photo) -> None:
    manifest = photo.image_manifest
    entries = [manifest["original"], *manifest["variants"]]
    assert {e["key"] for e in entries} == public_keys_of(s3, photo), "orphans or missing objects"
    for entry in entries:
        obj = s3.get_object(Bucket=PUBLIC_BUCKET, Key=entry["key"])
        body = obj["Body"].read()
        assert obj["ContentType"] == f"image/{entry['format']}"
        assert "s-maxage" in obj["CacheControl"] and obj["CacheControl"].startswith("public")
        assert len(body) == entry["bytes"]
        with Image.open(io.BytesIO(body)) as im:
            assert im.size == (entry["width"], entry["height"])
            assert im.format.lower() == entry["format"]
        assert entry["url"] == f"https://cdn.example.test/{entry['key']}"


def test_a_large_camera_jpeg_saved_through_the_orm_reaches_ready(celery_worker, s3, clean_buckets):
    photo = settled(new_photo("iPhone", LARGE.read_bytes(), "IMG 0001 (Copy).JPG"))

    assert photo.image_status == Status.READY, photo.image_error
    # Orientation 6 applied: the stored 2688x2016 is shown upright as 2016x2688.
    assert (photo.image_width, photo.image_height) == (2016, 2688)
    assert photo.image_format == "jpeg" and len(photo.image_checksum) == 64
    assert photo.image_processed_at and photo.image_duration_ms > 0
    assert photo.image_placeholder["color"].startswith("#")
    widths = {(v["format"], v["width"]) for v in photo.image_manifest["variants"]}
    assert {("webp", 320), ("webp", 1600), ("avif", 640)} <= widths
    assert_outputs_in_bucket(s3, photo)
    assert (
        max(photo.image_manifest["original"]["width"], photo.image_manifest["original"]["height"])
        == 2560
    )

    # The pristine original sits in the private bucket, byte for byte, with no public grant.
    name = photo.image.name
    assert name.startswith("photos/img-0001-copy-") and name.endswith(".jpg")
    assert s3.get_object(Bucket=PRIMARY_BUCKET, Key=name)["Body"].read() == LARGE.read_bytes()
    grants = s3.get_object_acl(Bucket=PRIMARY_BUCKET, Key=name)["Grants"]
    assert all("URI" not in g["Grantee"] for g in grants), grants
    assert "X-Amz-Signature" in photo.image.url  # only signed URLs for the private bucket

    # The outcome lives on the row; no result row duplicates it, one per image.
    assert not TaskResult.objects.filter(task_name="pipeline.tasks.process_media").exists()


def test_saved_through_the_admin_reaches_ready(celery_worker, s3, clean_buckets, client):
    admin = User.objects.create_superuser("admin", "a@example.test", "pw")
    client.force_login(admin)
    upload = SimpleUploadedFile("Owl At Night.jpg", SMALL.read_bytes(), content_type="image/jpeg")
    response = client.post(reverse("admin:demo_photo_add"), {"title": "Owl", "image": upload})
    assert response.status_code == 302, response.content[:2000]

    photo = settled(Photo.objects.get(title="Owl"))
    assert photo.image_status == Status.READY, photo.image_error
    assert_outputs_in_bucket(s3, photo)
    # 600 px wide: wider variants are skipped (recorded), never upscaled.
    widths = {v["width"] for v in photo.image_manifest["variants"]}
    assert 320 in widths and max(widths) <= 600
    assert {640, 1024, 1600} <= {s["width"] for s in photo.image_manifest["skipped"]}


def test_title_only_edit_enqueues_nothing(celery_worker, published, clean_buckets):
    photo = settled(new_photo("Owl", SMALL.read_bytes()))
    published.clear()
    revision = photo.image_revision

    photo.title = "Renamed"
    photo.save()
    Photo.objects.get(pk=photo.pk).save()  # a fresh load and save: still nothing

    assert published == []
    assert Photo.objects.get(pk=photo.pk).image_revision == revision


def test_rollback_enqueues_nothing(celery_worker, published, clean_buckets):
    with pytest.raises(RuntimeError), transaction.atomic():
        new_photo("Never", SMALL.read_bytes())
        raise RuntimeError("roll back")
    assert published == []
    assert not Photo.objects.filter(title="Never").exists()


def test_two_quick_saves_end_with_the_second_image(celery_worker, s3, clean_buckets):
    photo = new_photo("Swap", LARGE.read_bytes(), "first.jpg")
    # The second save lands while the first render runs: the renders overlap.
    wait_for(
        lambda: Photo.objects.get(pk=photo.pk).image_status == Status.PROCESSING,
        what="the first render to start",
    )
    photo.image.save("second.jpg", ContentFile(MEDIUM.read_bytes()), save=True)
    assert Photo.objects.get(pk=photo.pk).image_revision == 2

    photo = settled(photo)
    assert photo.image_status == Status.READY
    assert photo.image.name.startswith("photos/second-")
    # The first render ran to its end and found itself superseded.
    wait_for(
        lambda: f"demo.Photo {photo.pk}: superseded while processing" in celery_worker.log(),
        what="the first render to be discarded",
    )
    assert (photo.image_width, photo.image_height) == (970, 644)
    assert photo.image_manifest["source"] == photo.image.name
    # Whatever the first render managed to write is gone (eventually: deletes are tasks).
    wait_for(
        lambda: (
            {
                e["key"]
                for e in [photo.image_manifest["original"], *photo.image_manifest["variants"]]
            }
            == public_keys_of(s3, photo)
        ),
        what="only the second image's outputs in the public bucket",
    )


def test_corrupt_upload_fails_with_reason_while_others_process(celery_worker, clean_buckets):
    truncated = SMALL.read_bytes()[:4000]
    bad = new_photo("Broken", truncated, "broken.jpg")
    html = new_photo("Fake", b"<!doctype html><html><body>hi</body></html>", "fake.png")
    good = new_photo("Good", MEDIUM.read_bytes(), "good.jpg")

    bad, html, good = settled(bad), settled(html), settled(good)
    assert bad.image_status == Status.FAILED and "truncated" in bad.image_error.lower()
    assert html.image_status == Status.FAILED and "not an image" in html.image_error.lower()
    assert good.image_status == Status.READY
    # Permanent errors are not retried.
    assert bad.image_attempts == 1 and html.image_attempts == 1


def test_s3_outage_during_processing_recovers(celery_worker, s3_proxy, s3, clean_buckets):
    s3_proxy.stop()  # the worker can no longer reach S3
    try:
        photo = new_photo("Outage", MEDIUM.read_bytes())
        row = wait_for(
            lambda: (r := Photo.objects.get(pk=photo.pk)).image_error.startswith("retrying:") and r,
            what="the worker to fail on S3 and wait for its retry",
        )
        # Waiting for a retry (or already in it: full jitter can make the wait 0 s), not
        # failed; transient trouble does not use up attempts.
        assert row.image_status in (Status.PENDING, Status.PROCESSING)
        assert "storage unreachable" in row.image_error
        assert row.image_attempts <= 1
    finally:
        s3_proxy.start()
    photo = settled(photo, timeout=180)
    assert photo.image_status == Status.READY, photo.image_error
    assert_outputs_in_bucket(s3, photo)


def test_sigkill_of_the_worker_child_mid_task_ends_ready(celery_worker, s3, clean_buckets):
    photo = new_photo("Killed", LARGE.read_bytes())
    wait_for(
        lambda: Photo.objects.get(pk=photo.pk).image_status == Status.PROCESSING,
        what="a worker child to claim the row",
    )
    # The render takes seconds; kill every pool process now, so the one running it dies.
    children = celery_worker.child_pids()
    assert children
    for pid in children:
        os.kill(pid, signal.SIGKILL)

    photo = settled(photo, timeout=180)
    assert photo.image_status == Status.READY
    assert photo.image_attempts >= 2  # it really ran again
    assert_outputs_in_bucket(s3, photo)  # one set of outputs, no orphans


def test_deleting_a_row_removes_its_public_objects(celery_worker, s3, clean_buckets):
    photo = settled(new_photo("Gone", SMALL.read_bytes()))
    original = photo.image.name
    assert public_keys_of(s3, photo)

    photo_pk = photo.pk
    photo.delete()
    photo.pk = photo_pk
    wait_for(lambda: not public_keys_of(s3, photo), what="public objects to be deleted")
    # Originals are kept by default: no data lost by accident.
    assert s3.head_object(Bucket=PRIMARY_BUCKET, Key=original)["ContentLength"] > 0


def test_admin_action_reprocesses_exactly_the_selected_rows(celery_worker, clean_buckets, client):
    photos = [settled(new_photo(f"P{i}", SMALL.read_bytes(), f"p{i}.jpg")) for i in range(3)]
    before = {p.pk: p.image_revision for p in photos}
    admin = User.objects.create_superuser("admin", "a@example.test", "pw")
    client.force_login(admin)

    selected = [photos[0].pk, photos[2].pk]
    response = client.post(
        reverse("admin:demo_photo_changelist"),
        {"action": "reprocess_selected_media", "_selected_action": selected},
        follow=True,
    )
    assert b"Queued 2 image(s)" in response.content

    for pk in selected:
        wait_for(
            lambda pk=pk: (
                Photo.objects.get(pk=pk).image_revision == before[pk] + 1
                and Photo.objects.get(pk=pk).image_status == Status.READY
            ),
            what=f"photo {pk} re-processed",
        )
    assert Photo.objects.get(pk=photos[1].pk).image_revision == before[photos[1].pk]


def test_admin_action_needs_change_permission(client, db):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_photo"))
    client.force_login(viewer)
    response = client.get(reverse("admin:demo_photo_changelist"))
    assert response.status_code == 200
    assert b"reprocess_selected_media" not in response.content

    # Posting the action anyway changes nothing.
    photo = Photo.objects.create(title="Untouched")
    Photo.objects.filter(pk=photo.pk).update(image="photos/x.jpg", image_status=Status.READY)
    client.post(
        reverse("admin:demo_photo_changelist"),
        {"action": "reprocess_selected_media", "_selected_action": [photo.pk]},
    )
    row = Photo.objects.get(pk=photo.pk)
    assert (row.image_status, row.image_revision) == (Status.READY, 0)


class _Collector(HTMLParser):
    """Parses a fragment and checks that every opened element is closed."""

    VOID = {"img", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


def render_picture(photo: Photo, alt: str) -> _Collector:
    html = Template(
        '{% load pipeline %}{% picture photo.image sizes="(max-width: 600px) 100vw, 50vw" '
        'alt=alt class="hero" %}'
    ).render(Context({"photo": photo, "alt": alt}))
    parser = _Collector()
    parser.feed(html)
    parser.close()
    assert parser.stack == []
    assert "<script" not in html
    return parser


def test_picture_tag_renders_valid_html_for_ready_pending_and_failed(celery_worker, clean_buckets):
    ready = settled(new_photo("Ready", MEDIUM.read_bytes()))
    tags = render_picture(ready, alt='A "family" <script>')
    names = [t for t, _ in tags.tags]
    assert names == ["picture", "source", "source", "img"]
    sources = [a for t, a in tags.tags if t == "source"]
    assert [s["type"] for s in sources] == ["image/avif", "image/webp"]
    assert all(s["srcset"].count("w,") >= 1 and s["sizes"] for s in sources)
    img = tags.tags[-1][1]
    assert img["alt"] == 'A "family" <script>'  # escaped in HTML, intact once parsed
    assert img["loading"] == "lazy" and img["decoding"] == "async" and img["class"] == "hero"
    assert int(img["width"]) > 0 and int(img["height"]) > 0
    assert img["src"].endswith(".jpg")

    failed = settled(new_photo("Failed", b"not an image at all", "x.jpg"))
    tags = render_picture(failed, alt="failed")
    assert [t for t, _ in tags.tags] == ["img"]
    assert tags.tags[0][1]["data-status"] == "failed"

    pending = new_photo("Pending", MEDIUM.read_bytes())
    pending.image_status = Status.PENDING  # as rendered right after the save
    tags = render_picture(pending, alt="pending")
    assert [t for t, _ in tags.tags] == ["img"]
    assert tags.tags[0][1]["src"].startswith("data:image/")
    assert tags.tags[0][1]["data-status"] == "pending"
