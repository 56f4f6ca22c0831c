"""Operators' tools: the stale-row sweep and the reprocess_media command, on the real worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F
from django.utils import timezone

from demo.models import Photo
from pipeline import tasks
from pipeline.fields import Status
from tests.conftest import wait_for
from tests.integration.test_pipeline import MEDIUM, SMALL, new_photo, settled

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_sweep_rescues_a_row_whose_message_was_lost(celery_worker, clean_buckets):
    photo = settled(new_photo("Lost", SMALL.read_bytes()))
    # As if a save committed and the process died before publishing: pending, no message,
    # its deadline passed.
    Photo.objects.filter(pk=photo.pk).update(
        image_status=Status.PENDING,
        image_revision=F("image_revision") + 1,
        image_due_at=timezone.now() - timedelta(hours=1),
    )
    fresh = new_photo("Fresh", MEDIUM.read_bytes())  # pending but young: not swept twice

    tasks.sweep_stale_media.delay()

    wait_for(lambda: Photo.objects.get(pk=photo.pk).image_status == Status.READY, what="sweep")
    assert Photo.objects.get(pk=photo.pk).image_revision == photo.image_revision + 1
    assert settled(fresh).image_status == Status.READY


def test_reprocess_media_command_requeues_by_profile_and_status(celery_worker, clean_buckets):
    ok = settled(new_photo("Ok", SMALL.read_bytes()))
    bad = settled(new_photo("Bad", b"garbage", "bad.jpg"))
    assert bad.image_status == Status.FAILED

    call_command("reprocess_media", "--model", "demo.Photo", "--status", "failed")
    wait_for(lambda: Photo.objects.get(pk=bad.pk).image_revision == bad.image_revision + 1)
    assert Photo.objects.get(pk=ok.pk).image_revision == ok.image_revision

    call_command("reprocess_media", "--profile", "default")
    wait_for(
        lambda: (
            Photo.objects.get(pk=ok.pk).image_revision == ok.image_revision + 1
            and Photo.objects.get(pk=ok.pk).image_status == Status.READY
        ),
        what="ok re-processed",
    )


def test_reprocess_media_refuses_vague_or_unknown_targets(db):
    with pytest.raises(CommandError, match="say what"):
        call_command("reprocess_media")
    with pytest.raises(CommandError, match="no managed image field"):
        call_command("reprocess_media", "--model", "auth.User")
