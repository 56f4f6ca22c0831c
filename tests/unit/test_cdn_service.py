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
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
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
    invalidations_flush,
    invalidations_poll,
)
from pipeline.conf import load
from pipeline.errors import CDNUnavailable
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
