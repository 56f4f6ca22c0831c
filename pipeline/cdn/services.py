"""The invalidation service: record stale paths durably, send them in cheap batches.

Life of a path:

1. ``request_invalidation(keys)`` turns each key into its CloudFront path and inserts it
   as an *unclaimed* ``CDNPendingPath``; a unique constraint on unclaimed paths makes a
   repeated request a no-op. Nothing is sent: the call returns at once, and crossing
   ``FLUSH_THRESHOLD`` enqueues an early flush on commit.
2. ``invalidations_flush()`` (the periodic/early task) *claims* pending rows for a new
   ``CDNInvalidation`` row in one transaction: the row gets the batch's paths (folders
   collapsed into wildcards where cheaper) and its ``CallerReference``, and the claimed
   rows point at it. Claiming is a conditional ``UPDATE ... WHERE batch IS NULL`` (plus
   ``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it), so two flushes can
   never claim the same row, on PostgreSQL or SQLite.
3. The request is sent *after* that commit. Accepted: the claimed rows are deleted and the
   CDN's id and status recorded. Not accepted (too many in progress, throttled, network,
   timeout): the batch stays queued with a backoff and is later re-sent *unchanged*, with
   the same ``CallerReference``, so a request CloudFront did accept before the timeout is
   answered with that same invalidation, never a second one. Nothing is dropped.
   Refused for good (``CDNRefused``: a wrong distribution, a bad request): retried the
   same way, but after ``MAX_REFUSALS`` refusals the batch is *set aside* with its claimed
   paths and reason, and the flush goes on with later batches. A set-aside batch holds no
   CDN capacity and is never sent again on its own: ``invalidations_retry`` re-queues it
   (for instance once the distribution id is fixed), ``invalidations_discard`` drops it.
4. ``invalidations_poll()`` asks the CDN about requests in progress until they complete;
   the flush keeps what is in progress under CloudFront's limits (3,000 paths, 15
   wildcards per distribution).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.db import transaction
from django.db.models import Count, F, Max, Min, Q, Sum
from django.utils import timezone

from pipeline import dispatch
from pipeline.cdn.backends import COMPLETED, InvalidationBackend, get_backend
from pipeline.cdn.batching import (
    CostEstimate,
    backoff_delay,
    caller_reference,
    estimate_cost,
    plan_batch,
    should_flush,
)
from pipeline.cdn.paths import cloudfront_path, path_digest
from pipeline.conf import pipeline_settings
from pipeline.errors import CDNRefused, CDNUnavailable
from pipeline.models.cdn import CDNInvalidation, CDNPendingPath

logger = logging.getLogger(__name__)

# A batch being sent is not picked up by another flush for this long: longer than the
# client's timeouts times its attempts, so only a flush that died mid-send is overtaken.
SEND_LEASE = timedelta(minutes=5)
# First retry after 5-10 s, doubling up to the pipeline's RETRY_BACKOFF_MAX.
BACKOFF_BASE = 10.0
# Requests sent per flush call and statuses polled per poll call: keeps each task short.
MAX_BATCHES_PER_FLUSH = 20
POLL_LIMIT = 50
# Parameters per ``IN (...)``: well under SQLite's and PostgreSQL's limits.
_CHUNK = 500

Status = CDNInvalidation.Status
T = TypeVar("T")


class FlushDeferred(CDNUnavailable):
    """The CDN could not take a batch, or refused it fewer than ``MAX_REFUSALS`` times; it
    stays queued until ``retry_after`` (the cause says which)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _cdn_conf() -> dict[str, Any]:
    return pipeline_settings()["CDN"]


# --- recording ------------------------------------------------------------------------


def request_invalidation(paths: Iterable[str]) -> int:
    """Record public object keys to invalidate; returns how many were not already pending.

    See ``pipeline.cdn.request_invalidation``. The count is exact without concurrent
    callers; with them, a path recorded by both is counted by both (it is stored once).
    """
    backend = get_backend()
    by_digest: dict[str, str] = {}
    for key in paths:
        path = cloudfront_path(key)
        by_digest[path_digest(path)] = path
    if not by_digest or not backend.records:
        return 0
    now = timezone.now()
    digests = list(by_digest)
    with transaction.atomic():
        unclaimed = CDNPendingPath.objects.filter(batch__isnull=True)
        already = sum(unclaimed.filter(digest__in=chunk).count() for chunk in _chunks(digests))
        CDNPendingPath.objects.bulk_create(
            [CDNPendingPath(path=by_digest[d], digest=d, requested_at=now) for d in digests],
            ignore_conflicts=True,
            batch_size=_CHUNK,
        )
        added = len(digests) - already
        if added > 0:
            if backend.holds_partial_batches:
                backlog = unclaimed.count()
                threshold = _cdn_conf()["FLUSH_THRESHOLD"]
                crossed = backlog - added < threshold <= backlog
            else:
                crossed = True
            if crossed:
                # robust: a broker hiccup must not fail the caller's commit; beat flushes too.
                transaction.on_commit(_enqueue_flush, robust=True)
    logger.debug("CDN invalidation requested for %d path(s), %d new", len(digests), added)
    return added


def _enqueue_flush() -> None:
    dispatch.send(dispatch.FLUSH_INVALIDATIONS)


# --- flushing -------------------------------------------------------------------------


@dataclass
class FlushReport:
    """What one flush did."""

    sent: list[int] = field(default_factory=list)
    """Ids of the ``CDNInvalidation`` rows the CDN accepted."""
    paths_sent: int = 0
    """Paths in the accepted requests (what is billed)."""
    covered: int = 0
    """Requested paths those requests invalidated."""
    held: int = 0
    """Pending paths left for a later flush (a partial batch still filling, or no room)."""
    waiting_for_capacity: bool = False
    """Paths wait because the CDN has as much in progress as it allows."""
    deferred_until: datetime | None = None
    """A queued request is backing off until then; nothing new is sent before it goes."""
    set_aside: list[int] = field(default_factory=list)
    """Ids of the ``CDNInvalidation`` rows refused ``MAX_REFUSALS`` times and set aside."""


def invalidations_flush(
    *, now: datetime | None = None, max_batches: int = MAX_BATCHES_PER_FLUSH
) -> FlushReport:
    """Send what is pending: first any queued (unaccepted) request, then new batches.

    Raises ``FlushDeferred`` (a ``CDNUnavailable``) when the CDN did not accept a request;
    the request stays queued with a backoff. A request refused for the ``MAX_REFUSALS``-th
    time is set aside instead, and the flush goes on. Other errors bubble up (after being
    recorded on the batch, which also backs off, so a bug does not hammer the CDN).
    """
    now = now or timezone.now()
    backend = get_backend()
    conf = _cdn_conf()
    report = FlushReport()
    if CDNInvalidation.objects.filter(target=backend.target, status=Status.IN_PROGRESS).exists():
        invalidations_poll(now=now)  # what completed frees capacity
    for _ in range(max_batches):
        batch = _lease_queued_batch(now)
        if batch is None:
            report.deferred_until = _queued_until()
            if report.deferred_until is not None:
                break
            batch = _claim_batch(backend, conf, now, report)
            if batch is None:
                break
        if not _send(backend, batch, now, max_refusals=int(conf["MAX_REFUSALS"])):
            report.set_aside.append(batch.pk)
            continue
        report.sent.append(batch.pk)
        report.paths_sent += batch.path_count
        report.covered += batch.covered_count
    if report.sent or report.deferred_until or report.set_aside:
        logger.info(
            "CDN flush: %d request(s) of %d path(s) for %d requested; %d held; "
            "a refused request backs off until %s; %d set aside",
            len(report.sent),
            report.paths_sent,
            report.covered,
            report.held,
            report.deferred_until or "-",
            len(report.set_aside),
        )
    return report


def _lease_queued_batch(now: datetime) -> CDNInvalidation | None:
    """The oldest queued request that is due, leased to this flush (or None)."""
    due = (
        CDNInvalidation.objects.filter(status=Status.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("created_at", "id")
    )
    for candidate in due[:5]:
        leased = CDNInvalidation.objects.filter(
            pk=candidate.pk, status=Status.QUEUED, next_attempt_at=candidate.next_attempt_at
        ).update(next_attempt_at=now + SEND_LEASE)
        if leased:
            candidate.refresh_from_db()
            return candidate
    return None


def _queued_until() -> datetime | None:
    """When the earliest queued request may be sent again (None: nothing is queued)."""
    queued = CDNInvalidation.objects.filter(status=Status.QUEUED)
    if not queued.exists():
        return None
    earliest: datetime | None = queued.aggregate(t=Min("next_attempt_at"))["t"]
    return earliest or timezone.now()


def _claim_batch(
    backend: InvalidationBackend, conf: dict[str, Any], now: datetime, report: FlushReport
) -> CDNInvalidation | None:
    """Claim the oldest pending paths for a new queued request, if one should go now."""
    in_flight = CDNInvalidation.objects.filter(
        target=backend.target, status__in=[Status.QUEUED, Status.IN_PROGRESS]
    ).aggregate(paths=Sum("path_count"), wildcards=Sum("wildcard_count"))
    wildcards_in_flight = in_flight["wildcards"] or 0
    files_in_flight = (in_flight["paths"] or 0) - wildcards_in_flight
    capacity = int(conf["BATCH_SIZE"])
    if backend.max_paths_in_progress is not None:
        capacity = min(capacity, backend.max_paths_in_progress - files_in_flight)
    wildcard_budget = int(conf["MAX_WILDCARDS"]) - wildcards_in_flight
    if backend.max_wildcards_in_progress is not None:
        wildcard_budget = min(
            wildcard_budget, backend.max_wildcards_in_progress - wildcards_in_flight
        )

    unclaimed = CDNPendingPath.objects.filter(batch__isnull=True)
    stats = unclaimed.aggregate(
        n=Count("id"), oldest=Min("requested_at"), newest=Max("requested_at")
    )
    pending: int = stats["n"]
    if pending == 0:
        return None
    holds = backend.holds_partial_batches
    if not should_flush(
        pending=pending,
        capacity=capacity,
        threshold=int(conf["FLUSH_THRESHOLD"]),
        newest_age=(now - stats["newest"]).total_seconds(),
        oldest_age=(now - stats["oldest"]).total_seconds(),
        quiet_period=float(conf["FLUSH_QUIET_PERIOD"]) if holds else 0.0,
        max_delay=float(conf["FLUSH_MAX_DELAY"]) if holds else 0.0,
    ):
        report.held = pending
        report.waiting_for_capacity = capacity <= 0
        return None

    with transaction.atomic():
        # Written first: on SQLite this takes the write lock, so claims are serialized.
        batch = CDNInvalidation.objects.create(
            target=backend.target,
            status=Status.QUEUED,
            created_at=now,
            next_attempt_at=now + SEND_LEASE,
        )
        candidates = (
            unclaimed.order_by("requested_at", "id")
            .select_for_update(skip_locked=True)  # PostgreSQL; SQLite has no row locks
            .values_list("id", flat=True)[:capacity]
        )
        ids = list(candidates)
        claimed = sum(
            CDNPendingPath.objects.filter(id__in=chunk, batch__isnull=True).update(batch=batch)
            for chunk in _chunks(ids)
        )
        if not claimed:
            batch.delete()
            return None
        plan = plan_batch(
            CDNPendingPath.objects.filter(batch=batch).values_list("path", flat=True),
            wildcard_threshold=int(conf["WILDCARD_THRESHOLD"]),
            max_wildcards=max(0, wildcard_budget),
        )
        extra = _claim_covered(batch, plan.wildcards)
        batch.paths = list(plan.paths)
        batch.path_count = len(plan.paths)
        batch.wildcard_count = len(plan.wildcards)
        batch.covered_count = plan.covered + extra
        batch.caller_reference = caller_reference(
            batch_id=batch.pk, created=batch.created_at, paths=plan.paths
        )
        batch.save()
    report.held = max(0, pending - claimed - extra)
    return batch


def _claim_covered(batch: CDNInvalidation, wildcards: Sequence[str]) -> int:
    """Also claim pending paths the batch's wildcards invalidate anyway: they cost nothing."""
    if not wildcards:
        return 0
    prefixes = [w[:-1] for w in wildcards]
    match = Q()
    for prefix in prefixes:
        match |= Q(path__startswith=prefix)
    # SQLite's LIKE ignores case; paths do not: filter exactly in Python.
    ids = [
        pk
        for pk, path in CDNPendingPath.objects.filter(batch__isnull=True)
        .filter(match)
        .values_list("id", "path")
        if path.startswith(tuple(prefixes))
    ]
    return sum(
        CDNPendingPath.objects.filter(id__in=chunk, batch__isnull=True).update(batch=batch)
        for chunk in _chunks(ids)
    )


def _send(
    backend: InvalidationBackend, batch: CDNInvalidation, now: datetime, *, max_refusals: int
) -> bool:
    """Send a leased queued request; record the answer, or the failure and its backoff.

    Returns False when the CDN refused it for the ``max_refusals``-th time and it was set
    aside; raises ``FlushDeferred`` when it stays queued.
    """
    assert batch.caller_reference, "a queued batch always has its CallerReference"
    try:
        sent = backend.create_invalidation(batch.paths, caller_reference=batch.caller_reference)
    except CDNRefused as e:
        if batch.refusals + 1 >= max_refusals:
            _set_aside(batch, e, now)
            return False
        # Retried a few times first: a refusal can be a blip (credentials rotating).
        delay = _record_failure(batch, e, now, refused=True)
        raise FlushDeferred(str(e), retry_after=delay) from e
    except CDNUnavailable as e:
        delay = _record_failure(batch, e, now)
        raise FlushDeferred(str(e), retry_after=delay) from e
    except Exception as e:
        _record_failure(batch, e, now)
        raise
    completed = sent.status == COMPLETED
    with transaction.atomic():
        CDNInvalidation.objects.filter(pk=batch.pk).update(
            target=backend.target,
            billable=backend.billable,
            invalidation_id=sent.id,
            status=Status.COMPLETED if completed else Status.IN_PROGRESS,
            sent_at=now,
            completed_at=now if completed else None,
            checked_at=now,
            next_attempt_at=None,
            attempts=F("attempts") + 1,
            last_error="",
        )
        CDNPendingPath.objects.filter(batch=batch).delete()
    batch.refresh_from_db()
    logger.info(
        "CDN invalidation %s accepted: %d path(s) (%d wildcard(s)) for %d requested, ref %s",
        sent.id or "(none)",
        batch.path_count,
        batch.wildcard_count,
        batch.covered_count,
        batch.caller_reference,
    )
    return True


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


def _record_failure(
    batch: CDNInvalidation, error: BaseException, now: datetime, *, refused: bool = False
) -> float:
    attempts = batch.attempts + 1
    delay = backoff_delay(
        attempts, base=BACKOFF_BASE, cap=float(pipeline_settings()["RETRY_BACKOFF_MAX"])
    )
    CDNInvalidation.objects.filter(pk=batch.pk).update(
        attempts=attempts,
        refusals=F("refusals") + (1 if refused else 0),
        last_error=_error_text(error),
        next_attempt_at=now + timedelta(seconds=delay),
    )
    logger.warning(
        "CDN invalidation batch %s (%d path(s), ref %s) not accepted, attempt %d; "
        "retrying in %.0fs: %s",
        batch.pk,
        batch.path_count,
        batch.caller_reference,
        attempts,
        delay,
        error,
    )
    return delay


def _set_aside(batch: CDNInvalidation, error: CDNRefused, now: datetime) -> None:
    """Park a request refused ``MAX_REFUSALS`` times: it keeps its paths and reason, stops
    counting against the CDN's in-progress limits, and no longer blocks later requests."""
    CDNInvalidation.objects.filter(pk=batch.pk, status=Status.QUEUED).update(
        status=Status.SET_ASIDE,
        set_aside_at=now,
        next_attempt_at=None,
        attempts=F("attempts") + 1,
        refusals=F("refusals") + 1,
        last_error=_error_text(error),
    )
    logger.error(
        "CDN invalidation batch %s (%d path(s), ref %s) refused %d time(s), set aside; "
        "retry or discard it in the admin: %s",
        batch.pk,
        batch.path_count,
        batch.caller_reference,
        batch.refusals + 1,
        error.reason,
    )


# --- set-aside requests: retry or discard --------------------------------------------


def invalidations_retry(*, batch_ids: Iterable[int], now: datetime | None = None) -> int:
    """Queue set-aside requests again, unchanged (same paths and ``CallerReference``), with
    their attempts and refusals reset; returns how many. Other statuses are left alone.

    They are sent to the backend configured *now*, so fixing a wrong distribution id and
    retrying is the cure for a misconfiguration.
    """
    now = now or timezone.now()
    ids = list(batch_ids)
    with transaction.atomic():
        retried = sum(
            CDNInvalidation.objects.filter(pk__in=chunk, status=Status.SET_ASIDE).update(
                status=Status.QUEUED,
                attempts=0,
                refusals=0,
                next_attempt_at=now,
                set_aside_at=None,
            )
            for chunk in _chunks(ids)
        )
        if retried:
            transaction.on_commit(_enqueue_flush, robust=True)
    if retried:
        logger.info("CDN: %d set-aside invalidation batch(es) queued again", retried)
    return retried


def invalidations_discard(*, batch_ids: Iterable[int]) -> int:
    """Delete set-aside requests and the requested paths they hold; returns how many.

    Deleted rather than marked: a set-aside request was never accepted, so it cost and
    invalidated nothing, and nothing reads it again; a "discarded" status would only pile
    up. The admin's history keeps who discarded which batch, and a warning is logged with
    its path count and reason. Other statuses are left alone (a queued request still owns
    paths about to be sent).
    """
    ids = list(batch_ids)
    discarded: list[CDNInvalidation] = []
    with transaction.atomic():
        for chunk in _chunks(ids):
            # Locked (PostgreSQL) so a concurrent retry cannot re-queue a batch whose paths
            # are being deleted; SQLite serializes the writes anyway.
            batches = list(
                CDNInvalidation.objects.select_for_update()
                .filter(pk__in=chunk, status=Status.SET_ASIDE)
                .only("pk", "path_count", "last_error")
            )
            pks = [b.pk for b in batches]
            CDNPendingPath.objects.filter(batch_id__in=pks).delete()
            CDNInvalidation.objects.filter(pk__in=pks).delete()
            discarded.extend(batches)
    for batch in discarded:
        logger.warning(
            "CDN invalidation batch %s discarded: %d path(s) will not be invalidated (%s)",
            batch.pk,
            batch.path_count,
            batch.last_error,
        )
    return len(discarded)


# --- polling --------------------------------------------------------------------------


def invalidations_poll(*, now: datetime | None = None, limit: int = POLL_LIMIT) -> int:
    """Refresh the status of requests in progress; returns how many completed."""
    now = now or timezone.now()
    backend = get_backend()
    in_progress = CDNInvalidation.objects.filter(
        target=backend.target, status=Status.IN_PROGRESS
    ).order_by(F("checked_at").asc(nulls_first=True), "sent_at", "id")[:limit]
    completed = 0
    for batch in in_progress:
        status = backend.invalidation_status(batch.invalidation_id)
        changes: dict[str, Any] = {"checked_at": now}
        if status == COMPLETED:
            changes.update(status=Status.COMPLETED, completed_at=now)
            completed += 1
        CDNInvalidation.objects.filter(pk=batch.pk).update(**changes)
    if completed:
        logger.info("CDN: %d invalidation(s) completed", completed)
    return completed


# --- reporting ------------------------------------------------------------------------


@dataclass(frozen=True)
class CDNStatus:
    """What ``manage.py cdn_status`` shows."""

    backend: str
    target: str
    billable: bool
    pending: int
    oldest_pending: datetime | None
    pending_sample: list[str]
    queued: list[CDNInvalidation]
    claimed: int
    """Requested paths held by queued requests."""
    set_aside: list[CDNInvalidation]
    """The oldest set-aside requests (at most the ``set_aside`` limit of ``cdn_status``)."""
    set_aside_count: int
    set_aside_paths: int
    """Requested paths held by set-aside requests (not invalidated until retried)."""
    recent: list[CDNInvalidation]
    month_start: datetime
    month_requests: int
    month_cost: CostEstimate
    month_unbilled_paths: int


def month_start(now: datetime) -> datetime:
    """The first instant of ``now``'s calendar month in UTC (AWS bills by UTC month)."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def cdn_status(
    *, now: datetime | None = None, recent: int = 20, sample: int = 0, set_aside: int = 50
) -> CDNStatus:
    """The backlog, set-aside and recent requests, and this month's billable paths."""
    now = now or timezone.now()
    backend = get_backend()
    conf = _cdn_conf()
    unclaimed = CDNPendingPath.objects.filter(batch__isnull=True)
    stats = unclaimed.aggregate(n=Count("id"), oldest=Min("requested_at"))
    start = month_start(now)
    sent = CDNInvalidation.objects.filter(sent_at__gte=start)
    billed = sent.filter(billable=True).aggregate(n=Count("id"), paths=Sum("path_count"))
    unbilled = sent.filter(billable=False).aggregate(paths=Sum("path_count"))
    aside = CDNInvalidation.objects.filter(status=Status.SET_ASIDE)
    claimed = CDNPendingPath.objects.filter(batch__isnull=False)
    return CDNStatus(
        backend=f"{type(backend).__module__}.{type(backend).__qualname__}",
        target=backend.target,
        billable=backend.billable,
        pending=stats["n"],
        oldest_pending=stats["oldest"],
        pending_sample=list(
            unclaimed.order_by("requested_at", "id").values_list("path", flat=True)[:sample]
        ),
        queued=list(CDNInvalidation.objects.filter(status=Status.QUEUED).order_by("created_at")),
        claimed=claimed.filter(batch__status=Status.QUEUED).count(),
        set_aside=list(aside.order_by("created_at", "id")[:set_aside]),
        set_aside_count=aside.count(),
        set_aside_paths=claimed.filter(batch__status=Status.SET_ASIDE).count(),
        recent=list(
            CDNInvalidation.objects.exclude(status__in=[Status.QUEUED, Status.SET_ASIDE])[:recent]
        ),
        month_start=start,
        month_requests=billed["n"],
        month_cost=estimate_cost(
            billed["paths"] or 0,
            free_paths=int(conf["FREE_PATHS_PER_MONTH"]),
            price_per_path=Decimal(str(conf["PRICE_PER_PATH"])),
        ),
        month_unbilled_paths=unbilled["paths"] or 0,
    )
