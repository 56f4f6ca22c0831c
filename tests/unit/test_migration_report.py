"""The run report: counted from a real scan, rendered for the terminal, round-tripped as JSON."""

from __future__ import annotations

import json
import re

import pytest

from demo.sample_tree import SampleManifest, build_sample_tree
from pipeline.bulk.plan import plan
from pipeline.bulk.report import DanglingReference, Report
from pipeline.bulk.scan import Kind, scan
from tests.conftest import PHOTOS


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleManifest:
    return build_sample_tree(tmp_path_factory.mktemp("legacy") / "media", PHOTOS)


@pytest.fixture(scope="module")
def report(sample: SampleManifest) -> Report:
    r = Report(run_id="r1", source=str(sample.root))
    entries = []
    for entry in scan(sample.root):
        r.count_scan(entry)
        entries.append(entry)
    p = plan(entries)
    r.duplicates_folded = p.duplicates_folded
    for i, v in enumerate(sample.legacy_values):
        link = p.resolve(v.value)
        if link.linked:
            r.rows_relinked += 1
        else:
            r.add_dangling(f"demo.Photo.image pk={i}", v.value, link.reason or "")
    r.uploaded, r.already_present = len(p.objects) - 2, 2
    r.bytes_after, r.duration = 123_456, 2.0
    r.bytes_optimized_originals, r.bytes_processed_originals = 30_000, 40_000
    r.bytes_variants = 60_000
    return r


def test_scan_counters_match_the_manifest(sample: SampleManifest, report: Report) -> None:
    counts = sample.counts
    assert report.files_scanned == len(sample.expected)
    assert report.images == counts[Kind.IMAGE]
    assert report.junk_skipped == counts[Kind.JUNK]
    assert report.not_images == counts[Kind.NOT_IMAGE]
    assert report.rejected_count == counts[Kind.REJECTED]
    assert report.rejected["truncated JPEG"] == ["broken/truncated.jpg"]
    assert report.rejected["link outside the tree"] == ["links/outside.jpg"]
    assert report.duplicates_folded == counts["duplicates"]
    image_bytes = sum((sample.root / p).stat().st_size for p in sample.image_paths)
    assert report.bytes_before == image_bytes


def test_dangling_values_are_kept_with_where_and_why(
    sample: SampleManifest, report: Report
) -> None:
    values = {d.value: d for d in report.dangling}
    assert "../etc/passwd" in values and "broken/truncated.jpg" in values
    assert values["../etc/passwd"].reason == "escapes the media root"
    assert values["broken/truncated.jpg"].reason == "refers to a rejected file: truncated JPEG"
    expected_dangling = sum(1 for v in sample.legacy_values if v.target_kind != Kind.IMAGE)
    assert len(report.dangling) == expected_dangling
    assert report.rows_relinked == len(sample.legacy_values) - expected_dangling


def test_json_round_trips_and_carries_the_derived_numbers(report: Report) -> None:
    data = json.loads(report.to_json())
    assert data["rejected"]["truncated JPEG"] == {"count": 1, "paths": ["broken/truncated.jpg"]}
    assert data["rejected_count"] == report.rejected_count
    assert data["dangling_count"] == len(report.dangling)
    assert data["files_per_second"] == pytest.approx(report.files_scanned / 2.0)
    assert data["bytes_per_second"] == pytest.approx(report.bytes_before / 2.0, abs=0.01)
    again = Report.from_dict(data)
    assert again == report
    assert json.loads(again.to_json()) == data


def test_table_shows_every_counter_and_the_reasons(report: Report) -> None:
    table = report.render_table()
    for label in (
        "files scanned", "images", "skipped junk", "not images", "rejected", "uploaded",
        "already present, linked", "duplicates folded", "rows re-linked",
        "dangling references", "orphans imported", "variants generated", "bytes before",
        "bytes after", "duration", "throughput",
    ):  # fmt: skip
        assert label in table, label
    assert "  truncated JPEG (1)\n    broken/truncated.jpg" in table
    assert "'../etc/passwd' (escapes the media root)" in table
    assert "123.5 KB" in table and "2.0 s" in table
    lines = table.splitlines()
    row = next(line for line in lines if line.startswith("images "))
    assert row.endswith(f"{report.images:,}")
    rule = lines.index("-" * len(lines[1]), 2)
    widths = {len(line) for line in lines[1 : rule + 1]}
    assert len(widths) == 1  # one aligned column of numbers


def test_bytes_after_is_broken_down_and_optimized_originals_compared_like_with_like(
    report: Report,
) -> None:
    cells = (re.split(r"\s{3,}", line.strip()) for line in report.render_table().splitlines())
    rows = {cell[0]: cell[1] for cell in cells if len(cell) == 2}
    assert rows["bytes after (originals + all outputs)"] == "123.5 KB"
    assert rows["originals, private bucket"] == "33.5 KB"  # 123,456 - 30,000 - 60,000
    assert rows["optimized originals, public"] == "30.0 KB"
    assert rows["variants, public"] == "60.0 KB"
    assert rows["optimized originals vs their originals"] == "30.0 KB vs 40.0 KB (-25%)"
    data = report.to_dict()
    assert data["bytes_stored_originals"] == 33_456 and data["optimized_ratio"] == 0.75
    assert Report().optimized_ratio is None and Report().to_dict()["optimized_ratio"] is None


def test_long_lists_are_cut_in_the_table_but_not_in_json() -> None:
    r = Report()
    for i in range(12):
        r.add_rejected(f"bad/{i:02d}.jpg", "corrupt JPEG: unreadable header")
    table = r.render_table(max_paths=3)
    assert "bad/02.jpg" in table and "bad/03.jpg" not in table
    assert "... and 9 more" in table
    assert len(r.to_dict()["rejected"]["corrupt JPEG: unreadable header"]["paths"]) == 12


def test_merge_adds_counters_and_lists() -> None:
    a = Report(run_id="r", images=2, uploaded=1, bytes_before=10, duration=5.0)
    a.add_rejected("x.jpg", "empty file")
    b = Report(run_id="other", images=3, uploaded=2, bytes_before=5, duration=9.0)
    b.add_rejected("y.jpg", "empty file")
    b.add_dangling("app.M.f pk=1", "gone.jpg", "no such file in the legacy tree")
    a.merge(b)
    assert (a.images, a.uploaded, a.bytes_before) == (5, 3, 15)
    assert a.rejected == {"empty file": ["x.jpg", "y.jpg"]}
    assert a.dangling == [
        DanglingReference("app.M.f pk=1", "gone.jpg", "no such file in the legacy tree")
    ]
    assert (a.run_id, a.duration) == ("r", 5.0)  # identity of the run is not summed


def test_dry_run_and_zero_duration() -> None:
    r = Report(dry_run=True)
    assert r.files_per_second == 0.0 and r.bytes_per_second == 0.0
    assert "dry run: nothing written" in r.render_table().splitlines()[0]
