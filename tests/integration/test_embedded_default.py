"""The embedded default, end to end: what ``make demo`` runs, with no environment at all.

No REDIS_URL, DATABASE_URL, AWS_* or bucket variables: the database is a SQLite file, the
buckets are folders under ``var/buckets``, CDN invalidations go to the local recorder and
tasks run in-process. The commands run in subprocesses, as a user runs them, on a
temporary ``PIPELINE_VAR_DIR``; the other tests' services are never seen.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.services import REPO

pytestmark = pytest.mark.integration

#: What a login shell passes on; everything else (the suite's services included) is dropped.
PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER")


def clean_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASSED_ON}
    env.update({"PIPELINE_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"})
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stderr[-4000:]}"
    return result


def table(out: str) -> dict[str, str]:
    """The report's rows, label -> value (the value column is right-aligned)."""
    cells = (re.split(r"\s{3,}", line.strip()) for line in out.splitlines())
    return {cell[0]: cell[1] for cell in cells if len(cell) == 2}


def rows(var_dir: Path, table_name: str) -> list[tuple[str, str]]:
    with sqlite3.connect(var_dir / "db.sqlite3") as db:
        return db.execute(f"SELECT image, image_status FROM {table_name}").fetchall()


def test_make_demo_runs_on_the_embedded_default_and_again_as_a_quick_no_op(tmp_path: Path):
    var = tmp_path / "var"
    env = clean_env(var)
    assert not {k for k in env if k.startswith(("AWS_", "REDIS", "DATABASE", "CELERY_"))}
    assert not {k for k in env if k.startswith("PIPELINE_") and k != "PIPELINE_VAR_DIR"}

    manage("migrate", "--verbosity", "0", env=env)
    started = time.monotonic()
    first = manage("demo", env=env)
    first_seconds = time.monotonic() - started

    assert "runs in this process" in first.stdout + first.stderr  # no broker: in-process
    report = table(first.stdout)
    assert "Media migration  run 1" in first.stdout
    assert int(report["uploaded"]) > 10 and report["failed"] == "0"
    assert int(report["variants generated"].replace(",", "")) > 50
    assert "bytes after (originals + all outputs)" in report
    assert report["optimized originals vs their originals"] != "-"

    # The buckets are folders: originals in the private one, every rendition in the public.
    assert any((var / "buckets/primary/legacy").rglob("*.jpg"))
    public = var / "buckets/public"
    made = {(p.suffix, p.stem) for p in public.rglob("w*.*")}
    for fmt in (".avif", ".webp"):
        assert {(fmt, "w640"), (fmt, "w1024"), (fmt, "w1600")} <= made, fmt
    for path in public.rglob("w1600.avif"):
        with Image.open(path) as im:
            assert im.format == "AVIF" and im.width == 1600

    # Every row the migration linked, and every image it imported, is ready.
    photos = rows(var, "demo_photo")
    linked = [status for image, status in photos if image.startswith("legacy/")]
    assert len(linked) >= 10 and set(linked) == {"ready"}
    assert {status for _, status in photos} <= {"ready", "empty"}  # dangling: left as is
    assets = rows(var, "pipeline_mediaasset")
    assert assets and {status for _, status in assets} == {"ready"}

    # Again: nothing new, and quick.
    started = time.monotonic()
    second = manage("demo", env=env)
    second_seconds = time.monotonic() - started
    again = table(second.stdout)
    assert "nothing changed since run" in second.stdout + second.stderr
    for label in ("uploaded", "rows re-linked", "orphans imported", "variants generated"):
        assert again[label] == "0", label
    assert again["already present, linked"] == report["uploaded"]
    assert (
        again["bytes after (originals + all outputs)"]
        == report["bytes after (originals + all outputs)"]
    )
    assert second_seconds < first_seconds / 3
    assert rows(var, "demo_photo") == photos

    # The CDN recorder: a deleted row's public objects are invalidated into the local file
    # (the migration itself overwrote nothing, so it had nothing to invalidate).
    with sqlite3.connect(var / "db.sqlite3") as db:
        pk, manifest = db.execute(
            "SELECT id, image_manifest FROM demo_photo WHERE image_status = 'ready' LIMIT 1"
        ).fetchone()
    manifest = json.loads(manifest)
    keys = {e["key"] for e in [manifest["original"], *manifest["variants"]]}
    recorder = var / "cdn-invalidations.jsonl"
    assert not recorder.exists()
    delete = f"from demo.models import Photo; Photo.objects.get(pk={pk}).delete()"
    manage("shell", "-c", delete, env=env)
    assert not any((public / key).exists() for key in keys)
    recorded = [json.loads(line) for line in recorder.read_text().splitlines()]
    assert {f"/{key}" for key in keys} <= {path for r in recorded for path in r["paths"]}
