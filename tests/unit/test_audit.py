"""The bucket audit: its pure decisions, the ``--model`` selection, and the command run
against the embedded folder buckets (real files, real database rows)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from demo.models import Photo
from pipeline import naming, storage
from pipeline.audit import (
    Verdict,
    decide_orphans,
    judge_public_key,
    key_identity,
    media_audit,
    media_audit_fix,
    row_folder,
)
from pipeline.fields import Status
from pipeline.management.cli import select_targets
from pipeline.models import MediaAsset
from pipeline.models.cdn import CDNPendingPath
from pipeline.services import managed_targets

PREFIX = "media"


def key_of(
    label: str, pk: object, source: str = "sunset-3f2a9c1b0d2e.jpg", name: str = "w640"
) -> str:
    """A public key exactly as the pipeline names it."""
    folder = naming.public_folder(prefix=PREFIX, model_label=label, pk=pk, source_name=source)
    return naming.output_key(folder, name, "webp")


def judge(key: str, **kw: Any) -> Verdict:
    kw.setdefault("referenced", set())
    kw.setdefault("in_flight", set())
    kw.setdefault("prefix", PREFIX)
    return judge_public_key(key, **kw)


# --- the orphan decision (pure) -------------------------------------------------------


def test_a_key_some_manifest_lists_is_never_an_orphan() -> None:
    key = key_of("demo.Photo", 42)
    folder = row_folder(prefix=PREFIX, model_label="demo.Photo", pk=42)
    assert judge(key, referenced={key}) is Verdict.REFERENCED
    # Listed by a manifest wins even over an in-flight identity and a narrower scope.
    assert judge(key, referenced={key}, in_flight={folder}, models=set()) is Verdict.REFERENCED


def test_an_unlisted_key_under_a_settled_row_is_an_orphan() -> None:
    listed = key_of("demo.Photo", 42, name="w640")
    planted = key_of("demo.Photo", 42, name="w9999")
    assert judge(planted, referenced={listed}) is Verdict.ORPHAN


def test_every_key_under_an_in_flight_identity_is_skipped() -> None:
    folder = row_folder(prefix=PREFIX, model_label="demo.Photo", pk=42)
    keys = [
        key_of("demo.Photo", 42),
        # another source's folder of the same row: a render of the new file in flight
        key_of("demo.Photo", 42, source="new-upload-0123456789ab.png", name="original"),
        # whatever the last segment(s) of the folder become, the identity covers them
        f"{folder}some/deeper/layout/w320.avif",
    ]
    for key in keys:
        assert judge(key, in_flight={folder}) is Verdict.IN_FLIGHT, key


def test_an_in_flight_identity_covers_no_other_row_sharing_its_digits() -> None:
    in_flight = {row_folder(prefix=PREFIX, model_label="demo.Photo", pk=4)}
    for pk in (42, 4_000):
        assert judge(key_of("demo.Photo", pk), in_flight=in_flight) is Verdict.ORPHAN
    # the same pk of another model is another identity
    assert judge(key_of("shop.Product", 4), in_flight=in_flight) is Verdict.ORPHAN


def test_keys_off_the_layout_are_orphans_of_no_model() -> None:
    for key in ("media/stray.txt", "media/zz/left-over.jpg", "media/zz/no_identity/w1.webp"):
        assert judge(key) is Verdict.ORPHAN, key
        # a --model audit cannot say they belong to the model: not its business
        assert judge(key, models={"demo.photo"}) is Verdict.OUT_OF_SCOPE, key


def test_a_model_selection_leaves_other_models_keys_alone() -> None:
    photo, asset = key_of("demo.Photo", 7), key_of("pipeline.MediaAsset", 7)
    assert judge(photo, models={"demo.photo"}) is Verdict.ORPHAN
    assert judge(asset, models={"demo.photo"}) is Verdict.OUT_OF_SCOPE
    assert judge(asset, models=None) is Verdict.ORPHAN


def test_keys_outside_the_prefix_are_out_of_scope() -> None:
    assert judge("checks/probe.txt") is Verdict.OUT_OF_SCOPE
    assert judge("media-old/7f/demo.photo-1/a/w1.webp") is Verdict.OUT_OF_SCOPE


@pytest.mark.parametrize("prefix", ["", "cdn/media", "/media/"])
def test_other_prefixes_nested_or_empty(prefix: str) -> None:
    folder = naming.public_folder(prefix=prefix, model_label="demo.Photo", pk=9, source_name="a")
    key = naming.output_key(folder, "w320", "webp")
    flight = row_folder(prefix=prefix, model_label="demo.Photo", pk=9)
    assert key.startswith(flight)
    assert judge_public_key(key, referenced=set(), in_flight={flight}, prefix=prefix) == (
        Verdict.IN_FLIGHT
    )
    assert judge_public_key(key, referenced=set(), in_flight=set(), prefix=prefix) == (
        Verdict.ORPHAN
    )
    assert key_identity(key, prefix=prefix) == ("demo.photo", "9")


@pytest.mark.parametrize("pk", [42, "7", uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")])
def test_a_rows_folder_is_where_naming_puts_its_keys(pk: object) -> None:
    """The audit's idea of a row's identity folder agrees with ``naming`` (so a change of
    the key layout that would make the audit delete live objects fails here first)."""
    key = key_of("demo.Photo", pk)
    folder = row_folder(prefix=PREFIX, model_label="demo.Photo", pk=pk)
    assert key.startswith(folder) and folder.endswith(f"/demo.photo-{pk}/")
    assert key_identity(key, prefix=PREFIX) == ("demo.photo", str(pk))


def test_key_identity_of_keys_off_the_layout() -> None:
    assert key_identity("media/stray.txt", prefix=PREFIX) is None
    assert key_identity("media/zz/no_identity/w1.webp", prefix=PREFIX) is None
    assert key_identity("elsewhere/7f/demo.photo-1/a/w1.webp", prefix=PREFIX) is None


def test_decide_orphans_sorts_every_listed_key_into_one_verdict() -> None:
    ready = [key_of("demo.Photo", 1, name=n) for n in ("original", "w320", "w640")]
    planted = key_of("demo.Photo", 1, name="w9999")
    busy = row_folder(prefix=PREFIX, model_label="demo.Photo", pk=2)
    busy_key = key_of("demo.Photo", 2)
    other = key_of("pipeline.MediaAsset", 3)
    listed = [*ready, planted, busy_key, other, "media/stray.txt"]

    everything = decide_orphans(listed, referenced=set(ready), in_flight={busy}, prefix=PREFIX)
    assert everything.orphans == sorted([planted, other, "media/stray.txt"])
    assert (everything.referenced, everything.in_flight, everything.out_of_scope) == (3, 1, 0)

    photos = decide_orphans(
        listed, referenced=set(ready), in_flight={busy}, prefix=PREFIX, models={"demo.photo"}
    )
    assert photos.orphans == [planted]
    assert (photos.referenced, photos.in_flight, photos.out_of_scope) == (3, 1, 2)


# --- choosing what to audit -----------------------------------------------------------


def labels(targets: list[Any]) -> list[str]:
    return sorted(f"{t.label}.{t.field.name}" for t in targets)


def test_select_targets_accepts_a_model_or_a_field_in_any_case() -> None:
    every = managed_targets()
    assert labels(select_targets([], every)) == labels(every)
    assert labels(select_targets(["demo.Photo"], every)) == ["demo.Photo.image"]
    assert labels(select_targets(["DEMO.photo.image"], every)) == ["demo.Photo.image"]
    both = select_targets(["demo.Photo", "pipeline.MediaAsset.image", "demo.photo"], every)
    assert labels(both) == ["demo.Photo.image", "pipeline.MediaAsset.image"]


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("demo.Nope", "demo.Photo"),  # unknown model: say which ones exist
        ("auth.User", "pipeline.MediaAsset"),  # a model with no managed field
        ("demo.Photo.title", "demo.Photo.image"),  # not a managed field: name the right one
        ("demo.Photo.nope", "demo.Photo.image"),
        ("demo", "app_label.Model"),  # the shape is wrong: show the shape
        ("demo.Photo.image.extra", "app_label.Model"),
    ],
)
def test_select_targets_refuses_with_the_fix_in_the_message(spec: str, hint: str) -> None:
    with pytest.raises(CommandError, match=spec.replace(".", r"\.")) as caught:
        select_targets([spec], managed_targets())
    assert hint in str(caught.value)


def test_the_command_turns_a_wrong_model_into_a_command_error() -> None:
    # No database access needed (nor allowed here): the mistake is caught first.
    with pytest.raises(CommandError, match=r"demo\.Nope.*demo\.Photo"):
        call_command("audit_media", "--model", "demo.Nope", stdout=io.StringIO())


# --- the whole command on the embedded folder buckets -----------------------------------


def put(bucket: Any, key: str, data: bytes = b"bytes") -> None:
    storage.write(bucket, key, data, content_type="application/octet-stream")


def with_manifest(row: Any, status: str, names: list[str], label: str) -> list[str]:
    """Give a row a manifest as the pipeline writes it; returns its keys."""
    source = row.image.name
    folder = naming.public_folder(prefix=PREFIX, model_label=label, pk=row.pk, source_name=source)
    keys = [naming.output_key(folder, n, "webp") for n in names]
    entries = [{"name": n, "key": k, "format": "webp"} for n, k in zip(names, keys, strict=True)]
    manifest = {"source": source, "original": entries[0], "variants": entries[1:]}
    type(row).objects.filter(pk=row.pk).update(image_status=status, image_manifest=manifest)
    return keys


def run(*args: str) -> tuple[dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("audit_media", "--json", *args, stdout=out, stderr=err)
    return json.loads(out.getvalue()), err.getvalue()


@pytest.mark.django_db
def test_the_command_on_folder_buckets_reports_and_fixes(folder_buckets: Path) -> None:
    public, primary = storage.public(), storage.primary()
    # A ready photo with one output gone and an object planted beside its outputs.
    ready = Photo.objects.create(title="ready", image="photos/ready-111111111111.jpg")
    r_keys = with_manifest(ready, Status.READY, ["original", "w320", "w640"], "demo.Photo")
    for key in r_keys[:2]:
        put(public, key)
    planted = r_keys[0].rsplit("/", 1)[0] + "/w9999.webp"
    put(public, planted)
    # A render in flight: its objects exist before its manifest does.
    busy = Photo.objects.create(title="busy", image="photos/busy-222222222222.jpg")
    Photo.objects.filter(pk=busy.pk).update(image_status=Status.PROCESSING, image_manifest={})
    busy_key = key_of("demo.Photo", busy.pk, source=busy.image.name, name="w320")
    put(public, busy_key)
    # A failed row keeps its previous outputs (still served): referenced, not missing.
    failed = Photo.objects.create(title="failed", image="photos/failed-333333333333.jpg")
    f_keys = with_manifest(failed, Status.FAILED, ["original", "w320"], "demo.Photo")
    put(public, f_keys[0])
    # A media-library row, complete.
    asset = MediaAsset.objects.create(image="library/asset-444444444444.jpg")
    a_keys = with_manifest(asset, Status.READY, ["original", "w320"], "pipeline.MediaAsset")
    for key in a_keys:
        put(public, key)
    put(public, "media/stray.txt")
    put(public, "checks/probe.txt")  # outside KEY_PREFIX: not the pipeline's
    for name in (ready.image.name, asset.image.name, "photos/unreferenced.jpg", "legacy/a/b.jpg"):
        put(primary, name)

    report, status = run()
    assert report["orphans"] == sorted([planted, "media/stray.txt"])
    assert report["missing"] == [
        {"key": r_keys[2], "model": "demo.Photo", "field": "image", "pk": ready.pk}
    ]
    assert [o["key"] for o in report["unreferenced_originals"]] == [
        "legacy/a/b.jpg",
        "photos/unreferenced.jpg",
    ]
    assert report["counts"]["in_flight_skipped"] == 1
    assert report["counts"]["public_objects"] == 8  # everything under media/
    assert report["fixed"] is None
    assert "listing" in status.lower()  # status lines leave stdout to the JSON

    # Narrowed to one field: another model's objects are not judged; originals still are.
    photos, _ = run("--model", "demo.Photo.image")
    assert photos["orphans"] == [planted]
    assert photos["missing"] == report["missing"]
    assert photos["unreferenced_originals"] == report["unreferenced_originals"]
    assets, _ = run("--model", "pipeline.MediaAsset")
    assert assets["orphans"] == [] and assets["missing"] == []

    revision = Photo.objects.get(pk=ready.pk).image_revision
    fixed, _ = run("--fix")
    assert fixed["fixed"] == {"orphans_deleted": 2, "rows_requeued": 1}
    assert not (folder_buckets / "public" / planted).exists()
    assert not (folder_buckets / "public" / "media/stray.txt").exists()
    for key in [*r_keys[:2], busy_key, f_keys[0], *a_keys, "checks/probe.txt"]:
        assert (folder_buckets / "public" / key).exists(), key
    for name in (ready.image.name, asset.image.name, "photos/unreferenced.jpg", "legacy/a/b.jpg"):
        assert (folder_buckets / "primary" / name).exists(), name  # originals: never deleted
    row = Photo.objects.get(pk=ready.pk)
    assert (row.image_status, row.image_revision) == (Status.PENDING, revision + 1)
    pending = set(CDNPendingPath.objects.values_list("path", flat=True))
    assert {f"/{planted}", "/media/stray.txt"} <= pending


@pytest.mark.django_db
def test_the_table_names_what_it_found_and_how_to_fix_it(folder_buckets: Path) -> None:
    put(storage.public(), "media/stray.txt")
    put(storage.primary(), "photos/unreferenced.jpg")
    out = io.StringIO()
    call_command("audit_media", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "media/stray.txt" in text and "photos/unreferenced.jpg" in text
    assert "--fix" in text
    assert re.search(r"^\s*orphans\s+1$", text, re.M | re.I), text
    assert re.search(r"^\s*missing outputs\s+0$", text, re.M | re.I), text


@pytest.mark.django_db
def test_a_row_re_rendered_while_the_bucket_is_listed_keeps_its_new_outputs(
    folder_buckets: Path,
) -> None:
    """The rows are read before the listing: a render landing in between writes keys the
    audit has not seen in any manifest. Those must not be called orphans, nor the outputs
    it replaced called missing."""
    public = storage.public()
    row = Photo.objects.create(title="racing", image="photos/old-111111111111.jpg")
    (old,) = with_manifest(row, Status.READY, ["original"], "demo.Photo")
    put(public, old)

    @contextlib.contextmanager
    def phases(desc: str, *, unit: str, total: int | None = None) -> Iterator[Any]:
        if desc.startswith("listing public"):
            # The re-render lands now: new source, new keys, old output removed.
            Photo.objects.filter(pk=row.pk).update(image="photos/new-222222222222.jpg")
            (new,) = with_manifest(
                Photo.objects.get(pk=row.pk), Status.READY, ["original"], "demo.Photo"
            )
            put(public, new)
            storage.delete(public, old)
        yield lambda n: None

    report = media_audit(progress=phases)
    assert (report.orphans, report.missing) == ([], [])
    assert report.changed_during_audit == 2


@pytest.mark.django_db
def test_fix_spares_an_orphan_a_row_claimed_since_the_audit(folder_buckets: Path) -> None:
    public = storage.public()
    row = Photo.objects.create(title="late", image="photos/late-111111111111.jpg")
    Photo.objects.filter(pk=row.pk).update(image_status=Status.EMPTY, image_manifest={})
    key = key_of("demo.Photo", row.pk, source=row.image.name)
    put(public, key)
    report = media_audit()
    assert report.orphans == [key]

    # A render of the row starts before --fix gets to the key.
    Photo.objects.filter(pk=row.pk).update(image_status=Status.PROCESSING)
    assert media_audit_fix(report=report).orphans_deleted == 0
    assert (folder_buckets / "public" / key).exists()
