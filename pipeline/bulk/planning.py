"""Planning, a run's second step: queries over the stored scan (``plan`` holds the rules).

The canonical path of each content; keys already given to a content by an earlier run
kept (sticky), the others the natural key of their canonical path, collisions suffixed
(8, 16, then 64 hex). Then every row of the migrated model fields is resolved against
the stored scan (``linking``); contents no row refers to are marked orphans; contents an
earlier run stored are ``present`` if one listing of their key range still finds them;
the contents with work left are cut into chunks, in key order, so that one listing of a
key range checks a whole chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.db import connection, models, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery, Window
from django.db.models.functions import Collate, Length, RowNumber
from django.utils import timezone

from pipeline import storage
from pipeline.bulk import plan as rules
from pipeline.bulk import transfer
from pipeline.bulk.linking import resolve_links
from pipeline.bulk.options import BATCH, Options, library, target_of
from pipeline.bulk.scan import Kind
from pipeline.fields import Status
from pipeline.models import MigrationChunk, MigrationItem, MigrationLink, MigrationRun

__all__ = ["in_bucket", "migration_plan"]

Item = MigrationItem.State
Link = MigrationLink.State
Run = MigrationRun.State


def migration_plan(*, run_id: int, heartbeat: Callable[[], None] | None = None) -> None:
    """Keys, links, orphans and chunks of a scanned run (see the module docstring).

    ``heartbeat`` is called between the steps (``heartbeat.Heartbeat`` writes when due)."""
    beat = heartbeat or _no_beat
    run = MigrationRun.objects.get(pk=run_id)
    if run.state != Run.PLANNING:
        return
    opts = Options.of(run)
    images = MigrationItem.objects.filter(run=run, kind=Kind.IMAGE)
    beat()
    with transaction.atomic():
        if not images.filter(canonical=True).exists():
            _plan_keys(run, opts)
    resolve_links(run, opts, heartbeat=beat)
    beat()
    empty = next(iter(storage.list_objects(storage.primary(), f"{opts.prefix}/")), None) is None
    with transaction.atomic():
        if not MigrationChunk.objects.filter(run=run).exists():
            _mark_orphans(run, opts)
            _confirm_stored(run)
            _make_chunks(run, opts)
        MigrationRun.objects.filter(pk=run_id, state=Run.PLANNING).update(
            state=Run.RUNNING, planned_at=timezone.now(), bucket_was_empty=empty
        )


def _no_beat() -> None:
    pass


def _plan_keys(run: MigrationRun, opts: Options) -> None:
    images = MigrationItem.objects.filter(run=run, kind=Kind.IMAGE)
    # 1. The canonical path of each content: real before link, shorter, code-point order.
    ranked = images.annotate(
        rank=Window(
            RowNumber(),
            partition_by=[F("sha256")],
            order_by=[F("via_link").asc(), Length("path").asc(), _binary("path").asc()],
        )
    )
    images.filter(pk__in=ranked.filter(rank=1).values("pk")).update(canonical=True)
    canon = images.filter(canonical=True)
    earlier = _earlier_items(run)
    # 2. Sticky: a content stored by an earlier run keeps its key (``_confirm_stored`` then
    #    checks that it is still there).
    same_content = earlier.filter(sha256=OuterRef("sha256")).order_by("-run_id")
    canon.filter(Exists(same_content)).update(key=Subquery(same_content.values("key")[:1]))
    # 3. Newcomers whose natural key nobody else wants: the natural key. (EXISTS, never
    #    NOT IN (subquery): PostgreSQL rescans a subquery per row once its hash outgrows
    #    work_mem, which made planning quadratic around 100,000 files.)
    contested = images.filter(natural_key=OuterRef("natural_key")).exclude(
        sha256=OuterRef("sha256")
    )
    taken = canon.exclude(key="").filter(key=OuterRef("natural_key"))
    held_before = earlier.filter(key=OuterRef("natural_key")).exclude(sha256=OuterRef("sha256"))
    canon.filter(key="").exclude(Exists(contested)).exclude(Exists(taken)).exclude(
        Exists(held_before)
    ).update(key=F("natural_key"))
    # 4. The rest collide: suffix every content of the group (``plan`` rules), in Python;
    #    collisions are rare, so this loop is short.
    for natural in (
        canon.filter(key="").order_by("natural_key").values_list("natural_key", flat=True)
    ).distinct():
        _suffix_group(run, natural, earlier)
    # 5. Keys longer than the columns that will hold them get a shorter, content-hashed key.
    limit = opts.key_limit()
    for pk, key, sha in (
        canon.annotate(n=Length("key")).filter(n__gt=limit).values_list("pk", "key", "sha256")
    ):
        canon.filter(pk=pk).update(key=_shortened(key, sha, limit))
    # 6. Every other path of a content: the content's key, nothing to upload.
    images.filter(canonical=False).update(
        key=Subquery(canon.filter(sha256=OuterRef("sha256")).values("key")[:1]),
        state=Item.SKIPPED,
    )


def _confirm_stored(run: MigrationRun) -> None:
    """Contents an earlier run stored at the key they keep, and still in the bucket, are
    ``present``: no chunk for them. The run history alone is not trusted (an object may
    have been deleted by hand since); one listing of their key range confirms them."""
    stored = _earlier_items(run).filter(
        sha256=OuterRef("sha256"), key=OuterRef("key"), state__in=[Item.UPLOADED, Item.PRESENT]
    )
    # (No filter on ``state``: the rows updated below must not leave the rows iterated.)
    known = MigrationItem.objects.filter(run=run, canonical=True).filter(Exists(stored))
    confirmed: list[int] = []
    for pk, found in in_bucket(known):
        if found:
            confirmed.append(pk)
        if len(confirmed) >= BATCH:
            MigrationItem.objects.filter(pk__in=confirmed).update(state=Item.PRESENT)
            confirmed = []
    MigrationItem.objects.filter(pk__in=confirmed).update(state=Item.PRESENT)


def in_bucket(items: models.QuerySet) -> Iterator[tuple[int, bool]]:
    """(pk, whether its object is in the primary bucket) for each item with a key, as far as
    a listing tells (the key, its size; its MD5 where the ETag is one). On S3 that is one
    listing of the items' key range (a request per 1,000 keys), merge-joined with the items
    in the same order, memory one page; on a local folder a ``stat`` per key. An object
    deleted or replaced by hand since a run stored it is seen, and stored again."""
    bucket = storage.primary()
    rows = items.exclude(key="").order_by(_binary("key")).values_list("pk", "key", "size", "md5")
    if not storage.is_s3(bucket):
        for pk, key, size, md5 in rows.iterator(BATCH):
            info = storage.head(bucket, key)
            yield pk, info is not None and transfer.same_listing(info, size, md5)
        return
    first = rows.values_list("key", flat=True).first()
    if first is None:
        return
    listed = storage.list_objects(bucket, "", start_after=first[:-1])
    info = next(listed, None)
    for pk, key, size, md5 in rows.iterator(BATCH):
        while info is not None and info.key < key:
            info = next(listed, None)
        found = info is not None and info.key == key
        yield pk, found and transfer.same_listing(info, size, md5)


def _binary(column: str) -> Any:
    """Code-point order (UTF-8 byte order): SQLite's default, ``COLLATE "C"`` on PostgreSQL."""
    return Collate(column, "C") if connection.vendor == "postgresql" else F(column)


def _earlier_items(run: MigrationRun) -> models.QuerySet:
    """Contents keyed by earlier runs, of this folder or any other: their keys are sticky
    (a content already stored is not stored again), and taken for any other content."""
    return MigrationItem.objects.filter(run_id__lt=run.pk, canonical=True).exclude(key="")


def _suffix_group(run: MigrationRun, natural: str, earlier: models.QuerySet) -> None:
    images = MigrationItem.objects.filter(run=run, kind=Kind.IMAGE)
    shas = sorted(set(images.filter(natural_key=natural).values_list("sha256", flat=True)))
    for length in rules.HASH_LENGTHS:
        chosen = {sha: rules.suffixed_key(natural, sha, length) for sha in shas}
        keys = list(chosen.values())
        if len(set(keys)) < len(keys):
            continue
        taken = (
            images.filter(natural_key__in=keys).exists()
            or images.filter(key__in=keys).exists()
            or earlier.filter(key__in=keys).exclude(sha256__in=shas).exists()
        )
        if not taken:
            break
    else:  # pragma: no cover - 64 hex digits of two different contents are different
        raise ValueError(f"cannot resolve the key collision on {natural!r}")
    for sha, key in chosen.items():
        images.filter(canonical=True, key="", natural_key=natural, sha256=sha).update(key=key)


def _shortened(key: str, sha256: str, limit: int) -> str:
    head, _dot, ext = key.rpartition(".")
    room = limit - len(ext) - 1 - 17
    if room < 8:
        raise ValueError(f"keys cannot fit in {limit} characters")
    return f"{head[:room].rstrip('-/')}-{sha256[:16]}.{ext}"


def _mark_orphans(run: MigrationRun, opts: Options) -> None:
    """Contents no migrated row refers to, now or once linked.

    Every content is marked, then those referred to are unmarked: ``key IN (subquery)``
    is a semi-join that both databases run once over the subquery. Its negation was not:
    PostgreSQL runs ``NOT IN`` per row once the subquery outgrows ``work_mem``, and
    SQLite runs ``NOT EXISTS`` per row, scanning the target's column, which has no index
    (100,000 files: 180 s instead of 2)."""
    contents = MigrationItem.objects.filter(run=run, canonical=True)
    contents.update(orphan=True)
    links = MigrationLink.objects.filter(run=run).exclude(key="").values("key")
    contents.filter(key__in=links).update(orphan=False)
    for label in opts.targets:
        target = target_of(label)
        held = target.rows().values(target.field.name)
        contents.filter(orphan=True, key__in=held).update(orphan=False)


def _make_chunks(run: MigrationRun, opts: Options) -> None:
    """Cut the contents with work left into chunks of consecutive keys, bounded in files
    and in bytes (``cut``): many small files share one task's fixed cost, while a chunk of
    large ones stays as much work as one of small ones."""
    work = Q(state=Item.PENDING) | Q(
        key__in=MigrationLink.objects.filter(run=run, state=Link.PENDING).values("key")
    )
    if opts.orphans == "import":
        # Not in the library yet; or imported by a run that did not process them.
        pending = Q(image_status=Status.EMPTY) if opts.process else Q(pk__in=[])
        work |= Q(orphan=True) & (
            ~Exists(library(OuterRef("sha256")))
            | Exists(library(OuterRef("sha256")).filter(pending))
        )
    todo = MigrationItem.objects.filter(run=run, canonical=True).filter(work)
    number, last = 0, None
    while True:
        page = todo.order_by("key")
        if last is not None:
            page = page.filter(key__gt=last)
        rows = list(page.values_list("pk", "key", "size")[: opts.chunk_size * 20])
        if not rows:
            break
        last = rows[-1][1]
        start = 0
        for length in cut([size for _, _, size in rows], opts.chunk_size, opts.chunk_bytes):
            part = rows[start : start + length]
            start += length
            chunk = MigrationChunk.objects.create(run=run, number=number, size=len(part))
            MigrationItem.objects.filter(pk__in=[pk for pk, _, _ in part]).update(chunk=chunk)
            number += 1


def cut(sizes: list[int], max_files: int, max_bytes: int) -> list[int]:
    """The lengths of consecutive chunks of files of these ``sizes``: each at most
    ``max_files`` files and ``max_bytes`` bytes, except a single larger file, alone."""
    lengths: list[int] = []
    files = held = 0
    for size in sizes:
        if files and (files == max_files or held + size > max_bytes):
            lengths.append(files)
            files = held = 0
        files += 1
        held += size
    if files:
        lengths.append(files)
    return lengths
