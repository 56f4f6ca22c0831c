"""Scale benchmark of the bulk migration: 10,000 then 100,000 small images, same code path.

    make bench-migration-scale    # installs requirements-bench.txt, then:
    python bench/migration_scale.py [--files 100000] [--compare 10000] [--per-folder 100]
                                    [--keep]

For each size (``--compare`` first, then ``--files``) a generated tree of small images is
migrated by ``manage.py migrate_media TREE --model demo.Photo.image --orphans import
--no-process``: scan, plan, link (half the files are referred to by ``demo.Photo`` rows,
the other half imported as media-library orphans) and upload, against a private
``redis-server`` and one ``celery -A workers worker -Q cpu,transfer,cdn,migration -c 2 -P
prefork`` started by this script, and a fresh database (SQLite, or a new PostgreSQL
database on the server of ``DATABASE_URL`` when it is set). The buckets are *folders*
(the project's embedded default when no bucket is named): moto_server's cost per PUT
grows with the bucket, which would hide any growth of ours.

The tree: ``--per-folder`` files per folder, two levels deep; PNG and JPEG images of
16-64 px made once (a few hundred distinct pictures), each file given its own bytes by a
PNG ``tEXt`` chunk or a JPEG comment holding its number (written as bytes, nothing
re-encoded), so every file is a distinct content, except one in 50, a byte-identical copy
of its neighbour (linked, not uploaded).

Measured per size: wall time and CPU of the command (``os.wait4``), its peak RSS (the
kernel's ``ru_maxrss`` of that one process), its RSS sampled every 0.2 s, the peak RSS
(``VmHWM``) of the worker's main process and of each pool process, the most messages
ever in the broker (every 0.2 s: the length of every list in the Redis database plus the
``unacked`` hash, i.e. queued and delivered-but-unacknowledged), the rows each table
gained, and the disk used (database, bucket folder). The per-file time at ``--files``
over the per-file time at ``--compare`` must be at most 1.3 (no quadratic step), the
command's peak RSS at ``--files`` at most 250 MiB, and the broker's peak bounded by the
chunks in flight (``MAX_CHUNKS_IN_FLIGHT``), not the files. The last line is JSON.

To find a step that grows with the run before it shows in wall time, also: each phase's
time (from the command's output), the mean time of the first and the last tenth of the
chunk tasks, the command's CPU and bytes read while it only watches the chunks run, the
bytes the worker's processes read (``/proc/<pid>/io``: SQLite's page reads count, so a
query that reads the whole run once per chunk shows as reads per file growing with the
files), and, on PostgreSQL, the CPU of the server's processes (all its sessions).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.migration import (  # noqa: E402
    QUEUES,
    WORKER_PROCESSES,
    Stack,
    Target,
    _pg,
    _proc_cpu,
    machine_cpu,
    self_cpu,
    start_stack,
    stop_worker,
)

# Targets of the issue.
MAX_GROWTH = 1.3  # per-file time at --files over per-file time at --compare
MAX_RSS_MIB = 250  # the command's peak RSS at --files
MAX_CHUNKS_IN_FLIGHT = 8  # the project's default (PIPELINE["MIGRATION"])

MODEL = "demo.Photo.image"
DUPLICATE_EVERY = 50  # one file in 50 is a byte-identical copy of the one before
SAMPLE_EVERY = 0.2  # seconds between two samples of RSS and broker
MIB = 1024 * 1024


# -- the tree ------------------------------------------------------------------------------


def base_images(count: int = 256) -> list[tuple[str, bytes]]:
    """``count`` small distinct pictures (16-64 px), half PNG, half JPEG: (extension, bytes)."""
    from PIL import Image, ImageDraw

    out = []
    for k in range(count):
        w, h = 16 + (k * 7) % 49, 16 + (k * 13) % 49
        im = Image.new("RGB", (w, h), ((k * 37) % 256, (k * 91) % 256, (k * 53) % 256))
        draw = ImageDraw.Draw(im)
        draw.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=((k * 11) % 256, 200, 90))
        draw.line((0, k % h, w, h - 1 - k % h), fill=(255, 255, 255), width=2)
        buf = io.BytesIO()
        if k % 2:
            im.save(buf, "JPEG", quality=80)
            out.append(("jpg", buf.getvalue()))
        else:
            im.save(buf, "PNG")
            out.append(("png", buf.getvalue()))
    return out


def _png_with(data: bytes, number: int) -> bytes:
    """The PNG with a ``tEXt`` chunk holding ``number`` right after IHDR (8 + 25 bytes)."""
    body = b"tEXt" + b"bench\x00" + str(number).encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return data[:33] + chunk + data[33:]


def _jpeg_with(data: bytes, number: int) -> bytes:
    """The JPEG with a comment segment holding ``number`` right after SOI."""
    text = b"bench " + str(number).encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]


@dataclass
class Tree:
    root: Path
    files: int
    distinct: int
    bytes: int
    seconds: float

    def paths(self) -> Iterator[str]:
        """The relative path of every file, in the order written."""
        yield from (relative_path(i, self.per_folder, self.ext(i)) for i in range(self.files))

    per_folder: int = 100
    bases: list[tuple[str, bytes]] = field(default_factory=list, repr=False)

    def ext(self, i: int) -> str:
        return self.bases[i % len(self.bases)][0]


def relative_path(i: int, per_folder: int, ext: str) -> str:
    folder = i // per_folder
    return f"site-{folder // 100:03d}/Album {folder % 100:02d}/IMG_{i:07d}.{ext.upper()}"


def build_tree(root: Path, files: int, per_folder: int) -> Tree:
    started = time.perf_counter()
    bases = base_images()
    total = distinct = 0
    previous = b""
    made: set[Path] = set()
    for i in range(files):
        ext, data = bases[i % len(bases)]
        if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and previous:
            content = previous
        else:
            content = _png_with(data, i) if ext == "png" else _jpeg_with(data, i)
            distinct += 1
        path = root / relative_path(i, per_folder, ext)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(content)
        total += len(content)
        previous = content
    return Tree(
        root=root,
        files=files,
        distinct=distinct,
        bytes=total,
        seconds=time.perf_counter() - started,
        per_folder=per_folder,
        bases=bases,
    )


# -- what is measured during a run -------------------------------------------------------


def _status_kib(pid: int, key: str) -> int:
    """``VmHWM``/``VmRSS`` of a living process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except OSError:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


def _bytes_read(pid: int) -> int:
    """Bytes ``pid`` has read by ``read()``-like calls (files, sockets: SQLite's page reads
    from the OS cache included), from ``/proc/<pid>/io``; 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Sampler(threading.Thread):
    """Every ``SAMPLE_EVERY`` s: the command's RSS, the worker processes' peak RSS, and the
    messages in the broker (every list of the Redis database plus the ``unacked`` hash)."""

    def __init__(self, command_pid: int, worker_pid: int, redis_url: str) -> None:
        super().__init__(daemon=True)
        import redis

        self.command_pid = command_pid
        self.worker_pid = worker_pid
        self.redis = redis.Redis.from_url(redis_url)
        self.stopping = threading.Event()
        self.started_at = time.perf_counter()
        self.command_rss: list[tuple[float, int]] = []  # (seconds, KiB)
        self.command_cpu: list[tuple[float, float]] = []  # (seconds, CPU seconds)
        self.command_read: list[tuple[float, int]] = []  # (seconds, bytes read so far)
        self.worker_hwm: dict[int, int] = {}  # pid -> KiB
        self.worker_rss: dict[int, tuple[int, int]] = {}  # pid -> (first, last) KiB
        self.max_queued = self.max_unacked = self.max_messages = 0
        self.lists: set[bytes] = set()
        self._last_scan = 0.0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(SAMPLE_EVERY)
        self.sample()

    def sample(self) -> None:
        now = time.perf_counter() - self.started_at
        rss = _status_kib(self.command_pid, "VmRSS")
        if rss:
            self.command_rss.append((now, rss))
            self.command_cpu.append((now, _proc_cpu(self.command_pid, reaped=False)))
            self.command_read.append((now, _bytes_read(self.command_pid)))
        for pid in [self.worker_pid, *_children_of(self.worker_pid)]:
            hwm = _status_kib(pid, "VmHWM")
            if hwm:
                self.worker_hwm[pid] = max(hwm, self.worker_hwm.get(pid, 0))
                rss = _status_kib(pid, "VmRSS")
                self.worker_rss[pid] = (self.worker_rss.get(pid, (rss, 0))[0], rss)
        with contextlib.suppress(Exception):
            self._sample_broker(now)

    def _sample_broker(self, now: float) -> None:
        if now - self._last_scan > 1.0:  # new queues (priority lists) appear rarely
            self._last_scan = now
            for key in self.redis.scan_iter(count=1000):
                if self.redis.type(key) == b"list":
                    self.lists.add(key)
        lists = sorted(self.lists)
        pipe = self.redis.pipeline(transaction=False)
        for key in lists:
            pipe.llen(key)
        pipe.hlen("unacked")
        *lengths, unacked = pipe.execute()
        queued = sum(lengths)
        self.max_queued = max(self.max_queued, queued)
        self.max_unacked = max(self.max_unacked, unacked)
        self.max_messages = max(self.max_messages, queued + unacked)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def table_rows(env: dict[str, str]) -> dict[str, int]:
    """Rows per table of the target's database."""
    url = env["DATABASE_URL"]
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
            return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    with _pg(url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}


def database_bytes(env: dict[str, str]) -> int:
    url = env["DATABASE_URL"]
    if url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with _pg(url) as conn:
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def disk_bytes(path: Path) -> int:
    """Bytes of disk a folder takes (blocks allocated, as ``du``)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


# -- one size ------------------------------------------------------------------------------


@dataclass
class Result:
    files: int
    distinct: int
    tree_seconds: float
    tree_bytes: int
    wall: float = 0.0
    command_cpu: float = 0.0
    worker_cpu: float = 0.0
    others_cpu: float = 0.0
    db_server_cpu: float | None = None  # PostgreSQL's processes (all their sessions)
    peak_rss_kib: int = 0
    rss_series: list[tuple[float, int]] = field(default_factory=list)
    worker_hwm: list[int] = field(default_factory=list)  # main process first, KiB
    worker_rss: list[tuple[int, int]] = field(default_factory=list)  # (first, last) KiB
    upload_command_cpu: float = 0.0  # the command's CPU seconds while chunks ran
    upload_command_read: int = 0  # bytes the command read meanwhile (its database polls)
    worker_read: int = 0  # bytes the worker's processes read during the run
    max_messages: int = 0
    max_queued: int = 0
    max_unacked: int = 0
    rows_added: dict[str, int] = field(default_factory=dict)
    db_bytes: int = 0
    bucket_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    chunk_ms: tuple[float, float, int] = (0.0, 0.0, 0)  # first tenth, last tenth, chunks

    @property
    def per_file_ms(self) -> float:
        return self.wall / self.files * 1000

    @property
    def cpu_per_file_ms(self) -> float:
        return (self.command_cpu + self.worker_cpu) / self.files * 1000

    @property
    def rows(self) -> int:
        return sum(self.rows_added.values())


_PHASE = re.compile(r"^\s+(scanned|planned|uploaded and linked|processed) in ([\d.]+) s", re.M)
_CHUNK_DONE = re.compile(r"tasks\.run_chunk\[[^\]]+\] succeeded in ([\d.]+)s")


def chunk_times(worker_log: str) -> tuple[float, float, int]:
    """Mean ms of the first and the last tenth of the chunk tasks, and their number: a
    chunk that costs more the later it runs is a step growing with the run."""
    times = [float(t) for t in _CHUNK_DONE.findall(worker_log)]
    tenth = max(1, len(times) // 10)
    if not times:
        return (0.0, 0.0, 0)
    mean = lambda xs: sum(xs) / len(xs) * 1000  # noqa: E731
    return (mean(times[:tenth]), mean(times[-tenth:]), len(times))


def add_rows(target: Target, tree: Tree) -> int:
    """One ``demo.Photo`` row per two files, holding the file's legacy path (to re-link)."""
    listing = target.var_dir / "rows.txt"
    with listing.open("w") as f:
        for i, path in enumerate(tree.paths()):
            if i % 2 == 0:
                f.write(path + "\n")
    code = (
        "from demo.models import Photo\n"
        f"paths = open({str(listing)!r}).read().splitlines()\n"
        "for s in range(0, len(paths), 2000):\n"
        "    Photo.objects.bulk_create(\n"
        "        [Photo(title=p.rsplit('/', 1)[-1], image=p) for p in paths[s:s + 2000]])\n"
        "print(len(paths))\n"
    )
    out = target.manage("shell", "--no-imports", "-c", code).stdout
    return int(out.strip().splitlines()[-1])


def run_size(stack: Stack, root: Path, files: int, per_folder: int) -> Result:
    tree = build_tree(root / f"tree-{files}", files, per_folder)
    print(
        f"[{files:,}] tree built in {tree.seconds:.1f}s: {tree.files:,} files "
        f"({tree.distinct:,} distinct), {tree.bytes / 1e6:.1f} MB",
        flush=True,
    )
    target = stack.new_target(f"scale-{files}", folder_buckets=True)
    started = time.perf_counter()
    rows = add_rows(target, tree)
    print(
        f"[{files:,}] {rows:,} demo.Photo rows holding legacy paths "
        f"({time.perf_counter() - started:.1f}s)",
        flush=True,
    )
    target.start_worker()
    assert target.worker is not None
    worker_pid = target.worker.pid
    before = table_rows(target.env)
    result = Result(
        files=files, distinct=tree.distinct, tree_seconds=tree.seconds, tree_bytes=tree.bytes
    )
    report_file = target.var_dir / "report.json"
    log_file = target.var_dir / "command.log"
    args = [
        sys.executable,
        "manage.py",
        "migrate_media",
        str(tree.root),
        "--model",
        MODEL,
        "--orphans",
        "import",
        "--no-process",
        "--report",
        str(report_file),
    ]
    worker0 = _tree_cpu(worker_pid)
    worker_read0 = _tree_read(worker_pid)
    machine0, self0 = machine_cpu(), self_cpu()
    redis_pid = stack.redis_pid
    redis0 = _proc_cpu(redis_pid, reaped=False) if redis_pid else 0.0
    postgres = stack.pg_admin_url is not None
    db0 = _postgres_cpu() if postgres else 0.0
    with log_file.open("wb") as log:
        start, launched = time.perf_counter(), datetime.now()
        proc = subprocess.Popen(args, cwd=REPO, env=target.env, stdout=log, stderr=log)
        sampler = Sampler(proc.pid, worker_pid, target.env["REDIS_URL"])
        sampler.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        result.wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    worker_cpu = _tree_cpu(worker_pid) - worker0
    result.worker_read = _tree_read(worker_pid) - worker_read0
    redis_cpu = _proc_cpu(redis_pid, reaped=False) - redis0 if redis_pid else 0.0
    output = log_file.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"migrate_media exited {proc.returncode}:\n{output[-4000:]}")
    result.command_cpu = usage.ru_utime + usage.ru_stime
    result.worker_cpu = worker_cpu
    ours = result.command_cpu + worker_cpu + redis_cpu + self_cpu() - self0
    if postgres:
        result.db_server_cpu = _postgres_cpu() - db0
        ours += result.db_server_cpu
    result.others_cpu = max(0.0, machine_cpu() - machine0 - ours)
    result.peak_rss_kib = usage.ru_maxrss
    result.rss_series = sampler.command_rss
    # The worker's main process first, then its pool processes (by pid).
    result.worker_hwm = [sampler.worker_hwm.get(worker_pid, 0)] + [
        kib for pid, kib in sorted(sampler.worker_hwm.items()) if pid != worker_pid
    ]
    result.worker_rss = [
        rss for pid, rss in sorted(sampler.worker_rss.items(), key=lambda x: x[0] != worker_pid)
    ]
    result.max_messages = sampler.max_messages
    result.max_queued = sampler.max_queued
    result.max_unacked = sampler.max_unacked
    stop_worker(target.worker)
    result.chunk_ms = chunk_times(target.worker_log())
    after = table_rows(target.env)
    result.rows_added = {
        name: after[name] - before.get(name, 0)
        for name in sorted(after)
        if after[name] != before.get(name, 0)
    }
    result.db_bytes = database_bytes(target.env)
    result.bucket_bytes = disk_bytes(target.var_dir / "buckets")
    result.phases = {name: float(sec) for name, sec in _PHASE.findall(output)}
    result.upload_command_cpu = during_upload(output, launched, result.phases, sampler.command_cpu)
    result.upload_command_read = int(
        during_upload(output, launched, result.phases, sampler.command_read)
    )
    with contextlib.suppress(OSError, ValueError):
        result.report = json.loads(report_file.read_text())
    print(
        f"[{files:,}] migrate_media: {result.wall:.1f}s wall "
        f"({', '.join(f'{k} {v:.1f}s' for k, v in result.phases.items())}), "
        f"peak RSS {result.peak_rss_kib / 1024:.0f} MiB, broker max {result.max_messages}",
        flush=True,
    )
    return result


_SCANNED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*scanned \d+ entries", re.M)


def during_upload(
    output: str, launched: datetime, phases: dict[str, float], series: list[tuple[float, float]]
) -> float:
    """How much a cumulative measure of the command (CPU seconds, bytes read) grew during
    its upload step, when it only polls the run's progress and tops the queue up: from the
    end of the scan (logged) plus the planning's duration."""
    match = _SCANNED.search(output)
    if not match or "uploaded and linked" not in phases or not series:
        return 0.0
    scanned = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
    begin = (scanned - launched).total_seconds() + phases.get("planned", 0.0)
    end = begin + phases["uploaded and linked"]

    def at(t: float) -> float:
        before = [cpu for when, cpu in series if when <= t]
        return before[-1] if before else 0.0

    return at(end) - at(begin)


def _postgres_cpu() -> float:
    """CPU seconds of the living ``postgres`` processes of this machine (the server of
    ``DATABASE_URL`` when it is local; its other sessions' work included)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    # The postmaster's reaped children: the backends that have exited.
                    total += _proc_cpu(int(entry.name), reaped=True)
    return total


def _tree_read(pid: int) -> int:
    return sum(_bytes_read(p) for p in [pid, *_children_of(pid)])


def _tree_cpu(pid: int) -> float:
    return _proc_cpu(pid, reaped=True) + sum(_proc_cpu(c, reaped=True) for c in _children_of(pid))


# -- report --------------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def rss_profile(r: Result, points: int = 5) -> str:
    """The command's RSS at a few moments of its run (MiB), to show growth over time."""
    if not r.rss_series:
        return "-"
    step = max(1, len(r.rss_series) // points)
    picked = [*r.rss_series[::step][:points], r.rss_series[-1]]
    return " ".join(f"{_mib(kib)}@{t:.0f}s" for t, kib in picked)


def _per_file_row(
    label: str, a: float, b: float, na: int, nb: int, *, total: str, per: str, scale: float
) -> tuple[str, str, str, str]:
    """A table row: each size's total and (per file, times ``scale``), and the growth."""
    growth = f"{(b / nb) / (a / na):.2f}" if a else "-"
    cells = [f"{total.format(v)} ({per.format(v / n * scale)})" for v, n in ((a, na), (b, nb))]
    return (label, cells[0], cells[1], growth)


def report(small: Result, big: Result, args: argparse.Namespace, database: str) -> None:
    growth = big.per_file_ms / small.per_file_ms
    cpu_growth = big.cpu_per_file_ms / small.cpu_per_file_ms
    print()
    print(
        f"machine: {os.cpu_count()} CPUs; worker: 1 x prefork -c {WORKER_PROCESSES} "
        f"(-Q {QUEUES}); database: {database}; buckets: folders; "
        f"`migrate_media TREE --model {MODEL} --orphans import --no-process`"
    )
    print()
    header = ["", f"{small.files:,} files", f"{big.files:,} files", "growth (per file)"]
    lines = [
        (
            "distinct contents",
            f"{small.distinct:,}",
            f"{big.distinct:,}",
            "",
        ),
        (
            "wall s (per file ms)",
            f"{small.wall:.1f} ({small.per_file_ms:.2f})",
            f"{big.wall:.1f} ({big.per_file_ms:.2f})",
            f"**{growth:.2f}**",
        ),
    ]
    for phase in ("scanned", "planned", "uploaded and linked"):
        a, b = small.phases.get(phase), big.phases.get(phase)
        if a is not None and b is not None:
            lines.append(
                (
                    f"  {phase} s",
                    f"{a:.1f}",
                    f"{b:.1f}",
                    f"{(b / big.files) / (a / small.files):.2f}" if a else "-",
                )
            )
    lines += [
        (
            "CPU s: command + worker (per file ms)",
            f"{small.command_cpu:.0f} + {small.worker_cpu:.0f} ({small.cpu_per_file_ms:.2f})",
            f"{big.command_cpu:.0f} + {big.worker_cpu:.0f} ({big.cpu_per_file_ms:.2f})",
            f"{cpu_growth:.2f}",
        ),
        (
            "chunk task ms, first tenth / last tenth",
            f"{small.chunk_ms[0]:.0f} / {small.chunk_ms[1]:.0f} ({small.chunk_ms[2]:,} chunks)",
            f"{big.chunk_ms[0]:.0f} / {big.chunk_ms[1]:.0f} ({big.chunk_ms[2]:,} chunks)",
            "",
        ),
        _per_file_row(
            "command CPU s during upload (per file ms)",
            small.upload_command_cpu,
            big.upload_command_cpu,
            small.files,
            big.files,
            total="{:.1f}",
            per="{:.2f}",
            scale=1000,
        ),
        _per_file_row(
            "command reads during upload, MB (per file KB)",
            small.upload_command_read / 1e6,
            big.upload_command_read / 1e6,
            small.files,
            big.files,
            total="{:,.0f}",
            per="{:.0f}",
            scale=1000,
        ),
        _per_file_row(
            "worker processes' reads, MB (per file KB)",
            small.worker_read / 1e6,
            big.worker_read / 1e6,
            small.files,
            big.files,
            total="{:,.0f}",
            per="{:.0f}",
            scale=1000,
        ),
        ("others' CPU s (noise)", f"{small.others_cpu:.0f}", f"{big.others_cpu:.0f}", ""),
        *(
            [
                _per_file_row(
                    "PostgreSQL server CPU s (per file ms)",
                    small.db_server_cpu,
                    big.db_server_cpu,
                    small.files,
                    big.files,
                    total="{:.0f}",
                    per="{:.2f}",
                    scale=1000,
                )
            ]
            if small.db_server_cpu is not None and big.db_server_cpu is not None
            else []
        ),
        (
            "command peak RSS MiB",
            _mib(small.peak_rss_kib),
            f"**{_mib(big.peak_rss_kib)}**",
            "",
        ),
        ("command RSS MiB @ time", rss_profile(small), rss_profile(big), ""),
        (
            "worker peak RSS MiB (main, pool...)",
            ", ".join(map(_mib, small.worker_hwm)),
            ", ".join(map(_mib, big.worker_hwm)),
            "",
        ),
        (
            "worker RSS MiB, first → last sample",
            ", ".join(f"{_mib(a)} → {_mib(b)}" for a, b in small.worker_rss),
            ", ".join(f"{_mib(a)} → {_mib(b)}" for a, b in big.worker_rss),
            "",
        ),
        (
            "broker messages, most at once (queued + unacked)",
            f"{small.max_messages} ({small.max_queued} + {small.max_unacked})",
            f"**{big.max_messages}** ({big.max_queued} + {big.max_unacked})",
            "",
        ),
        (
            "database rows added (per file)",
            f"{small.rows:,} ({small.rows / small.files:.3f})",
            f"{big.rows:,} ({big.rows / big.files:.3f})",
            "",
        ),
        (
            "database bytes (per file)",
            f"{small.db_bytes / 1e6:.1f} MB ({small.db_bytes / small.files:.0f})",
            f"{big.db_bytes / 1e6:.1f} MB ({big.db_bytes / big.files:.0f})",
            "",
        ),
        (
            "bucket folder on disk",
            f"{small.bucket_bytes / 1e6:.0f} MB",
            f"{big.bucket_bytes / 1e6:.0f} MB",
            "",
        ),
    ]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|")
    for row in lines:
        print("| " + " | ".join(row) + " |")
    print()
    print("rows added by table:")
    for r in (small, big):
        shown = ", ".join(f"{k} {v:,}" for k, v in r.rows_added.items())
        print(f"  {r.files:,} files: {shown}")
    for r in (small, big):
        keys = ("uploaded", "already_present", "duplicates_folded", "rows_relinked")
        keys += ("orphans_imported", "failed")
        shown = ", ".join(f"{k} {r.report.get(k, '?')}" for k in keys)
        print(f"  report at {r.files:,}: {shown}")
    print()
    rss_ok = big.peak_rss_kib / 1024 <= MAX_RSS_MIB
    broker_bound = MAX_CHUNKS_IN_FLIGHT + WORKER_PROCESSES
    broker_ok = big.max_messages <= broker_bound
    checks = [
        (
            f"per-file time at {big.files:,} / at {small.files:,}",
            f"{growth:.2f}",
            f"<= {MAX_GROWTH}",
            growth <= MAX_GROWTH,
        ),
        (
            f"command peak RSS at {big.files:,}, MiB",
            _mib(big.peak_rss_kib),
            f"<= {MAX_RSS_MIB}",
            rss_ok,
        ),
        (
            "most broker messages at once",
            f"{big.max_messages} (at {small.files:,}: {small.max_messages})",
            f"<= chunks in flight ({MAX_CHUNKS_IN_FLIGHT}) + worker processes ({WORKER_PROCESSES})",
            broker_ok,
        ),
    ]
    print("| target | measured | bound | met |")
    print("|---|---|---|---|")
    for name, value, bound, ok in checks:
        print(f"| {name} | {value} | {bound} | {'yes' if ok else 'MISSED'} |")
    print()
    summary = {
        "files": big.files,
        "compare_files": small.files,
        "wall_s": round(big.wall, 1),
        "compare_wall_s": round(small.wall, 1),
        "per_file_ms": round(big.per_file_ms, 3),
        "compare_per_file_ms": round(small.per_file_ms, 3),
        "per_file_growth": round(growth, 3),
        "cpu_per_file_growth": round(cpu_growth, 3),
        "peak_rss_mib": round(big.peak_rss_kib / 1024, 1),
        "compare_peak_rss_mib": round(small.peak_rss_kib / 1024, 1),
        "worker_peak_rss_mib": [round(k / 1024, 1) for k in big.worker_hwm],
        "max_broker_messages": big.max_messages,
        "compare_max_broker_messages": small.max_messages,
        "db_rows_per_file": round(big.rows / big.files, 3),
        "upload_command_cpu_s": round(big.upload_command_cpu, 1),
        "upload_command_read_mb": round(big.upload_command_read / 1e6),
        "db_bytes_per_file": round(big.db_bytes / big.files),
        "phases_s": big.phases,
    }
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="files of the large tree")
    parser.add_argument("--compare", type=int, default=10_000, help="files of the small tree")
    parser.add_argument("--per-folder", type=int, default=100, help="files per folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-migration-scale-"))
    stack: Stack | None = None
    try:
        if args.keep:
            os.environ["PIPELINE_KEEP_TEST_VAR"] = "1"
        stack = start_stack(root, moto=False)
        database = "PostgreSQL" if stack.pg_admin_url else "SQLite"
        small = run_size(stack, root, args.compare, args.per_folder)
        big = run_size(stack, root, args.files, args.per_folder)
        report(small, big, args, database)
    finally:
        if stack is not None:
            stack.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            print(f"removing {root} (the trees and bucket folders)", file=sys.stderr)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
