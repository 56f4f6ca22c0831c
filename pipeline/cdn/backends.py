"""Invalidation backends, chosen like Django's own backend dicts.

``settings.PIPELINE["CDN"]`` names a class (``BACKEND``) and its ``OPTIONS`` (upper-case
keys, mapped onto the constructor's lower-case keyword arguments; an unknown key raises
``ImproperlyConfigured``):

* :class:`CloudFrontBackend`: the real thing, through boto3.
* :class:`LocalRecorderBackend`: the embedded default; appends each invalidation as a JSON
  line to a file under ``var/``, and is complete at once.
* :class:`NoopBackend`: no CDN in front of the bucket; nothing is recorded or sent.

A backend only talks to the CDN. Failures the CDN may recover from (too many invalidations
in progress, throttling, connection errors, timeouts, 5xx) become ``CDNUnavailable``; any
other answer of the CDN (a wrong distribution id, access denied, a malformed request) is a
refusal a retry cannot fix and becomes ``CDNRefused`` with the CDN's code and message.
Anything else is a bug and bubbles up unchanged. Recording, batching, retrying and setting
refused requests aside live in ``pipeline.cdn.services``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Self

from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone
from django.utils.module_loading import import_string

from pipeline.cdn.batching import (
    CLOUDFRONT_MAX_PATHS_IN_PROGRESS,
    CLOUDFRONT_MAX_WILDCARDS_IN_PROGRESS,
)
from pipeline.conf import pipeline_settings
from pipeline.errors import CDNRefused, CDNUnavailable

logger = logging.getLogger(__name__)

IN_PROGRESS = "in_progress"
COMPLETED = "completed"


def normalize_status(status: str) -> str:
    """CloudFront says ``Completed``, moto ``COMPLETED``: compare without case."""
    return COMPLETED if status.strip().lower() == COMPLETED else IN_PROGRESS


@dataclass(frozen=True)
class SentInvalidation:
    """The CDN's answer to an accepted invalidation request."""

    id: str
    status: str  # IN_PROGRESS or COMPLETED


class InvalidationBackend(ABC):
    """Sends invalidation requests to one CDN target and reports their status."""

    records: ClassVar[bool] = True
    """False when there is no CDN: requests are then not even recorded."""
    billable: ClassVar[bool] = False
    """Whether the target bills per path (counted in the cost estimate)."""
    holds_partial_batches: ClassVar[bool] = True
    """Whether partial batches wait for bulk work to end (worth it when paths cost money or
    in-progress paths are limited). False: every commit that records paths flushes them."""
    max_paths_in_progress: ClassVar[int | None] = None
    max_wildcards_in_progress: ClassVar[int | None] = None

    @property
    @abstractmethod
    def target(self) -> str:
        """A stable name of what this backend invalidates, stored on each request."""

    @abstractmethod
    def create_invalidation(
        self, paths: Sequence[str], *, caller_reference: str
    ) -> SentInvalidation:
        """Send one request. The same ``caller_reference`` must name the same request."""

    @abstractmethod
    def invalidation_status(self, invalidation_id: str) -> str:
        """``IN_PROGRESS`` or ``COMPLETED``."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """Build from upper-case ``OPTIONS``; unknown or missing ones raise ImproperlyConfigured."""
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        parameters = {
            name: p
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind in named
        }
        known = {name.upper(): name for name in parameters}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown option(s) for {cls.__name__}: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
        missing = sorted(
            key
            for key, name in known.items()
            if parameters[name].default is inspect.Parameter.empty and key not in options
        )
        if missing:
            raise ImproperlyConfigured(f"{cls.__name__} needs OPTIONS {', '.join(missing)}")
        return cls(**{known[key]: value for key, value in options.items()})


_TRANSIENT_CODES = frozenset(
    {
        "TooManyInvalidationsInProgress",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
    }
)


class CloudFrontBackend(InvalidationBackend):
    """Amazon CloudFront (or anything speaking its API at ``endpoint_url``).

    Credentials come from boto3's usual chain (environment, profile, instance role); they
    are never options, so they cannot leak through a settings dump. botocore's own
    "standard" retries (``max_attempts``) absorb short blips; what outlasts them becomes
    ``CDNUnavailable`` and the flush backs off.
    """

    billable = True
    max_paths_in_progress = CLOUDFRONT_MAX_PATHS_IN_PROGRESS
    max_wildcards_in_progress = CLOUDFRONT_MAX_WILDCARDS_IN_PROGRESS

    def __init__(
        self,
        distribution_id: str,
        endpoint_url: str | None = None,
        region_name: str = "us-east-1",
        connect_timeout: float = 5,
        read_timeout: float = 30,
        max_attempts: int = 3,
    ) -> None:
        if not distribution_id:
            raise ImproperlyConfigured("CloudFrontBackend needs OPTIONS['DISTRIBUTION_ID']")
        self.distribution_id = distribution_id
        self.endpoint_url = endpoint_url or None
        self.region_name = region_name
        self.config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
        )
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        return f"cloudfront:{self.distribution_id}"

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use in each process.

        Clients are thread-safe (sessions are not), but their connection pools must not
        cross a fork: a prefork worker child makes its own.
        """
        if self._client is None or self._client_pid != os.getpid():
            import boto3

            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = boto3.session.Session().client(
                        "cloudfront",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region_name,
                        config=self.config,
                    )
                    self._client_pid = os.getpid()
        return self._client

    def create_invalidation(
        self, paths: Sequence[str], *, caller_reference: str
    ) -> SentInvalidation:
        with _mapped_errors("CreateInvalidation"):
            response = self.client.create_invalidation(
                DistributionId=self.distribution_id,
                InvalidationBatch={
                    "Paths": {"Quantity": len(paths), "Items": list(paths)},
                    "CallerReference": caller_reference,
                },
            )
        invalidation = response["Invalidation"]
        return SentInvalidation(
            id=invalidation["Id"], status=normalize_status(invalidation["Status"])
        )

    def invalidation_status(self, invalidation_id: str) -> str:
        with _mapped_errors("GetInvalidation"):
            response = self.client.get_invalidation(
                DistributionId=self.distribution_id, Id=invalidation_id
            )
        return normalize_status(response["Invalidation"]["Status"])


@contextmanager
def _mapped_errors(operation: str) -> Iterator[None]:
    """Recoverable failures become ``CDNUnavailable``, other refusals ``CDNRefused``."""
    try:
        yield
    except ClientError as e:
        error = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"CloudFront {operation}: {code or status}: {error.get('Message', '')}"
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            raise CDNUnavailable(message) from e
        # Unknown codes land here too: a few bounded tries, then set aside, is safer than
        # retrying a request CloudFront will never take, blocking every later batch.
        raise CDNRefused(message) from e
    except (BotoConnectionError, HTTPClientError) as e:
        # Connection refused/reset, DNS, connect and read timeouts: the request may or
        # may not have been accepted; the retry repeats its CallerReference either way.
        raise CDNUnavailable(f"CloudFront {operation}: {e}") from e


class LocalRecorderBackend(InvalidationBackend):
    """Appends each invalidation as one JSON line to ``path``; complete at once.

    The embedded default: no CDN, but the invalidations the pipeline *would* send are
    visible (``tail -f var/cdn-invalidations.jsonl``). The id is derived from the
    ``CallerReference``, so a retried request gets the same id, as on CloudFront. Paths cost
    nothing here and there may be no beat (tasks in-process), so nothing is held back: each
    commit that records paths flushes them.
    """

    holds_partial_batches = False

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            path = Path(settings.BASE_DIR) / "var" / "cdn-invalidations.jsonl"
        self.path = Path(path)
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        return f"local:{self.path}"

    def create_invalidation(
        self, paths: Sequence[str], *, caller_reference: str
    ) -> SentInvalidation:
        invalidation_id = "L" + hashlib.sha256(caller_reference.encode()).hexdigest()[:13].upper()
        line = json.dumps(
            {
                "id": invalidation_id,
                "caller_reference": caller_reference,
                "created": timezone.now().isoformat(),
                "paths": list(paths),
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        return SentInvalidation(id=invalidation_id, status=COMPLETED)

    def invalidation_status(self, invalidation_id: str) -> str:
        return COMPLETED


class NoopBackend(InvalidationBackend):
    """No CDN: requests are not recorded, and anything left pending is dropped on flush."""

    records = False

    @property
    def target(self) -> str:
        return "noop"

    def create_invalidation(
        self, paths: Sequence[str], *, caller_reference: str
    ) -> SentInvalidation:
        logger.debug("CDN disabled: dropping an invalidation of %d path(s)", len(paths))
        return SentInvalidation(id="", status=COMPLETED)

    def invalidation_status(self, invalidation_id: str) -> str:
        return COMPLETED


@cache
def get_backend() -> InvalidationBackend:
    """The backend ``settings.PIPELINE["CDN"]`` names (one instance per process)."""
    conf = pipeline_settings()["CDN"]
    try:
        backend_class = import_string(conf["BACKEND"])
    except ImportError as e:
        raise ImproperlyConfigured(f"PIPELINE CDN BACKEND {conf['BACKEND']!r}: {e}") from e
    if not (isinstance(backend_class, type) and issubclass(backend_class, InvalidationBackend)):
        raise ImproperlyConfigured(
            f"PIPELINE CDN BACKEND {conf['BACKEND']!r} is not an InvalidationBackend"
        )
    return backend_class.from_options(conf["OPTIONS"])


@receiver(setting_changed)
def _reset_backend(*, setting: str, **kwargs: Any) -> None:
    if setting == "PIPELINE":
        get_backend.cache_clear()
