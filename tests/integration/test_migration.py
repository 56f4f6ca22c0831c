"""The bulk migration end to end: real worker, real Redis, moto over HTTP, a messy tree.

The expected outcome is computed independently with phase 1's pure ``plan`` (keys, copies
folded, what each legacy value resolves to) and compared with what the run did to the
database and the buckets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.core.management import call_command
from PIL import Image

from demo.models import Photo
from demo.sample_tree import SampleManifest, build_sample_tree
from pipeline.bulk.plan import Plan, plan
from pipeline.bulk.report import Report
from pipeline.bulk.scan import Kind, scan
from pipeline.fields import Status
from pipeline.models import MediaAsset, MigrationChunk, MigrationRun
from tests.conftest import (
    PHOTOS,
    database_url_for_worker,
    kill_worker,
    replace_worker,
    wait_for,
)
from tests.services import PRIMARY_BUCKET, PUBLIC_BUCKET, REPO

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MODEL = "demo.Photo.image"


@dataclass
class Legacy:
    """The legacy tree, the rows created for it, and what phase 1 says should happen."""

    sample: SampleManifest
    plan: Plan
    rows: dict[int, str]  # Photo pk -> legacy value

    @property
    def root(self) -> Path:
        return self.sample.root

    def expected_key(self, value: str) -> str | None:
        return self.plan.resolve(value).key

    @property
    def referenced(self) -> set[str]:
        return {k for v in self.rows.values() if (k := self.expected_key(v))}

    @property
    def keys(self) -> set[str]:
        return {o.key for o in self.plan.objects}

    @property
    def dangling(self) -> dict[int, str]:
        return {pk: v for pk, v in self.rows.items() if v.strip() and self.expected_key(v) is None}


@pytest.fixture
def legacy(tmp_path: Path) -> Legacy:
    sample = build_sample_tree(tmp_path / "legacy" / "media", PHOTOS)
    rows = Photo.objects.bulk_create(
        Photo(title=f"legacy {i} {v.style}", image=v.value)
        for i, v in enumerate(sample.legacy_values)
    )
    return Legacy(sample, plan(scan(sample.root)), {r.pk: r.image.name for r in rows})


@pytest.fixture
def published() -> Any:
    """Names of the tasks this process publishes."""
    sent: list[str] = []

    def record(sender: str, **kwargs: Any) -> None:
        sent.append(sender)

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def migrate(*args: str, report_file: Path | None = None) -> tuple[Report, str]:
    out, err = io.StringIO(), io.StringIO()
    extra = ["--report", str(report_file)] if report_file else []
    call_command("migrate_media", *args, *extra, stdout=out, stderr=err)
    assert err.getvalue() == ""  # status lines go to stdout; stderr is for errors
    text = out.getvalue()
    if report_file:
        return Report.from_dict(json.loads(report_file.read_text())), text
    return Report(), text


def bucket(s3: Any, name: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix):
        objects.update({o["Key"]: o for o in page.get("Contents", ())})
    return objects


def photo_state() -> dict[int, tuple[str, str, int]]:
    return {p.pk: (p.image.name, p.image_status, p.image_revision) for p in Photo.objects.all()}


def assert_counts(report: Report, legacy: Legacy) -> None:
    counts = legacy.sample.counts
    assert report.files_scanned == len(legacy.sample.expected)
    assert report.images == counts[Kind.IMAGE]
    assert report.junk_skipped == counts[Kind.JUNK]
    assert report.not_images == counts[Kind.NOT_IMAGE]
    assert report.rejected_count == counts[Kind.REJECTED]
    assert report.rejected["link outside the tree"] == ["links/outside.jpg"]
    assert report.rejected["truncated JPEG"] == ["broken/truncated.jpg"]
    assert "links/loop" in report.rejected["link loop: points to an enclosing folder"]
    assert report.duplicates_folded == counts["duplicates"]
    assert report.uploaded + report.already_present == counts["unique_images"]
    assert report.failed == {}
    values = {d.value: d.reason for d in report.dangling}
    assert set(values) == set(legacy.dangling.values())
    assert values["../etc/passwd"] == "escapes the media root"
    assert values["broken/truncated.jpg"] == "refers to a rejected file: truncated JPEG"
    image_bytes = sum((legacy.root / p).stat().st_size for p in legacy.sample.image_paths)
    assert report.bytes_before == image_bytes


def test_migrates_a_messy_tree_and_a_second_run_changes_nothing(
    celery_worker, s3, clean_buckets, legacy, tmp_path
):
    # Two originals were copied to the bucket by hand before: linked, not uploaded again.
    by_hand = ["Photos/Summer 2019/beach.jpeg", "products/logo.gif"]
    for path in by_hand:
        s3.put_object(
            Bucket=PRIMARY_BUCKET,
            Key=legacy.plan.key_for(path),
            Body=(legacy.root / path).read_bytes(),
            Metadata={"copied": "by-hand"},
        )

    report, table = migrate(str(legacy.root), "--model", MODEL, report_file=tmp_path / "r.json")

    assert_counts(report, legacy)
    assert report.already_present == 2
    assert report.uploaded == len(legacy.keys) - 2
    assert report.rows_relinked == len(legacy.rows) - len(legacy.dangling) - 1  # one is empty
    orphans = legacy.keys - legacy.referenced
    assert report.orphans_imported == len(orphans) > 0
    assert report.variants_generated > 0 and report.bytes_after > 0
    assert "rows re-linked" in table and "escapes the media root" in table
    # bytes after: the unique originals plus every public output; the optimized originals
    # are counted apart, beside the originals they were made from.
    ready = [
        *Photo.objects.filter(image_status=Status.READY).values_list("image", "image_manifest"),
        *MediaAsset.objects.filter(image_status=Status.READY).values_list(
            "image", "image_manifest"
        ),
    ]
    sizes = {o.key: o.size for o in legacy.plan.objects}
    assert report.bytes_stored_originals == sum(sizes.values())
    assert report.bytes_optimized_originals == sum(m["original"]["bytes"] for _, m in ready)
    assert report.bytes_processed_originals == sum(sizes[key] for key, _ in ready)
    assert report.bytes_variants == sum(v["bytes"] for _, m in ready for v in m["variants"])
    assert "optimized originals vs their originals" in table

    # Every row points at its standardized key and was processed; dangling rows untouched.
    for pk, value in legacy.rows.items():
        photo = Photo.objects.get(pk=pk)
        expected = legacy.expected_key(value)
        if expected:
            assert photo.image.name == expected, value
            assert photo.image_status == Status.READY, (value, photo.image_error)
            entries = [photo.image_manifest["original"], *photo.image_manifest["variants"]]
            public = bucket(s3, PUBLIC_BUCKET, f"media/{entries[0]['key'].split('/')[1]}/")
            assert {e["key"] for e in entries} <= set(public)
        else:
            assert photo.image.name == value and photo.image_status == Status.EMPTY

    # One object per distinct content, byte for byte; the hand copies were not rewritten.
    primary = bucket(s3, PRIMARY_BUCKET)
    assert set(primary) == legacy.keys
    for obj in legacy.plan.objects:
        body = s3.get_object(Bucket=PRIMARY_BUCKET, Key=obj.key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj.sha256
    for path in by_hand:
        head = s3.head_object(Bucket=PRIMARY_BUCKET, Key=legacy.plan.key_for(path))
        assert head["Metadata"] == {"copied": "by-hand"}
    # The link out of the tree was never followed: its target's bytes are nowhere.
    outside_md5 = hashlib.md5(legacy.sample.outside.read_bytes()).hexdigest()
    assert outside_md5 not in {o["ETag"].strip('"') for o in primary.values()}

    # Orphans became media library rows, processed like any other.
    assets = {a.image.name: a for a in MediaAsset.objects.all()}
    assert set(assets) == orphans
    assert all(a.image_status == Status.READY for a in assets.values())
    # The report counts exactly the variants the rows' manifests list.
    manifests = [p.image_manifest for p in Photo.objects.filter(image_status=Status.READY)]
    manifests += [a.image_manifest for a in assets.values()]
    assert report.variants_generated == sum(len(m["variants"]) for m in manifests) > 0

    # The second run: the same report, nothing done, nothing read again, no chunk.
    before = photo_state()
    second, _ = migrate(str(legacy.root), "--model", MODEL, report_file=tmp_path / "r2.json")
    assert_counts(second, legacy)
    assert (second.uploaded, second.already_present) == (0, len(legacy.keys))
    assert (second.rows_relinked, second.orphans_imported, second.variants_generated) == (0, 0, 0)
    bytes_counters = ("bytes_after", "bytes_optimized_originals", "bytes_processed_originals")
    for name in (*bytes_counters, "bytes_variants"):  # what is stored, counted once
        assert getattr(second, name) == getattr(report, name), name
    assert photo_state() == before
    assert MediaAsset.objects.count() == len(orphans)
    assert set(bucket(s3, PRIMARY_BUCKET)) == legacy.keys
    run = MigrationRun.objects.order_by("-pk").first()
    assert run.state == MigrationRun.State.DONE
    assert not MigrationChunk.objects.filter(run=run).exists()
    assert second.duration < report.duration


def test_dry_run_writes_nothing_and_reports_what_the_run_then_does(
    celery_worker, s3, clean_buckets, legacy, published
):
    options = ("--model", MODEL, "--no-process")
    out = io.StringIO()
    call_command("migrate_media", str(legacy.root), *options, "--dry-run", stdout=out)
    dry_table = out.getvalue()

    assert "dry run: nothing written" in dry_table
    assert not MigrationRun.objects.exists() and not MediaAsset.objects.exists()
    assert bucket(s3, PRIMARY_BUCKET) == {} and bucket(s3, PUBLIC_BUCKET) == {}
    assert {pk: v for pk, (v, _s, _r) in photo_state().items()} == legacy.rows
    assert published == []

    _, real_table = migrate(str(legacy.root), *options)
    assert_counts(_report(), legacy)
    # The same counters, line for line (durations aside).
    assert _counters(dry_table) == _counters(real_table)
    # --no-process: rows re-linked but nothing rendered, nothing queued for it.
    assert "pipeline.tasks.process_media" not in published
    linked = [p for p in Photo.objects.all() if p.image.name.startswith("legacy/")]
    assert linked and all(p.image_status == Status.EMPTY for p in linked)

    # Running again with processing renders exactly those rows (and the orphans).
    migrate(str(legacy.root), "--model", MODEL)
    for photo in Photo.objects.filter(pk__in=[p.pk for p in linked]):
        assert photo.image_status == Status.READY, photo.image_error
    assert all(a.image_status == Status.READY for a in MediaAsset.objects.all())


def _report() -> Report:
    return Report.from_dict(MigrationRun.objects.get().report)


def _counters(table: str) -> list[str]:
    table = table[table.index("Media migration") :]  # the report, not the status lines above
    skip = ("Media migration", "duration", "throughput", "bytes after", "variants generated")
    return [line for line in table.splitlines() if not line.startswith(skip)]


def test_killed_command_and_workers_then_run_again_completes_without_duplicates(
    celery_worker, s3, clean_buckets, legacy
):
    from workers import app

    env = {**os.environ, "DATABASE_URL": database_url_for_worker(), "PYTHONUNBUFFERED": "1"}
    args = [str(legacy.root), "--model", MODEL, "--chunk-size", "1"]
    command = subprocess.Popen(
        [sys.executable, "manage.py", "migrate_media", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: MigrationChunk.objects.filter(state=MigrationChunk.State.DONE).count() >= 2,
            timeout=90,
            what="the first chunks to finish",
        )
    finally:
        command.send_signal(signal.SIGKILL)
        command.wait()
    # Kill every worker child (the tasks they run die with them) and drop every message
    # still in the broker: the worst case of a crash.
    for pid in celery_worker.child_pids():
        os.kill(pid, signal.SIGKILL)
    app.control.purge()
    run = MigrationRun.objects.get()
    assert run.state != MigrationRun.State.DONE

    report, _ = migrate(*args, report_file=legacy.root.parent / "report.json")  # resumes

    assert MigrationRun.objects.count() == 1
    assert MigrationRun.objects.get().state == MigrationRun.State.DONE
    assert_counts(report, legacy)
    assert set(bucket(s3, PRIMARY_BUCKET)) == legacy.keys  # no second object
    assert MediaAsset.objects.count() == len(legacy.keys - legacy.referenced)  # no second row
    for pk, value in legacy.rows.items():
        expected = legacy.expected_key(value)
        if expected:
            photo = Photo.objects.get(pk=pk)
            assert (photo.image.name, photo.image_status) == (expected, Status.READY)
            # One set of rendered outputs, whatever ran twice.
            entries = [photo.image_manifest["original"], *photo.image_manifest["variants"]]
            identity = f"demo.photo-{pk}/"
            public = {k for k in bucket(s3, PUBLIC_BUCKET, "media/") if f"/{identity}" in k}
            assert public == {e["key"] for e in entries}


def test_detached_run_finishes_in_the_workers_and_stores_its_report(
    celery_worker, s3, clean_buckets, legacy
):
    out = io.StringIO()
    call_command("migrate_media", str(legacy.root), "--model", MODEL, "--detach", stdout=out)
    run = MigrationRun.objects.get()
    assert f"--resume {run.pk}" in out.getvalue()

    def done() -> MigrationRun | None:
        fresh = MigrationRun.objects.get(pk=run.pk)
        return fresh if fresh.state == MigrationRun.State.DONE else None

    finished = wait_for(done, timeout=180, what="the detached run to finish")
    report = Report.from_dict(finished.report)
    assert_counts(report, legacy)
    assert report.variants_generated > 0
    assert set(bucket(s3, PRIMARY_BUCKET)) == legacy.keys
    assert all(
        Photo.objects.get(pk=pk).image_status == Status.READY
        for pk, value in legacy.rows.items()
        if legacy.expected_key(value)
    )
    # Following it afterwards just prints the stored report.
    _, table = migrate(str(legacy.root), "--resume", str(run.pk))
    assert f"run {run.pk}" in table and "rows re-linked" in table


SLOW_FILES = 64


def test_a_detached_run_whose_worker_dies_while_scanning_is_started_again(
    celery_worker, s3_proxy, s3, clean_buckets, legacy, published
):
    """The worker scanning a detached run is killed (start_run is acknowledged on receipt:
    its message is gone with it). Its heartbeat stops; once it is older than
    ``STALE_START_AFTER`` the sweep publishes start_run again, and the run ends as an
    uninterrupted one would."""
    from datetime import timedelta

    from django.utils import timezone

    from pipeline.bulk import tasks as migration_tasks
    from pipeline.bulk.coordinator import migration_sweep

    # Large JPEGs cut short (a real header, then sparse zeros: no disk), each read whole
    # for its checksums and then rejected as truncated: a scan of several seconds on any
    # machine. (Files that are not images are refused from their first bytes, unread.)
    slow = legacy.root / "archive"
    slow.mkdir()
    header = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(header, "JPEG")
    for i in range(SLOW_FILES):
        with open(slow / f"scan-{i:02}.jpg", "wb") as f:
            f.write(header.getvalue()[:-2])  # no end-of-image marker
            f.truncate(40 * 1024 * 1024)
    call_command(
        "migrate_media", str(legacy.root), "--model", MODEL, "--detach", stdout=io.StringIO()
    )
    run = MigrationRun.objects.get()
    detached_beat = run.heartbeat_at
    assert detached_beat is not None  # set when published: a lost message is noticed too

    def scanning() -> bool:
        fresh = MigrationRun.objects.get(pk=run.pk)
        return fresh.state == MigrationRun.State.SCANNING and fresh.heartbeat_at != detached_beat

    wait_for(scanning, timeout=60, what="the worker to start scanning")
    kill_worker(celery_worker)
    assert MigrationRun.objects.get(pk=run.pk).state == MigrationRun.State.SCANNING
    replace_worker(celery_worker, s3_endpoint=s3_proxy.url)

    # A fresh heartbeat: the run is left alone (its worker may be alive).
    published.clear()
    migration_sweep()
    assert "pipeline.migration.tasks.start_run" not in published
    # Silent for longer than STALE_START_AFTER: taken for dead, started again.
    MigrationRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    migration_tasks.sweep_runs.delay()

    def done() -> MigrationRun | None:
        fresh = MigrationRun.objects.get(pk=run.pk)
        return fresh if fresh.state == MigrationRun.State.DONE else None

    finished = wait_for(done, timeout=240, what="the restarted run to finish")
    report = Report.from_dict(finished.report)
    counts = legacy.sample.counts
    assert report.files_scanned == len(legacy.sample.expected) + SLOW_FILES
    assert report.not_images == counts[Kind.NOT_IMAGE]
    assert (report.images, report.rejected_count) == (
        counts[Kind.IMAGE],
        counts[Kind.REJECTED] + SLOW_FILES,
    )
    assert report.uploaded + report.already_present == counts["unique_images"]
    assert report.failed == {}
    assert set(bucket(s3, PRIMARY_BUCKET)) == legacy.keys
    for pk, value in legacy.rows.items():
        if legacy.expected_key(value):
            photo = Photo.objects.get(pk=pk)
            assert (photo.image.name, photo.image_status) == (
                legacy.expected_key(value),
                Status.READY,
            )


def test_a_row_edited_during_the_migration_is_left_as_it_is(s3, clean_buckets, legacy):
    from pipeline.bulk.chunks import migration_run_chunk
    from pipeline.bulk.coordinator import migration_advance, migration_claim_chunk
    from pipeline.bulk.options import Options
    from pipeline.bulk.planning import migration_plan
    from pipeline.bulk.reporting import migration_report
    from pipeline.bulk.runs import migration_create
    from pipeline.bulk.scanning import migration_scan

    opts = Options.build(targets=[MODEL], process=False)
    run = migration_create(source=str(legacy.root), options=opts)
    migration_scan(run_id=run.pk)
    migration_plan(run_id=run.pk)
    edited, value = next((pk, v) for pk, v in legacy.rows.items() if legacy.expected_key(v))
    Photo.objects.filter(pk=edited).update(image="photos/a-new-upload-0123456789ab.jpg")

    while (chunk := migration_claim_chunk(run_id=run.pk)) is not None:
        migration_run_chunk(chunk_id=chunk)
    migration_advance(run_id=run.pk)

    assert Photo.objects.get(pk=edited).image.name == "photos/a-new-upload-0123456789ab.jpg"
    report = migration_report(run_id=run.pk)
    reasons = {d.value: d.reason for d in report.dangling}
    assert reasons[value] == "the row changed during the migration; left as it is"
    others = [pk for pk, v in legacy.rows.items() if legacy.expected_key(v) and pk != edited]
    assert all(
        Photo.objects.get(pk=pk).image.name == legacy.expected_key(legacy.rows[pk]) for pk in others
    )


def test_an_unchanged_tree_is_answered_from_the_last_run_and_a_change_is_migrated(
    s3, clean_buckets, legacy
):
    from PIL import Image

    from pipeline.bulk.chunks import migration_run_chunk
    from pipeline.bulk.coordinator import migration_advance, migration_claim_chunk
    from pipeline.bulk.options import Options
    from pipeline.bulk.planning import migration_plan
    from pipeline.bulk.reporting import migration_report
    from pipeline.bulk.runs import migration_create
    from pipeline.bulk.scanning import migration_scan
    from pipeline.models import MigrationItem, MigrationLink

    opts = Options.build(targets=[MODEL], process=False)

    def run_once() -> MigrationRun:
        run = migration_create(source=str(legacy.root), options=opts)
        migration_scan(run_id=run.pk)
        migration_plan(run_id=run.pk)
        while (chunk := migration_claim_chunk(run_id=run.pk)) is not None:
            migration_run_chunk(chunk_id=chunk)
        migration_advance(run_id=run.pk)
        run.refresh_from_db()
        assert run.state == MigrationRun.State.DONE
        return run

    first = run_once()
    before = migration_report(run_id=first.pk)
    assert before.uploaded == len(legacy.keys)

    # Nothing changed: no item, link or chunk; the report is the no-op one.
    for _ in range(2):  # a no-op after a no-op too
        again = run_once()
        assert again.report["noop_of"] == first.pk
        assert not MigrationItem.objects.filter(run=again).exists()
        assert not MigrationLink.objects.filter(run=again).exists()
        assert not MigrationChunk.objects.filter(run=again).exists()
        report = migration_report(run_id=again.pk)
        assert report.run_id == str(again.pk)
        assert (report.uploaded, report.already_present) == (0, len(legacy.keys))
        assert (report.rows_relinked, report.orphans_imported) == (0, 0)
        assert report.dangling == before.dangling
        assert (report.files_scanned, report.images, report.rejected) == (
            before.files_scanned,
            before.images,
            before.rejected,
        )
        assert report.bytes_after == before.bytes_after
        assert report.bytes_optimized_originals == before.bytes_optimized_originals
        assert report.bytes_processed_originals == before.bytes_processed_originals
        assert report.bytes_variants == before.bytes_variants

    # A file touched (same content) and a new one: the normal path, the new one migrated.
    touched = legacy.root / legacy.sample.image_paths[0]
    os.utime(touched, ns=(1, 1))
    Image.new("RGB", (40, 30), (200, 10, 90)).save(legacy.root / "brand-new.jpg")
    changed = run_once()
    assert "noop_of" not in changed.report
    assert MigrationItem.objects.filter(run=changed).count() == before.files_scanned + 1
    report = migration_report(run_id=changed.pk)
    assert (report.uploaded, report.already_present) == (1, len(legacy.keys))
    assert run_once().report["noop_of"] == changed.pk

    # A row given a legacy value again: the normal path, the row re-linked.
    photo = Photo.objects.create(title="new row", image="brand-new.jpg")
    relinked = run_once()
    assert "noop_of" not in relinked.report
    assert migration_report(run_id=relinked.pk).rows_relinked == 1
    photo.refresh_from_db()
    assert photo.image.name.startswith(f"{opts.prefix}/")

    # A row emptied: its content becomes an orphan (imported): the normal path again.
    Photo.objects.filter(pk=photo.pk).update(image="")
    emptied = run_once()
    assert "noop_of" not in emptied.report
    assert run_once().report["noop_of"] == emptied.pk

    # An orphan's key given to a row (no longer an orphan): the normal path again.
    orphan = MigrationItem.objects.filter(run=emptied, orphan=True).values_list("key", flat=True)
    Photo.objects.create(title="orphan's new row", image=orphan.first())
    assert "noop_of" not in run_once().report

    # An original deleted from the bucket by hand: a plain re-run of the unchanged tree
    # trusts the run history (no S3 request); --verify lists the bucket and stores it again.
    stored = {k: o["ETag"] for k, o in bucket(s3, PRIMARY_BUCKET).items()}
    gone = sorted(stored)[len(stored) // 2]
    s3.delete_object(Bucket=PRIMARY_BUCKET, Key=gone)
    trusted = run_once()
    assert trusted.report["noop_of"]
    assert gone not in bucket(s3, PRIMARY_BUCKET)
    opts = dataclasses.replace(opts, verify=True)
    restored = run_once()
    assert "noop_of" not in restored.report
    report = migration_report(run_id=restored.pk)
    assert (report.uploaded, report.already_present) == (1, len(stored) - 1)
    assert {k: o["ETag"] for k, o in bucket(s3, PRIMARY_BUCKET).items()} == stored
    assert run_once().report["noop_of"] == restored.pk  # verified, and nothing missing


def test_a_run_whose_chunk_messages_were_lost_is_finished_by_the_sweep(
    celery_worker, s3, clean_buckets, legacy
):
    """Every chunk queued, every message lost (a broker restarted empty, a whole worker
    killed), nobody following the run: the periodic sweep publishes the chunks again and
    the run ends as an uninterrupted one would."""
    from datetime import timedelta

    from django.utils import timezone

    from pipeline.bulk import tasks as migration_tasks
    from pipeline.bulk.options import Options
    from pipeline.bulk.planning import migration_plan
    from pipeline.bulk.runs import migration_create
    from pipeline.bulk.scanning import migration_scan

    opts = Options.build(targets=(MODEL,), chunk_size=5)
    run = migration_create(source=str(legacy.root), options=opts)
    migration_scan(run_id=run.pk)
    migration_plan(run_id=run.pk)
    chunks = MigrationChunk.objects.filter(run=run)
    # What the coordinator leaves behind when the messages it published are lost.
    chunks.update(
        state=MigrationChunk.State.QUEUED,
        queued_at=timezone.now() - timedelta(hours=1),
        attempts=1,
    )
    assert MigrationRun.objects.get(pk=run.pk).state == MigrationRun.State.RUNNING

    migration_tasks.sweep_runs.delay()

    def done() -> MigrationRun | None:
        fresh = MigrationRun.objects.get(pk=run.pk)
        return fresh if fresh.state == MigrationRun.State.DONE else None

    finished = wait_for(done, timeout=180, what="the swept run to finish")
    assert_counts(Report.from_dict(finished.report), legacy)
    assert set(bucket(s3, PRIMARY_BUCKET)) == legacy.keys
    assert set(chunks.values_list("attempts", flat=True)) == {2}  # each published once more
    for pk, value in legacy.rows.items():
        if legacy.expected_key(value):
            assert Photo.objects.get(pk=pk).image_status == Status.READY
