"""PUTs through the AWS Common Runtime (``pipeline.crt``), over HTTP: to moto, and to a
small HTTP server that answers what S3-compatible servers answer when things go wrong."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from django.core.exceptions import ImproperlyConfigured
from storages.backends.s3 import S3Storage

from pipeline import crt, storage
from pipeline.conf import load
from pipeline.errors import ConditionalWriteUnsupported, ContentMismatch, StorageUnavailable
from tests.services import AWS_REGION, PRIMARY_BUCKET, services

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not crt.available(), reason="awscrt is not installed (the crt extra)"),
]


def s3_storage(endpoint: str, **config: Any) -> S3Storage:
    return S3Storage(
        bucket_name=PRIMARY_BUCKET,
        endpoint_url=endpoint,
        region_name=AWS_REGION,
        access_key="testing",
        secret_key="testing",
        client_config=Config(**{"connect_timeout": 1, "read_timeout": 1, **config}),
    )


@pytest.fixture
def sent_by_crt(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The keys PUT through the CRT, batch by batch (botocore's PutObject fails the test)."""
    batches: list[list[str]] = []
    real = crt.put_many

    def put_many(client: Any, bucket: str, puts: Any) -> Any:
        batches.append([key for key, _, _ in puts])
        return real(client, bucket, puts)

    def no_botocore(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a PUT went through botocore")

    monkeypatch.setattr(crt, "put_many", put_many)
    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", _only_reads(no_botocore))
    return batches


def _only_reads(fail: Any) -> Any:
    from botocore.client import BaseClient

    real = BaseClient._make_api_call

    def call(self: Any, operation: str, params: Any) -> Any:
        if operation == "PutObject" and params.get("Key") != crt._PROBE_KEY:
            return fail()  # the CRT's address probe is stopped before it is sent
        return real(self, operation, params)

    return call


def test_a_crt_put_stores_what_botocore_would(
    s3: Any, clean_buckets: None, sent_by_crt: list[list[str]], tmp_path: Path
) -> None:
    target = s3_storage(f"http://127.0.0.1:{services().moto_port}")
    key = "media/a b/ünï+code~(1).webp"  # escaped in the path as botocore escapes it
    storage.write(
        target, key, b"variant bytes", content_type="image/webp", cache_control="max-age=60"
    )
    source = tmp_path / "original.jpg"
    source.write_bytes(b"x" * 300_000)
    with source.open("rb") as f:
        f.read(5)  # a file is sent from its position
        written = storage.write_file(
            target,
            "legacy/o.jpg",
            f,
            content_type="image/jpeg",
            md5=hashlib.md5(b"x" * 299_995).hexdigest(),
            if_absent=True,
        )

    assert written
    assert sent_by_crt == [[key], ["legacy/o.jpg"]]
    got = s3.get_object(Bucket=PRIMARY_BUCKET, Key=key)
    assert got["Body"].read() == b"variant bytes"
    assert (got["ContentType"], got["CacheControl"]) == ("image/webp", "max-age=60")
    head = s3.head_object(Bucket=PRIMARY_BUCKET, Key="legacy/o.jpg")
    assert head["ETag"].strip('"') == hashlib.md5(b"x" * 299_995).hexdigest()  # one PUT

    # A conditional write that finds an object: refused (412), the object untouched.
    with source.open("rb") as f:
        assert not storage.write_file(
            target, "legacy/o.jpg", f, content_type="image/jpeg", if_absent=True
        )
    assert s3.head_object(Bucket=PRIMARY_BUCKET, Key="legacy/o.jpg")["ETag"] == head["ETag"]


def test_many_puts_go_out_together_through_the_crt(
    s3: Any, clean_buckets: None, sent_by_crt: list[list[str]]
) -> None:
    target = s3_storage(f"http://127.0.0.1:{services().moto_port}")
    puts = [storage.Put(f"media/v/{i}.avif", bytes([i]) * 100, "image/avif") for i in range(5)]
    storage.write_many(target, puts)
    assert sent_by_crt == [[p.key for p in puts]]  # sent together, not one by one
    for p in puts:
        got = s3.get_object(Bucket=PRIMARY_BUCKET, Key=p.key)
        assert (got["Body"].read(), got["ContentType"]) == (p.data, "image/avif")


def test_the_crt_holds_a_bounded_number_of_bytes_and_botocore_streams_larger_files(
    s3: Any, clean_buckets: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRT reads each body whole into memory: bodies go out in batches of at most
    MAX_IN_MEMORY bytes, and a file larger than that is streamed by botocore."""
    monkeypatch.setattr(crt, "MAX_IN_MEMORY", 100)
    batches: list[list[str]] = []
    real = crt._send_all

    def send_all(client: Any, target: Any, puts: Any) -> Any:
        batches.append([key for key, *_ in puts])
        return real(client, target, puts)

    monkeypatch.setattr(crt, "_send_all", send_all)
    sizes = {"a.jpg": 60, "b.jpg": 30, "c.jpg": 60, "big.jpg": 101}
    files = []
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(name[0].encode() * size)
        files.append(storage.FilePut(f"legacy/{name}", (tmp_path / name).open("rb"), "image/jpeg"))
    target = s3_storage(f"http://127.0.0.1:{services().moto_port}")

    results = storage.write_files(target, files, if_absent=True)

    assert results == [True] * 4
    assert batches == [["legacy/a.jpg", "legacy/b.jpg"], ["legacy/c.jpg"]]  # not big.jpg
    for name, size in sizes.items():
        body = s3.get_object(Bucket=PRIMARY_BUCKET, Key=f"legacy/{name}")["Body"].read()
        assert body == name[0].encode() * size


def test_a_worker_process_prepares_its_clients_before_its_first_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(crt, "_buckets", {})
    storage.prepare()  # what the worker_process_init signal calls
    prepared = {bucket for (*_, bucket) in crt._buckets}
    assert prepared == {storage.primary().bucket_name, storage.public().bucket_name}


class Answers(BaseHTTPRequestHandler):
    """Reads each request whole, then answers with the server's ``status`` and ``code``
    (``stall``: never answers)."""

    protocol_version = "HTTP/1.1"  # keeps connections open, as S3 does

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        server.requests.append({**self.headers, "path": self.path})
        if server.stall:
            time.sleep(30)
            return
        body = f"<Error><Code>{server.code}</Code><Message>no</Message></Error>".encode()
        body = body if server.code else b""  # some servers send errors without a body
        self.send_response(server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    server.daemon_threads = True
    server.requests, server.stall, server.code = [], False, "x"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _answer(server: Any, status: int, code: str) -> S3Storage:
    server.status, server.code = status, code
    return s3_storage(f"http://127.0.0.1:{server.server_address[1]}", retries={"max_attempts": 1})


def test_a_server_without_conditional_writes_is_told_apart(answering: Any) -> None:
    target = _answer(answering, 501, "NotImplemented")
    with pytest.raises(ConditionalWriteUnsupported):
        storage.write_file(
            target, "k.jpg", _file(b"bytes"), content_type="image/jpeg", if_absent=True
        )
    assert answering.requests[0]["If-None-Match"] == "*"
    assert answering.requests[0]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")


def test_bytes_that_do_not_match_their_md5_are_a_content_mismatch(answering: Any) -> None:
    target = _answer(answering, 400, "BadDigest")
    with pytest.raises(ContentMismatch):
        storage.write_file(
            target, "k.jpg", _file(b"bytes"), content_type="image/jpeg", md5="0" * 32
        )
    assert answering.requests[0]["Content-MD5"] == "AAAAAAAAAAAAAAAAAAAAAA=="


def test_a_server_error_is_retried_as_configured_then_unavailable(answering: Any) -> None:
    answering.status, answering.code = 503, "SlowDown"
    target = s3_storage(
        f"http://127.0.0.1:{answering.server_address[1]}", retries={"total_max_attempts": 2}
    )
    with pytest.raises(StorageUnavailable):
        storage.write(target, "k.webp", b"bytes", content_type="image/webp")
    assert len(answering.requests) == 2


def test_a_server_that_never_answers_is_given_up_on(answering: Any) -> None:
    answering.stall = True
    target = _answer(answering, 200, "")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="storage unreachable"):
        storage.write(target, "k.webp", b"bytes", content_type="image/webp")
    assert time.monotonic() - started < 10  # connect + read timeout (1 + 1 s), 2 attempts


def test_one_failed_put_among_many_fails_the_write(answering: Any) -> None:
    target = _answer(answering, 503, "SlowDown")
    puts = [storage.Put(f"v/{i}.webp", b"bytes", "image/webp") for i in range(3)]
    with pytest.raises(StorageUnavailable, match="SlowDown"):
        storage.write_many(target, puts)
    assert {r["path"] for r in answering.requests} == {
        f"/{PRIMARY_BUCKET}/v/{i}.webp" for i in range(3)
    }


def test_a_closed_port_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    target = s3_storage(f"http://127.0.0.1:{port}", retries={"max_attempts": 1})
    with pytest.raises(StorageUnavailable, match="storage unreachable"):
        storage.write(target, "k.webp", b"bytes", content_type="image/webp")


def _file(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def test_s3_puts_botocore_turns_the_crt_off(
    s3: Any, clean_buckets: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_crt(*args: Any) -> None:
        raise AssertionError("a PUT went through the CRT")

    monkeypatch.setattr(crt, "put_many", no_crt)
    settings.PIPELINE = {**settings.PIPELINE, "S3_PUTS": "botocore"}
    target = s3_storage(f"http://127.0.0.1:{services().moto_port}")
    storage.write_many(target, [storage.Put(f"v/{i}.webp", b"x", "image/webp") for i in range(2)])
    assert s3.get_object(Bucket=PRIMARY_BUCKET, Key="v/1.webp")["Body"].read() == b"x"

    with pytest.raises(ImproperlyConfigured, match="S3_PUTS"):
        load({"S3_PUTS": "fast"})


def test_an_error_without_a_body_keeps_its_meaning(answering: Any) -> None:
    target = _answer(answering, 412, "")  # a conditional write refused, with no XML
    assert storage.write_files(
        target, [storage.FilePut("k.jpg", _file(b"bytes"), "image/jpeg")], if_absent=True
    ) == [False]
    target = _answer(answering, 501, "")
    [result] = storage.write_files(
        target, [storage.FilePut("k.jpg", _file(b"bytes"), "image/jpeg")], if_absent=True
    )
    assert isinstance(result, ConditionalWriteUnsupported)


def test_puts_go_where_botocore_sends_them_outside_us_east_1() -> None:
    """A presigned URL names the global endpoint, which refuses newer regions' buckets;
    the CRT is given the host botocore's own put_object uses (no request is sent)."""
    client = boto3.client(
        "s3", region_name="af-south-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    url = crt._put_url(client, "my-bucket")
    assert (url.scheme, url.netloc) == ("https", "my-bucket.s3.af-south-1.amazonaws.com")
    path_style = boto3.client(
        "s3",
        region_name="af-south-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=Config(s3={"addressing_style": "path"}),
    )
    assert crt._put_url(path_style, "my-bucket").path.startswith("/my-bucket/")


def test_a_proxy_or_no_tls_verification_leaves_puts_to_botocore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = s3_storage(f"http://127.0.0.1:{services().moto_port}")
    assert storage._crt_puts(target)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert not storage._crt_puts(target)
    monkeypatch.delenv("HTTPS_PROXY")
    target.verify = False
    assert not storage._crt_puts(target)


def test_the_crt_trusts_the_ca_bundle_botocore_trusts(tmp_path: Path) -> None:
    """An https endpoint with its own CA (``verify``, or AWS_CA_BUNDLE): the CRT's TLS is
    built from that bundle, and a bundle that is not one fails loudly."""
    from botocore.httpsession import get_cert_path

    good = boto3.client("s3", region_name="eu-west-1", verify=get_cert_path(True))
    assert crt._tls_options(good) is not None
    bad = tmp_path / "not-a-bundle.pem"
    bad.write_text("nothing")
    with pytest.raises(Exception):  # noqa: B017 (awscrt's own error type)
        crt._tls_options(boto3.client("s3", region_name="eu-west-1", verify=str(bad)))
