"""The invalidation service against the real database, with in-process backends.

The CloudFront backend over HTTP (moto) is exercised in
``tests/integration/test_cdn_cloudfront.py``; here the backend is the local recorder, or a
scripted backend standing in for a CDN whose answers the test decides (the dummy-backend
pattern of Django's backend dicts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from pipeline.cdn import request_invalidation
from pipeline.cdn.backends import (
    COMPLETED,
    IN_PROGRESS,
    CloudFrontBackend,
    InvalidationBackend,
    LocalRecorderBackend,
    SentInvalidation,
    get_backend,
)
from pipeline.cdn.services import (
    FlushDeferred,
    FlushReport,
    _claim_batch,
    _enqueue_flush,
    cdn_status,
    invalidations_discard,
    invalidations_flush,
    invalidations_poll,
    invalidations_retry,
)
from pipeline.conf import load
from pipeline.errors import CDNRefused, CDNUnavailable
from pipeline.models import CDNInvalidation, CDNPendingPath

pytestmark = pytest.mark.django_db

Status = CDNInvalidation.Status
QUIET = 20


class ScriptedBackend(InvalidationBackend):
    """A CDN whose answers the test scripts: errors to raise, statuses to report."""

    def __init__(self, max_paths_in_progress: int | None = None, completes: bool = True) -> None:
        self.max_paths_in_progress = max_paths_in_progress  # type: ignore[misc]
        self.completes = completes
        self.errors: list[BaseException] = []
        self.calls: list[tuple[list[str], str]] = []
        self.statuses: dict[str, str] = {}

    @property
    def target(self) -> str:
        return "scripted"

    def create_invalidation(
        self, paths: Sequence[str], *, caller_reference: str
    ) -> SentInvalidation:
        self.calls.append((list(paths), caller_reference))
        if self.errors:
            raise self.errors.pop(0)
        invalidation_id = f"I{len(self.calls)}"
        status = COMPLETED if self.completes else IN_PROGRESS
        self.statuses[invalidation_id] = status
        return SentInvalidation(id=invalidation_id, status=status)

    def invalidation_status(self, invalidation_id: str) -> str:
        return self.statuses[invalidation_id]


@pytest.fixture
def cdn(settings: Any, tmp_path: Path) -> Iterator[Any]:
    """Configure ``settings.PIPELINE["CDN"]``; the default is the local recorder in tmp."""
    base = {k: v for k, v in settings.PIPELINE.items() if k != "CDN"}

    def configure(
        backend: str = "pipeline.cdn.backends.LocalRecorderBackend",
        options: dict[str, Any] | None = None,
        **cdn_settings: Any,
    ) -> Any:
        if options is None and backend.endswith("LocalRecorderBackend"):
            options = {"PATH": str(tmp_path / "cdn.jsonl")}
        settings.PIPELINE = {
            **base,
            "CDN": {"BACKEND": backend, "OPTIONS": options or {}, **cdn_settings},
        }
        return get_backend()

    configure()
    yield configure


def scripted(cdn: Any, **cdn_settings: Any) -> ScriptedBackend:
    return cdn("tests.unit.test_cdn_service.ScriptedBackend", **cdn_settings)


def keys(n: int, folder: str = "media/demo-photo/42/sunset") -> list[str]:
    return [f"{folder}/w{i}.webp" for i in range(n)]


def later(seconds: float = QUIET + 1) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


def pending() -> int:
    return CDNPendingPath.objects.filter(batch__isnull=True).count()


# --- recording ------------------------------------------------------------------------


def test_request_records_cloudfront_paths_once(cdn: Any) -> None:
    assert request_invalidation(["media/a b.jpg", "media/café.jpg", "media/a b.jpg"]) == 2
    assert request_invalidation(["media/a b.jpg", "media/new.jpg"]) == 1
    assert sorted(CDNPendingPath.objects.values_list("path", flat=True)) == [
        "/media/a%20b.jpg",
        "/media/caf%C3%A9.jpg",
        "/media/new.jpg",
    ]
    assert request_invalidation([]) == 0


def test_noop_backend_records_nothing(cdn: Any) -> None:
    cdn("pipeline.cdn.backends.NoopBackend")
    assert request_invalidation(keys(3)) == 0
    assert CDNPendingPath.objects.count() == 0


def test_early_flush_is_enqueued_on_commit_when_the_backlog_crosses_the_threshold(
    cdn: Any, django_capture_on_commit_callbacks: Any
) -> None:
    scripted(cdn, FLUSH_THRESHOLD=10)
    with django_capture_on_commit_callbacks() as callbacks:
        request_invalidation(keys(9))
    assert callbacks == []
    with django_capture_on_commit_callbacks() as callbacks:
        request_invalidation(keys(12))  # 9 already pending + 3 new: crosses 10
    assert callbacks == [_enqueue_flush]
    with django_capture_on_commit_callbacks() as callbacks:
        request_invalidation(keys(20))  # already above: beat and the first flush cover it
    assert callbacks == []


def test_a_path_requested_again_while_claimed_is_sent_again_later(cdn: Any) -> None:
    backend = scripted(cdn)
    request_invalidation(keys(2))
    report = FlushReport()
    batch = _claim_batch(backend, load(None)["CDN"] | {"FLUSH_QUIET_PERIOD": 0}, later(), report)
    assert batch is not None and batch.covered_count == 2
    # Overwritten again before the claimed batch went out: it may have been accepted
    # before this overwrite, so the path is recorded anew.
    assert request_invalidation(keys(2)) == 2
    invalidations_flush(now=later(3600))  # the claiming flush "died": its lease expired
    assert [sorted(paths) for paths, _ in backend.calls] == [
        sorted(batch.paths),
        sorted(batch.paths),
    ]
    assert CDNPendingPath.objects.count() == 0


# --- flushing -------------------------------------------------------------------------


def test_partial_batch_waits_while_paths_keep_arriving(cdn: Any) -> None:
    backend = scripted(cdn)
    request_invalidation(keys(3))
    report = invalidations_flush()
    assert report.sent == [] and report.held == 3 and backend.calls == []
    report = invalidations_flush(now=later(QUIET - 5))
    assert report.sent == []
    report = invalidations_flush(now=later())
    assert len(report.sent) == 1 and report.paths_sent == 3
    request_invalidation(keys(1, "media/late"))
    report = invalidations_flush(now=timezone.now() + timedelta(seconds=1))
    assert report.sent == [] and report.held == 1


def test_partial_batch_goes_after_the_max_delay_even_while_paths_keep_arriving(
    cdn: Any,
) -> None:
    backend = scripted(cdn, FLUSH_MAX_DELAY=60)
    request_invalidation(keys(3))
    CDNPendingPath.objects.update(requested_at=timezone.now() - timedelta(seconds=61))
    request_invalidation(keys(2, "media/just-now"))
    invalidations_flush()
    assert len(backend.calls[0][0]) == 5


def test_local_recorder_records_each_commit_at_once(
    cdn: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    # The embedded default may have no beat: nothing is held back, every commit flushes.
    with django_capture_on_commit_callbacks() as callbacks:
        request_invalidation([*keys(3), "media/x y/ü.png"])
    assert callbacks == [_enqueue_flush]
    report = invalidations_flush()
    assert len(report.sent) == 1 and report.paths_sent == 4
    lines = (tmp_path / "cdn.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert "/media/x%20y/%C3%BC.png" in record["paths"]
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.COMPLETED and not batch.billable
    assert record["caller_reference"] == batch.caller_reference
    assert record["id"] == batch.invalidation_id
    assert CDNPendingPath.objects.count() == 0
    with django_capture_on_commit_callbacks() as callbacks:
        request_invalidation(keys(1))
    assert callbacks == [_enqueue_flush]


def test_full_batches_go_at_once_and_respect_the_batch_size(cdn: Any) -> None:
    backend = scripted(cdn, BATCH_SIZE=100, FLUSH_THRESHOLD=100)
    request_invalidation(keys(250))
    report = invalidations_flush()
    assert [len(paths) for paths, _ in backend.calls] == [100, 100]
    assert report.held == 50
    invalidations_flush(now=later())
    assert [len(paths) for paths, _ in backend.calls] == [100, 100, 50]
    sent = [p for paths, _ in backend.calls for p in paths]
    assert len(sent) == len(set(sent)) == 250


def test_paths_in_progress_are_kept_under_the_cdn_limit(cdn: Any) -> None:
    backend = scripted(cdn, options={"MAX_PATHS_IN_PROGRESS": 100, "COMPLETES": False})
    request_invalidation(keys(150))
    report = invalidations_flush(now=later())
    assert [len(p) for p, _ in backend.calls] == [100]
    assert report.waiting_for_capacity and report.held == 50
    invalidations_flush(now=later())
    assert len(backend.calls) == 1  # still in progress: no room
    backend.statuses["I1"] = COMPLETED
    invalidations_flush(now=later())  # polls first, then sends the rest
    assert [len(p) for p, _ in backend.calls] == [100, 50]
    assert CDNInvalidation.objects.filter(status=Status.COMPLETED).count() == 1
    assert invalidations_poll() == 0
    backend.statuses["I2"] = COMPLETED
    assert invalidations_poll() == 1


def test_unavailable_cdn_keeps_paths_and_resends_the_same_request(cdn: Any) -> None:
    backend = scripted(cdn)
    backend.errors.append(CDNUnavailable("TooManyInvalidationsInProgress"))
    request_invalidation(keys(5))
    t0 = later()
    with pytest.raises(FlushDeferred) as raised:
        invalidations_flush(now=t0)
    assert raised.value.retry_after > 0
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.QUEUED and batch.attempts == 1
    assert "TooManyInvalidationsInProgress" in batch.last_error
    assert batch.claimed_paths.count() == 5  # still recorded, owned by the queued request

    # New work meanwhile waits behind the queued request; nothing is sent before it is due.
    request_invalidation(keys(3, folder="media/other"))
    report = invalidations_flush(now=t0 + timedelta(seconds=1))
    assert report.deferred_until == batch.next_attempt_at and len(backend.calls) == 1

    report = invalidations_flush(now=t0 + timedelta(hours=1))
    (first_paths, first_ref), (second_paths, second_ref), (third_paths, _) = backend.calls
    assert (second_paths, second_ref) == (first_paths, first_ref)
    assert len(third_paths) == 3
    batch.refresh_from_db()
    assert batch.status == Status.COMPLETED and batch.attempts == 2 and batch.last_error == ""
    assert CDNPendingPath.objects.count() == 0


def test_a_bug_is_recorded_and_bubbles_up_without_dropping_paths(cdn: Any) -> None:
    backend = scripted(cdn)
    backend.errors.append(KeyError("InvalidArgument"))
    request_invalidation(keys(2))
    with pytest.raises(KeyError):
        invalidations_flush(now=later())
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.QUEUED and "KeyError" in batch.last_error
    assert batch.claimed_paths.count() == 2
    invalidations_flush(now=later(3600))
    batch.refresh_from_db()
    assert batch.status == Status.COMPLETED


def test_two_flushes_never_claim_the_same_paths(cdn: Any) -> None:
    backend = scripted(cdn)
    conf = load(None)["CDN"] | {"BATCH_SIZE": 30, "FLUSH_QUIET_PERIOD": 0}
    request_invalidation(keys(50))
    first = _claim_batch(backend, conf, later(), FlushReport())
    second = _claim_batch(backend, conf, later(), FlushReport())
    third = _claim_batch(backend, conf, later(), FlushReport())
    assert first is not None and second is not None and third is None
    assert (first.covered_count, second.covered_count) == (30, 20)
    assert not set(first.paths) & set(second.paths)
    assert first.caller_reference != second.caller_reference


def test_wildcards_replace_folders_and_cover_pending_paths_for_free(cdn: Any) -> None:
    backend = scripted(cdn, BATCH_SIZE=5, FLUSH_THRESHOLD=5, WILDCARD_THRESHOLD=3)
    request_invalidation(keys(12, "media/p/1") + keys(2, "media/p/2"))
    invalidations_flush(now=later())
    # The oldest five were all in media/p/1: one wildcard, which also covers the other 7.
    assert backend.calls[0][0] == ["/media/p/1/*"]
    assert CDNInvalidation.objects.get(path_count=1).covered_count == 12
    assert sorted(backend.calls[1][0]) == ["/media/p/2/w0.webp", "/media/p/2/w1.webp"]


def test_wildcards_in_flight_use_up_the_wildcard_budget(cdn: Any) -> None:
    backend = scripted(cdn, options={"COMPLETES": False}, WILDCARD_THRESHOLD=2, MAX_WILDCARDS=1)
    request_invalidation(keys(3, "media/a"))
    invalidations_flush(now=later())
    request_invalidation(keys(3, "media/b"))
    invalidations_flush(now=later())
    assert backend.calls[0][0] == ["/media/a/*"]
    assert len(backend.calls[1][0]) == 3  # the one wildcard is still in progress


# --- tasks ----------------------------------------------------------------------------


def test_flush_task_retries_only_the_unavailable_cdn_and_without_hammering_it(
    cdn: Any,
) -> None:
    from celery.exceptions import Retry

    from pipeline.cdn.tasks import flush_invalidations

    backend = scripted(cdn, FLUSH_QUIET_PERIOD=0)
    backend.errors.append(CDNUnavailable("Throttling"))
    request_invalidation(keys(2))
    with pytest.raises(Retry) as retry:
        flush_invalidations.apply()
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.QUEUED
    assert 0 < float(retry.value.when) <= 10  # the batch's own backoff: 5-10 s at first
    # A retry (or beat) arriving before the batch is due finds nothing to do.
    flush_invalidations.apply()
    assert len(backend.calls) == 1

    backend.errors.append(KeyError("a bug"))
    CDNInvalidation.objects.update(next_attempt_at=None)
    with pytest.raises(KeyError):  # not retried: bugs bubble up
        flush_invalidations.apply()


def test_task_names_match_the_routing() -> None:
    from pipeline.cdn import tasks

    assert tasks.flush_invalidations.name == "pipeline.cdn.tasks.flush_invalidations"
    assert tasks.poll_invalidations.name == "pipeline.cdn.tasks.poll_invalidations"
    assert tasks.flush_invalidations.acks_late and tasks.flush_invalidations.ignore_result


# --- status, cost, command ---------------------------------------------------------------


def test_status_counts_this_months_billable_paths_and_cost(cdn: Any) -> None:
    now = timezone.now()
    CDNInvalidation.objects.create(
        target="cloudfront:E1",
        status=Status.COMPLETED,
        billable=True,
        path_count=3000,
        caller_reference="a",
        sent_at=now,
        invalidation_id="IA",
    )
    CDNInvalidation.objects.create(
        target="cloudfront:E1",
        status=Status.IN_PROGRESS,
        billable=True,
        path_count=500,
        caller_reference="b",
        sent_at=now,
        invalidation_id="IB",
    )
    CDNInvalidation.objects.create(  # last month: not counted
        target="cloudfront:E1",
        status=Status.COMPLETED,
        billable=True,
        path_count=9999,
        caller_reference="c",
        sent_at=now - timedelta(days=40),
    )
    CDNInvalidation.objects.create(  # the local recorder costs nothing
        target="local:x",
        status=Status.COMPLETED,
        path_count=7,
        caller_reference="d",
        sent_at=now,
    )
    request_invalidation(keys(4))
    status = cdn_status(now=now, sample=2)
    assert status.pending == 4 and len(status.pending_sample) == 2
    assert status.month_requests == 2
    assert status.month_cost.paths == 3500
    assert status.month_cost.billable_paths == 2500
    assert str(status.month_cost.cost) == "12.500"
    assert status.month_unbilled_paths == 7

    out = StringIO()
    call_command("cdn_status", "--paths", "1", stdout=out)
    text = out.getvalue()
    assert "Pending paths: 4" in text
    assert "IA" in text and "in_progress" in text
    assert "3500 billable path(s) in 2 request(s)" in text
    assert "2500 path(s) beyond the free 1000 x $0.005 = $12.50" in text

    out = StringIO()
    call_command("cdn_status", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["pending"] == 4 and data["month"]["estimated_cost"] == "12.500"


def test_status_shows_queued_requests_and_their_errors(cdn: Any) -> None:
    backend = scripted(cdn)
    backend.errors.append(CDNUnavailable("Throttling: Rate exceeded"))
    request_invalidation(keys(2))
    with pytest.raises(CDNUnavailable):
        invalidations_flush(now=later())
    out = StringIO()
    call_command("cdn_status", stdout=out)
    assert "Queued requests not yet accepted: 1 (2 requested paths claimed)" in out.getvalue()
    assert "Rate exceeded" in out.getvalue()


def test_admin_lists_recent_invalidations(cdn: Any, admin_client: Any) -> None:
    request_invalidation(["media/a b.jpg"])
    invalidations_flush(now=later())
    batch = CDNInvalidation.objects.get()
    response = admin_client.get("/admin/pipeline/cdninvalidation/")
    assert response.status_code == 200
    assert batch.invalidation_id in response.content.decode()
    response = admin_client.get(f"/admin/pipeline/cdninvalidation/{batch.pk}/change/")
    assert response.status_code == 200
    assert "/media/a%20b.jpg" in response.content.decode()
    assert admin_client.get("/admin/pipeline/cdnpendingpath/").status_code == 200


# --- refused requests: set aside, retried or discarded ----------------------------------


def refused(code: str = "NoSuchDistribution") -> CDNRefused:
    return CDNRefused(f"CloudFront CreateInvalidation: {code}: The request was refused.")


def set_aside_batch(cdn: Any, n: int = 2) -> tuple[ScriptedBackend, CDNInvalidation]:
    """A batch of ``n`` paths refused once with ``MAX_REFUSALS`` 1: set aside at once."""
    backend = scripted(cdn, MAX_REFUSALS=1)
    backend.errors.append(refused())
    request_invalidation(keys(n))
    report = invalidations_flush(now=later())
    batch = CDNInvalidation.objects.get()
    assert report.set_aside == [batch.pk] and batch.status == Status.SET_ASIDE
    return backend, batch


def test_a_refused_batch_is_set_aside_after_max_refusals_and_later_batches_go_on(
    cdn: Any,
) -> None:
    backend = scripted(cdn, MAX_REFUSALS=3)
    backend.errors.extend(refused() for _ in range(3))
    request_invalidation(keys(2))
    t0 = later()
    with pytest.raises(FlushDeferred, match="NoSuchDistribution") as raised:
        invalidations_flush(now=t0)
    assert isinstance(raised.value.__cause__, CDNRefused) and raised.value.retry_after > 0
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.QUEUED and (batch.attempts, batch.refusals) == (1, 1)

    # Until it is set aside the refused batch still goes first: a refusal may be a blip
    # (credentials rotating), and invalidations are not reordered for a blip.
    request_invalidation(keys(3, "media/later"))
    assert invalidations_flush(now=t0 + timedelta(seconds=1)).deferred_until is not None
    with pytest.raises(FlushDeferred):
        invalidations_flush(now=t0 + timedelta(hours=1))
    report = invalidations_flush(now=t0 + timedelta(hours=2))  # the third refusal

    assert report.set_aside == [batch.pk]
    assert len(report.sent) == 1 and report.paths_sent == 3  # the later batch went on
    batch.refresh_from_db()
    assert batch.status == Status.SET_ASIDE and (batch.attempts, batch.refusals) == (3, 3)
    assert batch.set_aside_at == t0 + timedelta(hours=2) and batch.next_attempt_at is None
    assert "NoSuchDistribution" in batch.last_error
    assert batch.claimed_paths.count() == 2  # kept with it for a retry or a discard
    assert [ref for _, ref in backend.calls[:3]] == [batch.caller_reference] * 3
    assert sorted(backend.calls[3][0]) == sorted("/" + k for k in keys(3, "media/later"))

    invalidations_flush(now=t0 + timedelta(hours=3))
    assert len(backend.calls) == 4  # never sent again on its own
    assert pending() == 0


def test_a_set_aside_batch_holds_no_capacity(cdn: Any) -> None:
    backend = scripted(
        cdn, options={"MAX_PATHS_IN_PROGRESS": 5, "COMPLETES": False}, MAX_REFUSALS=1
    )
    backend.errors.append(refused("InvalidArgument"))
    request_invalidation(keys(5))
    report = invalidations_flush(now=later())
    assert len(report.set_aside) == 1 and report.sent == []
    request_invalidation(keys(5, "media/other"))
    report = invalidations_flush(now=later())
    assert report.paths_sent == 5 and not report.waiting_for_capacity


def test_transient_failures_are_never_set_aside_and_refusals_are_counted_apart(
    cdn: Any,
) -> None:
    backend = scripted(cdn, MAX_REFUSALS=2)
    backend.errors.extend([CDNUnavailable("Throttling")] * 4 + [refused("AccessDenied")])
    request_invalidation(keys(2))
    for hour in range(1, 6):
        with pytest.raises(FlushDeferred):
            invalidations_flush(now=later(3600 * hour))
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.QUEUED and (batch.attempts, batch.refusals) == (5, 1)
    invalidations_flush(now=later(3600 * 6))
    batch.refresh_from_db()
    assert batch.status == Status.COMPLETED and batch.last_error == ""
    assert len(backend.calls) == 6


def test_flush_task_retries_a_refusal_at_the_batchs_backoff(cdn: Any) -> None:
    from celery.exceptions import Retry

    from pipeline.cdn.tasks import flush_invalidations

    backend = scripted(cdn, FLUSH_QUIET_PERIOD=0)
    backend.errors.append(refused())
    request_invalidation(keys(2))
    with pytest.raises(Retry) as retry:
        flush_invalidations.apply()
    assert 0 < float(retry.value.when) <= 10
    assert CDNInvalidation.objects.get().status == Status.QUEUED


def test_retry_requeues_a_set_aside_batch_which_goes_out_unchanged(
    cdn: Any, django_capture_on_commit_callbacks: Any
) -> None:
    backend, batch = set_aside_batch(cdn)
    with django_capture_on_commit_callbacks() as callbacks:
        assert invalidations_retry(batch_ids=[batch.pk, batch.pk + 1000]) == 1
    assert callbacks == [_enqueue_flush]
    batch.refresh_from_db()
    assert batch.status == Status.QUEUED and (batch.attempts, batch.refusals) == (0, 0)
    assert batch.next_attempt_at is not None and batch.next_attempt_at <= timezone.now()
    assert batch.set_aside_at is None
    report = invalidations_flush()
    assert report.sent == [batch.pk]
    assert backend.calls[1] == backend.calls[0]  # same paths, same CallerReference
    assert CDNPendingPath.objects.count() == 0
    assert invalidations_retry(batch_ids=[batch.pk]) == 0  # only set-aside batches


def test_discard_deletes_a_set_aside_batch_and_only_its_claimed_paths(cdn: Any) -> None:
    backend, batch = set_aside_batch(cdn)
    request_invalidation(keys(2))  # the same paths overwritten since: pending anew, kept
    assert invalidations_discard(batch_ids=[batch.pk]) == 1
    assert not CDNInvalidation.objects.filter(pk=batch.pk).exists()
    assert CDNPendingPath.objects.filter(batch__isnull=False).count() == 0
    assert pending() == 2

    # A queued request still owns its paths: it is not the discard's to drop.
    backend.errors.append(CDNUnavailable("Throttling"))
    with pytest.raises(FlushDeferred):
        invalidations_flush(now=later())
    queued = CDNInvalidation.objects.get()
    assert invalidations_discard(batch_ids=[queued.pk]) == 0
    assert queued.claimed_paths.count() == 2


def test_status_shows_set_aside_batches_with_their_reason(cdn: Any) -> None:
    _, batch = set_aside_batch(cdn, n=3)
    status = cdn_status()
    assert status.set_aside_count == 1 and status.set_aside_paths == 3
    assert status.set_aside == [batch]
    assert status.queued == [] and status.claimed == 0 and status.recent == []

    out = StringIO()
    call_command("cdn_status", stdout=out)
    text = out.getvalue()
    assert "Set aside (refused by the CDN, not retried): 1 (3 requested paths)" in text
    assert f"batch {batch.pk}: 3 path(s)" in text and "refused 1 time(s)" in text
    assert "NoSuchDistribution: The request was refused." in text

    out = StringIO()
    call_command("cdn_status", "--json", stdout=out)
    data = json.loads(out.getvalue())["set_aside"]
    assert (data["count"], data["paths"]) == (1, 3)
    (shown,) = data["batches"]
    assert shown["batch"] == batch.pk and shown["status"] == "set_aside"
    assert shown["refusals"] == 1 and shown["set_aside_at"] is not None
    assert "NoSuchDistribution" in shown["last_error"]


def staff_client(django_user_model: Any, name: str, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="pipeline", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def test_admin_retry_and_discard_need_the_change_permission(
    cdn: Any, django_user_model: Any
) -> None:
    backend, batch = set_aside_batch(cdn)
    changelist = "/admin/pipeline/cdninvalidation/"
    change_page = f"{changelist}{batch.pk}/change/"

    viewer = staff_client(django_user_model, "viewer", "view_cdninvalidation")
    page = viewer.get(changelist + "?status__exact=set_aside").content.decode()
    assert "Set aside (refused by the CDN)" in page and f"batch {batch.pk}" in page
    assert "retry_batches" not in page and "discard_batches" not in page
    for action in ("retry_batches", "discard_batches"):
        viewer.post(changelist, {"action": action, "_selected_action": [batch.pk]})
    batch.refresh_from_db()
    assert batch.status == Status.SET_ASIDE and batch.claimed_paths.count() == 2

    operator = staff_client(
        django_user_model, "operator", "view_cdninvalidation", "change_cdninvalidation"
    )
    page = operator.get(changelist).content.decode()
    assert "Retry selected batches" in page and "Discard selected batches" in page
    assert 'name="_save"' not in operator.get(change_page).content.decode()  # still read-only
    response = operator.post(
        changelist, {"action": "retry_batches", "_selected_action": [batch.pk]}, follow=True
    )
    page = response.content.decode()
    assert "1 set-aside batch(es) queued again" in page and "left alone" not in page
    batch.refresh_from_db()
    assert batch.status == Status.QUEUED and batch.refusals == 0

    backend.errors.append(refused())
    invalidations_flush()  # refused again: set aside again
    batch.refresh_from_db()
    assert batch.status == Status.SET_ASIDE
    operator.post(changelist, {"action": "discard_batches", "_selected_action": [batch.pk]})
    assert not CDNInvalidation.objects.exists() and not CDNPendingPath.objects.exists()
    assert LogEntry.objects.filter(object_id=str(batch.pk), action_flag=DELETION).exists()


# --- configuration ------------------------------------------------------------------------


def test_backend_options_are_checked(cdn: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"Unknown option.*BUCKET"):
        cdn(options={"PATH": "x", "BUCKET": "y"})
    with pytest.raises(ImproperlyConfigured, match="DISTRIBUTION_ID"):
        cdn("pipeline.cdn.backends.CloudFrontBackend", options={"ENDPOINT_URL": None})
    with pytest.raises(ImproperlyConfigured, match="not an InvalidationBackend"):
        cdn("pipeline.conf.load")
    with pytest.raises(ImproperlyConfigured):
        cdn("pipeline.cdn.backends.Nope")
    backend = cdn(
        "pipeline.cdn.backends.CloudFrontBackend",
        options={
            "DISTRIBUTION_ID": "E1",
            "ENDPOINT_URL": "http://127.0.0.1:1",
            "REGION_NAME": "eu-west-1",
        },
    )
    assert isinstance(backend, CloudFrontBackend) and backend.target == "cloudfront:E1"
    assert isinstance(cdn(), LocalRecorderBackend)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FLUSH_THRESHOLD", 0),
        ("BATCH_SIZE", 3001),
        ("MAX_WILDCARDS", 16),
        ("PRICE_PER_PATH", "free"),
        ("WILDCARD_THRESHOLD", -1),
        ("FLUSH_INTERVAL", "60"),
        ("MAX_REFUSALS", 0),
    ],
)
def test_cdn_settings_are_validated(key: str, value: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match=key):
        load({"CDN": {key: value}})


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks: SQLite is covered by the claim test"
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_flushes_send_each_path_once(cdn: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = scripted(cdn, BATCH_SIZE=40, FLUSH_THRESHOLD=40)
    request_invalidation(keys(400))

    def flush() -> None:
        try:
            invalidations_flush(now=later())
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(flush) for _ in range(4)]:
            future.result()
    invalidations_flush(now=later())
    sent = [p for paths, _ in backend.calls for p in paths]
    assert len(sent) == len(set(sent)) == 400
