"""`manage.py render_image`: outputs for good files, a reason and a non-zero exit for bad ones."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import PHOTOS
from tests.services import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "render_image", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_renders_a_folder_and_reports_rejections(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "owl.jpg").write_bytes((PHOTOS / "20_owl_600.jpg").read_bytes())
    (src / "page.png").write_text("<!doctype html><html></html>")
    out = tmp_path / "out"

    result = run(str(src), "--out", str(out))

    assert result.returncode == 1  # one file was rejected
    assert "page.png: rejected: not an image: HTML" in result.stderr
    assert "w320" in result.stdout and "webp" in result.stdout
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert {"w320.webp", "w320.avif"} <= set(written)


def test_json_output_and_unknown_profile(tmp_path):
    result = run(str(PHOTOS / "23_flower_300.jpg"), "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [entry] = report["files"]
    assert entry["source"]["width"] == 300
    assert (
        run(
            str(PHOTOS / "23_flower_300.jpg"), "--out", str(tmp_path), "--profile", "nope"
        ).returncode
        != 0
    )
