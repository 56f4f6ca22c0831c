"""Compare the buckets with the rows: orphans, missing outputs, unreferenced originals.

* **Orphans**: public objects under ``KEY_PREFIX`` that no row's manifest lists.
* **Missing**: manifest entries of ``ready`` rows whose object is not in the public bucket.
* **Unreferenced originals**: primary-bucket objects no managed file column refers to
  (report only: originals are never deleted here).

Everything is read by **listing** (one request per 1,000 keys on S3, a folder walk on the
embedded buckets), never one request per key, and rows are streamed as plain values
(``values_list(...).iterator()``), never as model instances. What is held in memory is the
index of manifest keys (plus the few findings), not the bucket listings.

Safety: a render in flight writes its outputs before its manifest lands, so every key
under the public *identity* folder (``<prefix>/<shard>/<app.model>-<pk>/``) of a row that
is ``pending`` or ``processing`` is skipped. Rows change while the audit runs, so every
orphan is confirmed against the rows as they are *after* the listing (and again right
before ``--fix`` deletes it): an object is deleted only if, after it was seen in the
bucket, its row was neither in flight nor listing it.

The decision itself (:func:`judge_public_key`, :func:`decide_orphans`) is pure.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Container, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from django.core.exceptions import ValidationError
from django.db import transaction

from pipeline import naming, services, storage
from pipeline.conf import pipeline_settings
from pipeline.fields import Status
from pipeline.services import Target

ROW_CHUNK = 2000  # rows fetched per round trip while streaming a table
CONFIRM_CHUNK = 500  # values per ``IN (...)`` when rows are read again
DELETE_BATCH = 1000  # orphans confirmed, deleted and invalidated together by --fix
REQUEUE_BATCH = 500  # rows re-queued per transaction by --fix
TICK = 1000  # progress is reported every this many items (tqdm per item is not free)

IN_FLIGHT = (Status.PENDING, Status.PROCESSING)


# --- The decision (pure) --------------------------------------------------------------


class Verdict(enum.Enum):
    """What the audit makes of one public key."""

    REFERENCED = "referenced"  # a row's manifest lists it
    IN_FLIGHT = "in flight"  # under the identity of a row being rendered: hands off
    OUT_OF_SCOPE = "out of scope"  # not under KEY_PREFIX, or not of an audited model
    ORPHAN = "orphan"


class KeyIdentity(NamedTuple):
    label: str  # lower-case model label, as keys spell it ("demo.photo")
    pk: str


def _prefix_parts(prefix: str) -> list[str]:
    stripped = prefix.strip("/")
    return stripped.split("/") if stripped else []


def listing_prefix(prefix: str) -> str:
    """What to list in the public bucket: ``media/`` for ``KEY_PREFIX = "media"``."""
    parts = _prefix_parts(prefix)
    return "/".join(parts) + "/" if parts else ""


def row_folder(*, prefix: str, model_label: str, pk: object) -> str:
    """The public identity folder of a row (``media/7f/demo.photo-42/``), with a trailing
    slash: every output of the row, for any source file, lives below it.

    Derived from ``naming.public_folder`` itself, cut after the identity segment, so the
    shard stays naming's business and whatever follows the identity may change."""
    folder = naming.public_folder(prefix=prefix, model_label=model_label, pk=pk, source_name="x")
    identity = f"{model_label.lower()}-{pk}"
    at = f"/{folder}/".find(f"/{identity}/")
    if at < 0:  # the layout changed under us: refuse rather than judge keys wrongly
        raise ValueError(f"no identity segment {identity!r} in public folder {folder!r}")
    return folder[: at + len(identity)] + "/"


def key_identity(key: str, *, prefix: str) -> KeyIdentity | None:
    """The row a public key belongs to, read from its path, or None when the key is not
    laid out as ``<prefix>/<shard>/<app.model>-<pk>/<anything>``."""
    head = _prefix_parts(prefix)
    parts = key.split("/")
    if len(parts) < len(head) + 3 or parts[: len(head)] != head:
        return None
    label, dash, pk = parts[len(head) + 1].partition("-")
    # A model label is "app_label.modelname": identifiers, one dot, never a hyphen.
    if not dash or not pk or label.count(".") != 1:
        return None
    return KeyIdentity(label, pk)


def judge_public_key(
    key: str,
    *,
    referenced: Container[str],
    in_flight: Collection[str],
    prefix: str,
    models: Container[str] | None = None,
) -> Verdict:
    """Whether one public key is an orphan.

    ``referenced``: every key some row's manifest lists. ``in_flight``: the
    :func:`row_folder` of every row pending or processing. ``models``: lower-case model
    labels being audited (None: all; a key of no model then counts as an orphan).
    """
    if key in referenced:
        return Verdict.REFERENCED
    if not key.startswith(listing_prefix(prefix)):
        return Verdict.OUT_OF_SCOPE
    # Every ancestor folder, not just the parsed identity: robust to a pk containing "/"
    # and to a deeper layout below the identity.
    parts = key.split("/")
    if in_flight and any("/".join(parts[:i]) + "/" in in_flight for i in range(1, len(parts))):
        return Verdict.IN_FLIGHT
    if models is not None:
        identity = key_identity(key, prefix=prefix)
        if identity is None or identity.label not in models:
            return Verdict.OUT_OF_SCOPE
    return Verdict.ORPHAN


@dataclass
class OrphanDecision:
    orphans: list[str] = field(default_factory=list)  # sorted
    referenced: int = 0
    in_flight: int = 0
    out_of_scope: int = 0


def decide_orphans(
    keys: Iterable[str],
    *,
    referenced: Container[str],
    in_flight: Collection[str],
    prefix: str,
    models: Container[str] | None = None,
) -> OrphanDecision:
    """:func:`judge_public_key` over many keys: the orphans, and how many of each other
    verdict (so a report can show what was skipped, and why)."""
    decision = OrphanDecision()
    for key in keys:
        verdict = judge_public_key(
            key, referenced=referenced, in_flight=in_flight, prefix=prefix, models=models
        )
        if verdict is Verdict.ORPHAN:
            decision.orphans.append(key)
        elif verdict is Verdict.REFERENCED:
            decision.referenced += 1
        elif verdict is Verdict.IN_FLIGHT:
            decision.in_flight += 1
        else:
            decision.out_of_scope += 1
    decision.orphans.sort()
    return decision


# --- Choosing what to audit -----------------------------------------------------------


def field_label(target: Target) -> str:
    return f"{target.label}.{target.field.name}"


# --- The report -----------------------------------------------------------------------


@dataclass(frozen=True)
class RowRef:
    """One row of one managed field (shared by every key of its manifest)."""

    model: str  # label, "demo.Photo"
    field: str
    pk: Any


@dataclass(frozen=True)
class MissingOutput:
    key: str
    row: RowRef


@dataclass
class FixResult:
    orphans_deleted: int = 0
    rows_requeued: int = 0


@dataclass
class AuditReport:
    scope: list[str]  # "demo.Photo.image", ...
    prefix: str  # the public prefix listed, "media/"
    # Lower-case labels of the models whose public keys were judged; None: every key.
    models: frozenset[str] | None = None
    rows: int = 0
    public_objects: int = 0
    in_flight_skipped: int = 0
    out_of_scope: int = 0
    orphans: list[str] = field(default_factory=list)
    missing: list[MissingOutput] = field(default_factory=list)
    originals: int = 0
    unreferenced_originals: list[storage.ObjectInfo] = field(default_factory=list)
    # Findings dropped when the rows were read again: they changed while being audited.
    changed_during_audit: int = 0
    duration_s: float = 0.0
    fixed: FixResult | None = None

    @property
    def rows_with_missing_outputs(self) -> int:
        return len({m.row for m in self.missing})

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.missing or self.unreferenced_originals)

    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "public_objects": self.public_objects,
            "in_flight_skipped": self.in_flight_skipped,
            "out_of_scope": self.out_of_scope,
            "orphans": len(self.orphans),
            "missing": len(self.missing),
            "rows_with_missing_outputs": self.rows_with_missing_outputs,
            "originals": self.originals,
            "unreferenced_originals": len(self.unreferenced_originals),
            "changed_during_audit": self.changed_during_audit,
        }

    def render_table(self, *, limit: int = 50) -> str:
        """The summary, then up to ``limit`` findings of each kind (``--json`` has all)."""
        rows = [
            ("rows read", self.rows),
            (f"public objects under {self.prefix or '/'}", self.public_objects),
            ("in flight, skipped", self.in_flight_skipped),
            ("out of scope", self.out_of_scope),
            ("orphans", len(self.orphans)),
            ("missing outputs", len(self.missing)),
            ("rows with missing outputs", self.rows_with_missing_outputs),
            ("originals listed", self.originals),
            ("unreferenced originals", len(self.unreferenced_originals)),
            ("changed during the audit", self.changed_during_audit),
        ]
        width = max(len(name) for name, _ in rows) + 2
        lines = [f"Media audit of {', '.join(self.scope) or 'no managed field'}"]
        lines += [f"  {name:<{width}}{value:>10,}" for name, value in rows]
        lines.append(f"  {'duration':<{width}}{self.duration_s:>8.1f} s")

        def section(title: str, items: list[str]) -> None:
            if not items:
                return
            lines.extend(["", title])
            lines.extend(f"  {item}" for item in items[:limit])
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit:,} more (--json lists them all)")

        section("Orphans (public objects no row's manifest lists):", self.orphans)
        section(
            "Missing outputs (listed by a ready row, not in the public bucket):",
            [f"{m.key}  ({m.row.model} {m.row.pk}, {m.row.field})" for m in self.missing],
        )
        section(
            "Unreferenced originals (no row refers to them; reported only, never deleted):",
            [f"{o.key}  ({o.size:,} bytes)" for o in self.unreferenced_originals],
        )
        lines.append("")
        if self.fixed is not None:
            lines.append(
                f"Fixed: deleted {self.fixed.orphans_deleted:,} orphan(s) and requested their "
                f"CDN invalidation; re-queued {self.fixed.rows_requeued:,} row(s) for processing."
            )
        elif self.orphans or self.missing:
            todo = []
            if self.orphans:
                todo.append(f"delete the {len(self.orphans):,} orphan(s) (invalidating them)")
            if self.missing:
                todo.append(
                    f"re-process the {self.rows_with_missing_outputs:,} row(s) missing outputs"
                )
            lines.append(f"Run again with --fix to {' and '.join(todo)}.")
        else:
            lines.append("No orphans and no missing outputs.")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "prefix": self.prefix,
            "counts": self.counts(),
            "orphans": self.orphans,
            "missing": [
                {"key": m.key, "model": m.row.model, "field": m.row.field, "pk": m.row.pk}
                for m in self.missing
            ],
            "unreferenced_originals": [
                {"key": o.key, "bytes": o.size} for o in self.unreferenced_originals
            ],
            "duration_s": round(self.duration_s, 3),
            "fixed": None
            if self.fixed is None
            else {
                "orphans_deleted": self.fixed.orphans_deleted,
                "rows_requeued": self.fixed.rows_requeued,
            },
        }


# --- Progress -------------------------------------------------------------------------


class Progress(Protocol):
    """Opens one phase: a status line and a counter (the command draws tqdm bars)."""

    def __call__(
        self, desc: str, *, unit: str, total: int | None = None
    ) -> AbstractContextManager[Callable[[int], object]]: ...


@contextlib.contextmanager
def no_progress(
    desc: str, *, unit: str, total: int | None = None
) -> Iterator[Callable[[int], object]]:
    yield lambda n: None


def _ticking(items: Iterable[Any], tick: Callable[[int], object]) -> Iterator[Any]:
    """Pass items through, reporting progress every ``TICK`` of them."""
    n = 0
    for item in items:
        yield item
        n += 1
        if n == TICK:
            tick(n)
            n = 0
    if n:
        tick(n)


# --- The audit ------------------------------------------------------------------------


@dataclass
class _Index:
    """What the rows say, built in one streaming pass over every managed table."""

    # Every key a manifest of an audited model lists -> the row, when the key is one whose
    # absence counts as missing (ready rows of the selected fields), else None.
    manifest: dict[str, RowRef | None] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)  # row_folder of rows pending/processing
    originals: set[str] = field(default_factory=set)  # every managed file column value
    rows: int = 0


def media_audit(
    *, targets: list[Target] | None = None, progress: Progress = no_progress
) -> AuditReport:
    """Audit the buckets against the rows of ``targets`` (default: every managed field).

    Orphans are judged among the public keys of the selected fields' *models* (the public
    identity carries the model, not the field); missing outputs among the selected fields'
    ready rows. Originals belong to no model until a row refers to them, so unreferenced
    originals are always found across the whole primary bucket and every managed field.
    """
    started = time.monotonic()
    every = services.managed_targets()
    selected = list(every) if targets is None else list(targets)
    prefix = pipeline_settings()["KEY_PREFIX"]
    models = {t.label.lower() for t in selected}
    scope_models = None if models >= {t.label.lower() for t in every} else frozenset(models)
    report = AuditReport(
        scope=[field_label(t) for t in selected],
        prefix=listing_prefix(prefix),
        models=scope_models,
    )

    index = _read_rows(every, selected, models, prefix, progress)
    report.rows = index.rows

    # The public bucket: one pass over the listing; the listing itself is never held.
    seen: set[str] = set()  # manifest keys found (the difference is what is missing)
    candidates: list[str] = []
    with progress("listing public bucket", unit="object") as tick:
        for obj in _ticking(storage.list_objects(storage.public(), report.prefix), tick):
            report.public_objects += 1
            verdict = judge_public_key(
                obj.key,
                referenced=index.manifest,
                in_flight=index.in_flight,
                prefix=prefix,
                models=scope_models,
            )
            if verdict is Verdict.REFERENCED:
                if index.manifest[obj.key] is not None:
                    seen.add(obj.key)
            elif verdict is Verdict.IN_FLIGHT:
                report.in_flight_skipped += 1
            elif verdict is Verdict.OUT_OF_SCOPE:
                report.out_of_scope += 1
            else:
                candidates.append(obj.key)
    missing = [(k, row) for k, row in index.manifest.items() if row is not None and k not in seen]
    del seen
    index.manifest.clear()  # the largest structure: not needed past this point

    with progress("confirming findings against the rows", unit="key") as tick:
        report.orphans = _confirm_orphans(candidates, prefix, scope_models, every)
        tick(len(candidates))
        report.missing = _confirm_missing(missing, selected)
        tick(len(missing))

    with progress("listing primary bucket", unit="object") as tick:
        for obj in _ticking(storage.list_objects(storage.primary()), tick):
            report.originals += 1
            if obj.key not in index.originals:
                report.unreferenced_originals.append(obj)
    unreferenced = report.unreferenced_originals
    report.unreferenced_originals = _confirm_unreferenced(unreferenced, every)
    report.changed_during_audit = (
        len(candidates) - len(report.orphans)
        + len(missing) - len(report.missing)
        + len(unreferenced) - len(report.unreferenced_originals)
    )  # fmt: skip
    report.duration_s = time.monotonic() - started
    return report


def media_audit_fix(*, report: AuditReport, progress: Progress = no_progress) -> FixResult:
    """Delete the report's orphans (and request their CDN invalidation) and re-queue the
    rows with missing outputs. Each batch of orphans is confirmed against the rows once
    more right before it is deleted. Originals are never touched."""
    prefix = pipeline_settings()["KEY_PREFIX"]
    every = services.managed_targets()
    result = FixResult()
    with progress("deleting orphans", unit="object", total=len(report.orphans)) as tick:
        for start in range(0, len(report.orphans), DELETE_BATCH):
            batch = report.orphans[start : start + DELETE_BATCH]
            keys = _confirm_orphans(batch, prefix, report.models, every)
            if keys:
                services.media_delete_objects(keys=keys)
            result.orphans_deleted += len(keys)
            tick(len(batch))

    by_field: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in dict.fromkeys(m.row for m in report.missing):
        by_field[(row.model, row.field)].append(row.pk)
    with progress("re-queueing rows", unit="row", total=report.rows_with_missing_outputs) as tick:
        for (model_label, field_name), pks in by_field.items():
            for start in range(0, len(pks), REQUEUE_BATCH):
                chunk = pks[start : start + REQUEUE_BATCH]
                with transaction.atomic():  # tasks are published once the batch commits
                    result.rows_requeued += services.media_reprocess(
                        model_label=model_label, field_name=field_name, pks=chunk
                    )
                tick(len(chunk))
    report.fixed = result
    return result


def _read_rows(
    every: list[Target], selected: list[Target], models: set[str], prefix: str, progress: Progress
) -> _Index:
    """Stream every managed table once, as plain values (bounded memory per row)."""
    index = _Index()
    for target in every:
        name_col = target.field.name
        audited = target.model._meta.label_lower in models
        check_missing = target in selected
        label = field_label(target)
        rows = target.rows().order_by()
        with progress(f"reading {label}", unit="row", total=rows.count()) as tick:
            if not audited:  # only its references to originals matter
                values = rows.values_list(name_col, flat=True).iterator(chunk_size=ROW_CHUNK)
                index.originals.update(name for name in _ticking(values, tick) if name)
                continue
            cols = ("pk", name_col, target.col("status"), target.col("manifest"))
            for pk, name, status, manifest in _ticking(
                rows.values_list(*cols).iterator(chunk_size=ROW_CHUNK), tick
            ):
                index.rows += 1
                if name:
                    index.originals.add(name)
                if status in IN_FLIGHT:
                    index.in_flight.add(row_folder(prefix=prefix, model_label=target.label, pk=pk))
                ref = (
                    RowRef(target.label, target.field.name, pk)
                    if check_missing and status == Status.READY
                    else None
                )
                for key in services.manifest_keys(manifest or {}):
                    # A key listed twice keeps the row that expects it (never downgraded).
                    if index.manifest.get(key) is None:
                        index.manifest[key] = ref
    return index


def _targets_by_model(every: list[Target]) -> dict[str, list[Target]]:
    by_model: dict[str, list[Target]] = defaultdict(list)
    for target in every:
        by_model[target.model._meta.label_lower].append(target)
    return by_model


def _confirm_orphans(
    candidates: list[str], prefix: str, models: Collection[str] | None, every: list[Target]
) -> list[str]:
    """Keep the candidates that are still orphans by the rows as they are *now*.

    The index was built before the listing: a row re-rendered in between wrote keys the
    index does not know. Reading the candidates' rows again, after their objects were
    listed, closes that gap (and costs a few queries: candidates are few)."""
    pks_by_model: dict[str, set[str]] = defaultdict(set)
    for key in candidates:
        identity = key_identity(key, prefix=prefix)
        if identity is not None:
            pks_by_model[identity.label].add(identity.pk)
    referenced: set[str] = set()
    in_flight: set[str] = set()
    by_model = _targets_by_model(every)
    for label, raw_pks in pks_by_model.items():
        targets = by_model.get(label)
        if not targets:
            continue  # not a managed model (any more): nothing can claim these keys
        model = targets[0].model
        pks = _valid_pks(model, raw_pks)
        cols = [c for t in targets for c in (t.col("status"), t.col("manifest"))]
        for start in range(0, len(pks), CONFIRM_CHUNK):
            chunk = pks[start : start + CONFIRM_CHUNK]
            for pk, *state in model._default_manager.filter(pk__in=chunk).values_list("pk", *cols):
                statuses, manifests = state[0::2], state[1::2]
                if any(s in IN_FLIGHT for s in statuses):
                    in_flight.add(row_folder(prefix=prefix, model_label=model._meta.label, pk=pk))
                for manifest in manifests:
                    referenced |= services.manifest_keys(manifest or {})
    return decide_orphans(
        candidates, referenced=referenced, in_flight=in_flight, prefix=prefix, models=models
    ).orphans


def _valid_pks(model: Any, raw: Iterable[str]) -> list[Any]:
    """Primary keys parsed from key paths; a value that cannot be one matches no row."""
    pks = []
    for value in raw:
        with contextlib.suppress(ValidationError, ValueError, TypeError):
            pks.append(model._meta.pk.to_python(value))
    return sorted(pks, key=str)


def _confirm_missing(
    missing: list[tuple[str, RowRef]], selected: list[Target]
) -> list[MissingOutput]:
    """Keep the outputs still expected by their row now: a row re-processed or cleared
    while the bucket was listed expects other keys (or none) and is not broken."""
    by_target: dict[tuple[str, str], dict[Any, list[str]]] = defaultdict(lambda: defaultdict(list))
    for key, row in missing:
        by_target[(row.model, row.field)][row.pk].append(key)
    targets = {(t.label, t.field.name): t for t in selected}
    confirmed: list[MissingOutput] = []
    for (label, field_name), keys_by_pk in by_target.items():
        target = targets[(label, field_name)]
        pks = list(keys_by_pk)
        cols = ("pk", target.col("status"), target.col("manifest"))
        for start in range(0, len(pks), CONFIRM_CHUNK):
            chunk = pks[start : start + CONFIRM_CHUNK]
            for pk, status, manifest in target.rows().filter(pk__in=chunk).values_list(*cols):
                if status != Status.READY:
                    continue
                expected = services.manifest_keys(manifest or {})
                row = RowRef(label, field_name, pk)
                confirmed += [MissingOutput(k, row) for k in keys_by_pk[pk] if k in expected]
    confirmed.sort(key=lambda m: (m.row.model, m.row.field, str(m.row.pk), m.key))
    return confirmed


def _confirm_unreferenced(
    found: list[storage.ObjectInfo], every: list[Target]
) -> list[storage.ObjectInfo]:
    """Drop originals that a row saved after the rows were read now refers to."""
    names = [o.key for o in found]
    referenced: set[str] = set()
    for target in every:
        for start in range(0, len(names), CONFIRM_CHUNK):
            chunk = names[start : start + CONFIRM_CHUNK]
            name_col = target.field.name
            referenced |= set(
                target.rows().filter(**{f"{name_col}__in": chunk}).values_list(name_col, flat=True)
            )
    return sorted((o for o in found if o.key not in referenced), key=lambda o: o.key)
