"""Shared fixtures: a real Celery worker process, and clients for the moto-served AWS APIs.

Redis and moto_server are started by the ``tests.services`` plugin before Django loads.
The worker runs ``celery -A workers worker`` as a subprocess against the test database,
so every integration test sees the pipeline exactly as production runs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from django.db import connection

from tests.services import (
    PRIMARY_BUCKET,
    PUBLIC_BUCKET,
    REPO,
    TcpProxy,
    services,
    worker_command,
)

T = TypeVar("T")


def wait_for(check: Callable[[], T], *, timeout: float = 60, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def database_url_for_worker() -> str:
    """A DATABASE_URL naming the *test* database that pytest-django created."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] or ""
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    host = s["HOST"] or "localhost"
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{s['NAME']}"


@dataclass
class Worker:
    """A running ``celery worker`` subprocess."""

    process: subprocess.Popen[bytes]
    hostname: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        """The prefork pool's processes (the ones that run tasks)."""
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(p) for p in out.split()]


def start_worker(
    *,
    concurrency: int = 2,
    queues: str = "cpu,transfer,cdn,migration",
    s3_endpoint: str | None = None,
) -> Worker:
    from workers import app

    hostname = f"tests-{uuid.uuid4().hex[:8]}@%h"
    log_path = services().var_dir / f"worker-{hostname.split('@')[0]}.log"
    env = {**os.environ, "DATABASE_URL": database_url_for_worker(), "PYTHONUNBUFFERED": "1"}
    if s3_endpoint:
        env["AWS_S3_ENDPOINT_URL"] = s3_endpoint
    log = open(log_path, "wb")  # noqa: SIM115 - the worker writes to it until it stops
    process = subprocess.Popen(
        [
            *worker_command(hostname=hostname, queues=queues, concurrency=concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    full_name = hostname.replace("%h", os.uname().nodename)
    worker = Worker(process=process, hostname=full_name, log_path=log_path)

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"celery worker exited early:\n{worker.log()[-4000:]}")
        return bool(app.control.ping(destination=[full_name], timeout=0.5))

    wait_for(answers, timeout=90, what="the celery worker to answer a ping")
    return worker


def kill_worker(worker: Worker) -> None:
    """SIGKILL the whole worker, its pool processes included: nothing is acknowledged or
    handed back, as when a host dies."""
    children = worker.child_pids()
    worker.process.kill()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.process.wait()


def replace_worker(worker: Worker, **options: Any) -> None:
    """Start a new worker process in place of ``worker`` (the same object, so the session
    fixture goes on with the new one)."""
    fresh = start_worker(**options)
    worker.process, worker.hostname, worker.log_path = fresh.process, fresh.hostname, fresh.log_path


def stop_worker(worker: Worker) -> None:
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)  # warm shutdown: finish, then exit
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


@pytest.fixture(scope="session")
def s3_proxy() -> Iterator[TcpProxy]:
    """The worker's way to S3: a proxy that tests can stop to simulate an outage."""
    proxy = TcpProxy(services().moto_port)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: Any, django_db_blocker: Any, s3_proxy: TcpProxy
) -> Iterator[Worker]:
    """A real worker process consuming every queue, for the whole session. It reaches S3
    through ``s3_proxy``; this process talks to moto directly."""
    from workers import app

    with django_db_blocker.unblock():
        app.control.purge()
        worker = start_worker(s3_endpoint=s3_proxy.url)
    yield worker
    stop_worker(worker)


def worker_idle(worker: Worker) -> bool:
    """Nothing queued in the broker, nothing held by the worker (running, reserved or
    waiting for a retry's countdown)."""
    import redis
    from kombu.exceptions import OperationalError

    from pipeline.celery import QUEUES
    from workers import app

    try:
        broker = redis.Redis.from_url(os.environ["REDIS_URL"])
        if any(broker.llen(queue) for queue in QUEUES):
            return False
        inspect = app.control.inspect(destination=[worker.hostname], timeout=0.5)
        for held in (inspect.active(), inspect.reserved(), inspect.scheduled()):
            if held is None or any(held.values()):
                return False
    except (redis.RedisError, OperationalError, OSError):
        return False  # connections dropped by the test (a broker "restart"): ask again
    return True


@pytest.fixture(autouse=True)
def _no_work_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that used the worker ends when the worker is idle: a render it left in
    flight must not write into the next test's buckets."""
    yield
    if "celery_worker" in request.fixturenames:
        worker = request.getfixturevalue("celery_worker")
        if worker.process.poll() is None:
            wait_for(
                lambda: worker_idle(worker) and worker_idle(worker),
                timeout=180,
                what="the worker to finish the test's work",
            )


@pytest.fixture
def folder_buckets(settings: Any, tmp_path: Path) -> Path:
    """Both buckets as folders, as on the embedded default (``list_objects`` walks them)."""

    def folder(name: str) -> dict[str, Any]:
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / name, "allow_overwrite": True},
        }

    settings.STORAGES = {
        **settings.STORAGES,
        "primary": folder("primary"),
        "public": folder("public"),
    }
    return tmp_path


@pytest.fixture(scope="session")
def s3() -> Any:
    """A boto3 S3 client on the moto server (the same one Django's storages use)."""
    return boto3.client("s3", endpoint_url=os.environ["AWS_S3_ENDPOINT_URL"])


@pytest.fixture(scope="session")
def cloudfront() -> Any:
    return boto3.client("cloudfront", endpoint_url=os.environ["AWS_CLOUDFRONT_ENDPOINT_URL"])


@pytest.fixture
def clean_buckets(s3: Any) -> Iterator[None]:
    """Empty both buckets after the test, so tests do not see each other's objects."""
    yield
    for bucket in (PRIMARY_BUCKET, PUBLIC_BUCKET):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


PHOTOS = REPO / "demo" / "photos"
"""Real photographs shipped with the repository (origins and licences in its README)."""
