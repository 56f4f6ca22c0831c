"""Everyday sources through the whole pipeline: a graphic and an animation, saved on a
row, rendered by the real worker, published to the S3 API (moto over HTTP)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from bench.everyday_sources import animated_gif, product_shot, save
from pipeline.fields import Status
from tests.integration.test_pipeline import assert_outputs_in_bucket, new_photo, settled
from tests.services import PRIMARY_BUCKET, PUBLIC_BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def public_object(s3: Any, entry: dict[str, Any]) -> bytes:
    return s3.get_object(Bucket=PUBLIC_BUCKET, Key=entry["key"])["Body"].read()


def frame_count(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as im:
        return getattr(im, "n_frames", 1)


def test_a_transparent_product_png_is_published_without_jpeg(celery_worker, s3, clean_buckets):
    data = save(product_shot(transparent=True), "PNG", optimize=True)
    photo = settled(new_photo("Bottle", data, "bottle.png"))

    assert photo.image_status == Status.READY, photo.image_error
    manifest = photo.image_manifest
    entries = [manifest["original"], *manifest["variants"]]
    assert "jpeg" not in {e["format"] for e in entries}, "a graphic became JPEG"
    assert {"avif", "webp", "png"} <= {e["format"] for e in manifest["variants"]}
    assert manifest["original"]["bytes"] <= len(data), "the original grew"
    # Every manifest key is in the public bucket with its format's Content-Type, no more.
    assert_outputs_in_bucket(s3, photo)
    for entry in entries:
        with Image.open(io.BytesIO(public_object(s3, entry))) as im:
            assert "A" in im.convert("RGBA").getbands()
            assert im.convert("RGBA").getpixel((0, 0))[3] <= 8, f"{entry['key']}: corner opaque"
    # The private bucket holds the upload untouched.
    assert s3.get_object(Bucket=PRIMARY_BUCKET, Key=photo.image.name)["Body"].read() == data


def test_an_animated_gif_is_published_animated_with_still_fallbacks(
    celery_worker, s3, clean_buckets
):
    data = animated_gif()
    source_frames = frame_count(data)
    assert source_frames > 1
    photo = settled(new_photo("Bounce", data, "bounce.gif"))

    assert photo.image_status == Status.READY, photo.image_error
    manifest = photo.image_manifest
    assert_outputs_in_bucket(s3, photo)
    variants = manifest["variants"]
    by_format = {fmt: [v for v in variants if v["format"] == fmt] for fmt in ("webp", "avif")}
    assert by_format["webp"] and by_format["avif"]
    for entry in by_format["webp"] + by_format["avif"]:
        assert frame_count(public_object(s3, entry)) == source_frames, entry["key"]
    fallbacks = [v for v in variants if v["format"] in ("png", "jpeg")]
    assert fallbacks, "no fallback variant"
    for entry in fallbacks:
        assert frame_count(public_object(s3, entry)) == 1, f"{entry['key']} is not a still"
    # The original keeps the animation (animated WebP, or the GIF itself if smaller).
    original = manifest["original"]
    assert original["format"] in ("webp", "gif")
    assert frame_count(public_object(s3, original)) == source_frames
    assert original["bytes"] <= len(data)
    assert s3.get_object(Bucket=PRIMARY_BUCKET, Key=photo.image.name)["Body"].read() == data
