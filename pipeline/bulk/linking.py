"""Linking rows: what the migrated model fields hold, resolved to keys, then re-linked.

At planning (``resolve_links``), every row of each target whose value is not already a
key is resolved (``references``) against the stored scan, in batches, into a
``MigrationLink``: a key, or why not (``dangling``). Once a chunk has stored their
contents (``link_rows``), the rows are pointed at their keys with
``pipeline.services.media_attach_here`` (pending, as after a save), unless they were
edited in between; ``link_rows`` returns them, for the chunk to process from the files
it has on disk (``pipeline.services.media_process_here``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q

from pipeline import services as media_services
from pipeline.bulk.options import Options, target_of
from pipeline.bulk.references import Match, lookup_key, normalize_reference, resolve_reference
from pipeline.bulk.scan import Kind
from pipeline.fields import Status
from pipeline.models import MigrationItem, MigrationLink, MigrationRun

__all__ = ["Pending", "link_rows", "resolve_links"]

Link = MigrationLink.State

LINK_BATCH = 500
"""Model rows resolved per batch (a few queries per batch, whatever its size)."""


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


def resolve_links(
    run: MigrationRun, opts: Options, *, heartbeat: Callable[[], None] | None = None
) -> None:
    """One ``MigrationLink`` per row of each target whose value is not already a key
    (``heartbeat`` called after each batch: millions of rows take a while)."""
    for label in opts.targets:
        target = target_of(label)
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
            if heartbeat:
                heartbeat()


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


@dataclass(frozen=True)
class Pending:
    """Rows of one target marked pending for one stored original, no task published: the
    caller processes them (``media_services.media_process_here``)."""

    target: media_services.Target
    key: str
    revisions: dict[Any, int]


def link_rows(
    run: MigrationRun,
    opts: Options,
    stored: list[MigrationItem],
    failed: list[MigrationItem],
    *,
    dry_run: bool,
) -> list[Pending]:
    """Point the rows waiting for ``stored`` at their keys, and give up on those waiting
    for ``failed``. With processing, the rows are returned pending, no task published."""
    pending: list[Pending] = []
    given_up: defaultdict[str, list[int]] = defaultdict(list)  # key -> its pending links
    for link_pk, _label, key, _row_pk, _value in _pending_links(run, [i.key for i in failed]):
        given_up[key].append(link_pk)
    for item in failed:
        MigrationLink.objects.filter(pk__in=given_up[item.key]).update(
            state=Link.DANGLING, reason=f"the file could not be stored: {item.error}"[:500]
        )
    grouped: defaultdict[str, list[tuple[str, str, str]]] = defaultdict(list)
    link_of: dict[tuple[str, str], int] = {}  # (target, row pk) -> its link
    for link_pk, label, key, row_pk, value in _pending_links(run, [i.key for i in stored]):
        grouped[label].append((key, row_pk, value))
        link_of[label, row_pk] = link_pk
    for label, wanted in grouped.items():
        target = target_of(label)
        with transaction.atomic():
            now = {
                str(pk): value
                for pk, value in target.rows()
                .filter(pk__in=[pk for _key, pk, _value in wanted])
                .values_list("pk", target.field.name)
            }
            by_key: defaultdict[str, list[str]] = defaultdict(list)
            current: dict[str, str] = {}
            moved: list[str] = []
            for key, pk, value in wanted:
                if now.get(pk) == key:
                    current[pk] = key
                elif now.get(pk) == value:
                    by_key[key].append(pk)
                else:  # edited (or deleted) since it was resolved: not ours to overwrite
                    moved.append(pk)
            for key, pks in by_key.items():
                if dry_run:
                    continue
                if not opts.process:
                    media_services.media_attach(
                        model_label=target.label,
                        field_name=target.field.name,
                        pks=pks,
                        name=key,
                        process=False,
                    )
                    continue
                revisions = media_services.media_attach_here(
                    model_label=target.label, field_name=target.field.name, pks=pks, name=key
                )
                if revisions:
                    pending.append(Pending(target, key, revisions))
            if current and opts.process and not dry_run:
                pending += _reprocess_empty(target, current)

            moved_reason = "the row changed during the migration; left as it is"
            for row_pks, change in (
                (list(current), {"state": Link.CURRENT}),
                ([pk for pks in by_key.values() for pk in pks], {"state": Link.LINKED}),
                (moved, {"state": Link.DANGLING, "reason": moved_reason}),
            ):
                ids = [link_of[label, pk] for pk in row_pks]
                MigrationLink.objects.filter(pk__in=ids).update(**change)
    return pending


def _pending_links(run: MigrationRun, keys: list[str]) -> list[tuple[int, str, str, str, str]]:
    """(link pk, target, key, row pk, value) of the run's pending links to ``keys``.

    Selected through the ``(run, key)`` index, the state checked here: asked for both,
    SQLite (no statistics) takes the ``(run, state)`` index and reads every pending link of
    the run for every chunk, which made a migration's link step grow with the square of
    its files (bench/migration_scale.py: 7.6x the reads per file from 10,000 to 100,000).
    """
    rows = MigrationLink.objects.filter(run=run, key__in=keys).values_list(
        "pk", "target", "key", "row_pk", "value", "state"
    )
    return [(pk, t, k, row, v) for pk, t, k, row, v, state in rows if state == Link.PENDING]


def _reprocess_empty(target: media_services.Target, current: dict[str, str]) -> list[Pending]:
    """Rows already pointing at their key that were never processed (linked with
    ``--no-process`` by an earlier run): pending now, by key (``current``: pk -> key)."""
    empty = list(
        target.rows()
        .filter(pk__in=list(current), **{target.col("status"): Status.EMPTY})
        .values_list("pk", flat=True)
    )
    if not empty:
        return []
    revisions = media_services.media_reprocess_here(
        model_label=target.label, field_name=target.field.name, pks=empty
    )
    by_key: defaultdict[str, dict[Any, int]] = defaultdict(dict)
    for pk, revision in revisions.items():
        by_key[current[str(pk)]][pk] = revision
    return [Pending(target, key, revs) for key, revs in by_key.items()]
