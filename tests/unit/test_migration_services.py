"""The stored scan and the planning queries of a run, checked against phase 1's pure rules.

No worker and no bucket here: a run is scanned and planned in the database, and what the
queries decided is compared with ``plan.plan`` over the same tree.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Sum
from django.utils import timezone

from demo.models import Photo
from demo.sample_tree import build_sample_tree
from pipeline.bulk import scanning
from pipeline.bulk.coordinator import MAX_CHUNK_ATTEMPTS, migration_top_up
from pipeline.bulk.options import Options
from pipeline.bulk.plan import plan, standard_key
from pipeline.bulk.planning import cut, migration_plan
from pipeline.bulk.reporting import migration_report
from pipeline.bulk.runs import migration_create, migration_requeue
from pipeline.bulk.scan import Kind, scan
from pipeline.bulk.scanning import migration_scan
from pipeline.models import MigrationChunk, MigrationItem, MigrationLink, MigrationRun
from tests.conftest import PHOTOS

pytestmark = pytest.mark.django_db

Item = MigrationItem.State


def planned_run(root: Path, **options: Any) -> MigrationRun:
    opts = Options.build(**options)
    run = migration_create(source=str(root), options=opts)
    migration_scan(run_id=run.pk)
    migration_plan(run_id=run.pk)
    run.refresh_from_db()
    return run


def keys_by_path(run: MigrationRun) -> dict[str, str]:
    return dict(MigrationItem.objects.filter(run=run, kind=Kind.IMAGE).values_list("path", "key"))


def stored(run: MigrationRun) -> None:
    """As if every chunk had uploaded its contents, and the run were over."""
    MigrationItem.objects.filter(run=run, canonical=True, state=Item.PENDING).update(
        state=Item.UPLOADED
    )
    MigrationRun.objects.filter(pk=run.pk).update(state=MigrationRun.State.DONE)


@pytest.fixture
def sample(tmp_path: Path) -> Any:
    return build_sample_tree(tmp_path / "media", PHOTOS)


def test_keys_copies_and_links_are_those_of_the_pure_plan(sample) -> None:
    rows = Photo.objects.bulk_create(Photo(image=v.value) for v in sample.legacy_values)
    run = planned_run(sample.root, targets=["demo.Photo.image"])
    expected = plan(scan(sample.root))

    assert run.state == MigrationRun.State.RUNNING
    assert keys_by_path(run) == {p: expected.key_for(p) for p in keys_by_path(run)}
    assert set(keys_by_path(run)) == set(sample.image_paths)
    canonical = set(
        MigrationItem.objects.filter(run=run, canonical=True).values_list("path", flat=True)
    )
    assert canonical == {o.canonical_path for o in expected.objects}
    links = {
        int(pk): (key, state)
        for pk, key, state in MigrationLink.objects.filter(run=run).values_list(
            "row_pk", "key", "state"
        )
    }
    for row, value in zip(rows, sample.legacy_values, strict=True):
        if not value.value:
            assert row.pk not in links  # a row without an image refers to nothing
            continue
        key = expected.resolve(value.value).key
        assert links[row.pk] == ((key, "pending") if key else ("", "dangling")), value
    # Orphans: contents no row refers to.
    referenced = {k for k, _ in links.values() if k}
    orphans = set(MigrationItem.objects.filter(run=run, orphan=True).values_list("key", flat=True))
    assert orphans == {o.key for o in expected.objects} - referenced


def test_a_rescan_reads_only_changed_files(sample, monkeypatch) -> None:
    first = planned_run(sample.root)
    stored(first)
    probed: list[int] = []
    real = scanning.probe_image

    def counting(data: bytes, *, profile: Any) -> Any:
        probed.append(len(data))
        return real(data, profile=profile)

    monkeypatch.setattr(scanning, "probe_image", counting)
    second = planned_run(sample.root)
    assert probed == []  # nothing read again
    fields = ("path", "sha256", "md5", "kind", "format", "width", "height", "reason")
    before = sorted(MigrationItem.objects.filter(run=first).values_list(*fields))
    assert sorted(MigrationItem.objects.filter(run=second).values_list(*fields)) == before

    # A file rewritten in place (new content, new mtime) is read again, and only it.
    stored(second)
    changed = sample.root / "uploads/2015/03/file (2).jpg"
    changed.write_bytes((sample.root / "Photos/Summer 2019/Sunset.Jpg").read_bytes())
    os.utime(changed, ns=(1, 1))
    third = planned_run(sample.root)
    assert len(probed) == 1
    sha = dict(MigrationItem.objects.filter(run=third).values_list("path", "sha256"))
    assert sha["uploads/2015/03/file (2).jpg"] == sha["Photos/Summer 2019/Sunset.Jpg"]
    # Its content is now a copy: folded into the other path's object.
    assert (
        keys_by_path(third)["uploads/2015/03/file (2).jpg"]
        == keys_by_path(first)["Photos/Summer 2019/Sunset.Jpg"]
    )


def test_keys_stay_put_and_only_newcomers_are_suffixed(sample, clean_buckets) -> None:
    from pipeline import storage

    first = planned_run(sample.root, orphans="skip")
    stored(first)
    old_key = keys_by_path(first)["uploads/2015/03/file.jpg"]
    assert old_key == "legacy/uploads/2015/03/file.jpg"
    data = (sample.root / "uploads/2015/03/file.jpg").read_bytes()
    storage.write(storage.primary(), old_key, data, content_type="image/jpeg")
    # A different picture arrives that wants the same key.
    (sample.root / "uploads/2015/03/FILE.JPEG").write_bytes(
        (PHOTOS / "21_mountain_500.jpg").read_bytes()
    )
    second = planned_run(sample.root, orphans="skip")
    keys = keys_by_path(second)
    assert keys["uploads/2015/03/file.jpg"] == old_key  # sticky
    newcomer = keys["uploads/2015/03/FILE.JPEG"]
    assert newcomer.startswith("legacy/uploads/2015/03/file-") and newcomer != old_key
    # Stored by the first run and still in the bucket (one listing says so): present, no
    # chunk for it. The other contents "stored" by the first run are not in the bucket:
    # the run history is not trusted, they are stored again.
    item = MigrationItem.objects.get(run=second, path="uploads/2015/03/file.jpg")
    assert (item.state, item.chunk_id) == (Item.PRESENT, None)
    todo = MigrationItem.objects.filter(run=second, chunk__isnull=False)
    assert "uploads/2015/03/FILE.JPEG" in {i.path for i in todo}
    present = MigrationItem.objects.filter(run=second, state=Item.PRESENT)
    assert [i.path for i in present] == ["uploads/2015/03/file.jpg"]

    # Deleted from the bucket by hand since: stored again.
    stored(second)
    storage.delete(storage.primary(), old_key)
    third = planned_run(sample.root, orphans="skip")
    item = MigrationItem.objects.get(run=third, path="uploads/2015/03/file.jpg")
    assert (item.state, item.key) == (Item.PENDING, old_key) and item.chunk_id is not None


def test_keys_longer_than_the_column_are_shortened(tmp_path) -> None:
    deep = tmp_path / "media" / ("Very Long Folder Name Number " * 3) / ("Sub Folder " * 6)
    deep.mkdir(parents=True)
    photo = (PHOTOS / "23_flower_300.jpg").read_bytes()
    (deep / "A Photo With An Extremely Long Descriptive Name From 2009.JPG").write_bytes(photo)
    run = planned_run(tmp_path / "media", targets=["demo.Photo.image"])
    (path, key), = keys_by_path(run).items()  # fmt: skip
    natural = standard_key(path, "jpeg")
    assert len(natural) > 100
    assert len(key) <= 100 and key.endswith(".jpg") and key.startswith(natural[:60])
    sha = MigrationItem.objects.get(run=run, path=path).sha256
    assert key.endswith(f"-{sha[:16]}.jpg")


def test_chunks_cut_the_work_in_key_order(sample) -> None:
    run = planned_run(sample.root, chunk_size=4)
    chunks = list(MigrationChunk.objects.filter(run=run).order_by("number"))
    objects = MigrationItem.objects.filter(run=run, canonical=True)
    assert [c.size for c in chunks] == [4, 4, 4, 4, objects.count() - 16]
    keys = [list(c.items.order_by("key").values_list("key", flat=True)) for c in chunks]
    flat = [k for ks in keys for k in ks]
    assert flat == sorted(flat) == sorted(objects.values_list("key", flat=True))


def test_unknown_targets_are_refused_before_anything_is_written() -> None:
    with pytest.raises(ValueError, match=r"app_label\.Model\.field"):
        Options.build(targets=["Photo.image"])
    with pytest.raises(ValueError, match=r"demo\.Photo\.title"):
        Options.build(targets=["demo.Photo.title"])
    assert not MigrationRun.objects.exists()


def test_admin_shows_runs_with_progress_and_report(sample, admin_client) -> None:
    run = planned_run(sample.root)
    changelist = admin_client.get("/admin/pipeline/migrationrun/")
    assert changelist.status_code == 200
    assert b"objects done / total" in changelist.content.lower()
    assert f"0 / {run.chunks.aggregate(n=Sum('size'))['n']}".encode() in changelist.content
    detail = admin_client.get(f"/admin/pipeline/migrationrun/{run.pk}/change/")
    assert detail.status_code == 200
    assert b"files scanned" in detail.content and b"(so far)" in detail.content
    assert b"Save" not in detail.content  # read-only
    items = admin_client.get("/admin/pipeline/migrationitem/?state__exact=pending")
    assert items.status_code == 200 and b"beach.jpeg" in items.content


def test_a_chunk_that_never_finishes_is_given_up_and_the_run_ends(sample) -> None:
    Photo.objects.bulk_create(Photo(image=v.value) for v in sample.legacy_values)
    run = planned_run(sample.root, targets=["demo.Photo.image"], process=False, chunk_size=100)
    chunk = MigrationChunk.objects.get(run=run)
    MigrationChunk.objects.filter(pk=chunk.pk).update(
        state=MigrationChunk.State.QUEUED,
        attempts=MAX_CHUNK_ATTEMPTS,
        queued_at=timezone.now() - timedelta(days=1),
    )

    migration_top_up(run_id=run.pk)

    run.refresh_from_db()
    assert run.state == MigrationRun.State.DONE
    report = migration_report(run_id=run.pk)
    assert report.failed_count == chunk.size and report.uploaded == 0
    assert report.rows_relinked == 0
    gave_up = [d for d in report.dangling if "gave up after 5 attempts" in d.reason]
    expected = plan(scan(sample.root))
    assert len(gave_up) == sum(1 for v in sample.legacy_values if expected.resolve(v.value).key)
    assert not MigrationLink.objects.filter(run=run, state=MigrationLink.State.PENDING).exists()


def _fake_clock(monkeypatch, module) -> list[float]:
    """time.sleep records and advances a fake time.monotonic."""
    now = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        now[0] += seconds

    monkeypatch.setattr(module.time, "sleep", sleep)
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    return slept


def test_the_command_polls_soon_then_backs_off(monkeypatch) -> None:
    from pipeline.management.commands import migrate_media

    slept = _fake_clock(monkeypatch, migrate_media)
    poll = migrate_media._Poll(total=100)
    for _ in range(7):
        poll.wait(0)  # no progress seen: nothing to go by but the back-off
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


def test_the_command_looks_when_the_pace_says_the_phase_ends(monkeypatch) -> None:
    from pipeline.management.commands import migrate_media

    slept = _fake_clock(monkeypatch, migrate_media)
    poll = migrate_media._Poll(total=1000)
    for done in (0, 0, 0, 0, 0, 100, 700, 990):
        poll.wait(done)
    # 700 done in 1.75 s is 400/s: the 300 left are 0.75 s away (capped at 0.5 s); then 990
    # in 2.25 s: the 10 left are about 23 ms away (raised to the 50 ms floor).
    assert slept[:5] == [0.05, 0.1, 0.2, 0.4, 0.5]
    assert slept[5:] == [0.5, 0.5, 0.05]


def test_files_over_the_profile_size_limit_are_rejected_and_reported(tmp_path, settings) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "small.jpg").write_bytes((PHOTOS / "23_flower_300.jpg").read_bytes())
    with open(root / "huge.jpg", "wb") as f:
        f.write((PHOTOS / "23_flower_300.jpg").read_bytes())
        f.truncate(3 * 1024 * 1024)
    settings.PIPELINE = {**settings.PIPELINE, "PROFILES": {"default": {"max_bytes": 1024**2}}}

    run = planned_run(root)

    huge = MigrationItem.objects.get(run=run, path="huge.jpg")
    reason = "3 MiB exceeds the 1 MiB file size limit"
    assert (huge.kind, huge.reason, huge.size, huge.sha256) == (Kind.REJECTED, reason, 3 << 20, "")
    assert huge.state == Item.SKIPPED and huge.chunk_id is None
    report = migration_report(run_id=run.pk)
    assert report.rejected == {reason: ["huge.jpg"]}
    assert report.images == 1


def test_a_heartbeat_renews_when_due_and_stops_a_superseded_worker(tmp_path, monkeypatch) -> None:
    from pipeline.bulk import heartbeat

    run = migration_create(source=str(tmp_path), options=Options.build())
    beat = heartbeat.Heartbeat(run.pk)
    beat.start()
    first = MigrationRun.objects.get(pk=run.pk).heartbeat_at
    beat()  # not due yet: nothing written
    assert MigrationRun.objects.get(pk=run.pk).heartbeat_at == first
    monkeypatch.setattr(heartbeat, "EVERY", 0.0)
    beat._due = 0.0
    beat()
    assert MigrationRun.objects.get(pk=run.pk).heartbeat_at > first
    # Started again elsewhere (the sweep took the run over): this worker must stop.
    assert heartbeat.take_over(run.pk)
    with pytest.raises(heartbeat.Superseded):
        beat()
    # Resumed by hand (the command drives it now): the same.
    beat.start()
    migration_requeue(run_id=run.pk)
    assert MigrationRun.objects.get(pk=run.pk).heartbeat_at is None
    with pytest.raises(heartbeat.Superseded):
        beat()


def test_the_sweep_starts_again_only_runs_whose_start_went_silent(
    tmp_path, settings, monkeypatch
) -> None:
    from pipeline import dispatch
    from pipeline.bulk import coordinator

    sent: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(dispatch, "send", lambda name, *args, **kw: sent.append((name, args)))
    settings.PIPELINE = {**settings.PIPELINE, "MIGRATION": {"STALE_START_AFTER": 60}}
    old = timezone.now() - timedelta(seconds=61)
    runs = {}
    for name, state, beat in [
        ("silent", MigrationRun.State.SCANNING, old),
        ("planning", MigrationRun.State.PLANNING, old),
        ("alive", MigrationRun.State.SCANNING, timezone.now()),
        ("not detached", MigrationRun.State.SCANNING, None),  # the command scans it
        ("done", MigrationRun.State.DONE, old),
    ]:
        runs[name] = MigrationRun.objects.create(source=f"/{name}", state=state, heartbeat_at=beat)

    coordinator.migration_sweep()
    coordinator.migration_sweep()  # restarted once: its heartbeat was taken over

    assert sent == [
        (dispatch.START_RUN, (runs["silent"].pk,)),
        (dispatch.START_RUN, (runs["planning"].pk,)),
    ]


def test_a_detached_start_that_fails_fails_its_run_instead_of_looping(
    tmp_path, settings, monkeypatch
) -> None:
    from pipeline import dispatch
    from pipeline.bulk import coordinator
    from pipeline.bulk.runs import migration_start

    sent: list[str] = []
    monkeypatch.setattr(dispatch, "send", lambda name, *args, **kw: sent.append(name))
    settings.PIPELINE = {**settings.PIPELINE, "MIGRATION": {"STALE_START_AFTER": 0}}
    run = migration_create(source=str(tmp_path / "unmounted"), options=Options())

    with pytest.raises(OSError):
        migration_start(run_id=run.pk)  # the folder is gone

    run.refresh_from_db()
    assert run.state == MigrationRun.State.FAILED and run.heartbeat_at is None
    assert "unmounted" in run.error
    coordinator.migration_sweep()
    assert dispatch.START_RUN not in sent  # left for someone to resume, not restarted


def test_chunks_are_bounded_in_files_and_in_bytes() -> None:
    assert cut([10] * 7, 3, 1000) == [3, 3, 1]  # by files
    assert cut([40, 40, 40, 10, 10], 10, 100) == [2, 3]  # by bytes: 80, then 60
    assert cut([5, 500, 5, 5], 10, 100) == [1, 1, 2]  # a larger file is a chunk of its own
    assert cut([], 3, 100) == []


def test_planning_cuts_chunks_by_bytes_too(tmp_path: Path) -> None:
    sample = build_sample_tree(tmp_path / "media", PHOTOS)
    run = planned_run(sample.root, chunk_size=1000, chunk_bytes=1)
    chunks = list(MigrationChunk.objects.filter(run=run).values_list("size", flat=True))
    canonical = MigrationItem.objects.filter(run=run, canonical=True, state=Item.PENDING)
    assert len(chunks) > 10 and chunks == [1] * canonical.count()  # one file per chunk
