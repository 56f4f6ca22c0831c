"""Bulk migration of a legacy media folder: every write of a run (phase 2).

A run moves through its states, each step idempotent and resumable, its progress in the
database (``pipeline.models.migration``):

``scanning``
    The tree is streamed into one ``MigrationItem`` per path (``scan.scan``), in batches.
    Files whose (path, size, mtime_ns) match the previous scan of the same folder are not
    read again: the previous run's rows are merge-joined with the walk (both are in the
    scan's deterministic order), so a re-run of an unchanged tree is a walk of ``stat``.
``planning``
    Queries over the stored scan (``plan`` holds the rules): the canonical path of each
    content, keys already given to a content by an earlier run kept (sticky), the others
    the natural key of their canonical path, collisions suffixed (8, 16, then 64 hex).
    Then every row of the migrated model fields is resolved (``references``) against the
    stored scan, in batches, into a ``MigrationLink`` (a key, or why not); contents no row
    refers to are marked orphans; contents an earlier run stored are ``present`` if one
    listing of their key range still finds them; the contents with work left are cut into
    chunks, in key order, so that one listing of a key range checks a whole chunk.
``running``
    The coordinator (``migration_top_up``) keeps at most ``MAX_CHUNKS_IN_FLIGHT`` chunk
    tasks queued; each chunk (``migration_run_chunk``) uploads what is missing
    (``transfer``), re-links its rows with ``pipeline.services.media_attach`` (which queues
    the same processing task as a save), imports its orphans into ``MediaAsset``, and tops
    the queue up again. No group, no chord: a million files is a bounded trickle of
    messages, and the state is in rows.
``processing``
    The re-linked rows are rendered by the ordinary pipeline; the run is ``done`` when
    none of them is pending any more, and its report is stored.

A re-run that would change nothing is answered at the start of its scan instead
(``_answer_unchanged``): when the previous run of the folder finished with the same options,
its rows still describe the database (no row newly holding a legacy path, no orphan newly
referenced or dropped, nothing failed) and the walk yields its scan unchanged, the new run
is ``done`` at once with the no-op report, and stores no item, link or chunk.

Eager mode (no broker, the embedded default) drives the same chunks in a loop in the
caller's process (``migration_drive``), never by recursion.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.db import connection, models, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Sum, Window
from django.db.models.functions import Cast, Collate, Length, RowNumber
from django.utils import timezone

from pipeline import dispatch, storage
from pipeline import services as media_services
from pipeline import state as row_state
from pipeline.bulk import plan as rules
from pipeline.bulk import transfer
from pipeline.bulk.references import Match, lookup_key, normalize_reference, resolve_reference
from pipeline.bulk.report import Report
from pipeline.bulk.scan import Kind, ScanEntry, scan
from pipeline.conf import pipeline_settings
from pipeline.fields import Status
from pipeline.models import MediaAsset, MigrationChunk, MigrationItem, MigrationLink, MigrationRun

logger = logging.getLogger(__name__)

__all__ = [
    "Options",
    "Progress",
    "dry_run",
    "is_eager",
    "migration_advance",
    "migration_claim_chunk",
    "migration_coordinate",
    "migration_create",
    "migration_detach",
    "migration_drive",
    "migration_find_resumable",
    "migration_plan",
    "migration_progress",
    "migration_report",
    "migration_requeue",
    "migration_run_chunk",
    "migration_scan",
    "migration_start",
    "migration_sweep",
    "migration_top_up",
]

BATCH = 1000
"""Rows per bulk insert, and legacy rows resolved per batch of queries."""

MAX_PATH = 1000
"""Longer legacy paths are stored shortened (and rejected): they fit no column anyway."""

LINK_BATCH = 500
"""Model rows resolved per batch (a few queries per batch, whatever its size)."""

FOLLOW_EVERY = 3
"""Seconds between two checks of a processing run by the coordinator task."""

MAX_CHUNK_ATTEMPTS = 5
"""A chunk published this many times without finishing is given up (its files fail)."""

ASSET_LABEL = "pipeline.MediaAsset"
ASSET_FIELD = "image"

Item = MigrationItem.State
Chunk = MigrationChunk.State
Link = MigrationLink.State
Run = MigrationRun.State


# --- Options --------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What a run was asked to do; stored as JSON on the run, so a resume does the same."""

    targets: tuple[str, ...] = ()  # "app_label.Model.field", MediaImageFields
    orphans: str = "import"  # or "skip"
    process: bool = True
    media_url: str = "/media/"  # the old site's MEDIA_URL, as rows spelled it
    media_roots: tuple[str, ...] = ()  # old absolute MEDIA_ROOTs rows may hold
    prefix: str = "legacy"
    chunk_size: int = 50
    # A re-run of an unchanged tree trusts the run history for what is stored, unless
    # asked to list the bucket too (``--verify``). Ordinary runs always list.
    verify: bool = False

    def __post_init__(self) -> None:
        if self.orphans not in ("import", "skip"):
            raise ValueError(f"orphans must be 'import' or 'skip', not {self.orphans!r}")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        for target in self.targets:
            _target(target)  # unknown models and fields fail before anything is written

    @classmethod
    def build(cls, **given: Any) -> Options:
        conf = pipeline_settings()["MIGRATION"]
        given = {k: v for k, v in given.items() if v is not None}
        given.setdefault("prefix", conf["KEY_PREFIX"])
        given.setdefault("chunk_size", conf["CHUNK_SIZE"])
        given.setdefault("media_url", settings.MEDIA_URL or "/media/")
        given["targets"] = tuple(dict.fromkeys(given.get("targets", ())))
        given["media_roots"] = tuple(given.get("media_roots", ()))
        return cls(**given)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets"], data["media_roots"] = list(self.targets), list(self.media_roots)
        return data

    @classmethod
    def of(cls, run: MigrationRun) -> Options:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in run.options.items() if k in known}
        data["targets"] = tuple(data.get("targets", ()))
        data["media_roots"] = tuple(data.get("media_roots", ()))
        return cls(**data)

    def key_limit(self) -> int:
        """The longest key every column that will hold one can store."""
        limits = [_target(t).field.max_length or 100 for t in self.targets]
        if self.orphans == "import":
            limits.append(MediaAsset._meta.get_field(ASSET_FIELD).max_length or 100)
        return min(limits, default=1024)


@functools.cache
def _target(label: str) -> media_services.Target:
    model_label, dot, field_name = label.rpartition(".")
    if not dot or "." not in model_label:
        raise ValueError(f"expected app_label.Model.field, got {label!r}")
    try:
        return media_services.Target.of(model_label, field_name)
    except (LookupError, TypeError, FieldDoesNotExist) as e:
        raise ValueError(f"{label}: {e}") from e


# --- Creating and finding runs ----------------------------------------------------------


def migration_create(*, source: str, options: Options) -> MigrationRun:
    """A new run of ``source`` (an existing directory; stored as its real path)."""
    return MigrationRun.objects.create(
        source=os.path.realpath(source), options=options.to_json(), state=Run.SCANNING
    )


def migration_find_resumable(*, source: str) -> MigrationRun | None:
    """The latest unfinished run of ``source``, if any: running the command again resumes it."""
    return (
        MigrationRun.objects.filter(source=os.path.realpath(source))
        .exclude(state=Run.DONE)
        .order_by("-id")
        .first()
    )


def migration_requeue(*, run_id: int) -> None:
    """Resuming by hand re-publishes what was in flight, since its messages may be lost (a
    killed worker's wait for the broker's visibility timeout; a publish after a commit that
    never happened): queued chunks are queued again, and the run's rows still pending are
    queued for processing again. Work that was not lost is then done twice, harmlessly: a
    chunk is idempotent, and the older processing task finds a newer revision and stops.
    A failed run continues from the step it failed in."""
    run = MigrationRun.objects.get(pk=run_id)
    MigrationChunk.objects.filter(run=run, state=Chunk.QUEUED).update(state=Chunk.PENDING)
    if run.state == Run.FAILED:
        state = (
            Run.SCANNING
            if run.scanned_at is None
            else Run.PLANNING
            if run.planned_at is None
            else Run.RUNNING
        )
        MigrationRun.objects.filter(pk=run_id).update(state=state, error="")
    if run.state in (Run.RUNNING, Run.PROCESSING) and Options.of(run).process:
        for rows, target in _touched_rows(run):
            stuck = rows.filter(
                **{f"{target.col('status')}__in": [Status.PENDING, Status.PROCESSING]}
            ).values_list("pk", flat=True)
            pks = list(stuck)
            for start in range(0, len(pks), BATCH):
                media_services.media_reprocess(
                    model_label=target.label,
                    field_name=target.field.name,
                    pks=pks[start : start + BATCH],
                )


def migration_detach(*, run_id: int) -> None:
    """Hand a run over to the workers (``--detach``), whatever step it is at."""
    state = MigrationRun.objects.values_list("state", flat=True).get(pk=run_id)
    if state in (Run.SCANNING, Run.PLANNING):
        dispatch.send(dispatch.START_RUN, run_id)
    elif state in (Run.RUNNING, Run.PROCESSING):
        dispatch.send(dispatch.COORDINATE, run_id)


def migration_start(*, run_id: int) -> None:
    """Scan, plan and start the fan-out (``--detach``: all of it in a worker)."""
    migration_scan(run_id=run_id)
    migration_plan(run_id=run_id)
    migration_drive(run_id=run_id)


# --- Scanning ---------------------------------------------------------------------------


def migration_scan(*, run_id: int, progress: Callable[[int], None] | None = None) -> int:
    """Store the scan of the run's folder; returns the number of entries stored.

    Resumable: entries already stored are kept (and not read again), the rest are added.
    """
    run = MigrationRun.objects.get(pk=run_id)
    if run.state != Run.SCANNING:
        return 0
    opts = Options.of(run)
    if _answer_unchanged(run, opts, progress):
        return 0
    reference = _reference_run(run)
    reuse = _PreviousScan(reference) if reference else None
    probe = functools.partial(_probe, profile=pipeline_settings().profile())
    writer = _ItemWriter()
    count = 0
    for entry in scan(run.source, probe=probe, reuse=reuse):
        natural = reuse.natural_key(entry.path, opts.prefix) if reuse else None
        writer.add(_item(run.pk, entry, opts.prefix, natural))
        count += 1
        if len(writer.rows) >= BATCH:
            writer.flush()
            if progress:
                progress(count)
    writer.flush()
    if progress:
        progress(count)
    MigrationRun.objects.filter(pk=run_id, state=Run.SCANNING).update(
        state=Run.PLANNING, scanned_at=timezone.now()
    )
    logger.info("migration run %s: scanned %d entries of %s", run_id, count, run.source)
    return count


def _probe(data: bytes, *, profile: Any) -> Any:
    from pipeline import imaging

    return imaging.probe(data, profile)


def _reference_run(run: MigrationRun) -> int | None:
    """Whose scan a (re-)scan may reuse: this run's own rows when it was interrupted while
    scanning, else the latest earlier scan of the same folder."""
    if MigrationItem.objects.filter(run=run).exists():
        return run.pk
    return (
        MigrationRun.objects.filter(source=run.source, pk__lt=run.pk, scanned_at__isnull=False)
        .filter(Exists(MigrationItem.objects.filter(run=OuterRef("pk"))))  # not a no-op run
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )


class _PreviousScan:
    """``scan.Reuse`` backed by an earlier run's rows, merge-joined with the walk.

    Both sequences are in the scan's order (a pre-order walk of sorted names, which is the
    order of paths compared segment by segment; rows were inserted in it), so a cursor
    that only moves forward answers every question: memory is one page of rows. A path
    met out of order is simply read again; it is never matched wrongly (exact path).
    """

    PAGE = 2000
    _FIELDS = (
        "pk", "path", "size", "mtime_ns", "sha256", "md5", "kind", "format", "width",
        "height", "reason", "natural_key",
    )  # fmt: skip

    def __init__(self, run_id: int) -> None:
        self._rows = self._stream(run_id)
        self._head: tuple[tuple[str, ...], dict[str, Any]] | None = None
        self._last: dict[str, Any] | None = None
        self._advance()

    def _stream(self, run_id: int) -> Iterator[dict[str, Any]]:
        last = 0
        while True:
            page = list(
                MigrationItem.objects.filter(run_id=run_id, pk__gt=last)
                .exclude(sha256="")
                .order_by("pk")
                .values(*self._FIELDS)[: self.PAGE]
            )
            yield from page
            if len(page) < self.PAGE:
                return
            last = page[-1]["pk"]

    def _advance(self) -> None:
        row = next(self._rows, None)
        self._head = None if row is None else (_order(row["path"]), row)

    def __call__(self, path: str, size: int, mtime_ns: int) -> ScanEntry | None:
        wanted = _order(path)
        while self._head is not None and self._head[0] < wanted:
            self._advance()
        if self._head is None or self._head[0] != wanted:
            return None
        row = self._head[1]
        if row["size"] != size or row["mtime_ns"] != mtime_ns:
            return None
        self._last = row
        return ScanEntry(
            path=path,
            size=size,
            sha256=row["sha256"],
            md5=row["md5"] or None,
            kind=Kind(row["kind"]),
            format=row["format"] or None,
            width=row["width"],
            height=row["height"],
            reason=row["reason"] or None,
        )

    def natural_key(self, path: str, prefix: str) -> str | None:
        """The stored natural key of the entry just reused for ``path`` (same prefix)."""
        row = self._last
        if row is None or row["path"] != path or not row["natural_key"].startswith(prefix + "/"):
            return None
        return row["natural_key"]


def _order(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def _item(run_id: int, e: ScanEntry, prefix: str, natural: str | None) -> dict[str, Any]:
    path, kind, reason = e.path, e.kind, e.reason or ""
    if len(path) > MAX_PATH:  # fits no column, and no key: reported, under a unique stand-in
        digest = hashlib.sha256(path.encode("utf-8", "backslashreplace")).hexdigest()
        path = f"{path[: MAX_PATH - 16]}...{digest[:12]}"
        kind, reason = Kind.REJECTED, "path too long"
    is_image = kind is Kind.IMAGE
    if is_image and natural is None:
        natural = rules.standard_key(path, e.format or "", prefix=prefix)
    return {
        "run_id": run_id,
        "path": path,
        "lookup_key": lookup_key(path),
        "size": e.size,
        "mtime_ns": e.mtime_ns,
        "sha256": e.sha256 or "",
        "md5": e.md5 or "",
        "kind": str(kind),
        "format": e.format or "",
        "width": e.width,
        "height": e.height,
        "reason": reason[:500],
        "via_link": e.via_link,
        "natural_key": natural if is_image else "",
        "state": Item.PENDING if is_image else Item.SKIPPED,
    }


class _ItemWriter:
    """Inserts scan rows in batches of plain SQL, skipping paths already stored.

    On a re-run nothing is read, and the ORM's per-field preparation of ``bulk_create``
    would cost more than the whole walk: rows go in as tuples instead.
    """

    def __init__(self) -> None:
        fields = [f for f in MigrationItem._meta.concrete_fields if not f.primary_key]
        self._names = [f.attname for f in fields]
        self._defaults = {f.attname: f.get_default() for f in fields}
        qn = connection.ops.quote_name
        columns = ", ".join(qn(f.column) for f in fields)
        marks = ", ".join(["%s"] * len(fields))
        self._sql = (
            f"INSERT INTO {qn(MigrationItem._meta.db_table)} ({columns}) "
            f"VALUES ({marks}) ON CONFLICT DO NOTHING"
        )
        self.rows: list[tuple[Any, ...]] = []

    def add(self, values: dict[str, Any]) -> None:
        self.rows.append(tuple(values.get(n, self._defaults[n]) for n in self._names))

    def flush(self) -> None:
        if self.rows:
            # One transaction per batch (in autocommit, SQLite would commit every row).
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(self._sql, self.rows)
            self.rows = []


# --- An unchanged re-run -------------------------------------------------------------------

NOOP_OF = "noop_of"
"""Report key of a run answered from an earlier one: the run whose rows it stood on."""

_SAME_ITEM = (
    "path", "lookup_key", "size", "mtime_ns", "sha256", "md5", "kind", "format", "width",
    "height", "reason", "via_link", "natural_key",
)  # fmt: skip


def _answer_unchanged(
    run: MigrationRun, opts: Options, progress: Callable[[int], None] | None
) -> bool:
    """Finish ``run`` at once, as a no-op, when nothing changed since the last run of its
    folder; returns whether it did.

    That run finished (``done``) with the same options, left nothing failed or pending, and
    since then: the walk yields exactly its scan (same paths, sizes, mtime_ns, in order); the
    rows of the model fields that hold no stored key are exactly the ones it reported
    dangling (same values); every content it kept out of the library is still held by a
    row, no orphan is; its orphans are still in the library (processed); with ``verify``,
    the originals it stored are still in the bucket (one listing; otherwise the run history
    is trusted for that, which keeps a no-op re-run free of S3 requests). The normal path
    would then plan the same keys, re-link nothing, upload and import nothing: the report
    is the earlier one with those counts. No item, link or chunk is stored for such a run
    (it records the run it stood on, ``NOOP_OF``). Any difference: the ordinary scan and
    plan.
    """
    base = _noop_base(run)
    if base is None or not _rows_unchanged(base, opts):
        return False
    if not _tree_unchanged(run, base, opts, progress):
        return False
    stored = MigrationItem.objects.filter(run=base, canonical=True)
    if opts.verify and not all(found for _pk, found in _in_bucket(stored)):
        return False
    report = _noop_report(run, base, opts)
    now = timezone.now()
    report.duration = (now - run.created).total_seconds()
    data = report.to_dict()
    data["final"], data[NOOP_OF] = True, base.pk
    MigrationRun.objects.filter(pk=run.pk, state=Run.SCANNING).update(
        state=Run.DONE, report=data, scanned_at=now, planned_at=now, finished_at=now
    )
    logger.info("migration run %s: nothing changed since run %s", run.pk, base.pk)
    return True


def _noop_base(run: MigrationRun) -> MigrationRun | None:
    """The finished run whose rows an unchanged re-run of ``run`` would reproduce, if any."""
    if MigrationItem.objects.filter(run=run).exists():  # an interrupted scan: resume it
        return None
    prior = MigrationRun.objects.filter(source=run.source, pk__lt=run.pk).order_by("-pk").first()
    if prior is None or prior.state != Run.DONE or not _same_work(prior.options, run.options):
        return None
    if not prior.report.get("final"):
        return None
    if NOOP_OF not in prior.report:
        return prior
    base = MigrationRun.objects.filter(pk=prior.report[NOOP_OF], state=Run.DONE).first()
    if base is None or not _same_work(base.options, run.options) or not base.report.get("final"):
        return None
    return base


def _same_work(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two runs' options ask for the same outcome (``verify`` only adds a check)."""
    return {k: v for k, v in a.items() if k != "verify"} == {
        k: v for k, v in b.items() if k != "verify"
    }


def _rows_unchanged(base: MigrationRun, opts: Options) -> bool:
    """Whether planning again would find what ``base`` left (see ``_answer_unchanged``)."""
    canon = MigrationItem.objects.filter(run=base, canonical=True)
    if canon.exclude(state__in=[Item.UPLOADED, Item.PRESENT]).exists():
        return False  # failed (or unfinished) contents are tried again
    links = MigrationLink.objects.filter(run=base)
    settled = Q(state__in=[Link.LINKED, Link.CURRENT]) | Q(state=Link.DANGLING, key="")
    if links.exclude(settled).exists():
        return False  # rows that could not be linked to a stored file are tried again
    # Anti-joins (``Exists``), not ``NOT IN``: a hash join on PostgreSQL, whatever the size.
    held = Q(pk__in=[])
    not_orphans = canon.filter(orphan=False)
    for label in opts.targets:
        target = _target(label)
        name = target.field.name
        rows = target.rows().exclude(**{name: ""}).exclude(**{f"{name}__isnull": True})
        keyed = MigrationItem.objects.filter(canonical=True, key=OuterRef(name))
        loose = rows.exclude(Exists(keyed)).values_list("pk", name)
        dangling = links.filter(target=label, state=Link.DANGLING).values_list("row_pk", "value")
        if {(str(pk), value) for pk, value in loose.iterator(BATCH)} != set(dangling):
            return False
        ours = Exists(canon.filter(key=OuterRef(name)))
        if opts.process and rows.filter(ours, **{target.col("status"): Status.EMPTY}).exists():
            return False  # linked without processing: the normal path queues them
        holder = Exists(rows.filter(**{name: OuterRef("key")}))
        not_orphans = not_orphans.exclude(holder)
        held |= Q(holder)
    if not_orphans.exists() or canon.filter(orphan=True).filter(held).exists():
        return False
    if opts.orphans == "import":
        library = _library(OuterRef("sha256"))
        missing = ~Exists(library)
        if opts.process:
            missing |= Exists(library.filter(image_status=Status.EMPTY))
        if canon.filter(orphan=True).filter(missing).exists():
            return False
    return True


def _tree_unchanged(
    run: MigrationRun, base: MigrationRun, opts: Options, progress: Callable[[int], None] | None
) -> bool:
    """Whether the walk of the folder yields exactly ``base``'s scan rows, in order (a walk of
    ``stat``: unchanged files are not read; it stops at the first difference)."""
    reuse = _PreviousScan(base.pk)
    probe = functools.partial(_probe, profile=pipeline_settings().profile())
    before = _items_in_order(base.pk, _SAME_ITEM)
    count = 0
    for entry in scan(run.source, probe=probe, reuse=reuse):
        now = _item(run.pk, entry, opts.prefix, reuse.natural_key(entry.path, opts.prefix))
        then = next(before, None)
        if then is None or any(then[f] != now[f] for f in _SAME_ITEM):
            return False
        count += 1
        if progress and count % BATCH == 0:
            progress(count)
    if next(before, None) is not None:
        return False
    if progress:
        progress(count)
    return True


def _in_bucket(items: models.QuerySet) -> Iterator[tuple[int, bool]]:
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


def _items_in_order(run_id: int, fields: Sequence[str]) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        page = list(
            MigrationItem.objects.filter(run_id=run_id, pk__gt=last)
            .order_by("pk")
            .values("pk", *fields)[:BATCH]
        )
        yield from page
        if len(page) < BATCH:
            return
        last = page[-1]["pk"]


def _noop_report(run: MigrationRun, base: MigrationRun, opts: Options) -> Report:
    """The report of an unchanged re-run of ``base``: its scan and dangling rows, nothing
    uploaded, re-linked, imported or rendered; what is stored counted again."""
    r = Report.from_dict(base.report)
    r.run_id, r.dry_run = str(run.pk), False
    canon = MigrationItem.objects.filter(run=base, canonical=True)
    r.uploaded, r.already_present = 0, canon.count()
    r.failed = {}
    r.rows_relinked = r.orphans_imported = r.variants_generated = 0
    if opts.orphans == "skip":
        in_library = _library(source_sha256__isnull=False).values("source_sha256")
        r.orphans_skipped = canon.filter(orphan=True).exclude(sha256__in=in_library).count()
    r.bytes_after = canon.aggregate(n=Sum("size"))["n"] or 0
    r.bytes_optimized_originals = r.bytes_processed_originals = r.bytes_variants = 0
    _count_output_bytes(base, r)
    return r


# --- Planning ---------------------------------------------------------------------------


def migration_plan(*, run_id: int) -> None:
    """Keys, links, orphans and chunks of a scanned run (see the module docstring)."""
    run = MigrationRun.objects.get(pk=run_id)
    if run.state != Run.PLANNING:
        return
    opts = Options.of(run)
    images = MigrationItem.objects.filter(run=run, kind=Kind.IMAGE)
    with transaction.atomic():
        if not images.filter(canonical=True).exists():
            _plan_keys(run, opts)
    _resolve_links(run, opts)
    empty = next(iter(storage.list_objects(storage.primary(), f"{opts.prefix}/")), None) is None
    with transaction.atomic():
        if not MigrationChunk.objects.filter(run=run).exists():
            _mark_orphans(run, opts)
            _confirm_stored(run)
            _make_chunks(run, opts)
        MigrationRun.objects.filter(pk=run_id, state=Run.PLANNING).update(
            state=Run.RUNNING, planned_at=timezone.now(), bucket_was_empty=empty
        )


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
    # 3. Newcomers whose natural key nobody else wants: the natural key.
    colliding = (
        images.values("natural_key")
        .annotate(n=Count("sha256", distinct=True))
        .filter(n__gt=1)
        .values("natural_key")
    )
    canon.filter(key="").exclude(natural_key__in=colliding).exclude(
        natural_key__in=canon.exclude(key="").values("key")
    ).exclude(
        Exists(earlier.filter(key=OuterRef("natural_key")).exclude(sha256=OuterRef("sha256")))
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
    for pk, found in _in_bucket(known):
        if found:
            confirmed.append(pk)
        if len(confirmed) >= BATCH:
            MigrationItem.objects.filter(pk__in=confirmed).update(state=Item.PRESENT)
            confirmed = []
    MigrationItem.objects.filter(pk__in=confirmed).update(state=Item.PRESENT)


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


# --- Linking rows -------------------------------------------------------------------------


@dataclass
class _BatchIndex:
    """``references.LegacyIndex`` over the stored scan, for one batch of row values:
    everything the batch may ask for is fetched in two queries, then answered in memory."""

    exact_paths: set[str] = field(default_factory=set)
    folded_paths: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    items: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)

    def exact(self, path: str) -> bool:
        return path in self.exact_paths

    def folded(self, key: str) -> Sequence[str]:
        return sorted(self.folded_paths.get(key, ()))

    @classmethod
    def load(cls, run: MigrationRun, candidates: set[str]) -> _BatchIndex:
        index = cls()
        items = MigrationItem.objects.filter(run=run)
        fields = ("path", "lookup_key", "kind", "reason", "key")
        folded = {lookup_key(c) for c in candidates}
        for where in (Q(path__in=candidates), Q(lookup_key__in=folded)):
            for path, lkey, kind, reason, key in items.filter(where).values_list(*fields):
                if path in candidates:
                    index.exact_paths.add(path)
                if lkey in folded and path not in index.folded_paths[lkey]:
                    index.folded_paths[lkey].append(path)
                index.items[path] = (kind, reason, key)
        return index


def _resolve_links(run: MigrationRun, opts: Options) -> None:
    """One ``MigrationLink`` per row of each target whose value is not already a key."""
    for label in opts.targets:
        target = _target(label)
        name, status = target.field.name, target.col("status")
        rows = target.rows().exclude(**{name: ""}).exclude(**{f"{name}__isnull": True})
        last = None
        while True:
            page = rows.order_by("pk")
            if last is not None:
                page = page.filter(pk__gt=last)
            batch = list(page.values_list("pk", name, status)[:LINK_BATCH])
            if not batch:
                break
            last = batch[-1][0]
            MigrationLink.objects.bulk_create(
                _links_for(run, opts, label, batch), ignore_conflicts=True
            )


def _links_for(
    run: MigrationRun, opts: Options, label: str, batch: list[tuple[Any, str, str]]
) -> list[MigrationLink]:
    values = {value for _pk, value, _status in batch}
    stored = set(
        MigrationItem.objects.filter(run_id__lte=run.pk, canonical=True, key__in=values)
        .values_list("key", flat=True)
        .distinct()
    )
    ours = set(
        MigrationItem.objects.filter(run=run, canonical=True, key__in=stored).values_list(
            "key", flat=True
        )
    )
    refs = {v: normalize_reference(v, media_url=opts.media_url, media_roots=opts.media_roots)
            for v in values if v not in stored}  # fmt: skip
    candidates = {c for ref in refs.values() for c in ref.candidates}
    index = _BatchIndex.load(run, candidates) if candidates else _BatchIndex()
    links: list[MigrationLink] = []
    for pk, value, status in batch:
        if value in stored:
            # Already migrated. Linked with --no-process earlier: process it now.
            if value in ours and status == Status.EMPTY and opts.process:
                links.append(_link(run, label, pk, value, key=value))
            continue
        key, reason = _resolve(value, index, opts)
        links.append(_link(run, label, pk, value, key=key, reason=reason))
    return links


def _resolve(value: str, index: _BatchIndex, opts: Options) -> tuple[str | None, str]:
    res = resolve_reference(value, index, media_url=opts.media_url, media_roots=opts.media_roots)
    if res.status.linked and res.path is not None:
        kind, reason, key = index.items[res.path]
        if kind == Kind.IMAGE and key:
            return key, ""
        return None, f"refers to a {kind.replace('_', '-')} file: {reason}"
    if res.status is Match.AMBIGUOUS:
        keys = {index.items[p][2] if index.items[p][0] == Kind.IMAGE else None for p in res.matches}
        if len(keys) == 1 and None not in keys:
            return keys.pop(), ""
    return None, res.reason or "not found"


def _link(
    run: MigrationRun, label: str, pk: Any, value: str, *, key: str | None, reason: str = ""
) -> MigrationLink:
    return MigrationLink(
        run=run,
        target=label,
        row_pk=str(pk),
        value=value,
        key=key or "",
        reason=reason[:500],
        state=Link.PENDING if key else Link.DANGLING,
    )


# --- Orphans and chunks -------------------------------------------------------------------


def _mark_orphans(run: MigrationRun, opts: Options) -> None:
    """Contents no migrated row refers to, now or once linked."""
    orphans = MigrationItem.objects.filter(run=run, canonical=True).exclude(
        key__in=MigrationLink.objects.filter(run=run).exclude(key="").values("key")
    )
    for label in opts.targets:
        target = _target(label)
        held = target.rows().exclude(**{f"{target.field.name}__isnull": True})
        orphans = orphans.exclude(key__in=held.values(target.field.name))
    orphans.update(orphan=True)


def _library(sha256: Any = None, **where: Any) -> models.QuerySet:
    """Media library rows (of this content, when given)."""
    rows = MediaAsset.objects.filter(**where)
    return rows.filter(source_sha256=sha256) if sha256 is not None else rows


def _make_chunks(run: MigrationRun, opts: Options) -> None:
    """Cut the contents with work left into chunks of consecutive keys."""
    work = Q(state=Item.PENDING) | Q(
        key__in=MigrationLink.objects.filter(run=run, state=Link.PENDING).values("key")
    )
    if opts.orphans == "import":
        # Not in the library yet; or imported by a run that did not process them.
        pending = Q(image_status=Status.EMPTY) if opts.process else Q(pk__in=[])
        work |= Q(orphan=True) & (
            ~Exists(_library(OuterRef("sha256")))
            | Exists(_library(OuterRef("sha256")).filter(pending))
        )
    todo = MigrationItem.objects.filter(run=run, canonical=True).filter(work)
    number, last = 0, None
    while True:
        page = todo.order_by("key")
        if last is not None:
            page = page.filter(key__gt=last)
        rows = list(page.values_list("pk", "key")[: opts.chunk_size * 20])
        if not rows:
            break
        last = rows[-1][1]
        for start in range(0, len(rows), opts.chunk_size):
            part = rows[start : start + opts.chunk_size]
            chunk = MigrationChunk.objects.create(run=run, number=number, size=len(part))
            MigrationItem.objects.filter(pk__in=[pk for pk, _ in part]).update(chunk=chunk)
            number += 1


# --- The coordinator ------------------------------------------------------------------------


def is_eager() -> bool:
    """No broker: tasks run in-process (the embedded default)."""
    from celery import current_app

    return bool(current_app.conf.task_always_eager)


def migration_drive(*, run_id: int) -> None:
    """Push a planned run forward: with workers, fill the queue; in eager mode (no broker),
    run every chunk here, one after the other."""
    if not is_eager():
        migration_top_up(run_id=run_id)
        return
    while (chunk_id := migration_claim_chunk(run_id=run_id)) is not None:
        migration_run_chunk(chunk_id=chunk_id)
    migration_advance(run_id=run_id)


def migration_claim_chunk(*, run_id: int) -> int | None:
    """Mark the next pending chunk queued and return it (for callers running chunks inline)."""
    with transaction.atomic():
        chunk = (
            MigrationChunk.objects.select_for_update()
            .filter(run_id=run_id, state=Chunk.PENDING)
            .order_by("number")
            .first()
        )
        if chunk is None:
            return None
        MigrationChunk.objects.filter(pk=chunk.pk).update(
            state=Chunk.QUEUED, queued_at=timezone.now(), attempts=F("attempts") + 1
        )
        return chunk.pk


def migration_top_up(*, run_id: int) -> int:
    """Queue chunk tasks until ``MAX_CHUNKS_IN_FLIGHT`` are queued; returns how many were.

    Called when a run starts, after every chunk, and by whoever watches the run. Chunks
    queued longer than ``STALE_CHUNK_AFTER`` ago are published again (a lost message, a
    whole worker killed); running a chunk twice is harmless.
    """
    conf = pipeline_settings()["MIGRATION"]
    now = timezone.now()
    stale = now - timedelta(seconds=conf["STALE_CHUNK_AFTER"])
    with transaction.atomic():
        run = MigrationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.state != Run.RUNNING:
            return 0
        chunks = MigrationChunk.objects.filter(run_id=run_id)
        hopeless = chunks.filter(
            state=Chunk.QUEUED, queued_at__lt=stale, attempts__gte=MAX_CHUNK_ATTEMPTS
        )
        for chunk_id in hopeless.values_list("pk", flat=True):
            _give_up(chunk_id)
        in_flight = chunks.filter(state=Chunk.QUEUED, queued_at__gte=stale).count()
        room = conf["MAX_CHUNKS_IN_FLIGHT"] - in_flight
        picked: list[int] = []
        if room > 0:
            picked = list(
                chunks.filter(Q(state=Chunk.PENDING) | Q(state=Chunk.QUEUED, queued_at__lt=stale))
                .order_by("number")
                .values_list("pk", flat=True)[:room]
            )
            chunks.filter(pk__in=picked).update(
                state=Chunk.QUEUED, queued_at=now, attempts=F("attempts") + 1
            )
        if picked:
            dispatch.send_many_on_commit(dispatch.RUN_CHUNK, [(pk,) for pk in picked])
    if not picked and in_flight == 0:
        migration_advance(run_id=run_id)
    return len(picked)


def _give_up(chunk_id: int) -> None:
    """A chunk that never finished in ``MAX_CHUNK_ATTEMPTS`` tries (a bug, or a file that
    kills its worker): its contents fail with that reason, so the run can end."""
    reason = f"gave up after {MAX_CHUNK_ATTEMPTS} attempts of its chunk (see the worker logs)"
    keys = list(MigrationItem.objects.filter(chunk_id=chunk_id).values_list("key", flat=True))
    MigrationItem.objects.filter(chunk_id=chunk_id, state=Item.PENDING).update(
        state=Item.FAILED, error=reason
    )
    chunk = MigrationChunk.objects.get(pk=chunk_id)
    MigrationLink.objects.filter(run_id=chunk.run_id, state=Link.PENDING, key__in=keys).update(
        state=Link.DANGLING, reason=f"the file could not be stored: {reason}"
    )
    MigrationChunk.objects.filter(pk=chunk_id).update(state=Chunk.DONE, finished_at=timezone.now())
    logger.error("migration run %s: chunk %s %s", chunk.run_id, chunk.number, reason)


def migration_coordinate(*, run_id: int) -> str:
    """The coordinator task's body: fill the queue while chunks are left, then follow the
    processing until the run is done. Returns the run's state."""
    state = MigrationRun.objects.filter(pk=run_id).values_list("state", flat=True).first()
    if state == Run.RUNNING:
        migration_top_up(run_id=run_id)
    elif state == Run.PROCESSING:
        return migration_advance(run_id=run_id, follow=True)
    return state or ""


def migration_sweep() -> int:
    """Periodic (beat): push on every unfinished run, whoever is (or is not) driving it.

    A run moves when its chunks finish and while a command or a coordinator task follows
    it. One crash can stop all of them at once: a whole worker killed with the last chunks
    in flight, the broker restarted without its messages, the command interrupted. Here
    chunks queued longer than ``STALE_CHUNK_AFTER`` are published again, and a run whose
    work is over is finished (rows left pending are ``media_sweep_stale``'s). Returns how
    many runs were looked at.
    """
    unfinished = MigrationRun.objects.filter(state__in=[Run.RUNNING, Run.PROCESSING])
    run_ids = list(unfinished.order_by("pk").values_list("pk", flat=True))
    for run_id in run_ids:
        # No ``follow``: each sweep would start one more coordinator following the run.
        migration_top_up(run_id=run_id)
        migration_advance(run_id=run_id)
    return len(run_ids)


def migration_advance(*, run_id: int, follow: bool = False) -> str:
    """Move a run on when its step is over (chunks all done; rows all processed); returns
    its state. With workers, a run that starts processing is followed by a coordinator
    task that checks again every few seconds (``follow``) until it is done, so a detached
    run finishes (and stores its report) with nobody watching."""
    run = MigrationRun.objects.get(pk=run_id)
    if run.state == Run.RUNNING:
        if MigrationChunk.objects.filter(run=run).exclude(state=Chunk.DONE).exists():
            return run.state
        moved = MigrationRun.objects.filter(pk=run_id, state=Run.RUNNING).update(
            state=Run.PROCESSING, uploaded_at=timezone.now()
        )
        run.refresh_from_db()
        follow = follow or bool(moved)
    if run.state == Run.PROCESSING:  # (with --no-process, nothing is pending: done at once)
        if _unsettled(run) == 0:
            _finish(run)
            return Run.DONE
        if follow and not is_eager():
            dispatch.send_on_commit(dispatch.COORDINATE, run_id, countdown=FOLLOW_EVERY)
    return run.state


def _finish(run: MigrationRun) -> None:
    report = migration_report(run_id=run.pk, final=True)
    with transaction.atomic():
        locked = MigrationRun.objects.select_for_update().get(pk=run.pk)
        if locked.report.get("final"):
            return
        now = timezone.now()
        report.duration = (now - locked.created).total_seconds()
        data = report.to_dict()
        data["final"] = True
        MigrationRun.objects.filter(pk=run.pk).update(state=Run.DONE, report=data, finished_at=now)
    logger.info("migration run %s: done", run.pk)


# --- A chunk --------------------------------------------------------------------------------


def migration_run_chunk(*, chunk_id: int, dry_run: bool = False) -> None:
    """Upload, link and import one chunk's contents, then top the queue up. Idempotent."""
    chunk = MigrationChunk.objects.select_related("run").filter(pk=chunk_id).first()
    if chunk is None or chunk.state == Chunk.DONE:
        return
    run = chunk.run
    opts = Options.of(run)
    items = list(chunk.items.all())
    conf = pipeline_settings()["MIGRATION"]
    uploads = [
        transfer.Upload(i.pk, i.path, i.key, i.sha256, i.md5 or None, i.size, i.format)
        for i in items
        if i.state == Item.PENDING
    ]
    outcomes = transfer.transfer(
        storage.primary(),
        run.source,
        uploads,
        threads=conf["UPLOAD_THREADS"],
        dry_run=dry_run,
        look=not run.bucket_was_empty,
    )
    _record_outcomes(outcomes)
    by_id = {i.pk: i for i in items}
    for o in outcomes:
        by_id[o.item_id].state, by_id[o.item_id].error = o.state, o.error
    stored = [i for i in items if i.state in (Item.UPLOADED, Item.PRESENT)]
    failed = [i for i in items if i.state == Item.FAILED]
    _link_rows(run, opts, stored, failed, dry_run=dry_run)
    if opts.orphans == "import":
        _import_orphans(opts, [i for i in stored if i.orphan], dry_run=dry_run)
    MigrationChunk.objects.filter(pk=chunk_id).exclude(state=Chunk.DONE).update(
        state=Chunk.DONE, finished_at=timezone.now()
    )
    if not dry_run and not is_eager():
        migration_top_up(run_id=run.pk)


def _record_outcomes(outcomes: list[transfer.Outcome]) -> None:
    by_state: defaultdict[str, list[int]] = defaultdict(list)
    for o in outcomes:
        if o.state == Item.FAILED:
            MigrationItem.objects.filter(pk=o.item_id, state=Item.PENDING).update(
                state=Item.FAILED, error=o.error
            )
        else:
            by_state[o.state].append(o.item_id)
    for state, ids in by_state.items():
        MigrationItem.objects.filter(pk__in=ids, state=Item.PENDING).update(state=state)


def _link_rows(
    run: MigrationRun,
    opts: Options,
    stored: list[MigrationItem],
    failed: list[MigrationItem],
    *,
    dry_run: bool,
) -> None:
    links = MigrationLink.objects.filter(run=run, state=Link.PENDING)
    for item in failed:
        links.filter(key=item.key).update(
            state=Link.DANGLING, reason=f"the file could not be stored: {item.error}"[:500]
        )
    keys = [i.key for i in stored]
    grouped: defaultdict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for label, key, row_pk, value in links.filter(key__in=keys).values_list(
        "target", "key", "row_pk", "value"
    ):
        grouped[label].append((key, row_pk, value))
    for label, wanted in grouped.items():
        target = _target(label)
        with transaction.atomic():
            now = {
                str(pk): value
                for pk, value in target.rows()
                .filter(pk__in=[pk for _key, pk, _value in wanted])
                .values_list("pk", target.field.name)
            }
            by_key: defaultdict[str, list[str]] = defaultdict(list)
            current: list[str] = []
            moved: list[str] = []
            for key, pk, value in wanted:
                if now.get(pk) == key:
                    current.append(pk)
                elif now.get(pk) == value:
                    by_key[key].append(pk)
                else:  # edited (or deleted) since it was resolved: not ours to overwrite
                    moved.append(pk)
            for key, pks in by_key.items():
                if not dry_run:
                    media_services.media_attach(
                        model_label=target.label,
                        field_name=target.field.name,
                        pks=pks,
                        name=key,
                        process=opts.process,
                    )
            if current and opts.process and not dry_run:
                _reprocess_empty(target, current)
            mine = links.filter(target=label)
            mine.filter(row_pk__in=current).update(state=Link.CURRENT)
            linked = [pk for pks in by_key.values() for pk in pks]
            mine.filter(row_pk__in=linked).update(state=Link.LINKED)
            mine.filter(row_pk__in=moved).update(
                state=Link.DANGLING, reason="the row changed during the migration; left as it is"
            )


def _reprocess_empty(target: media_services.Target, pks: list[str]) -> None:
    """Rows already pointing at their key that were never processed (linked with
    ``--no-process`` by an earlier run): queue them now."""
    empty = list(
        target.rows()
        .filter(pk__in=pks, **{target.col("status"): Status.EMPTY})
        .values_list("pk", flat=True)
    )
    if empty:
        media_services.media_reprocess(
            model_label=target.label, field_name=target.field.name, pks=empty
        )


def _import_orphans(opts: Options, orphans: list[MigrationItem], *, dry_run: bool) -> None:
    """One media library row per orphan content (unique ``source_sha256``: never two), and
    processing for those never processed."""
    if not orphans:
        return
    with transaction.atomic():
        have = set(
            _library(source_sha256__in=[i.sha256 for i in orphans]).values_list(
                "source_sha256", flat=True
            )
        )
        new = [i for i in orphans if i.sha256 not in have and not i.imported]
        if not dry_run:
            MediaAsset.objects.bulk_create(
                [
                    MediaAsset(
                        title=PurePosixPath(i.path).stem[:200],
                        image=i.key,
                        source_path=i.path,
                        source_sha256=i.sha256,
                    )
                    for i in new
                ],
                ignore_conflicts=True,
            )
        MigrationItem.objects.filter(pk__in=[i.pk for i in new]).update(imported=True)
        if not opts.process and not dry_run:
            # Linked, not rendered: the state describes the file (the sweep leaves it).
            fresh = _library(source_sha256__in=[i.sha256 for i in new]).values_list("pk", flat=True)
            row_state.mark_unprocessed(_target(f"{ASSET_LABEL}.{ASSET_FIELD}"), fresh)
        if opts.process and not dry_run:
            shas = {i.sha256 for i in orphans}
            unprocessed = dict(
                _library(source_sha256__in=shas, image_status=Status.EMPTY).values_list(
                    "pk", "source_sha256"
                )
            )
            if unprocessed:
                media_services.media_reprocess(
                    model_label=ASSET_LABEL, field_name=ASSET_FIELD, pks=list(unprocessed)
                )
                old = [
                    i.pk for i in orphans if i.sha256 in set(unprocessed.values()) and i not in new
                ]
                MigrationItem.objects.filter(pk__in=old).update(requeued=True)


# --- Watching a run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    state: str
    scanned: int
    objects_total: int  # contents with work to do (in chunks)
    objects_done: int
    rows_total: int  # rows queued for processing by this run
    rows_settled: int


def migration_progress(*, run_id: int) -> Progress:
    run = MigrationRun.objects.get(pk=run_id)
    chunks = MigrationChunk.objects.filter(run=run).aggregate(
        total=Sum("size"), done=Sum("size", filter=Q(state=Chunk.DONE))
    )
    rows_total = rows_settled = 0
    if run.state in (Run.PROCESSING, Run.DONE) and Options.of(run).process:
        for rows, _target_ in _touched_rows(run):
            status = _target_.col("status")
            counts = rows.aggregate(
                total=Count("pk"),
                open=Count(
                    "pk", filter=Q(**{f"{status}__in": [Status.PENDING, Status.PROCESSING]})
                ),
            )
            rows_total += counts["total"]
            rows_settled += counts["total"] - counts["open"]
    return Progress(
        state=run.state,
        scanned=MigrationItem.objects.filter(run=run).count(),
        objects_total=chunks["total"] or 0,
        objects_done=chunks["done"] or 0,
        rows_total=rows_total,
        rows_settled=rows_settled,
    )


def _touched_rows(run: MigrationRun) -> Iterator[tuple[models.QuerySet, media_services.Target]]:
    """The rows this run queued for processing, per model field (querysets, not lists)."""
    links = MigrationLink.objects.filter(run=run, state__in=[Link.LINKED, Link.CURRENT])
    for label in Options.of(run).targets:
        target = _target(label)
        pk_field = target.model._meta.pk
        row_pks = (
            links.filter(target=label)
            .annotate(as_pk=Cast("row_pk", output_field=_cast_field(pk_field)))
            .values("as_pk")
        )
        yield target.rows().filter(pk__in=row_pks), target
    asset = _target(f"{ASSET_LABEL}.{ASSET_FIELD}")
    shas = MigrationItem.objects.filter(Q(imported=True) | Q(requeued=True), run=run).values(
        "sha256"
    )
    yield asset.rows().filter(source_sha256__in=shas), asset


def _cast_field(pk_field: models.Field) -> models.Field:
    if isinstance(pk_field, models.BigAutoField | models.BigIntegerField):
        return models.BigIntegerField()
    if isinstance(pk_field, models.AutoField | models.IntegerField):
        return models.IntegerField()
    return pk_field.__class__()


def _unsettled(run: MigrationRun) -> int:
    total = 0
    for rows, target in _touched_rows(run):
        total += rows.filter(
            **{f"{target.col('status')}__in": [Status.PENDING, Status.PROCESSING]}
        ).count()
    return total


# --- The report ------------------------------------------------------------------------------


def migration_report(*, run_id: int, final: bool = False) -> Report:
    """The run's counters, from its rows. ``final`` adds what processing produced
    (variants and their bytes, read from the manifests of the rows this run processed)."""
    run = MigrationRun.objects.get(pk=run_id)
    if run.report.get("final"):
        return Report.from_dict(run.report)
    final = final or run.state == Run.DONE
    opts = Options.of(run)
    items = MigrationItem.objects.filter(run=run)
    r = Report(run_id=str(run.pk), source=run.source)
    by_kind = dict(items.values_list("kind").annotate(n=Count("pk")).values_list("kind", "n"))
    r.files_scanned = sum(by_kind.values())
    r.images = by_kind.get(Kind.IMAGE, 0)
    r.junk_skipped = by_kind.get(Kind.JUNK, 0)
    r.not_images = by_kind.get(Kind.NOT_IMAGE, 0)
    for path, reason in items.filter(kind=Kind.REJECTED).values_list("path", "reason"):
        r.add_rejected(path, reason or "rejected")
    canon = items.filter(kind=Kind.IMAGE, canonical=True)
    states = dict(canon.values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    r.uploaded = states.get(Item.UPLOADED, 0)
    r.already_present = states.get(Item.PRESENT, 0)
    for path, error in canon.filter(state=Item.FAILED).values_list("path", "error"):
        r.add_failed(path, error)
    r.duplicates_folded = r.images - sum(states.values())
    links = MigrationLink.objects.filter(run=run)
    r.rows_relinked = links.filter(state=Link.LINKED).count()
    for label, row_pk, value, reason in (
        links.filter(state=Link.DANGLING)
        .order_by("pk")
        .values_list("target", "row_pk", "value", "reason")
    ):
        r.add_dangling(f"{label} pk={row_pk}", value, reason)
    r.orphans_imported = items.filter(imported=True).count()
    if opts.orphans == "skip":
        in_library = _library(source_sha256__isnull=False).values("source_sha256")
        r.orphans_skipped = canon.filter(orphan=True).exclude(sha256__in=in_library).count()
    r.bytes_before = items.filter(kind=Kind.IMAGE).aggregate(n=Sum("size"))["n"] or 0
    stored = canon.filter(state__in=[Item.UPLOADED, Item.PRESENT])
    r.bytes_after = stored.aggregate(n=Sum("size"))["n"] or 0
    if final:
        _count_outputs(run, r)
    end = run.finished_at or timezone.now()
    r.duration = (end - run.created).total_seconds()
    return r


def _count_outputs(run: MigrationRun, r: Report) -> None:
    """What processing produced: variants rendered for the rows this run queued (and which
    of those failed), and the bytes of every output of every row pointing at this tree's
    objects (what the tree occupies in the public bucket, whichever run rendered it)."""
    for rows, target in _touched_rows(run):
        cols = (target.col("status"), target.col("manifest"), target.col("error"))
        for pk, status, manifest, error in rows.values_list("pk", *cols).iterator(BATCH):
            if status == Status.READY:
                r.variants_generated += len(manifest.get("variants", ()))
            elif status == Status.FAILED:
                r.add_failed(f"{target.label}.{target.field.name} pk={pk}", error or "failed")
    _count_output_bytes(run, r)


def _count_output_bytes(run: MigrationRun, r: Report) -> None:
    """Add the bytes of every output of every processed row pointing at the run's objects
    to ``r.bytes_after``, and count optimized originals and variants apart, with the
    originals the optimized ones were made from (so the report compares like with like)."""
    canon = MigrationItem.objects.filter(run=run, canonical=True).exclude(key="")
    counted = r.bytes_optimized_originals + r.bytes_variants
    for target in _row_targets(run):
        rows = target.rows().filter(
            **{f"{target.field.name}__in": canon.values("key"), target.col("status"): Status.READY}
        )
        page: list[tuple[str, dict[str, Any]]] = []
        for row in rows.values_list(target.field.name, target.col("manifest")).iterator(BATCH):
            page.append(row)
            if len(page) == BATCH:
                _count_page(canon, page, r)
                page = []
        _count_page(canon, page, r)
    r.bytes_after += r.bytes_optimized_originals + r.bytes_variants - counted


def _count_page(
    canon: models.QuerySet[MigrationItem], page: list[tuple[str, dict[str, Any]]], r: Report
) -> None:
    """One page of processed rows (their key and manifest) into ``r``'s output counters."""
    sizes = dict(canon.filter(key__in={key for key, _ in page}).values_list("key", "size"))
    for key, manifest in page:
        r.bytes_variants += sum(int(v.get("bytes", 0)) for v in manifest.get("variants", ()))
        if manifest.get("original"):
            r.bytes_optimized_originals += int(manifest["original"].get("bytes", 0))
            r.bytes_processed_originals += sizes.get(key, 0)


def _row_targets(run: MigrationRun) -> list[media_services.Target]:
    """The model fields whose rows may point at the run's objects (the library's too)."""
    labels = [*Options.of(run).targets, f"{ASSET_LABEL}.{ASSET_FIELD}"]
    return [_target(label) for label in dict.fromkeys(labels)]


def dry_run(
    *, source: str, options: Options, progress: Callable[[int], None] | None = None
) -> Report:
    """Everything a run would do, in a transaction rolled back at the end: the same report,
    nothing written anywhere (buckets are only listed). Runs in this process."""
    with transaction.atomic():
        run = migration_create(source=source, options=options)
        migration_scan(run_id=run.pk, progress=progress)
        migration_plan(run_id=run.pk)
        while (chunk_id := migration_claim_chunk(run_id=run.pk)) is not None:
            migration_run_chunk(chunk_id=chunk_id, dry_run=True)
        report = migration_report(run_id=run.pk)
        transaction.set_rollback(True)
    report.run_id = None
    report.dry_run = True
    return report
