"""The invalidation service against the moto-served CloudFront API, over HTTP.

Each test gets a distribution of its own on the harness's ``moto_server`` and points
``PIPELINE["CDN"]`` at it, so it sees only its own invalidations. moto cannot produce the
failures that matter (too many invalidations in progress, throttling, a timeout after the
request was accepted), nor an invalidation still in progress: those are injected at the
boto3 boundary, with botocore's ``Stubber`` or an event hook on the backend's own client,
while everything else goes to moto for real.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.stub import ANY, Stubber
from django.db import transaction
from django.utils import timezone

from pipeline.cdn import request_invalidation
from pipeline.cdn.backends import CloudFrontBackend, get_backend
from pipeline.cdn.services import (
    cdn_status,
    invalidations_flush,
    invalidations_poll,
    invalidations_retry,
)
from pipeline.errors import CDNRefused, CDNUnavailable
from pipeline.models import CDNInvalidation, CDNPendingPath
from tests.services import create_distribution

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

Status = CDNInvalidation.Status


def new_distribution(cloudfront: Any) -> str:
    return create_distribution(cloudfront, caller_reference=f"cdn-test-{uuid.uuid4().hex}")


def moto_invalidations(cloudfront: Any, distribution_id: str) -> list[dict[str, Any]]:
    """Every invalidation moto holds for the distribution, with its batch, oldest first."""
    listed = cloudfront.list_invalidations(DistributionId=distribution_id, MaxItems="1000")
    found = []
    for summary in listed["InvalidationList"].get("Items", []):
        invalidation = cloudfront.get_invalidation(
            DistributionId=distribution_id, Id=summary["Id"]
        )["Invalidation"]
        found.append(invalidation)
    return sorted(found, key=lambda i: i["CreateTime"])


def sent_paths(invalidations: list[dict[str, Any]]) -> list[str]:
    return [p for i in invalidations for p in i["InvalidationBatch"]["Paths"].get("Items", [])]


@pytest.fixture
def distribution(settings: Any, cloudfront: Any) -> Iterator[Callable[..., CloudFrontBackend]]:
    """A fresh moto distribution; call the fixture to (re)configure the CDN settings."""
    distribution_id = new_distribution(cloudfront)
    base = {k: v for k, v in settings.PIPELINE.items() if k != "CDN"}

    def configure(**cdn_settings: Any) -> CloudFrontBackend:
        settings.PIPELINE = {
            **base,
            "CDN": {
                "BACKEND": "pipeline.cdn.backends.CloudFrontBackend",
                "OPTIONS": {
                    "DISTRIBUTION_ID": distribution_id,
                    "ENDPOINT_URL": os.environ["AWS_CLOUDFRONT_ENDPOINT_URL"],
                },
                **cdn_settings,
            },
        }
        backend = get_backend()
        assert isinstance(backend, CloudFrontBackend)
        return backend

    configure()
    yield configure


@pytest.fixture
def create_calls(distribution: Any) -> Callable[[CloudFrontBackend], list[dict[str, Any]]]:
    """Record every CreateInvalidation the backend's client attempts (stubbed or not)."""

    def attach(backend: CloudFrontBackend) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []

        def record(params: dict[str, Any], **kwargs: Any) -> None:
            calls.append(params["InvalidationBatch"])

        backend.client.meta.events.register(
            "before-parameter-build.cloudfront.CreateInvalidation", record
        )
        return calls

    return attach


def variants(asset: int, n: int = 10, slug: str = "sunset") -> list[str]:
    """Keys of one asset's variants, as the pipeline names them."""
    formats = ("webp", "avif", "jpg")
    return [
        f"media/demo-photo/{asset}/{slug}/w{320 * (i // 3 + 1)}-{i}.{formats[i % 3]}"
        for i in range(n)
    ]


def later(seconds: float = 3600) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


# --- batching -----------------------------------------------------------------------------


def test_5000_overwrites_end_up_in_exactly_two_full_size_invalidations(
    distribution: Any, cloudfront: Any
) -> None:
    backend = distribution()
    keys = [k for asset in range(500) for k in variants(asset)]
    assert len(keys) == 5000
    for n, key in enumerate(keys, 1):
        with transaction.atomic():  # one overwrite at a time, as the pipeline's services do
            assert request_invalidation([key]) == 1
        if n % 250 == 0:
            invalidations_flush()  # beat ticks while the bulk work is still arriving
    invalidations_flush(now=later(60))  # ... and after it has ended

    invalidations = moto_invalidations(cloudfront, backend.distribution_id)
    # CloudFront takes at most 3,000 paths per request: two requests, never one of 5,000.
    sizes = [i["InvalidationBatch"]["Paths"]["Quantity"] for i in invalidations]
    assert len(sizes) == 2 and all(size <= 3000 for size in sizes), sizes
    paths = sent_paths(invalidations)
    assert len(paths) == len(set(paths)) == 5000
    assert set(paths) == {"/" + k for k in keys}
    assert CDNPendingPath.objects.count() == 0
    recorded = CDNInvalidation.objects.order_by("created_at")
    assert [r.invalidation_id for r in recorded] == [i["Id"] for i in invalidations]
    assert [r.caller_reference for r in recorded] == [
        i["InvalidationBatch"]["CallerReference"] for i in invalidations
    ]
    assert all(r.status == Status.COMPLETED for r in recorded)  # moto completes at once


def test_the_same_paths_requested_twice_are_sent_once(distribution: Any, cloudfront: Any) -> None:
    backend = distribution()
    keys = ["media/legacy/Café au lait.jpg", "media/legacy/a+b (1).png", *variants(7, 3)]
    assert request_invalidation(keys) == 5
    assert request_invalidation(reversed(keys)) == 0
    invalidations_flush(now=later())
    invalidations_flush(now=later())  # nothing left: no second request

    (invalidation,) = moto_invalidations(cloudfront, backend.distribution_id)
    paths = invalidation["InvalidationBatch"]["Paths"]["Items"]
    assert sorted(paths) == sorted(
        [
            "/media/legacy/Caf%C3%A9%20au%20lait.jpg",
            "/media/legacy/a+b%20(1).png",
            *("/" + k for k in variants(7, 3)),
        ]
    )

    # Overwritten again after that invalidation went out: that is new staleness.
    assert request_invalidation(keys[:1]) == 1
    invalidations_flush(now=later())
    assert len(moto_invalidations(cloudfront, backend.distribution_id)) == 2


def test_a_wildcard_replaces_a_folders_paths_when_configured(
    distribution: Any, cloudfront: Any
) -> None:
    backend = distribution(WILDCARD_THRESHOLD=5)
    request_invalidation(variants(1, 10) + variants(2, 2))
    report = invalidations_flush(now=later())
    assert report.paths_sent == 3 and report.covered == 12

    (invalidation,) = moto_invalidations(cloudfront, backend.distribution_id)
    assert sorted(invalidation["InvalidationBatch"]["Paths"]["Items"]) == sorted(
        ["/media/demo-photo/1/sunset/*", *("/" + k for k in variants(2, 2))]
    )
    batch = CDNInvalidation.objects.get()
    assert (batch.path_count, batch.wildcard_count, batch.covered_count) == (3, 1, 12)


def test_without_a_wildcard_threshold_every_path_is_listed(
    distribution: Any, cloudfront: Any
) -> None:
    backend = distribution()
    request_invalidation(variants(1, 10))
    invalidations_flush(now=later())
    (invalidation,) = moto_invalidations(cloudfront, backend.distribution_id)
    assert invalidation["InvalidationBatch"]["Paths"]["Quantity"] == 10


# --- failures injected at the boto3 boundary ----------------------------------------------


def test_too_many_invalidations_in_progress_keeps_paths_pending_until_recovery(
    distribution: Any, cloudfront: Any, create_calls: Any
) -> None:
    backend = distribution()
    calls = create_calls(backend)
    keys = variants(3, 4)
    request_invalidation(keys)
    t0 = later()

    with Stubber(backend.client) as stub:
        for _ in range(2):
            stub.add_client_error(
                "create_invalidation",
                service_error_code="TooManyInvalidationsInProgress",
                service_message="Processing your request will cause you to exceed the "
                "maximum number of in-progress wildcard invalidations.",
                http_status_code=400,
                expected_params={
                    "DistributionId": backend.distribution_id,
                    "InvalidationBatch": ANY,
                },
            )
        with pytest.raises(CDNUnavailable, match="TooManyInvalidationsInProgress"):
            invalidations_flush(now=t0)
        # Retried after its backoff: refused again.
        with pytest.raises(CDNUnavailable):
            invalidations_flush(now=t0 + timedelta(minutes=10))
        stub.assert_no_pending_responses()

    assert moto_invalidations(cloudfront, backend.distribution_id) == []
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.QUEUED and batch.attempts == 2
    assert batch.claimed_paths.count() == 4  # still pending, owned by the queued request
    status = cdn_status()
    assert len(status.queued) == 1 and status.claimed == 4

    invalidations_flush(now=t0 + timedelta(hours=1))  # recovered

    (invalidation,) = moto_invalidations(cloudfront, backend.distribution_id)
    assert sorted(invalidation["InvalidationBatch"]["Paths"]["Items"]) == sorted(
        "/" + k for k in keys
    )
    references = {call["CallerReference"] for call in calls}
    assert len(calls) == 3 and references == {batch.caller_reference}
    assert invalidation["InvalidationBatch"]["CallerReference"] == batch.caller_reference
    batch.refresh_from_db()
    assert batch.status == Status.COMPLETED and batch.invalidation_id == invalidation["Id"]
    assert CDNPendingPath.objects.count() == 0


def test_throttling_backs_off_and_the_paths_go_out_exactly_once(
    distribution: Any, cloudfront: Any, create_calls: Any
) -> None:
    backend = distribution()
    calls = create_calls(backend)
    refusals = {"left": 1}

    def throttle(**kwargs: Any) -> Any:
        if refusals["left"] <= 0:
            return None  # let the request through to moto
        refusals["left"] -= 1
        return (
            AWSResponse("", 400, {}, None),
            {
                "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
        )

    backend.client.meta.events.register("before-call.cloudfront.CreateInvalidation", throttle)
    request_invalidation(variants(4, 5))
    t0 = later()
    with pytest.raises(CDNUnavailable, match="Throttling"):
        invalidations_flush(now=t0)
    batch = CDNInvalidation.objects.get()
    assert batch.next_attempt_at is not None and batch.next_attempt_at > t0

    # Paths requested during the outage wait; the refused request goes first, unchanged.
    request_invalidation(variants(5, 2))
    assert invalidations_flush(now=t0 + timedelta(seconds=1)).deferred_until is not None
    invalidations_flush(now=t0 + timedelta(hours=1))

    first, second = moto_invalidations(cloudfront, backend.distribution_id)
    assert first["InvalidationBatch"]["CallerReference"] == batch.caller_reference
    assert len(sent_paths([first, second])) == len(set(sent_paths([first, second]))) == 7
    assert [c["CallerReference"] for c in calls[:2]] == [batch.caller_reference] * 2
    assert len(calls) == 3


def test_a_timeout_after_acceptance_is_retried_with_the_same_caller_reference(
    distribution: Any, cloudfront: Any, create_calls: Any
) -> None:
    backend = distribution()
    calls = create_calls(backend)
    timeouts = {"left": 1}

    def time_out_after_moto_accepted(**kwargs: Any) -> None:
        if timeouts["left"] > 0:
            timeouts["left"] -= 1
            raise ReadTimeoutError(endpoint_url=os.environ["AWS_CLOUDFRONT_ENDPOINT_URL"])

    backend.client.meta.events.register(
        "after-call.cloudfront.CreateInvalidation", time_out_after_moto_accepted
    )
    keys = variants(6, 3)
    request_invalidation(keys)
    t0 = later()
    with pytest.raises(CDNUnavailable, match="Read timeout"):
        invalidations_flush(now=t0)

    # CloudFront (here moto) did create it, but we never heard back.
    (accepted,) = moto_invalidations(cloudfront, backend.distribution_id)
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.QUEUED and batch.invalidation_id == ""
    assert accepted["InvalidationBatch"]["CallerReference"] == batch.caller_reference
    assert batch.claimed_paths.count() == 3

    invalidations_flush(now=t0 + timedelta(hours=1))

    # The retry is the *same* request: real CloudFront answers it with the invalidation it
    # already created. moto does not de-duplicate CallerReference, so it holds two
    # identical requests; what matters is that both carry one reference and one batch.
    both = moto_invalidations(cloudfront, backend.distribution_id)
    assert len(both) == 2 == len(calls)
    assert {i["InvalidationBatch"]["CallerReference"] for i in both} == {batch.caller_reference}
    assert both[0]["InvalidationBatch"]["Paths"] == both[1]["InvalidationBatch"]["Paths"]
    batch.refresh_from_db()
    assert batch.status == Status.COMPLETED and batch.invalidation_id == both[1]["Id"]
    assert CDNInvalidation.objects.count() == 1 and CDNPendingPath.objects.count() == 0


def test_connection_refused_keeps_paths_pending(distribution: Any, settings: Any) -> None:
    distribution()
    settings.PIPELINE = {
        **settings.PIPELINE,
        "CDN": {
            **settings.PIPELINE["CDN"],
            "OPTIONS": {
                **settings.PIPELINE["CDN"]["OPTIONS"],
                "ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: nothing listens
                "MAX_ATTEMPTS": 1,
                "CONNECT_TIMEOUT": 1,
            },
        },
    }
    request_invalidation(variants(8, 2))
    with pytest.raises(CDNUnavailable, match="CreateInvalidation"):
        invalidations_flush(now=later())
    assert CDNInvalidation.objects.get().claimed_paths.count() == 2


def test_a_batch_refused_by_cloudfront_is_set_aside_and_later_batches_go_through(
    distribution: Any, cloudfront: Any, settings: Any
) -> None:
    backend = distribution(MAX_REFUSALS=2)
    right = settings.PIPELINE["CDN"]
    settings.PIPELINE = {  # a typo in the distribution id: moto really answers 404
        **settings.PIPELINE,
        "CDN": {**right, "OPTIONS": {**right["OPTIONS"], "DISTRIBUTION_ID": "EDOESNOTEXIST"}},
    }
    stale = variants(11, 2)
    request_invalidation(stale)
    t0 = later()
    with pytest.raises(CDNUnavailable, match="NoSuchDistribution") as raised:
        invalidations_flush(now=t0)  # refused once: retried after its backoff
    assert isinstance(raised.value.__cause__, CDNRefused)
    report = invalidations_flush(now=t0 + timedelta(hours=1))
    batch = CDNInvalidation.objects.get()
    assert report.set_aside == [batch.pk] and batch.status == Status.SET_ASIDE
    assert batch.refusals == 2 and "NoSuchDistribution" in batch.last_error
    assert batch.claimed_paths.count() == 2
    status = cdn_status()
    assert status.set_aside == [batch] and status.queued == []

    # The id is corrected: later work goes through; the set-aside batch waits for a person.
    settings.PIPELINE = {**settings.PIPELINE, "CDN": right}
    fresh = variants(12, 3)
    request_invalidation(fresh)
    report = invalidations_flush(now=t0 + timedelta(hours=2))
    assert report.set_aside == [] and report.paths_sent == 3
    (accepted,) = moto_invalidations(cloudfront, backend.distribution_id)
    assert sorted(accepted["InvalidationBatch"]["Paths"]["Items"]) == sorted("/" + k for k in fresh)

    # Retried from the admin (here its service): the same request, to the corrected id.
    assert invalidations_retry(batch_ids=[batch.pk]) == 1
    invalidations_flush(now=t0 + timedelta(hours=3))
    first, second = moto_invalidations(cloudfront, backend.distribution_id)
    assert first["Id"] == accepted["Id"]
    assert second["InvalidationBatch"]["CallerReference"] == batch.caller_reference
    assert sorted(second["InvalidationBatch"]["Paths"]["Items"]) == sorted("/" + k for k in stale)
    batch.refresh_from_db()
    assert batch.status == Status.COMPLETED and batch.target == backend.target
    assert CDNPendingPath.objects.count() == 0


# --- status polling -----------------------------------------------------------------------


def test_status_is_polled_until_completed(distribution: Any, cloudfront: Any) -> None:
    backend = distribution()

    def like_aws(parsed: dict[str, Any], **kwargs: Any) -> None:
        parsed["Invalidation"]["Status"] = "InProgress"  # moto completes at once; AWS does not

    backend.client.meta.events.register("after-call.cloudfront.CreateInvalidation", like_aws)
    request_invalidation(variants(9, 2))
    invalidations_flush(now=later())
    batch = CDNInvalidation.objects.get()
    assert batch.status == Status.IN_PROGRESS and batch.completed_at is None

    assert invalidations_poll() == 1  # moto answers "COMPLETED"
    batch.refresh_from_db()
    assert batch.status == Status.COMPLETED and batch.completed_at is not None
    assert cdn_status().month_cost.paths == 2


# --- through the real worker --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_worker_flushes_a_full_batch_enqueued_on_commit(
    celery_worker: Any, cloudfront: Any
) -> None:
    """The harness's distribution and settings: exactly what the worker process uses."""
    from pipeline.cdn.tasks import flush_invalidations
    from tests.conftest import wait_for

    distribution_id = os.environ["CLOUDFRONT_DISTRIBUTION_ID"]
    keys = [k for asset in range(300) for k in variants(10_000 + asset)] + variants(99_999, 5)
    with transaction.atomic():
        # Crossing FLUSH_THRESHOLD (3000) enqueues the early flush when this commits.
        assert request_invalidation(keys) == 3005

    batch = wait_for(
        lambda: CDNInvalidation.objects.filter(status=Status.COMPLETED).first(),
        timeout=60,
        what="the worker to send the full batch",
    )
    assert batch.path_count == 3000
    assert CDNPendingPath.objects.count() == 5  # a partial batch waits for quiet

    # Later, beat's periodic flush sends the rest once no new path has arrived.
    CDNPendingPath.objects.update(requested_at=timezone.now() - timedelta(minutes=5))
    flush_invalidations.delay()
    wait_for(
        lambda: (
            CDNPendingPath.objects.count() == 0
            and CDNInvalidation.objects.filter(status=Status.COMPLETED).count() == 2
        ),
        timeout=60,
        what="the worker to send the rest",
    )
    ours = {r.caller_reference: r for r in CDNInvalidation.objects.all()}
    theirs = [
        i
        for i in moto_invalidations(cloudfront, distribution_id)
        if i["InvalidationBatch"]["CallerReference"] in ours
    ]
    assert len(theirs) == 2
    assert set(sent_paths(theirs)) == {"/" + k for k in keys}
