"""The generated legacy tree: deterministic, at real sizes, messy in every promised way."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from demo.models import Photo
from demo.sample_tree import SampleManifest, build_sample_tree
from pipeline.bulk.references import lookup_key
from pipeline.bulk.scan import Kind
from tests.conftest import PHOTOS


def fingerprint(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content digest (or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> SampleManifest:
    return build_sample_tree(tmp_path_factory.mktemp("fixed") / "media", PHOTOS)


def test_same_seed_same_tree_other_seed_other_tree(tmp_path: Path) -> None:
    one = build_sample_tree(tmp_path / "one" / "media", PHOTOS, n=50, seed=7)
    two = build_sample_tree(tmp_path / "two" / "media", PHOTOS, n=50, seed=7)
    three = build_sample_tree(tmp_path / "three" / "media", PHOTOS, n=50, seed=8)
    assert fingerprint(one.root) == fingerprint(two.root)
    assert one.legacy_values == two.legacy_values
    assert dict(one.expected) == dict(two.expected)
    assert fingerprint(three.root) != fingerprint(one.root)


def test_the_fixed_tree_has_every_promised_case(fixed: SampleManifest) -> None:
    root, files = fixed.root, fingerprint(fixed.root)
    names = set(files)
    assert {"Photos/Summer 2019/IMG_0001.JPG", "Photos/Summer 2019/beach.jpeg"} <= names
    assert "Photos/Summer 2019/Sunset.Jpg" in names  # .JPG / .jpeg / .Jpg
    assert files["uploads/2015/03/file.jpg"] == files["uploads/2015/03/file (1).jpg"]
    assert {"Photos/Summer 2019/.DS_Store", "uploads/2015/03/Thumbs.db"} <= names
    assert {"docs/notes.txt", "docs/fake.png", "broken/empty.jpg"} <= names
    assert (root / "docs/fake.png").read_bytes().startswith(b"<!DOCTYPE html>")
    assert (root / "broken/empty.jpg").stat().st_size == 0
    nfc_names = [n for n in names if unicodedata.is_normalized("NFC", n) and not n.isascii()]
    nfd_names = [n for n in names if not unicodedata.is_normalized("NFC", n)]
    assert nfc_names and nfd_names  # unicode in both normal forms
    with Image.open(root / "products/Red Shoe_final.PNG") as im:
        assert im.mode == "RGBA" and im.getextrema()[3][0] == 0  # really transparent
    with Image.open(root / "products/logo.gif") as im:
        assert im.format == "GIF" and im.n_frames == 2
    with Image.open(root / "uploads/2015/03/IMG_2041.JPG") as im:
        assert im.getexif()[0x0112] == 6  # a sideways camera shot
    with Image.open(root / "broken/truncated.jpg") as im, pytest.raises(OSError):
        im.load()  # Pillow agrees it is truncated


def test_links_point_outside_and_round_a_loop(fixed: SampleManifest) -> None:
    root = fixed.root
    outside = (root / "links/outside.jpg").resolve()
    assert outside == fixed.outside.resolve() and outside.exists()
    assert not outside.is_relative_to(root.resolve())
    assert outside.parent == root.resolve().parent  # next to dest, not in the system
    assert (root / "links/loop").resolve() == root.resolve()
    assert not (root / "links/gone.jpg").exists()  # dangling link


def test_images_come_at_the_photos_own_sizes(fixed: SampleManifest) -> None:
    camera = fixed.root / "Photos/Summer 2019/IMG_0001.JPG"
    assert camera.read_bytes() == (PHOTOS / "02_iphone_5mp_orient6_p3.jpg").read_bytes()
    widths = {}
    for path in fixed.image_paths:
        with Image.open(fixed.root / path) as im:
            sideways = im.getexif().get(0x0112) in (5, 6, 7, 8)
            widths[path] = im.height if sideways else im.width
    # Processing them makes every variant width of the default profile, 1600 included.
    assert max(widths.values()) >= 1600
    assert sum(1 for w in widths.values() if w > 640) >= 5
    total = sum(f.stat().st_size for f in fixed.root.rglob("*") if f.is_file())
    assert total < 6_000_000  # still quick to build, scan and upload


def test_manifest_counts_match_the_tree(fixed: SampleManifest) -> None:
    counts = fixed.counts
    assert counts[Kind.IMAGE] == len(fixed.image_paths) >= 20
    assert counts[Kind.JUNK] >= 6 and counts[Kind.NOT_IMAGE] == 2
    assert counts[Kind.REJECTED] == 5  # truncated, empty, outside, loop, broken link
    assert counts["unique_images"] == counts[Kind.IMAGE] - counts["duplicates"]
    for path in fixed.expected:
        assert os.path.lexists(fixed.root / path), path


def test_legacy_values_cover_every_style(fixed: SampleManifest) -> None:
    styles = {v.style for v in fixed.legacy_values}
    assert styles >= {
        "relative", "media_url", "url_encoded", "absolute_url", "backslashes",
        "leading_slash", "dot_segments", "case", "unicode", "unicode_case",
        "dangling", "escape", "empty",
    }  # fmt: skip
    for v in fixed.legacy_values:
        if v.path is not None:
            assert v.path in fixed.expected and v.target_kind == fixed.expected[v.path]
    referenced = {v.path for v in fixed.legacy_values if v.path}
    assert set(fixed.image_paths) - referenced  # some images are orphans


def test_bulk_mode_makes_about_n_images_with_copies_and_values(tmp_path: Path) -> None:
    m = build_sample_tree(tmp_path / "bulk", PHOTOS, n=120, seed=1)
    counts = m.counts
    assert counts[Kind.IMAGE] == 120
    assert counts["duplicates"] >= 5
    bulk = [p for p in m.image_paths if p.startswith("bulk/")]
    assert len({lookup_key(p) for p in bulk}) == len(bulk)  # no accidental ambiguity
    assert {p.rsplit(".", 1)[1] for p in bulk} >= {"JPG", "jpg", "jpeg", "png", "webp"}
    linked = [v for v in m.legacy_values if v.path and v.path.startswith("bulk/")]
    assert 0.5 * len(bulk) < len(linked) < len(bulk)  # most referenced, some orphans


def test_a_value_longer_than_the_column_is_spelled_as_its_path_or_left_out(
    tmp_path: Path,
) -> None:
    unbounded = build_sample_tree(
        tmp_path / "a" / "media", PHOTOS, n=120, seed=1, max_length=10_000
    )
    bounded = build_sample_tree(tmp_path / "b" / "media", PHOTOS, n=120, seed=1, max_length=60)
    assert max(len(v.value) for v in unbounded.legacy_values) > 100  # long URLs are made
    assert max(len(v.value) for v in bounded.legacy_values) <= 60
    assert fingerprint(unbounded.root) == fingerprint(bounded.root)  # the same tree
    for v in bounded.legacy_values:
        if v.path is not None:
            assert v.path in bounded.expected and v.target_kind == bounded.expected[v.path]
    respelled = {v.path for v in unbounded.legacy_values if len(v.value) > 60 and v.path}
    kept = {v.path for v in bounded.legacy_values if v.style == "relative"}
    assert {p for p in respelled if len(p) <= 60} <= kept


@pytest.mark.django_db
def test_every_legacy_value_fits_the_image_column_of_the_database(tmp_path: Path) -> None:
    """On PostgreSQL (CI) a value longer than the column fails the insert (DataError)."""
    column = Photo._meta.get_field("image").max_length
    m = build_sample_tree(tmp_path / "media", PHOTOS, n=300, seed=0)
    assert max(len(v.value) for v in m.legacy_values) <= column
    Photo.objects.bulk_create(
        Photo(title=f"legacy {i}", image=v.value) for i, v in enumerate(m.legacy_values)
    )
    stored = Photo.objects.order_by("pk").values_list("image", flat=True)
    assert list(stored) == [v.value for v in m.legacy_values]


def test_dest_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_sample_tree(tmp_path, PHOTOS)
    assert (tmp_path / "keep.txt").read_text() == "mine"
