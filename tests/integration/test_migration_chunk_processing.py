"""A chunk processes the rows it migrated itself, from the files it uploaded: the same
row state and outputs as a save's task, no task per row, no GET of the original; and a
chunk killed while rendering leaves its rows to the sweep.

Runs in-process (tasks eager, as in the embedded mode) against moto over HTTP.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import current_app
from django.core.management import call_command
from django.utils import timezone

from pipeline import imaging, services, storage
from pipeline.fields import Status
from pipeline.models import MediaAsset
from tests.conftest import PHOTOS
from tests.services import PUBLIC_BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

NAMES = ("19_cabin_640.jpg", "21_mountain_500.jpg", "23_flower_300.jpg")


class Killed(BaseException):
    """The worker process dying mid-render: nothing after it runs, nothing is recorded."""


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(current_app.conf, "task_always_eager", True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "legacy"
    (root / "photos").mkdir(parents=True)
    for name in NAMES:
        shutil.copy(PHOTOS / name, root / "photos" / name)
    return root


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys read back from the buckets (``storage.read``, what a task's GET goes through)."""
    keys: list[str] = []
    real = storage.read

    def read(target: Any, key: str) -> bytes:
        keys.append(key)
        return real(target, key)

    monkeypatch.setattr(storage, "read", read)
    return keys


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Processing tasks published (run eagerly all the same)."""
    from pipeline import dispatch

    sent: list[tuple[Any, ...]] = []
    real = dispatch.send

    def send(name: str, *args: Any, **kwargs: Any) -> bool:
        if name == dispatch.PROCESS_MEDIA:
            sent.append(args)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(dispatch, "send", send)
    return sent


def public_keys(s3: Any) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=PUBLIC_BUCKET)
    return {o["Key"] for page in pages for o in page.get("Contents", ())}


def test_migrated_rows_are_processed_in_their_chunk_as_a_save_would(
    s3: Any, clean_buckets: None, eager: None, tree: Path, reads: list[str], published: list
) -> None:
    call_command("migrate_media", str(tree), "--orphans", "import", stdout=None)

    assets = list(MediaAsset.objects.order_by("pk"))
    assert len(assets) == len(NAMES)
    assert {a.image_status for a in assets} == {Status.READY}
    assert published == [] and reads == []  # no task per row, no original read back
    stored = public_keys(s3)
    for a in assets:
        manifest = a.image_manifest
        assert set(manifest) == {
            "profile", "source", "content", "original", "variants", "skipped", "notes",
        }  # fmt: skip
        assert manifest["source"] == a.image.name and a.image_source == a.image.name
        assert services.manifest_keys(manifest) <= stored
        assert a.image_attempts == 1 and a.image_error == "" and a.image_due_at is None
        assert a.image_claimed_by == "" and a.image_checksum == a.source_sha256

    # The save's task, on the same rows, records the very same outputs.
    before = {a.pk: (a.image_manifest, a.image_width, a.image_height) for a in assets}
    services.media_reprocess(
        model_label="pipeline.MediaAsset", field_name="image", pks=[a.pk for a in assets]
    )
    after = {
        a.pk: (a.image_manifest, a.image_width, a.image_height)
        for a in MediaAsset.objects.order_by("pk")
    }
    assert after == before
    assert len(reads) == len(NAMES)  # the tasks read their original back; the chunk did not


def test_a_chunk_killed_while_rendering_leaves_its_rows_to_the_sweep(
    s3: Any,
    clean_buckets: None,
    eager: None,
    tree: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = imaging.render

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise Killed()

    monkeypatch.setattr(imaging, "render", dies)
    with pytest.raises(Killed):
        call_command("migrate_media", str(tree), "--orphans", "import", stdout=None)

    states = sorted(MediaAsset.objects.values_list("image_status", flat=True))
    assert states == sorted([Status.PROCESSING] + [Status.PENDING] * (len(NAMES) - 1))
    assert all(MediaAsset.objects.values_list("image_due_at", flat=True))  # all have deadlines

    # Later: the lease and the pending deadlines ran out; the sweep publishes their tasks.
    monkeypatch.setattr(imaging, "render", real)
    MediaAsset.objects.update(image_due_at=timezone.now() - timedelta(seconds=1))
    assert services.media_sweep() == len(NAMES)

    assets = list(MediaAsset.objects.all())
    assert {a.image_status for a in assets} == {Status.READY}
    for a in assets:
        assert services.manifest_keys(a.image_manifest) <= public_keys(s3)


def test_a_row_whose_attempt_raises_is_handed_to_its_task_with_those_after_it(
    s3: Any,
    clean_buckets: None,
    eager: None,
    tree: Path,
    monkeypatch: pytest.MonkeyPatch,
    published: list,
) -> None:
    real = imaging.render
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug on the first render")
        return real(*args, **kwargs)

    monkeypatch.setattr(imaging, "render", flaky)
    call_command("migrate_media", str(tree), "--orphans", "import", stdout=None)

    # That row and those after it went to their tasks (run eagerly here), its attempt
    # counted.
    assert len(published) == len(NAMES)
    assets = list(MediaAsset.objects.all())
    assert {a.image_status for a in assets} == {Status.READY}
    assert sorted(a.image_attempts for a in assets) == [1] * (len(NAMES) - 1) + [2]


def test_rows_left_when_the_chunks_time_budget_is_spent_go_to_their_tasks(
    s3: Any,
    clean_buckets: None,
    eager: None,
    tree: Path,
    monkeypatch: pytest.MonkeyPatch,
    reads: list[str],
    published: list,
) -> None:
    from pipeline.bulk import chunks

    monkeypatch.setattr(chunks, "PROCESS_BUDGET", 0.0)
    call_command("migrate_media", str(tree), "--orphans", "import", stdout=None)

    assert len(published) == len(NAMES) and len(reads) == len(NAMES)
    assert set(MediaAsset.objects.values_list("image_status", flat=True)) == {Status.READY}


def test_rows_of_one_original_are_claimed_together_and_the_unreached_released(
    s3: Any, clean_buckets: None, eager: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several rows holding one original: claimed in one go; when one attempt raises, the
    rows claimed but not reached are pending again with their attempt given back, and
    every one of them is processed by its task."""
    from demo.models import Photo
    from pipeline import state

    data = (PHOTOS / NAMES[0]).read_bytes()
    key = "legacy/shared.jpg"
    storage.write(storage.primary(), key, data, content_type="image/jpeg")
    photos = Photo.objects.bulk_create([Photo(title=f"p{i}", image=key) for i in range(4)])
    target = state.Target.of("demo.Photo", "image")
    revisions = dict(sorted(state.mark_pending(target, [p.pk for p in photos]).items()))
    real = imaging.render
    calls: list[int] = []
    seen: list[list[str]] = []

    def second_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        seen.append(list(Photo.objects.order_by("pk").values_list("image_status", flat=True)))
        if len(calls) == 2:
            raise RuntimeError("a bug on the second render")
        return real(*args, **kwargs)

    monkeypatch.setattr(imaging, "render", second_fails)
    outcomes = services.media_process_here(
        model_label="demo.Photo",
        field_name="image",
        revisions=revisions,
        original=services.Original(key, data),
        task_id="chunk-test",
    )

    first, *others = [p.pk for p in photos]
    assert outcomes == {first: "ready", **dict.fromkeys(others, "queued")}
    # All four were claimed by the first render; the tasks then ran eagerly.
    assert seen[0] == [Status.PROCESSING] * 4
    rows = list(Photo.objects.order_by("pk"))
    assert {r.image_status for r in rows} == {Status.READY}
    assert [r.image_attempts for r in rows] == [1, 2, 1, 1]


def test_a_chunk_on_a_thread_pool_publishes_the_saves_task_for_each_row(
    s3: Any,
    clean_buckets: None,
    eager: None,
    tree: Path,
    monkeypatch: pytest.MonkeyPatch,
    reads: list[str],
    published: list,
) -> None:
    """Rendering belongs to processes (the cpu queue's prefork workers), not to the threads
    of the migration queue's I/O worker."""
    import threading
    from types import SimpleNamespace

    from pipeline.bulk import chunks

    a_thread = SimpleNamespace(current_thread=threading.current_thread, main_thread=object)
    monkeypatch.setattr(chunks, "threading", a_thread)
    call_command("migrate_media", str(tree), "--orphans", "import", stdout=None)

    assert len(published) == len(NAMES) and len(reads) == len(NAMES)
    assert set(MediaAsset.objects.values_list("image_status", flat=True)) == {Status.READY}
