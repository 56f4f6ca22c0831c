"""Benchmark the bulk media migration against `aws s3 sync`, `s5cmd` and the bare engine.

    make bench-migration      # installs requirements-bench.txt (awscli, s5cmd), then:
    python bench/migration.py [--files 2000] [--rounds 1] [--keep] [--skip-baselines]
                              [--py-spy DIR]

Everything runs on this machine, started by this script and stopped when it ends: a
private ``redis-server`` and ``moto_server`` (S3 + CloudFront, via ``tests.services``), a
fresh database per measured migration (SQLite, or a new PostgreSQL database on the server
of ``DATABASE_URL`` when it is set), and one ``celery -A workers worker -Q
cpu,transfer,cdn,migration -c 2 -P prefork`` (two worker processes) per database. The
legacy tree is ``demo.sample_tree.build_sample_tree`` with about ``--files``
images (real photos at 96-640 px, camera/CMS names, ~8% byte-identical copies, and its
fixed cases at the photos' own sizes) plus the litter of an old MEDIA_ROOT (OS junk,
text, a truncated JPEG, symbolic links). The photos are ``--photos``, else the team's
larger corpus (``../shared/corpus/photos`` beside the checkout) when it is there, else
the ones shipped in ``demo/photos``; the output says which set was used.

Three comparisons, each against a baseline measured in the same run on the same tree and
the same S3 server:

(a) Upload only: ``migrate_media SOURCE --orphans import --no-process`` (fresh buckets and
    database) beside ``aws s3 sync`` and ``s5cmd cp`` of the tree, each to a fresh bucket.
    files/s counts the *image files of the tree* (copies included) for all three, so the
    ratio is the ratio of wall times. The work differs and is shown: the sync tools upload
    every regular file (images, copies and junk; symbolic links are not followed), the
    migration uploads each distinct image once and links copies.
(b) Full migration: ``migrate_media SOURCE --orphans import`` on fresh buckets and database
    (no ``--model``: every image is an orphan, imported into the media library and
    processed with its profile, the project's default). images/s = distinct images / wall
    time from the command's start until every media-library row is ready (the command
    waits for processing). Beside it: ``pipeline.imaging.render`` with the same profile
    over the same distinct images in a 2-process ``multiprocessing.Pool`` (the files read
    from disk; no storage, no database, no broker).
(c) No-op: the same command again on the same tree, database and buckets; beside it, the
    floor no command can beat: ``manage.py migrate_media --help`` (Python + Django start-up).

Wall times include process start-up (Python and Django for the command, the AWS CLI's
Python, s5cmd's Go binary); the worker is started and answering before the clock starts.
To show where the time goes, each row also has the CPU seconds of moto_server, of the
client (the tool, the command or the pool), of the worker's processes, and of everything
else on the machine ("others' CPU": a large value means the run competed with other
work and its numbers are noisy); the S3 requests moto served, by kind (from its log); and
a timeline of each migration from the command's and the worker's logs. ``--py-spy DIR``
also records the worker during each migration (collapsed stacks, idle time included).
The processes run with ``DJANGO_DEBUG=false``, as in production. The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import photos as photo_sets  # noqa: E402
from demo.sample_tree import SampleManifest, build_sample_tree  # noqa: E402
from pipeline.errors import PermanentError  # noqa: E402
from pipeline.imaging import Profile, profile_from_dict, render  # noqa: E402
from tests.services import AWS_REGION, Services, wait_until, worker_command  # noqa: E402

BIN = Path(sys.executable).parent
WORKER_PROCESSES = 2
QUEUES = "cpu,transfer,cdn,migration"
#: The media library's table and status column: what (b) waits on.
LIBRARY_TABLE = "pipeline_mediaasset"
STATUS_COLUMN = "image_status"
UNFINISHED = ("pending", "processing")

# Targets of the issue.
MIN_VS_AWS = 1.0  # upload pass at least as fast as `aws s3 sync`
MIN_VS_S5CMD = 0.9  # and within 10% of s5cmd
MIN_ORCHESTRATION = 0.9  # full migration >= 0.9 x the engine's images/s
MAX_NOOP = 1 / 50  # second run <= 1/50 of the first
# In CPU seconds (the shared S3 server does not decide them):
MAX_WORKER_CPU_VS_ENGINE = 1.25  # (b) workers' CPU per image <= 1.25 x the engine's
MAX_CLIENT_CPU_VS_S5CMD = 1.5  # (a) upload client CPU per uploaded file <= 1.5 x s5cmd's


# -- processes and CPU -------------------------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int, *, reaped: bool) -> float:
    """CPU seconds of ``pid`` (plus its reaped children's when ``reaped``), 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = stat[stat.rindex(")") + 2 :].split()
    ticks = int(rest[11]) + int(rest[12])
    if reaped:
        ticks += int(rest[13]) + int(rest[14])
    return ticks / _TICK


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children, living or reaped."""
    return _proc_cpu(pid, reaped=True) + sum(_proc_cpu(c, reaped=True) for c in _children(pid))


def machine_cpu() -> float:
    """CPU seconds all CPUs of the machine spent busy since boot (every process's)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / _TICK


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (subprocess.run, pools)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Measure:
    """One timed thing: wall seconds, CPU seconds per process group, and what it did."""

    name: str
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    count: int = 0  # the numerator of the rate
    unit: str = "files"
    note: str = ""
    timeline: str = ""  # where the wall time went, from the logs
    requests: Counter[str] = field(default_factory=Counter)  # S3 requests by kind
    written: int = 0  # objects this tool uploaded (its CPU per file divides by this)

    @property
    def rate(self) -> float:
        return self.count / self.wall if self.wall > 0 else 0.0


def s3_requests(log: Path, offset: int) -> tuple[Counter[str], int]:
    """The S3 requests moto_server logged past ``offset``, by kind; and the new offset."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        _, quote, rest = line.partition('"')
        method, _, target = rest.partition(" ")
        if not quote or method not in ("GET", "HEAD", "PUT", "POST", "DELETE"):
            continue
        path, _, query = target.split(" ", 1)[0].partition("?")
        is_key = "/" in path.strip("/")  # /bucket/key, not /bucket
        if path.startswith("/20"):
            counts["CloudFront"] += 1
        elif method == "GET" and not is_key:
            counts["LIST"] += 1
        elif method == "POST" and "delete" in query:
            counts["DELETE"] += 1
        else:
            counts[method] += 1
    return counts, offset + len(text.encode())


class Clock:
    """Wall time and CPU deltas of moto, the worker (if any) and this process's children,
    and the requests moto served meanwhile."""

    def __init__(self, stack: Stack, worker_pid: int | None = None) -> None:
        self.stack = stack
        self.worker_pid = worker_pid

    @contextlib.contextmanager
    def measure(self, m: Measure, client: str) -> Iterator[Measure]:
        moto_pid, redis_pid, log = self.stack.moto_pid, self.stack.redis_pid, self.stack.moto_log
        moto0, kids0 = _proc_cpu(moto_pid, reaped=False), children_cpu()
        redis0 = _proc_cpu(redis_pid, reaped=False) if redis_pid else 0.0
        worker0 = tree_cpu(self.worker_pid) if self.worker_pid else 0.0
        machine0, self0 = machine_cpu(), self_cpu()
        offset = log.stat().st_size
        start = time.perf_counter()
        yield m
        m.wall = time.perf_counter() - start
        m.cpu["moto_server"] = _proc_cpu(moto_pid, reaped=False) - moto0
        m.cpu[client] = children_cpu() - kids0
        if self.worker_pid:
            m.cpu["worker"] = tree_cpu(self.worker_pid) - worker0
        ours = sum(m.cpu.values()) + self_cpu() - self0
        if redis_pid:
            ours += _proc_cpu(redis_pid, reaped=False) - redis0
        # Busy CPU of processes that are not this benchmark's: other users of the machine.
        m.cpu["other"] = max(0.0, machine_cpu() - machine0 - ours)
        time.sleep(0.2)  # let moto finish writing its log
        m.requests, _ = s3_requests(log, offset)


# -- a target: a database and two buckets, with a worker on them -------------------------


@dataclass
class Stack:
    """The shared services: Redis, moto_server, and the environment every child gets."""

    services: Services
    root: Path
    base_env: dict[str, str]
    pg_admin_url: str | None
    created_dbs: list[str] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    targets: int = 0
    spy_dir: Path | None = None  # --py-spy: profile the worker during each migration

    @property
    def endpoint(self) -> str:
        return self.services.env["AWS_S3_ENDPOINT_URL"]

    @property
    def moto_pid(self) -> int:
        return self.services.processes["moto"].pid

    @property
    def redis_pid(self) -> int | None:
        redis = self.services.processes.get("redis")
        return redis.pid if redis else None

    @property
    def moto_log(self) -> Path:
        return self.services.var_dir / "moto.log"

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=AWS_REGION,
        )

    def fresh_bucket(self, name: str) -> str:
        self.s3().create_bucket(Bucket=name)
        return name

    def count_objects(self, bucket: str) -> int:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(len(page.get("Contents", ())) for page in pages)

    def new_target(self, label: str, *, folder_buckets: bool = False) -> Target:
        """A fresh database (migrated), two fresh buckets and a var dir of their own.

        ``folder_buckets``: the buckets are folders in the var dir (the project's embedded
        default when no bucket is named), not buckets of moto_server."""
        self.targets += 1
        n = self.targets
        var_dir = self.root / f"target-{n}-{label}"
        var_dir.mkdir()
        if self.pg_admin_url:
            db_name = f"bench_migration_{os.getpid()}_{n}"
            with _pg(self.pg_admin_url) as conn:
                conn.execute(f'CREATE DATABASE "{db_name}"')
            self.created_dbs.append(db_name)
            db_url = urlunsplit(urlsplit(self.pg_admin_url)._replace(path=f"/{db_name}"))
        else:
            db_url = f"sqlite:///{var_dir / 'db.sqlite3'}"
        redis = self.base_env["REDIS_URL"].rsplit("/", 1)[0] + f"/{n % 16}"
        env = {
            **self.base_env,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis,
            "PIPELINE_VAR_DIR": str(var_dir),
        }
        if folder_buckets:
            env.pop("PIPELINE_PRIMARY_BUCKET", None)
            env.pop("PIPELINE_PUBLIC_BUCKET", None)
        else:
            env["PIPELINE_PRIMARY_BUCKET"] = self.fresh_bucket(f"bench-{n}-{label}-primary")
            env["PIPELINE_PUBLIC_BUCKET"] = self.fresh_bucket(f"bench-{n}-{label}-public")
        target = Target(stack=self, label=label, env=env, var_dir=var_dir)
        target.manage("migrate", "--verbosity", "0")
        return target

    def stop(self) -> None:
        try:
            for worker in self.workers:
                stop_worker(worker)
            if self.pg_admin_url and self.created_dbs:
                with _pg(self.pg_admin_url) as conn:
                    for name in self.created_dbs:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            self.services.stop()


@dataclass
class Target:
    stack: Stack
    label: str
    env: dict[str, str]
    var_dir: Path
    worker: subprocess.Popen[bytes] | None = None

    def manage(
        self, *args: str, log: Path | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python manage.py ARGS`` on this target; raises with the output's tail on error."""
        try:
            result = subprocess.run(
                [sys.executable, "manage.py", *args],
                cwd=REPO,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"manage.py {' '.join(args)} took over {timeout:.0f}s") from e
        if log is not None:
            log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(
                f"manage.py {' '.join(args)} exited {result.returncode}:\n"
                f"{(result.stdout + result.stderr)[-4000:]}"
            )
        return result

    def start_worker(self) -> None:
        name = f"bench-{uuid.uuid4().hex[:8]}@%h"
        log = open(self.var_dir / "worker.log", "wb")  # noqa: SIM115 - the worker's lifetime
        self.worker = subprocess.Popen(
            worker_command(hostname=name, queues=QUEUES, concurrency=WORKER_PROCESSES),
            cwd=REPO,
            env={**self.env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.stack.workers.append(self.worker)
        full_name = name.replace("%h", os.uname().nodename)
        wait_until(
            lambda: _worker_answers(self.worker, self.env["REDIS_URL"], full_name, self.var_dir),
            timeout=90,
            what="the celery worker to answer a ping",
        )

    def worker_log(self) -> str:
        return (self.var_dir / "worker.log").read_text(errors="replace")

    def library_states(self) -> dict[str, int]:
        """Media-library rows per status, read straight from the database."""
        sql = f"SELECT {STATUS_COLUMN}, COUNT(*) FROM {LIBRARY_TABLE} GROUP BY {STATUS_COLUMN}"
        url = self.env["DATABASE_URL"]
        if url.startswith("sqlite:"):
            with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
                return dict(conn.execute(sql).fetchall())
        with _pg(url) as conn:
            return dict(conn.execute(sql).fetchall())  # type: ignore[arg-type]

    def profile(self) -> Profile:
        """The profile the media library renders with, as the project's settings define it."""
        code = (
            "import json; from pipeline.conf import pipeline_settings; "
            "from pipeline.models import MediaAsset; "
            "p = pipeline_settings().profile(MediaAsset._meta.get_field('image').profile); "
            "print(json.dumps([p.name, p.as_dict()]))"
        )
        out = self.manage("shell", "--no-imports", "-c", code).stdout
        name, spec = json.loads(out.strip().splitlines()[-1])
        return profile_from_dict(name, spec)


def _worker_answers(
    worker: subprocess.Popen[bytes] | None, broker: str, name: str, var_dir: Path
) -> bool:
    from celery import Celery

    assert worker is not None
    if worker.poll() is not None:
        log = (var_dir / "worker.log").read_text(errors="replace")
        raise RuntimeError(f"celery worker exited early:\n{log[-4000:]}")
    app = Celery("bench-ping", broker=broker)
    try:
        return bool(app.control.ping(destination=[name], timeout=0.5))
    finally:
        app.close()


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


@contextlib.contextmanager
def _pg(url: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def _pg_admin_url(database_url: str) -> str:
    """The server of ``DATABASE_URL``, at its ``postgres`` maintenance database."""
    parts = urlsplit(database_url)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit(f"DATABASE_URL must be PostgreSQL or unset, got {parts.scheme!r}")
    return urlunsplit(parts._replace(path="/postgres"))


def start_stack(root: Path, *, moto: bool = True) -> Stack:
    """Private Redis (and ``moto_server`` unless ``moto=False``) under ``root``."""
    # A private Redis even when REDIS_URL is set: nothing else may share the broker.
    os.environ.pop("REDIS_URL", None)
    services = Services(var_dir=root / "services")
    services.var_dir.mkdir()
    try:
        services.start_redis()
        if moto:
            services.start_moto()
    except BaseException:
        services.stop()
        raise
    database_url = os.environ.get("DATABASE_URL", "")
    base_env = {
        **os.environ,
        **services.env,
        "DJANGO_SECRET_KEY": "bench-only-secret",
        "DJANGO_DEBUG": "false",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    return Stack(
        services=services,
        root=root,
        base_env=base_env,
        pg_admin_url=_pg_admin_url(database_url) if database_url else None,
    )


# -- (a) upload only ---------------------------------------------------------------------


def run_tool(stack: Stack, name: str, cmd: Sequence[str], images: int, bucket: str) -> Measure:
    m = Measure(name=name, count=images)
    env = {**stack.base_env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with Clock(stack).measure(m, "client"):
        result = subprocess.run(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"{name} exited {result.returncode}: {result.stderr[-2000:]}")
    m.written = stack.count_objects(bucket)
    m.note = f"{m.written:,} objects written"
    return m


def aws_sync(stack: Stack, tree: Path, images: int, round_: int) -> Measure:
    bucket = stack.fresh_bucket(f"bench-aws-{round_}")
    cmd = [
        str(BIN / "aws"),
        "s3",
        "sync",
        str(tree),
        f"s3://{bucket}/legacy",
        "--endpoint-url",
        stack.endpoint,
        "--no-follow-symlinks",
        "--only-show-errors",
    ]
    return run_tool(stack, "aws s3 sync", cmd, images, bucket)


def s5cmd_cp(stack: Stack, tree: Path, images: int, round_: int) -> Measure:
    bucket = stack.fresh_bucket(f"bench-s5cmd-{round_}")
    cmd = [
        str(BIN / "s5cmd"),
        "--endpoint-url",
        stack.endpoint,
        "--log",
        "error",
        "cp",
        "--no-follow-symlinks",
        f"{tree}/*",
        f"s3://{bucket}/legacy/",
    ]
    return run_tool(stack, "s5cmd cp", cmd, images, bucket)


# -- the migration command ---------------------------------------------------------------


def migrate_media(target: Target, tree: Path, name: str, count: int, *extra: str) -> Measure:
    """Run ``migrate_media`` once, timed, until every media-library row is final."""
    assert target.worker is not None
    m = Measure(name=name, count=count)
    report = target.var_dir / f"report-{name.replace(' ', '-')}.json"
    log = target.var_dir / f"command-{name.replace(' ', '-')}.log"
    args = ["migrate_media", str(tree), "--orphans", "import", "--report", str(report), *extra]
    clock = Clock(target.stack, target.worker.pid)
    spy_dir = target.stack.spy_dir
    spy_out = spy_dir / f"{target.label}-{name.replace(' ', '-')}.txt" if spy_dir else None
    started = datetime.now()
    with spy(target.worker.pid, spy_out), clock.measure(m, "command"):
        target.manage(*args, log=log)
        if "--no-process" not in extra:
            wait_until(
                lambda: not any(target.library_states().get(s) for s in UNFINISHED),
                timeout=3600,
                what="every media-library row to be processed",
            )
    m.note = summarize_report(report)
    m.written = _report_count(report, "uploaded")
    m.timeline = timeline(
        started,
        started + timedelta(seconds=m.wall),
        log.read_text(errors="replace"),
        target.worker_log(),
    )
    return m


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_TASK_DONE = re.compile(r"Task ([\w.]+)\[[^\]]+\] succeeded in ([\d.]+)s")


def _log_lines(text: str, since: datetime, until: datetime) -> Iterator[tuple[float, str]]:
    """(seconds after ``since``, line) for each timestamped log line in the window."""
    for line in text.splitlines():
        match = _LOG_TIME.match(line)
        if match:
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
            if since <= at <= until:
                yield (at - since).total_seconds(), line


def timeline(since: datetime, until: datetime, command_log: str, worker_log: str) -> str:
    """When the scan ended, when the worker first and last ran a task, and the tasks' time."""
    parts = []
    scanned = [t for t, line in _log_lines(command_log, since, until) if "scanned" in line]
    if scanned:
        parts.append(f"scan done at {scanned[0]:.1f}s")
    tasks: dict[str, list[float]] = {}
    first = last = None
    for t, line in _log_lines(worker_log, since, until):
        if first is None and " received" in line:
            first = t
        done = _TASK_DONE.search(line)
        if done:
            last = t
            tasks.setdefault(done[1].rsplit(".", 1)[-1], []).append(float(done[2]))
    if first is not None:
        parts.append(f"first task received at {first:.1f}s")
    if last is not None:
        parts.append(f"last task done at {last:.1f}s")
    parts.append(f"end at {(until - since).total_seconds():.1f}s")
    for name, times in sorted(tasks.items()):
        parts.append(
            f"{len(times):,} {name} tasks, {sum(times):.1f}s in all, "
            f"mean {sum(times) / len(times) * 1000:.0f} ms"
        )
    return "; ".join(parts)


@contextlib.contextmanager
def spy(pid: int, out: Path | None) -> Iterator[None]:
    """``py-spy record`` of ``pid`` and its children (idle stacks too), as collapsed stacks."""
    if out is None:
        yield
        return
    cmd = [
        str(BIN / "py-spy"),
        "record",
        "-p",
        str(pid),
        "--subprocesses",
        "--idle",
        "--rate",
        "50",
        "--nonblocking",
        "--format",
        "raw",
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def startup_floor(target: Target) -> Measure:
    """``manage.py migrate_media --help``: Python and Django start-up, no work at all."""
    m = Measure(name="migrate_media --help (start-up only)")
    with Clock(target.stack).measure(m, "command"):
        target.manage("migrate_media", "--help")
    return m


def summarize_report(path: Path) -> str:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"(no report: {e})"
    keys = (
        "uploaded",
        "already_present",
        "duplicates_folded",
        "orphans_imported",
        "variants_generated",
    )
    return ", ".join(f"{k.replace('_', ' ')} {data.get(k, '?')}" for k in keys)


def _report_count(path: Path, key: str) -> int:
    try:
        return int(json.loads(path.read_text()).get(key) or 0)
    except (OSError, ValueError, TypeError):
        return 0


def command_ready(target: Target, tree: Path) -> str | None:
    """None when ``migrate_media`` exists and a dry run of the tree works, else why not.

    ``target`` is a throwaway: whatever a dry run records stays out of the measured runs.
    """
    try:
        target.manage("migrate_media", "--help", timeout=120)
        target.manage(
            "migrate_media",
            str(tree),
            "--dry-run",
            "--report",
            str(target.var_dir / "dry-run.json"),
            timeout=600,
        )
    except RuntimeError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        return lines[-1] if lines else "failed"
    return None


# -- (b) the engine alone ----------------------------------------------------------------


_profile: Profile | None = None


def _init_engine(profile: Profile) -> None:
    global _profile
    _profile = profile


def _render_file(path: str) -> bool:
    """Render one file as a worker would; True if it rendered, False if rejected."""
    assert _profile is not None
    try:
        render(Path(path).read_bytes(), _profile)
    except PermanentError:
        return False
    return True


def engine(paths: list[Path], profile: Profile) -> Measure:
    m = Measure(name=f"imaging engine, Pool({WORKER_PROCESSES})", count=len(paths), unit="images")
    ctx = multiprocessing.get_context("fork")  # as Celery's prefork pool
    with ctx.Pool(WORKER_PROCESSES, initializer=_init_engine, initargs=(profile,)) as pool:
        kids0, machine0, self0 = children_cpu(), machine_cpu(), self_cpu()
        start = time.perf_counter()
        ok = sum(pool.imap_unordered(_render_file, map(str, paths), chunksize=1))
        m.wall = time.perf_counter() - start
        machine1 = machine_cpu()
        pool.close()
        pool.join()
    m.cpu["pool"] = children_cpu() - kids0
    # Approximate: the pool's processes are counted when reaped, a moment after the clock.
    m.cpu["other"] = max(0.0, machine1 - machine0 - m.cpu["pool"] - (self_cpu() - self0))
    m.note = f"{ok} rendered, {len(paths) - ok} rejected"
    return m


def distinct_images(tree: SampleManifest) -> list[Path]:
    """One path per distinct image content: what the migration renders."""
    return [tree.root / p for p in tree.image_paths if p not in tree.duplicates]


# -- report ------------------------------------------------------------------------------


def _cpu(m: Measure | None, key: str) -> str:
    if m is None or key not in m.cpu:
        return "-"
    return f"{m.cpu[key]:.1f}"


def table(rows: list[tuple[str, Measure | None]]) -> list[str]:
    header = [
        "pass",
        "tool",
        "wall s",
        "rate",
        "moto CPU s",
        "moto busy",
        "client CPU s",
        "worker CPU s",
        "others' CPU s",
        "S3 requests",
        "what it did",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for section, m in rows:
        if m is None:
            continue
        client = next((k for k in ("client", "command", "pool") if k in m.cpu), "")
        moto = m.cpu.get("moto_server")
        busy = f"{moto / m.wall:.0%}" if moto is not None and m.wall else "-"
        rate = f"{m.rate:,.1f} {m.unit}/s" if m.count else "-"
        cells = [
            section,
            m.name,
            f"{m.wall:.2f}",
            rate,
            _cpu(m, "moto_server"),
            busy,
            _cpu(m, client),
            _cpu(m, "worker"),
            _cpu(m, "other"),
            ", ".join(f"{k} {v:,}" for k, v in sorted(m.requests.items())) or "-",
            m.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _verdict(value: float | None, ok: bool) -> str:
    if value is None:
        return "not measured"
    return "met" if ok else "MISSED"


def best(measures: list[Measure]) -> Measure | None:
    """The fastest of the rounds (machine noise only ever slows a run down)."""
    return min(measures, key=lambda m: m.wall) if measures else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="images in the tree (about)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (a); the best counts")
    parser.add_argument("--photos", type=Path, default=None, help=photo_sets.HELP)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="write py-spy profiles of the worker during each migration run to DIR "
        "(needs `pip install py-spy`; the profiler's CPU skews the numbers)",
    )
    parser.add_argument("--skip-baselines", action="store_true", help="skip aws s3 sync and s5cmd")
    args = parser.parse_args()
    if args.photos is None:
        args.photos = photo_sets.default_photos()
    print(f"photo set: {photo_sets.describe(args.photos)}", flush=True)

    root = Path(tempfile.mkdtemp(prefix="bench-migration-"))
    stack: Stack | None = None
    try:
        if args.keep:  # tests.services keeps moto's log and redis' dir with it
            os.environ["PIPELINE_KEEP_TEST_VAR"] = "1"
        stack = start_stack(root)
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            stack.spy_dir = args.py_spy.resolve()
        run(stack, root, args)
    finally:
        if stack is not None:
            stack.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(stack: Stack, root: Path, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    tree = build_sample_tree(root / "legacy", args.photos, n=args.files)
    counts = tree.counts
    images = counts["image"]
    unique = distinct_images(tree)
    regular = sum(1 for p in tree.root.rglob("*") if p.is_file() and not p.is_symlink())
    tree_mb = sum(p.stat().st_size for p in tree.root.rglob("*") if p.is_file()) / 1e6
    print(
        f"tree: {tree.root} built in {time.perf_counter() - started:.0f}s: {images:,} image "
        f"files ({counts['duplicates']:,} byte-identical copies, {len(unique):,} distinct), "
        f"{regular:,} regular files in all ({counts['junk']} junk, {counts['not_image']} "
        f"not images, {counts['rejected']} rejected), {tree_mb:.1f} MB",
        flush=True,
    )

    # (a) upload only. Rounds interleave the three so machine noise hits them alike.
    aws: list[Measure] = []
    s5: list[Measure] = []
    upload: list[Measure] = []
    not_ready = command_ready(stack.new_target("probe"), tree.root)
    if not_ready:
        print(
            f"migrate_media is not usable yet ({not_ready}); measuring baselines only", flush=True
        )
    for round_ in range(1, args.rounds + 1):
        if not args.skip_baselines:
            aws.append(aws_sync(stack, tree.root, images, round_))
            print(f"  aws s3 sync: {aws[-1].wall:.2f}s", flush=True)
            s5.append(s5cmd_cp(stack, tree.root, images, round_))
            print(f"  s5cmd: {s5[-1].wall:.2f}s", flush=True)
        if not not_ready:
            target = stack.new_target(f"upload-{round_}")
            target.start_worker()
            upload.append(
                migrate_media(
                    target, tree.root, "migrate_media --no-process", images, "--no-process"
                )
            )
            print(f"  migrate_media --no-process: {upload[-1].wall:.2f}s", flush=True)
            assert target.worker is not None
            stop_worker(target.worker)

    # (b) the engine alone, and the full migration; (c) the same command again.
    full_target = stack.new_target("full")
    profile = full_target.profile()
    eng = engine(unique, profile)
    print(f"  engine: {eng.wall:.2f}s", flush=True)
    first = second = floor = None
    if not not_ready:
        full_target.start_worker()
        first = migrate_media(full_target, tree.root, "migrate_media", len(unique))
        first.unit = "images"
        states = full_target.library_states()
        first.note += f"; rows {dict(sorted(states.items()))}"
        print(f"  migrate_media: {first.wall:.2f}s", flush=True)
        second = migrate_media(full_target, tree.root, "migrate_media again", 0)
        print(f"  migrate_media again: {second.wall:.2f}s", flush=True)
        floor = startup_floor(full_target)

    a_aws, a_s5, a_up = best(aws), best(s5), best(upload)
    print()
    print(
        f"machine: {os.cpu_count()} CPUs; worker: 1 x prefork -c {WORKER_PROCESSES}; "
        f"database: {'PostgreSQL' if stack.pg_admin_url else 'SQLite'}; "
        f"profile {profile.name!r}: {', '.join(profile.formats)} at "
        f"{', '.join(map(str, profile.widths))} px (never upscaled)"
    )
    print(
        f"(a) files/s = {images:,} image files / wall time, for every tool "
        f"(best of {args.rounds}); (b) images/s = {len(unique):,} distinct images / wall time"
    )
    print()
    rows: list[tuple[str, Measure | None]] = [
        ("(a) upload", a_aws),
        ("(a) upload", a_s5),
        ("(a) upload", a_up),
        ("(b) process", eng),
        ("(b) process", first),
        ("(c) re-run", second),
        ("(c) floor", floor),
    ]
    print("\n".join(table(rows)))
    print()
    for m in (a_up, first, second):
        if m is not None and m.timeline:
            print(f"{m.name}: {m.timeline}")
    cpu_ratio = ceiling = None
    if first is not None and "worker" in first.cpu:
        engine_cpu = eng.cpu["pool"] / eng.count
        worker_cpu = first.cpu["worker"] / first.count
        moto_cpu = first.cpu["moto_server"] / first.count
        cpu_ratio = round(engine_cpu / worker_cpu, 3)
        ceiling = round(engine_cpu / (engine_cpu + moto_cpu), 3)
        print(
            f"CPU per image: engine {engine_cpu * 1000:.1f} ms; migration worker processes "
            f"{worker_cpu * 1000:.1f} ms (engine/worker {cpu_ratio:.2f}), plus moto_server "
            f"{moto_cpu * 1000:.1f} ms and the command "
            f"{first.cpu['command'] / first.count * 1000:.1f} ms on the same "
            f"{os.cpu_count()} CPUs"
        )
        # Any migration renders (the engine's CPU) and has its outputs stored (moto's CPU,
        # here on the same cores): even with free orchestration, (b) cannot exceed this.
        print(
            f"(b) ceiling with the S3 server on the same CPUs: engine / (engine + moto) = "
            f"{ceiling:.2f}; with it elsewhere, (b) would be about the CPU ratio "
            f"engine/worker = {cpu_ratio:.2f}"
        )

    # The CPU targets: every process doing the work, per file or image it did, against
    # the baseline's; the S3 server's CPU is left out (it is the same server for both).
    our_upload = [m.cpu["worker"] / m.written for m in upload if m.written and "worker" in m.cpu]
    s5_upload = [m.cpu["client"] / m.written for m in s5 if m.written]
    client_vs_s5 = _ratio(min(our_upload, default=None), min(s5_upload, default=None))
    worker_vs_engine = _ratio(
        first.cpu["worker"] / first.count if first is not None and first.count else None,
        eng.cpu["pool"] / eng.count if eng.count else None,
    )
    if our_upload or s5_upload:
        print(
            "CPU per uploaded file (a), each round: migrate_media's workers "
            + ", ".join(f"{c * 1000:.2f}" for c in our_upload)
            + " ms; s5cmd "
            + ", ".join(f"{c * 1000:.2f}" for c in s5_upload)
            + f" ms; ratio (lowest of each) {client_vs_s5}"
        )
    if worker_vs_engine is not None:
        print(f"CPU per image (b): workers / engine = {worker_vs_engine}")

    summary: dict[str, float | None] = {
        "upload_files_per_s": round(a_up.rate, 1) if a_up else None,
        "aws_s3_sync_files_per_s": round(a_aws.rate, 1) if a_aws else None,
        "s5cmd_files_per_s": round(a_s5.rate, 1) if a_s5 else None,
        "vs_aws": _ratio(a_up.rate if a_up else None, a_aws.rate if a_aws else None),
        "vs_s5cmd": _ratio(a_up.rate if a_up else None, a_s5.rate if a_s5 else None),
        "migration_images_per_s": round(first.rate, 2) if first else None,
        "engine_images_per_s": round(eng.rate, 2),
        "orchestration_ratio": _ratio(first.rate if first else None, eng.rate),
        "orchestration_cpu_ratio": cpu_ratio,
        "ceiling_same_cpus": ceiling,
        "first_run_s": round(first.wall, 2) if first else None,
        "second_run_s": round(second.wall, 2) if second else None,
        "noop_ratio": _ratio(second.wall if second else None, first.wall if first else None),
        "worker_cpu_vs_engine": worker_vs_engine,
        "client_cpu_vs_s5cmd": client_vs_s5,
    }
    print()
    command = " ".join(["python bench/migration.py", *sys.argv[1:]])
    print(f"README table (`{command}`, {os.cpu_count()} CPUs):")
    print()
    comparisons = [
        (
            "(a) upload only (`--no-process`), files/s",
            a_up,
            a_aws,
            "`aws s3 sync`",
            summary["vs_aws"],
            ">=",
            MIN_VS_AWS,
        ),
        (
            "(a) upload only (`--no-process`), files/s",
            a_up,
            a_s5,
            "`s5cmd cp`",
            summary["vs_s5cmd"],
            ">=",
            MIN_VS_S5CMD,
        ),
        (
            "(b) full migration, images/s",
            first,
            eng,
            f"imaging engine, {WORKER_PROCESSES} processes",
            summary["orchestration_ratio"],
            ">=",
            MIN_ORCHESTRATION,
        ),
        (
            "(c) second run (no-op), s",
            second,
            first,
            "first run",
            summary["noop_ratio"],
            "<=",
            MAX_NOOP,
        ),
    ]
    comparisons += [
        (
            "(a) upload client CPU per uploaded file, ms",
            min(our_upload, default=None),
            min(s5_upload, default=None),
            "`s5cmd cp`",
            client_vs_s5,
            "<=",
            MAX_CLIENT_CPU_VS_S5CMD,
        ),
        (
            "(b) worker CPU per image, ms",
            first.cpu["worker"] / first.count if first is not None and first.count else None,
            eng.cpu["pool"] / eng.count if eng.count else None,
            f"imaging engine, {WORKER_PROCESSES} processes",
            worker_vs_engine,
            "<=",
            MAX_WORKER_CPU_VS_ENGINE,
        ),
    ]
    print("| comparison | migrate_media | baseline | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for label, ours, base, base_name, value, op, bound in comparisons:
        ok = value is not None and (value >= bound if op == ">=" else value <= bound)
        if "CPU" in label:
            ours_cell = f"{ours * 1000:.2f}" if ours is not None else "-"
            base_cell = f"{base_name} {base * 1000:.2f}" if base is not None else f"{base_name} -"
        elif label.startswith("(c)"):
            ours_cell = f"{ours.wall:.2f}" if ours else "-"
            base_cell = f"{base_name} {base.wall:.1f}" if base else f"{base_name} -"
        else:
            ours_cell = f"{ours.rate:,.1f}" if ours else "-"
            base_cell = f"{base_name} {base.rate:,.1f}" if base else f"{base_name} -"
        shown = "-" if value is None else f"{value:.3f}"
        target = f"{op} {bound:.2f}" if bound >= 0.1 else f"{op} 1/{round(1 / bound)}"
        print(
            f"| {label} | {ours_cell} | {base_cell} | {shown} | {target} | {_verdict(value, ok)} |"
        )
    print()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
