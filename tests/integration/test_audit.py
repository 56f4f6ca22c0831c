"""``manage.py audit_media`` against the real S3 API (moto over HTTP) and a real worker."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command

from demo.models import Photo
from pipeline import naming
from pipeline.fields import Status
from pipeline.models.cdn import CDNInvalidation, CDNPendingPath
from tests.integration.test_pipeline import SMALL, assert_outputs_in_bucket, new_photo, settled
from tests.services import PRIMARY_BUCKET, PUBLIC_BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def bucket_keys(s3: Any, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys |= {o["Key"] for o in page.get("Contents", ())}
    return keys


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


@pytest.fixture
def empty_buckets(s3: Any, clean_buckets: None) -> None:
    """Exact reports need empty buckets at the start too (``clean_buckets`` empties them
    after each test; a test elsewhere may not have used it)."""
    for bucket in (PRIMARY_BUCKET, PUBLIC_BUCKET):
        keys = [{"Key": k} for k in bucket_keys(s3, bucket)]
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000]})


def audit(*args: str) -> dict[str, Any]:
    out = io.StringIO()
    call_command("audit_media", "--json", *args, stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue())


def invalidation_requested(paths: set[str]) -> bool:
    """Pending, or already claimed by a batch the worker sent."""
    seen = set(CDNPendingPath.objects.values_list("path", flat=True))
    for batch in CDNInvalidation.objects.values_list("paths", flat=True):
        seen |= set(batch)
    return paths <= seen


def test_audit_reports_exactly_and_fix_repairs(celery_worker: Any, s3: Any, empty_buckets: None):
    photo = settled(new_photo("Audited", SMALL.read_bytes(), "audited.jpg"))
    assert photo.image_status == Status.READY, photo.image_error
    manifest = photo.image_manifest
    folder = manifest["original"]["key"].rsplit("/", 1)[0]

    # An orphan beside the row's outputs, and one off the layout altogether.
    orphan, stray = f"{folder}/w9999.webp", "media/zz/left-over.txt"
    for key in (orphan, stray):
        s3.put_object(Bucket=PUBLIC_BUCKET, Key=key, Body=b"stale")
    # One output lost.
    lost = manifest["variants"][0]["key"]
    s3.delete_object(Bucket=PUBLIC_BUCKET, Key=lost)
    # An original nobody refers to.
    unreferenced = "photos/nobody-0123456789ab.jpg"
    s3.put_object(Bucket=PRIMARY_BUCKET, Key=unreferenced, Body=SMALL.read_bytes())
    # A render in flight: outputs written, manifest not yet (no signal, so no task runs).
    (busy,) = Photo.objects.bulk_create([Photo(title="Busy", image="photos/busy-0123456789ab.jpg")])
    # The pipeline's columns are written by updates only (an INSERT takes the defaults).
    Photo.objects.filter(pk=busy.pk).update(image_status=Status.PROCESSING)
    busy_folder = naming.public_folder(
        prefix="media", model_label="demo.Photo", pk=busy.pk, source_name=busy.image.name
    )
    busy_key = naming.output_key(busy_folder, "w320", "webp")
    s3.put_object(Bucket=PUBLIC_BUCKET, Key=busy_key, Body=b"being written")
    originals = bucket_keys(s3, PRIMARY_BUCKET)

    report = audit()
    assert report["orphans"] == sorted([orphan, stray])
    assert report["missing"] == [
        {"key": lost, "model": "demo.Photo", "field": "image", "pk": photo.pk}
    ]
    assert [o["key"] for o in report["unreferenced_originals"]] == [unreferenced]
    assert report["counts"]["in_flight_skipped"] == 1
    assert report["fixed"] is None
    # The table says the same.
    out = io.StringIO()
    call_command("audit_media", stdout=out, stderr=io.StringIO())
    assert all(k in out.getvalue() for k in (orphan, stray, lost, unreferenced))

    fixed = audit("--fix")
    assert fixed["fixed"] == {"orphans_deleted": 2, "rows_requeued": 1}
    assert not exists(s3, PUBLIC_BUCKET, orphan) and not exists(s3, PUBLIC_BUCKET, stray)
    assert exists(s3, PUBLIC_BUCKET, busy_key)  # the render in flight keeps its objects
    assert invalidation_requested({f"/{orphan}", f"/{stray}"})
    assert Photo.objects.get(pk=photo.pk).image_revision == photo.image_revision + 1

    photo = settled(photo)
    assert photo.image_status == Status.READY, photo.image_error
    assert_outputs_in_bucket(s3, photo)  # every output back, nothing else under the row
    assert bucket_keys(s3, PRIMARY_BUCKET) == originals  # originals untouched

    again = audit()
    assert (again["orphans"], again["missing"]) == ([], [])
    assert [o["key"] for o in again["unreferenced_originals"]] == [unreferenced]
