"""The legacy-tree scanner, on real files: the generated messy tree and hand-made edge cases.

The scanner uses the real imaging probe (``pipeline.imaging.probe``); tests that need to
watch what is read wrap it in a recording probe.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tracemalloc
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from demo.sample_tree import SampleManifest, build_sample_tree
from pipeline.bulk.scan import HEAD_SIZE, Kind, ScanEntry, scan
from pipeline.errors import ImageRejected
from pipeline.imaging import probe as real_probe
from tests.conftest import PHOTOS


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleManifest:
    return build_sample_tree(tmp_path_factory.mktemp("legacy") / "media", PHOTOS)


@pytest.fixture(scope="module")
def entries(sample: SampleManifest) -> list[ScanEntry]:
    return list(scan(sample.root))


class RecordingProbe:
    """The real probe, remembering every head it was given."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    def __call__(self, data: bytes) -> object:
        self.heads.append(data)
        return real_probe(data)


def jpeg_bytes(size: tuple[int, int] = (64, 48), **params: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "JPEG", **params)
    return buf.getvalue()


def noisy_jpeg(size: tuple[int, int] = (256, 256)) -> bytes:
    """A JPEG whose scan data is far larger than the tail window (random pixels)."""
    buf = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buf, "JPEG")
    return buf.getvalue()


def by_path(entries: list[ScanEntry]) -> dict[str, ScanEntry]:
    return {e.path: e for e in entries}


# -- the generated messy tree ----------------------------------------------------------


def test_every_entry_of_the_sample_tree_is_classified_as_the_manifest_says(
    sample: SampleManifest, entries: list[ScanEntry]
) -> None:
    assert not sample.notes  # symlinks worked here, so every case is in the tree
    assert {e.path: str(e.kind) for e in entries} == dict(sample.expected)
    found = by_path(entries)
    for path, fragment in sample.reasons.items():
        assert fragment.lower() in (found[path].reason or "").lower(), path


def test_reasons_name_what_was_wrong(entries: list[ScanEntry]) -> None:
    found = by_path(entries)
    assert found["broken/truncated.jpg"].reason == "truncated JPEG"
    assert found["broken/empty.jpg"].reason == "empty file"
    assert found["docs/fake.png"].reason == "not an image: HTML"  # content, not extension
    assert found["docs/notes.txt"].reason == "not an image: text"
    assert found["Photos/Summer 2019/.DS_Store"].reason == "junk: .DS_Store"
    assert found["uploads/2015/03/Thumbs.db"].reason == "junk: Thumbs.db"
    assert found["__MACOSX"].reason == "junk: __MACOSX"


def test_images_carry_format_and_displayed_size(
    sample: SampleManifest, entries: list[ScanEntry]
) -> None:
    found = by_path(entries)
    assert found["products/Red Shoe_final.PNG"].format == "png"
    assert found["products/logo.gif"].format == "gif"
    assert found["products/hero banner.webp"].format == "webp"
    assert found["Photos/Summer 2019/Sunset.Jpg"].format == "jpeg"
    phone = found["uploads/2015/03/IMG_2041.JPG"]  # EXIF orientation 6: shown upright
    with Image.open(sample.root / phone.path) as im:
        assert (phone.width, phone.height) == (im.height, im.width)
    for e in entries:
        if e.is_image:
            assert e.width and e.height and e.format and e.reason is None


def test_checksums_and_sizes_are_those_of_the_bytes_on_disk(
    sample: SampleManifest, entries: list[ScanEntry]
) -> None:
    read = [e for e in entries if e.sha256 is not None]
    assert {e.kind for e in read} == {Kind.IMAGE, Kind.NOT_IMAGE, Kind.REJECTED}
    assert {e.reason for e in read if e.kind is Kind.REJECTED} == {"truncated JPEG"}
    for e in read:
        data = (sample.root / e.path).read_bytes()
        assert e.size == len(data)
        assert e.sha256 == hashlib.sha256(data).hexdigest()
        assert e.md5 == hashlib.md5(data).hexdigest()


def test_identical_copies_have_identical_checksums(
    sample: SampleManifest, entries: list[ScanEntry]
) -> None:
    found = by_path(entries)
    assert sample.duplicates
    for copy, original in sample.duplicates.items():
        assert found[copy].sha256 == found[original].sha256
    distinct = {e.sha256 for e in entries if e.is_image}
    assert len(distinct) == sample.counts["unique_images"]


def test_the_link_out_of_the_tree_is_never_opened(sample: SampleManifest) -> None:
    recorder = RecordingProbe()
    found = by_path(list(scan(sample.root, probe=recorder)))
    outside = sample.outside.read_bytes()
    assert sample.outside.exists() and not sample.outside.is_relative_to(sample.root)
    assert found["links/outside.jpg"].kind is Kind.REJECTED
    assert found["links/outside.jpg"].sha256 is None
    assert all(not outside.startswith(head) for head in recorder.heads)
    assert hashlib.sha256(outside).hexdigest() not in {e.sha256 for e in found.values()}


def test_the_loop_is_reported_and_never_entered(
    sample: SampleManifest, entries: list[ScanEntry]
) -> None:
    assert os.path.realpath(sample.root / "links" / "loop") == os.path.realpath(sample.root)
    found = by_path(entries)
    assert found["links/loop"].kind is Kind.REJECTED
    assert "loop" in (found["links/loop"].reason or "")
    assert not [e.path for e in entries if e.path.startswith("links/loop/")]


def test_a_link_inside_the_tree_is_followed_and_marked(entries: list[ScanEntry]) -> None:
    found = by_path(entries)
    alias, real = found["links/alias.jpg"], found["Photos/Summer 2019/beach.jpeg"]
    assert alias.kind is Kind.IMAGE and alias.via_link and not real.via_link
    assert alias.sha256 == real.sha256


def test_order_is_a_sorted_pre_order_walk_and_repeatable(
    sample: SampleManifest, entries: list[ScanEntry]
) -> None:
    paths = [e.path for e in entries]
    assert paths == sorted(paths, key=lambda p: p.split("/"))
    assert [e.path for e in scan(sample.root)] == paths
    assert list(scan(sample.root)) == entries  # frozen dataclasses compare by value


def test_order_does_not_depend_on_creation_order(tmp_path: Path) -> None:
    names = ["b/2.txt", "a/z.txt", "B.txt", "a b/x.txt", "a/a.txt", "ä.txt", "a.txt"]
    paths = []
    for order, root in ((names, tmp_path / "one"), (names[::-1], tmp_path / "two")):
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name)
        paths.append([e.path for e in scan(root)])
    assert paths[0] == paths[1]
    # Code-point order of each folder's names: "a" < "a b" < "a.txt" (" " < "."), and a
    # folder's files come where the folder's name sorts.
    assert paths[0] == ["B.txt", "a/a.txt", "a/z.txt", "a b/x.txt", "a.txt", "b/2.txt", "ä.txt"]


# -- streaming -------------------------------------------------------------------------


def test_scan_is_a_lazy_generator(tmp_path: Path) -> None:
    for folder in ("a", "m", "z"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "one.jpg").write_bytes(jpeg_bytes())
    recorder = RecordingProbe()
    it = scan(tmp_path, probe=recorder)
    assert isinstance(it, types.GeneratorType)
    assert recorder.heads == []  # nothing read before the first next()
    first = next(it)
    assert first.path == "a/one.jpg" and len(recorder.heads) == 1
    # The tree is listed as the walk goes: a file added now to a folder not reached yet
    # is seen, which a scan that had materialized the tree up front would miss.
    (tmp_path / "z" / "late.jpg").write_bytes(jpeg_bytes((32, 32)))
    assert [e.path for e in it] == ["m/one.jpg", "z/late.jpg", "z/one.jpg"]


def _not_an_image(data: bytes) -> object:
    """A probe with no state of its own, so the measure is the scanner's alone."""
    raise ImageRejected("not an image: test")


def _tree(root: Path, subfolders: int) -> None:
    for f in range(10):
        for s in range(subfolders):
            d = root / f"folder {f}" / f"sub {s}"
            d.mkdir(parents=True)
            for i in range(20):
                (d / f"note {i:02d}.txt").write_bytes(b"x" * 40)


def _streaming_peak(root: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in scan(root, probe=_not_an_image))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_tree_grows(tmp_path: Path) -> None:
    _tree(tmp_path / "small", 1)
    _tree(tmp_path / "large", 8)
    list(scan(tmp_path / "small", probe=_not_an_image))  # warm up (imports, caches)
    small_count, small_peak = _streaming_peak(tmp_path / "small")
    large_count, large_peak = _streaming_peak(tmp_path / "large")
    tracemalloc.start()
    try:
        kept = list(scan(tmp_path / "large", probe=_not_an_image))
        kept_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (small_count, large_count, len(kept)) == (200, 1600, 1600)
    # 8x the files, same peak: the walk holds a few folder listings and one head, never
    # the entries it already yielded (keeping them costs several times more).
    assert large_peak < small_peak * 1.25
    assert kept_peak > 4 * large_peak


# -- content, not names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (".DS_Store", "junk: .DS_Store"),
        ("thumbs.db", "junk: Thumbs.db"),
        ("Desktop.ini", "junk: desktop.ini"),
        ("._IMG_0001.JPG", "junk: AppleDouble"),
        (".secret.jpg", "hidden file"),
    ],
)
def test_junk_and_hidden_files_are_skipped_unopened(tmp_path: Path, name: str, reason: str) -> None:
    (tmp_path / name).write_bytes(jpeg_bytes())  # a real JPEG: skipped by name alone
    recorder = RecordingProbe()
    [entry] = scan(tmp_path, probe=recorder)
    assert (entry.path, entry.kind, entry.reason) == (name, Kind.JUNK, reason)
    assert entry.sha256 is None and recorder.heads == []


@pytest.mark.parametrize(
    ("folder", "reason"),
    [(".git", "hidden directory"), ("__MACOSX", "junk: __MACOSX"), ("@eaDir", "junk: @eaDir")],
)
def test_junk_folders_are_one_entry_and_not_entered(
    tmp_path: Path, folder: str, reason: str
) -> None:
    (tmp_path / folder / "deep").mkdir(parents=True)
    (tmp_path / folder / "deep" / "photo.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "kept.jpg").write_bytes(jpeg_bytes())
    found = by_path(list(scan(tmp_path)))
    assert set(found) == {folder, "kept.jpg"}
    assert (found[folder].kind, found[folder].reason) == (Kind.JUNK, reason)


def test_extension_is_never_trusted(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(jpeg_bytes())  # a JPEG named .png
    (tmp_path / "image.jpg").write_bytes(b"%PDF-1.4\n...")
    (tmp_path / "noext").write_bytes(jpeg_bytes())
    found = by_path(list(scan(tmp_path)))
    assert (found["photo.png"].kind, found["photo.png"].format) == (Kind.IMAGE, "jpeg")
    assert (found["noext"].kind, found["noext"].format) == (Kind.IMAGE, "jpeg")
    assert found["image.jpg"].kind is Kind.NOT_IMAGE
    assert found["image.jpg"].reason == "not an image: PDF"


def test_a_header_larger_than_the_first_read_is_still_probed(tmp_path: Path) -> None:
    icc = bytes(200 * 1024)  # APP2 segments push the frame header past 64 KiB
    data = jpeg_bytes((120, 80), icc_profile=icc)
    assert data.find(b"\xff\xc0") > HEAD_SIZE
    (tmp_path / "poster.jpg").write_bytes(data)
    recorder = RecordingProbe()
    [entry] = scan(tmp_path, probe=recorder)
    assert (entry.kind, entry.width, entry.height) == (Kind.IMAGE, 120, 80)
    assert len(recorder.heads) == 2 and len(recorder.heads[0]) == HEAD_SIZE
    assert entry.sha256 == hashlib.sha256(data).hexdigest()  # still one complete digest


def test_not_images_are_not_re_read_with_a_larger_head(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_bytes(b"hello world\n" * 20_000)  # > 64 KiB of text
    recorder = RecordingProbe()
    [entry] = scan(tmp_path, probe=recorder)
    assert entry.kind is Kind.NOT_IMAGE and len(recorder.heads) == 1
    assert entry.size == 240_000 and entry.sha256 is not None


@pytest.mark.parametrize(
    ("fmt", "make", "reason"),
    [
        ("JPEG", lambda: noisy_jpeg(), "truncated JPEG"),
        ("PNG", lambda: _encode(Image.frombytes("RGB", (128, 128), os.urandom(49152)), "PNG"),
         "truncated PNG"),
        # Pillow parses a WebP only whole: the probe itself refuses a cut one.
        ("WEBP", lambda: _encode(Image.frombytes("RGB", (256, 256), os.urandom(196608)), "WEBP"),
         "WebP"),
    ],
)  # fmt: skip
def test_truncated_images_are_rejected(
    tmp_path: Path, fmt: str, make: Callable[[], bytes], reason: str
) -> None:
    whole = make()
    (tmp_path / "whole").write_bytes(whole)
    (tmp_path / "cut").write_bytes(whole[: len(whole) * 2 // 3])
    found = by_path(list(scan(tmp_path)))
    assert found["whole"].kind is Kind.IMAGE, fmt
    assert found["cut"].kind is Kind.REJECTED
    assert reason in (found["cut"].reason or "")
    assert found["cut"].sha256 is not None  # read in full, reported with its checksum


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_a_large_webp_is_probed_whole(tmp_path: Path) -> None:
    data = _encode(Image.frombytes("RGB", (400, 300), os.urandom(360_000)), "WEBP")
    assert len(data) > HEAD_SIZE
    (tmp_path / "big.webp").write_bytes(data)
    recorder = RecordingProbe()
    [entry] = scan(tmp_path, probe=recorder)
    assert (entry.kind, entry.format, entry.width, entry.height) == (Kind.IMAGE, "webp", 400, 300)
    assert len(recorder.heads) == 2 and len(recorder.heads[-1]) == len(data)


def test_padding_after_the_jpeg_end_marker_is_tolerated(tmp_path: Path) -> None:
    (tmp_path / "padded.jpg").write_bytes(noisy_jpeg() + b"\x00" * 512)
    [entry] = scan(tmp_path)
    assert entry.kind is Kind.IMAGE


def test_checksum_all_false_skips_reading_not_images(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"text\n" * 100_000)
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    found = by_path(list(scan(tmp_path, checksum_all=False)))
    assert found["notes.txt"].kind is Kind.NOT_IMAGE and found["notes.txt"].sha256 is None
    assert found["notes.txt"].size == 500_000  # the file's size, though only its head was read
    assert found["a.jpg"].sha256 is not None


# -- what is not a plain readable file -------------------------------------------------


def test_special_files_are_rejected_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it for reading would block forever
    [entry] = scan(tmp_path)
    assert (entry.kind, entry.reason) == (Kind.REJECTED, "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_files_and_folders_are_rejected_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "locked.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "locked.jpg").chmod(0)
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "a.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "closed").chmod(0)
    try:
        found = by_path(list(scan(tmp_path)))
    finally:
        (tmp_path / "closed").chmod(0o755)
    assert found["locked.jpg"].reason == "unreadable: permission denied"
    assert found["closed"].reason == "unreadable directory: permission denied"


def test_names_that_are_not_utf8_are_rejected_printably(tmp_path: Path) -> None:
    fd = os.open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"), os.O_WRONLY | os.O_CREAT)
    os.write(fd, jpeg_bytes())
    os.close(fd)
    [entry] = scan(tmp_path)
    assert (entry.kind, entry.reason) == (Kind.REJECTED, "name is not valid UTF-8")
    assert entry.path == "caf\\xe9.jpg"
    entry.path.encode("utf-8")  # storable in a row, printable in the report


def test_links_round_any_cycle_terminate(tmp_path: Path) -> None:
    (tmp_path / "A" / "deep").mkdir(parents=True)
    (tmp_path / "B").mkdir()
    (tmp_path / "A" / "a.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "B" / "b.jpg").write_bytes(jpeg_bytes((32, 32)))
    os.symlink("../B", tmp_path / "A" / "to_b")
    os.symlink("../A", tmp_path / "B" / "to_a")
    os.symlink("../..", tmp_path / "A" / "deep" / "to_root")
    found = by_path(list(scan(tmp_path)))
    loops = sorted(p for p, e in found.items() if e.reason and "loop" in e.reason)
    assert loops == ["A/deep/to_root", "A/to_b/to_a", "B/to_a/deep/to_root", "B/to_a/to_b"]
    assert found["A/to_b/b.jpg"].via_link and not found["B/b.jpg"].via_link
    assert len(found) == 8


def test_max_depth_bounds_the_walk(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(5)])
    deep.mkdir(parents=True)
    (deep / "x.jpg").write_bytes(jpeg_bytes())
    [entry] = scan(tmp_path, max_depth=3)
    assert (entry.path, entry.kind) == ("d0/d1/d2/d3", Kind.REJECTED)
    assert entry.reason == "too deep (more than 3 levels)"
    assert [e.path for e in scan(tmp_path)] == ["d0/d1/d2/d3/d4/x.jpg"]


def test_root_given_through_a_link_keeps_inner_links_inside(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.jpg").write_bytes(jpeg_bytes())
    os.symlink("a.jpg", real / "b.jpg")
    os.symlink(real, tmp_path / "alias")
    found = by_path(list(scan(tmp_path / "alias")))
    assert (found["b.jpg"].kind, found["b.jpg"].sha256) == (Kind.IMAGE, found["a.jpg"].sha256)


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        scan(tmp_path / "file.jpg")
    with pytest.raises(NotADirectoryError):
        scan(tmp_path / "missing")


_opened: list[str] | None = None


def _record_opens(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _opened is not None:
        _opened.append(os.fsdecode(args[0]) if isinstance(args[0], str | bytes) else "")


sys.addaudithook(_record_opens)  # audit hooks stay for the process: inert unless recording


def test_a_file_over_the_size_limit_is_rejected_from_its_size_unopened(tmp_path: Path) -> None:
    global _opened
    (tmp_path / "small.jpg").write_bytes(jpeg_bytes())
    big = tmp_path / "big.jpg"
    big.write_bytes(jpeg_bytes())
    os.truncate(big, 3 * 1024 * 1024)  # sparse: a size on disk, nothing to read
    if os.geteuid() != 0:
        big.chmod(0)  # opening it would say "unreadable"; root reads it anyway
    recorder = RecordingProbe()
    _opened = []
    try:
        found = by_path(list(scan(tmp_path, probe=recorder, max_bytes=1024 * 1024)))
    finally:
        opened, _opened = _opened, None
    assert found["big.jpg"] == ScanEntry(
        "big.jpg",
        3 * 1024 * 1024,
        None,
        None,
        Kind.REJECTED,
        reason="3 MiB exceeds the 1 MiB file size limit",
        mtime_ns=big.stat().st_mtime_ns,
    )
    assert found["small.jpg"].is_image
    assert len(recorder.heads) == 1  # the small one only
    assert str(big) not in opened and str(tmp_path / "small.jpg") in opened
