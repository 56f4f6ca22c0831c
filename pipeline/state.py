"""Every transition of a managed image's row state, in one place.

The companion columns (``<field>_status``, ``_revision``, ...) are written only here, by
conditional ``UPDATE`` statements: a user's ``save()`` never writes them (see
``fields.PipelineOwned``), and work for an older revision can never touch a newer one.

::

    empty ──save with a file──> pending ──claim──> processing ──> ready
                                   ^  ^                │  │
                                   │  └─transient──────┘  └──> failed (bad input, or
                                   └── sweep: due_at passed      MAX_ATTEMPTS used up,
                                       (lost message, lost       or transient trouble
                                       worker, transient failure) outlasting RETRY_WINDOW)

``due_at`` is the deadline by which something must have happened to a row, or the sweep
(``sweep_due``) publishes it again: a pending row's message may be lost (publishing after
commit is at-most-once), a processing row's worker may be dead (the lease, renewed between
steps), a row that failed for a transient reason is retried later. Rows that need nothing
have none.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.db import models, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from pipeline.conf import pipeline_settings
from pipeline.fields import MediaImageField, Status, media_fields

# What the row says about attempts that ended without a word: the process running them
# was killed (OOM killer, SIGKILL, a whole host lost) before it could record anything.
WORKER_LOST = "the worker running it stopped (killed, or out of memory)"


@dataclass(frozen=True)
class Target:
    """One managed field of one concrete model: where the row state lives."""

    model: type[models.Model]
    field: MediaImageField

    @classmethod
    def of(cls, model_label: str, field_name: str) -> Target:
        # A proxy's rows live in its concrete model's table: one target per table.
        model = apps.get_model(model_label)._meta.concrete_model
        field = model._meta.get_field(field_name)
        if not isinstance(field, MediaImageField):
            raise TypeError(f"{model_label}.{field_name} is not a MediaImageField")
        return cls(model, field)

    @property
    def label(self) -> str:
        return self.model._meta.label

    def col(self, what: str) -> str:
        return self.field.companion(what)

    def owner(self, pk: Any) -> list[Any]:
        """One row's identity, as a task argument (JSON)."""
        return [self.label, pk, self.field.name]

    def rows(self, pk: Any = None) -> models.QuerySet:
        qs = self.model._base_manager.all()
        return qs if pk is None else qs.filter(pk=pk)

    def values(self, status: str, **values: Any) -> dict[str, Any]:
        """Keyword arguments for ``update()``: a status change plus companion values."""
        return {
            self.col("status"): status,
            self.col("status_changed"): timezone.now(),
            **{self.col(k): v for k, v in values.items()},
        }


def managed_targets() -> list[Target]:
    """Every (concrete model, managed field) pair in the project, each table once."""
    return [
        Target(model, field)
        for model in apps.get_models()
        if not model._meta.abstract and not model._meta.proxy
        for field in media_fields(model)
    ]


def _after(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


# --- Saves and deletes (the Django surface) ---------------------------------------------


@dataclass(frozen=True)
class Change:
    """What a save did to the state: a new revision to process, and public keys that
    belong to no file any more (the image was cleared)."""

    revision: int | None
    orphaned: dict[str, Any]


def file_saved(target: Target, pk: Any, name: str) -> Change | None:
    """A save wrote ``name`` to the file column. If the state describes another file,
    start over for this one (pending, next revision); returns None when nothing changed.

    Decided by the database (``source`` against the column), so a stale instance that
    writes back an old file name is caught, and a save that did not touch the file costs
    one indexed read.
    """
    with transaction.atomic():
        row = (
            target.rows(pk)
            .select_for_update()
            .exclude(**{target.col("source"): name})
            .values(target.col("manifest"))
            .first()
        )
        if row is None:
            return None
        if name:
            revision = mark_pending(target, [pk]).get(pk)
            if revision is not None:
                return Change(revision=revision, orphaned={})
            # Cleared by another writer since our save: the row holds no file now.
        target.rows(pk).update(
            **target.values(
                Status.EMPTY,
                source="",
                manifest={},
                placeholder={},
                checksum="",
                width=None,
                height=None,
                format="",
                error="",
                attempts=0,
                due_at=None,
                claimed_by="",
            ),
            **{target.col("revision"): F(target.col("revision")) + 1},
        )
        return Change(revision=None, orphaned=row[target.col("manifest")] or {})


def row_deleting(target: Target, pk: Any) -> tuple[dict[str, Any], str] | None:
    """A row is about to be deleted: its manifest and file, read under a row lock, so a
    render finishing meanwhile either lands before (and is read here) or finds no row
    (and discards its own outputs)."""
    row = (
        target.rows(pk)
        .select_for_update()
        .values(target.col("manifest"), target.field.name)
        .first()
    )
    if row is None:
        return None
    return row[target.col("manifest")] or {}, row[target.field.name] or ""


def mark_pending(target: Target, pks: Iterable[Any]) -> dict[Any, int]:
    """Rows with a file start a new revision: pending, attempts reset, due for the sweep
    if their message is lost. Returns each row's new revision."""
    pks = list(pks)
    stale_after = pipeline_settings()["STALE_AFTER"]
    with transaction.atomic():
        rows = (
            target.rows()
            .filter(pk__in=pks)
            .exclude(**{target.field.name: ""})
            .exclude(**{f"{target.field.name}__isnull": True})
        )
        rows.update(
            **target.values(
                Status.PENDING,
                error="",
                attempts=0,
                due_at=_after(stale_after),
                claimed_by="",
            ),
            **{
                target.col("source"): F(target.field.name),
                target.col("revision"): F(target.col("revision")) + 1,
            },
        )
        # Read back inside the transaction: the UPDATE holds the row locks until commit.
        return dict(rows.values_list("pk", target.col("revision")))


def mark_unprocessed(target: Target, pks: Iterable[Any]) -> dict[Any, dict[str, Any]]:
    """Rows linked to an original without processing it (a migration's ``--no-process``):
    the state describes the file, as "no image rendered yet", under a new revision (a
    render of the previous file still in flight is discarded). Returns the manifests
    dropped, whose objects are to be deleted."""
    pks = list(pks)
    with transaction.atomic():
        dropped = dict(
            target.rows()
            .select_for_update()
            .filter(pk__in=pks)
            .values_list("pk", target.col("manifest"))
        )
        target.rows().filter(pk__in=pks).update(
            **target.values(Status.EMPTY, manifest={}, error="", due_at=None, claimed_by=""),
            **{
                target.col("source"): F(target.field.name),
                target.col("revision"): F(target.col("revision")) + 1,
            },
        )
    return {pk: manifest for pk, manifest in dropped.items() if manifest}


def drifted(target: Target, limit: int) -> list[Any]:
    """Rows whose file is not the one their state describes, although no save said so:
    a ``QuerySet.update()`` of the file column, or a process that died between a save's
    commit and its signal. (A scan of the table: the sweep asks for a bounded number.)"""
    name = target.field.name
    return list(
        target.rows()
        .exclude(**{name: ""})
        .exclude(**{f"{name}__isnull": True})
        .exclude(**{target.col("source"): F(name)})
        .values_list("pk", flat=True)[:limit]
    )


# --- Processing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A row claimed for one revision: the file to render and what it held before."""

    source: str
    manifest: dict[str, Any]
    attempts: int
    last_error: str
    taken: float = field(default_factory=time.monotonic, compare=False)  # its lease's start


def claim(target: Target, pk: Any, revision: int, task_id: str) -> Claim | None:
    """Take the row for ``revision``: pending, or processing under an expired lease or
    under this very task (a redelivery after its worker died). Counts the attempt and
    starts the lease. None when the row moved on, is gone, or is leased to another task
    (a duplicate message: the sweep's, or a second delivery)."""
    return claim_many(target, {pk: revision}, task_id).get(pk)


def claim_many(target: Target, revisions: dict[Any, int], task_id: str) -> dict[Any, Claim]:
    """``claim`` for several rows at once (each for its revision), in one ``UPDATE`` and one
    read: the rows one caller processes in turn (a migration chunk), all leased to it
    from now. Returns the claims of the rows taken; the others are left as they are."""
    if not revisions:
        return {}
    now = timezone.now()
    status, due, owner = target.col("status"), target.col("due_at"), target.col("claimed_by")
    claimable = Q(**{status: Status.PENDING}) | Q(
        Q(**{f"{due}__lt": now}) | Q(**{due: None}) | Q(**{owner: task_id}),
        **{status: Status.PROCESSING},
    )
    which = Q()
    for pk, revision in revisions.items():
        which |= Q(pk=pk, **{target.col("revision"): revision})
    with transaction.atomic():
        claimed = (
            target.rows()
            .filter(which)
            .filter(claimable)
            .update(
                **target.values(
                    Status.PROCESSING,
                    due_at=_after(pipeline_settings()["LEASE"]),
                    claimed_by=task_id,
                ),
                **{
                    target.col("attempts"): F(target.col("attempts")) + 1,
                    # Taken over while processing: the attempt before ended without a word.
                    target.col("error"): Case(
                        When(**{status: Status.PROCESSING}, then=Value(WORKER_LOST)),
                        default=F(target.col("error")),
                        output_field=models.TextField(),
                    ),
                },
            )
        )
        if not claimed:
            return {}
        rows = (
            target.rows()
            .filter(which, **{owner: task_id, status: Status.PROCESSING})
            .values(
                "pk",
                target.field.name,
                target.col("manifest"),
                target.col("attempts"),
                target.col("error"),
            )
        )
        return {
            row["pk"]: Claim(
                source=row[target.field.name],
                manifest=row[target.col("manifest")] or {},
                attempts=row[target.col("attempts")],
                last_error=row[target.col("error")],
            )
            for row in rows
        }


def renew(target: Target, pk: Any, revision: int, task_id: str) -> None:
    """Extend the lease between steps, so only a dead worker's row is taken over."""
    target.rows(pk).filter(
        **{target.col("revision"): revision, target.col("claimed_by"): task_id}
    ).update(**{target.col("due_at"): _after(pipeline_settings()["LEASE"])})


def finish_ready(
    target: Target, pk: Any, revision: int, *, manifest: dict[str, Any], **values: Any
) -> bool:
    """Record a finished render; False when a newer revision took the row (or it is gone)."""
    return bool(
        target.rows(pk)
        .filter(**{target.col("revision"): revision})
        .update(
            **target.values(
                Status.READY,
                manifest=manifest,
                error="",
                due_at=None,
                claimed_by="",
                processed_at=timezone.now(),
                **values,
            )
        )
    )


def finish_failed(
    target: Target,
    pk: Any,
    revision: int,
    task_id: str,
    reason: str,
    *,
    retry_after: float | None = None,
    duration_ms: int | None = None,
) -> None:
    """Record a failure with its reason, if ``task_id`` still holds the row (an attempt
    taken over by the sweep must not fail a row another worker finished since).
    ``retry_after``: the failure was transient trouble that outlasted the retry window;
    the sweep tries the row again then."""
    values: dict[str, Any] = {
        "error": reason[:2000],
        "claimed_by": "",
        "due_at": _after(retry_after) if retry_after is not None else None,
    }
    if duration_ms is not None:
        values["duration_ms"] = duration_ms
    _held(target, pk, revision, task_id).update(**target.values(Status.FAILED, **values))


def _held(target: Target, pk: Any, revision: int, task_id: str) -> models.QuerySet:
    """The row, if ``task_id`` holds it for ``revision``."""
    return target.rows(pk).filter(
        **{
            target.col("revision"): revision,
            target.col("status"): Status.PROCESSING,
            target.col("claimed_by"): task_id,
        }
    )


def release(target: Target, revisions: dict[Any, int], task_id: str) -> None:
    """Rows ``task_id`` claimed (``claim_many``) but never got to: pending again, due for
    the sweep as any pending row, the attempt given back."""
    attempts = target.col("attempts")
    stale_after = pipeline_settings()["STALE_AFTER"]
    for pk, revision in revisions.items():
        _held(target, pk, revision, task_id).update(
            **target.values(Status.PENDING, due_at=_after(stale_after), claimed_by=""),
            **{attempts: F(attempts) - 1},
        )


def back_to_pending(
    target: Target,
    pk: Any,
    revision: int,
    task_id: str,
    reason: str,
    *,
    due_in: float,
    counted: bool,
) -> None:
    """An attempt ended in trouble a retry may cure: the row waits for its retry, due a
    little after the retry's countdown (so the sweep publishes no duplicate meanwhile).

    ``counted``: unexpected errors keep the attempt on the row's count (MAX_ATTEMPTS ends
    them); transient trouble is bounded by the retry window instead, so its attempt is
    given back."""
    attempts = target.col("attempts")
    _held(target, pk, revision, task_id).update(
        **target.values(Status.PENDING, error=reason[:2000], due_at=_after(due_in), claimed_by=""),
        **({} if counted else {attempts: F(attempts) - 1}),
    )


# --- The sweep -------------------------------------------------------------------------


def due_rows(target: Target, limit: int) -> dict[Any, int]:
    """Rows whose deadline passed go back to pending, due again in ``STALE_AFTER`` so the
    next sweep leaves them alone while the message published now is on its way; returns
    each row's revision (unchanged: the file is the same).

    A processing row's lease ran out: its worker is taken for dead (were it only slow,
    its result is still recorded, revision-checked and idempotent). A row that failed for
    a transient reason starts a fresh series of attempts."""
    now = timezone.now()
    status, due = target.col("status"), target.col("due_at")
    with transaction.atomic():
        picked = dict(
            target.rows()
            .select_for_update(skip_locked=True)
            # No deadline at all: left pending or processing by a version before them.
            .filter(
                Q(**{f"{due}__lt": now})
                | Q(**{due: None, f"{status}__in": [Status.PENDING, Status.PROCESSING]})
            )
            .order_by(due)
            .values_list("pk", target.col("revision"))[:limit]
        )
        if not picked:
            return {}
        later = _after(pipeline_settings()["STALE_AFTER"])
        rows = target.rows().filter(pk__in=list(picked))
        rows.filter(**{status: Status.FAILED}).update(**{target.col("attempts"): 0})
        rows.filter(**{status: Status.PROCESSING}).update(**{target.col("error"): WORKER_LOST})
        rows.update(**target.values(Status.PENDING, due_at=later, claimed_by=""))
    return picked
