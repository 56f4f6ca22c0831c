"""S3 PUTs through the AWS Common Runtime (``awscrt``, in C) instead of botocore's Python.

botocore spends about 2 ms of CPU in Python on every request (endpoint rules, event
handlers, signing, parsing); the CRT signs and sends the same PUT for about a third of
that (``bench/migration.py``). PUTs are the pipeline's hot path, every original a
migration uploads and every variant a render writes, so they go through the CRT when it
is installed (the ``crt`` extra, ``boto3[crt]``); every other request stays on botocore.

Nothing about the request is decided here; botocore's choices are reused:

* the address (endpoint, addressing style, region rules) is read, once per bucket, from
  a ``put_object`` of botocore's stopped before it is sent;
* the credentials are botocore's own, resolved and refreshed by it on every signing, and
  TLS trusts the client's CA bundle;
* the connect timeout and the number of attempts are the client's config; its read
  timeout bounds each attempt's wait, after which the request is cancelled.

Errors come back as botocore's: a ``ClientError`` with the status and the S3 error code
for an HTTP error, an ``HTTPClientError`` for anything below HTTP; ``pipeline.storage``
maps both, as it does for botocore's own requests.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote, urlsplit

from botocore.exceptions import ClientError, HTTPClientError

__all__ = ["MAX_IN_MEMORY", "available", "fits", "prepare", "put", "put_many"]

#: put_object's parameters that a PUT here carries, as the headers S3 reads them from.
HEADERS = {
    "ContentType": "Content-Type",
    "ContentMD5": "Content-MD5",
    "CacheControl": "Cache-Control",
    "IfNoneMatch": "If-None-Match",
    "ACL": "x-amz-acl",
}

MAX_IN_MEMORY = 32 * 1024**2
"""Bytes one ``put_many`` call sends at once. The CRT reads a body whole into memory before
it sends it (a file too: 16 files of 20 MiB took 330 MiB where botocore, which streams,
took 28)."""

_SINGLE_PUT_LIMIT = 5 * 1024**3  # S3's; no upload here is ever split into parts
_RETRIED_STATUSES = {  # the CRT's names for the responses it retried, given up on
    "AWS_ERROR_S3_SLOW_DOWN": ("SlowDown", 503),
    "AWS_ERROR_S3_INTERNAL_ERROR": ("InternalError", 500),
}
_ERROR_FIELD = re.compile(rb"<(\w+)>([^<]*)</\1>")


@functools.cache
def available() -> bool:
    """Whether the CRT is installed (it is imported only when first used)."""
    return importlib.util.find_spec("awscrt") is not None


@dataclass(frozen=True, slots=True)
class _Bucket:
    client: Any  # awscrt.s3.S3Client
    host: str  # the Host header: where botocore would send it
    prefix: str  # the path before the key: "/bucket/" (path style) or "/" (virtual host)
    attempt_timeout: float  # seconds one attempt may take before the PUT is cancelled


_buckets: dict[tuple[int, int, str, str], _Bucket] = {}
_lock = threading.Lock()


Body = bytes | IO[bytes]
"""A PUT's body: bytes, or a file sent from its position to its end (streamed)."""


def put(client: Any, bucket: str, key: str, body: Body, params: Mapping[str, str]) -> None:
    """PUT ``body`` at ``key``, as ``client.put_object(Bucket=bucket, Key=key, Body=body,
    **params)`` would; raises botocore's errors."""
    for error in put_many(client, bucket, [(key, body, params)]).values():
        raise error


def put_many(
    client: Any, bucket: str, puts: Sequence[tuple[str, Body, Mapping[str, str]]]
) -> dict[str, Exception]:
    """PUT several objects at once (the CRT's connections carry them concurrently; no
    thread waits for each) and return the failures by key, once every PUT has ended.
    At most ``MAX_IN_MEMORY`` bytes are in flight: the rest wait for the first to end."""
    target = _bucket(client, bucket)
    failures: dict[str, Exception] = {}
    batch: list[_Sized] = []
    held = 0
    for key, body, params in puts:
        size = _size(body)
        if batch and held + size > MAX_IN_MEMORY:
            failures.update(_send_all(client, target, batch))
            batch, held = [], 0
        batch.append((key, body, params, size))
        held += size
    failures.update(_send_all(client, target, batch))
    return failures


def fits(body: Body) -> bool:
    """Whether the CRT may send ``body``; a larger one is botocore's, which streams it."""
    return _size(body) <= MAX_IN_MEMORY


def _size(body: Body) -> int:
    """The bytes to send: all of them, or a file's from its position to its end."""
    if isinstance(body, bytes):
        return len(body)
    start = body.tell()
    end = body.seek(0, io.SEEK_END)
    body.seek(start)
    return end - start


_Sized = tuple[str, Body, Mapping[str, str], int]
"""A PUT of ``put_many`` with its body's size, measured once."""


def _send_all(client: Any, target: _Bucket, puts: list[_Sized]) -> dict[str, Exception]:
    from awscrt import s3

    sent: list[tuple[str, Any, threading.Event]] = []
    failures: dict[str, Exception] = {}
    try:
        for key, body, params, size in puts:
            sent.append((key, *_send(target, key, body, params, size)))
        until = time.monotonic() + target.attempt_timeout * _attempts(client.meta.config)
        for key, request, done in sent:
            if not done.wait(max(0.0, until - time.monotonic())):
                request.cancel()
                done.wait()
            try:
                request.finished_future.result()
            except s3.S3ResponseError as e:
                failures[key] = _client_error(e)
            except Exception as e:  # the CRT's own: a retried status, refused, reset, TLS...
                failures[key] = _crt_error(e, key)
                failures[key].__cause__ = e
    finally:
        # Whatever interrupted us (a time limit, a bug), no PUT outlives this call: the
        # caller closes the files the CRT reads from.
        for _, request, done in sent:
            if not done.is_set():
                request.cancel()
                done.wait()
    return failures


def _send(
    target: _Bucket, key: str, body: Body, params: Mapping[str, str], size: int
) -> tuple[Any, threading.Event]:
    from awscrt import http, s3

    stream = io.BytesIO(body) if isinstance(body, bytes) else body  # BytesIO shares bytes
    headers = http.HttpHeaders([("Host", target.host), ("Content-Length", str(size))])
    for name, value in params.items():
        headers.add(HEADERS[name], value)
    done = threading.Event()
    request = target.client.make_request(
        type=s3.S3RequestType.PUT_OBJECT,
        request=http.HttpRequest("PUT", target.prefix + quote(key, safe="/~"), headers, stream),
        operation_name="PutObject",
        on_done=lambda **_: done.set(),
    )
    return request, done


def _crt_error(e: Exception, key: str) -> Exception:
    """botocore's error for one of the CRT's: S3's own code for the statuses the CRT
    retries and reports by name, an HTTP client error for everything below HTTP."""
    name = getattr(e, "name", type(e).__name__)
    if name in _RETRIED_STATUSES:
        code, status = _RETRIED_STATUSES[name]
        meta = {"HTTPStatusCode": status, "HTTPHeaders": {}}
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": meta}, "PutObject")
    return HTTPClientError(error=f"{name} on PUT {key!r}")


def _client_error(e: Any) -> ClientError:
    """botocore's error for an HTTP error response, from its status and XML body."""
    body = e.body or b""  # some servers and proxies answer errors without one
    error = {k.decode(): v.decode(errors="replace") for k, v in _ERROR_FIELD.findall(body)}
    error.setdefault("Code", str(e.status_code))
    error.setdefault("Message", "")
    meta = {"HTTPStatusCode": e.status_code, "HTTPHeaders": dict(e.headers)}
    return ClientError({"Error": error, "ResponseMetadata": meta}, "PutObject")


def prepare(client: Any, bucket: str) -> None:
    """Make this process's CRT client for ``client`` and ``bucket`` now (a worker process
    starting), so that the first PUT does not pay for it."""
    _bucket(client, bucket)


def _bucket(client: Any, bucket: str) -> _Bucket:
    """This process's CRT client for ``client``'s credentials, and the bucket's address."""
    key = (os.getpid(), id(client._get_credentials()), client.meta.endpoint_url, bucket)
    with _lock:
        found = _buckets.get(key)
        if found is None:
            found = _buckets[key] = _new_bucket(client, bucket)
        return found


def _new_bucket(client: Any, bucket: str) -> _Bucket:
    from awscrt import s3
    from s3transfer.crt import BotocoreCRTCredentialsWrapper

    url = _put_url(client, bucket)
    config = client.meta.config
    attempts = _attempts(config)
    credentials = BotocoreCRTCredentialsWrapper(client._get_credentials())
    region = client.meta.region_name or "us-east-1"
    crt_client = s3.S3Client(
        bootstrap=_bootstrap(),
        region=region,
        signing_config=s3.create_default_s3_signing_config(
            region=region,
            credential_provider=credentials.to_crt_credentials_provider(),
        ),
        tls_mode=s3.S3RequestTlsMode.ENABLED
        if url.scheme == "https"
        else s3.S3RequestTlsMode.DISABLED,
        tls_connection_options=_tls_options(client) if url.scheme == "https" else None,
        multipart_upload_threshold=_SINGLE_PUT_LIMIT,
        connect_timeout_ms=int((config.connect_timeout or 60) * 1000),
        retry_config=s3.S3RetryConfig(max_retries=attempts - 1),
    )
    return _Bucket(
        client=crt_client,
        host=url.netloc,
        prefix=url.path[: -len(_PROBE_KEY)],
        attempt_timeout=float(config.connect_timeout or 60) + float(config.read_timeout or 60),
    )


_PROBE_KEY = "pipeline-crt-address-probe"


class _Addressed(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


def _put_url(client: Any, bucket: str) -> Any:
    """Where botocore itself sends a PUT to ``bucket`` (endpoint rules, addressing style,
    region): a put_object stopped before it is sent. (A presigned URL is not the same: on
    AWS it names the global endpoint, which refuses newer regions' buckets.)"""

    def stop(request: Any, **kwargs: Any) -> None:
        if urlsplit(request.url).path.endswith("/" + _PROBE_KEY):
            raise _Addressed(request.url)

    handler_id = f"pipeline-crt-probe-{id(stop)}"
    client.meta.events.register("before-send.s3.PutObject", stop, unique_id=handler_id)
    try:
        client.put_object(Bucket=bucket, Key=_PROBE_KEY, Body=b"")
    except _Addressed as e:
        return urlsplit(e.url)
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", unique_id=handler_id)
    raise RuntimeError("botocore sent the address probe")  # never: it is stopped above


def _tls_options(client: Any) -> Any:
    """TLS trusting what ``client`` trusts (its ``verify``: a bundle given to the storage,
    ``AWS_CA_BUNDLE``, else certifi's), not the system's store."""
    from awscrt import io as crt_io
    from botocore.httpsession import get_cert_path

    verify = getattr(getattr(client._endpoint, "http_session", None), "_verify", True)
    if verify is False:
        raise ValueError("TLS verification is off for this client: PUTs stay on botocore")
    options = crt_io.TlsContextOptions()
    options.override_default_trust_store_from_path(ca_filepath=get_cert_path(verify))
    return crt_io.ClientTlsContext(options).new_connection_options()


_bootstraps: dict[int, Any] = {}


def _bootstrap() -> Any:  # called under _lock
    """This process's event loop (one thread: a PUT's CPU is in signing and parsing, not
    in waiting) and resolver, shared by its CRT clients; a forked child makes its own."""
    from awscrt import io as crt_io

    pid = os.getpid()
    if pid not in _bootstraps:
        loop = crt_io.EventLoopGroup(1)
        _bootstraps[pid] = crt_io.ClientBootstrap(loop, crt_io.DefaultHostResolver(loop))
    return _bootstraps[pid]


def _attempts(config: Any) -> int:
    """Attempts per request, as botocore counts them (its defaults: 5 in legacy mode, 3 in
    standard). At least 2: the CRT reads "no retries" as "its own default, 5"."""
    retries = config.retries or {}
    default = 3 if retries.get("mode") in ("standard", "adaptive") else 5
    return max(2, int(retries.get("total_max_attempts", default)))
