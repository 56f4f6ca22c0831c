"""Backends at their boundary: what CloudFront answers becomes ``CDNUnavailable`` (retry
with backoff) or ``CDNRefused`` (a refusal retrying cannot fix: the batch is set aside after
a few tries). botocore's ``Stubber`` answers in place of the
network, so nothing here leaves the process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from pipeline.cdn.backends import (
    COMPLETED,
    IN_PROGRESS,
    CloudFrontBackend,
    LocalRecorderBackend,
    NoopBackend,
    normalize_status,
)
from pipeline.cdn.checks import check_cdn_settings
from pipeline.errors import CDNRefused, CDNUnavailable, PermanentError


@pytest.fixture
def backend() -> CloudFrontBackend:
    return CloudFrontBackend(distribution_id="E1", endpoint_url="http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("TooManyInvalidationsInProgress", 400),
        ("Throttling", 400),
        ("ServiceUnavailable", 503),
        ("InternalError", 500),
        ("SomethingNew", 502),
        ("SlowDownPlease", 429),
    ],
)
def test_recoverable_answers_become_cdn_unavailable(
    backend: CloudFrontBackend, code: str, status: int
) -> None:
    with Stubber(backend.client) as stub:
        stub.add_client_error(
            "create_invalidation", service_error_code=code, http_status_code=status
        )
        with pytest.raises(CDNUnavailable, match=code) as raised:
            backend.create_invalidation(["/a"], caller_reference="ref")
    assert isinstance(raised.value.__cause__, ClientError)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("InvalidArgument", 400),
        ("NoSuchDistribution", 404),
        ("AccessDenied", 403),
        ("InconsistentQuantities", 400),
        ("InvalidationBatchAlreadyExists", 400),
        ("SomethingNew", 400),
    ],
)
def test_refusals_become_cdn_refused_with_the_reason(
    backend: CloudFrontBackend, code: str, status: int
) -> None:
    with Stubber(backend.client) as stub:
        stub.add_client_error(
            "create_invalidation",
            service_error_code=code,
            service_message="Your request contains one or more invalid invalidation paths.",
            http_status_code=status,
        )
        with pytest.raises(CDNRefused, match=code) as raised:
            backend.create_invalidation(["/a"], caller_reference="ref")
    # Permanent, not transient: the flush sets the batch aside instead of retrying forever.
    assert isinstance(raised.value, PermanentError)
    assert not isinstance(raised.value, CDNUnavailable)
    assert "invalid invalidation paths" in raised.value.reason
    assert isinstance(raised.value.__cause__, ClientError)


def test_request_shape_and_answer(backend: CloudFrontBackend) -> None:
    with Stubber(backend.client) as stub:
        stub.add_response(
            "create_invalidation",
            {
                "Location": "https://cloudfront.amazonaws.com/x",
                "Invalidation": {
                    "Id": "I2J0I21PCUYOIK",
                    "Status": "InProgress",
                    "CreateTime": "2025-11-21T12:00:00Z",
                    "InvalidationBatch": {
                        "Paths": {"Quantity": 2, "Items": ["/a", "/b/*"]},
                        "CallerReference": "pipeline-1-abc",
                    },
                },
            },
            expected_params={
                "DistributionId": "E1",
                "InvalidationBatch": {
                    "Paths": {"Quantity": 2, "Items": ["/a", "/b/*"]},
                    "CallerReference": "pipeline-1-abc",
                },
            },
        )
        stub.add_response(
            "get_invalidation",
            {
                "Invalidation": {
                    "Id": "I2J0I21PCUYOIK",
                    "Status": "Completed",
                    "CreateTime": "2025-11-21T12:00:00Z",
                    "InvalidationBatch": {
                        "Paths": {"Quantity": 2, "Items": ["/a", "/b/*"]},
                        "CallerReference": "pipeline-1-abc",
                    },
                }
            },
            expected_params={"DistributionId": "E1", "Id": "I2J0I21PCUYOIK"},
        )
        sent = backend.create_invalidation(["/a", "/b/*"], caller_reference="pipeline-1-abc")
        assert (sent.id, sent.status) == ("I2J0I21PCUYOIK", IN_PROGRESS)
        assert backend.invalidation_status("I2J0I21PCUYOIK") == COMPLETED


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Completed", COMPLETED),
        ("COMPLETED", COMPLETED),
        ("completed", COMPLETED),
        ("InProgress", IN_PROGRESS),
        ("IN_PROGRESS", IN_PROGRESS),
    ],
)
def test_status_is_compared_without_case(given: str, expected: str) -> None:
    assert normalize_status(given) == expected


def test_local_recorder_appends_json_lines_with_stable_ids(tmp_path: Path) -> None:
    recorder = LocalRecorderBackend(path=tmp_path / "sub" / "cdn.jsonl")
    first = recorder.create_invalidation(["/a"], caller_reference="r1")
    again = recorder.create_invalidation(["/a"], caller_reference="r1")
    other = recorder.create_invalidation(["/b"], caller_reference="r2")
    assert first.id == again.id != other.id and first.status == COMPLETED
    lines = [json.loads(line) for line in (tmp_path / "sub" / "cdn.jsonl").read_text().splitlines()]
    assert [line["paths"] for line in lines] == [["/a"], ["/a"], ["/b"]]
    assert recorder.invalidation_status(first.id) == COMPLETED


def test_noop_backend_is_not_recorded() -> None:
    assert NoopBackend.records is False
    assert NoopBackend().create_invalidation(["/a"], caller_reference="r").status == COMPLETED


@pytest.mark.django_db
def test_system_check_reports_a_broken_backend(settings: Any) -> None:
    assert check_cdn_settings() == []
    settings.PIPELINE = {
        **settings.PIPELINE,
        "CDN": {"BACKEND": "pipeline.cdn.backends.CloudFrontBackend", "OPTIONS": {}},
    }
    (error,) = check_cdn_settings()
    assert error.id == "pipeline.cdn.E002" and "distribution id" in error.msg
    assert 'OPTIONS"]["DISTRIBUTION_ID"]' in error.hint and "NoopBackend" in error.hint
    # An empty id (an unset environment variable) is the same mistake.
    settings.PIPELINE = {
        **settings.PIPELINE,
        "CDN": {
            "BACKEND": "pipeline.cdn.backends.CloudFrontBackend",
            "OPTIONS": {"DISTRIBUTION_ID": ""},
        },
    }
    assert [e.id for e in check_cdn_settings()] == ["pipeline.cdn.E002"]
    settings.PIPELINE = {
        **settings.PIPELINE,
        "CDN": {"BACKEND": "pipeline.cdn.backends.Nope", "OPTIONS": {}},
    }
    (error,) = check_cdn_settings()
    assert error.id == "pipeline.cdn.E001" and "pipeline.cdn.backends.Nope" in error.msg
    assert "CloudFrontBackend, LocalRecorderBackend or NoopBackend" in error.hint
    settings.PIPELINE = {
        **settings.PIPELINE,
        "CDN": {
            "BACKEND": "pipeline.cdn.backends.NoopBackend",
            "FLUSH_THRESHOLD": 3001,
            "WILDCARD_THRESHOLD": 5,
            "MAX_WILDCARDS": 0,
        },
    }
    assert [m.id for m in check_cdn_settings()] == ["pipeline.cdn.W001", "pipeline.cdn.W002"]
