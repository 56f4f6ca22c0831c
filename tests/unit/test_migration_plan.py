"""Standardized keys, the collision rule and de-duplication: pure functions, and the plan of
the generated legacy tree."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest

from demo.sample_tree import SampleManifest, build_sample_tree
from pipeline.bulk.plan import (
    MAX_FOLDERS,
    MAX_SEGMENT,
    Plan,
    canonical_order,
    extension_for,
    plan,
    slugify,
    standard_key,
    suffixed_key,
)
from pipeline.bulk.references import Match
from pipeline.bulk.scan import Kind, ScanEntry, scan
from pipeline.errors import UnsafePath
from tests.conftest import PHOTOS

SAFE_KEY = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*(/[a-z0-9]+(-[a-z0-9]+)*)*\.[a-z0-9]+")


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def image(path: str, sha: str, *, fmt: str = "jpeg", via_link: bool = False) -> ScanEntry:
    """A scanned image entry; ``sha`` is padded to a full 64-hex digest."""
    digest = (sha * 64)[:64]
    return ScanEntry(
        path, 1000, digest, digest[:32], Kind.IMAGE, fmt, 10, 10, None, via_link=via_link
    )


def as_mapping(p: Plan, paths: list[str]) -> dict[str, str | None]:
    return {path: p.key_for(path) for path in paths}


# -- standard_key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt", "key"),
    [
        ("Photos/Summer 2019/IMG_0001.JPG", "jpeg", "legacy/photos/summer-2019/img-0001.jpg"),
        ("uploads/file (1).jpg", "jpeg", "legacy/uploads/file-1.jpg"),
        ("a/photo.jpeg", "jpeg", "legacy/a/photo.jpg"),
        ("a/photo.Jpg", "jpeg", "legacy/a/photo.jpg"),
        ("a/photo.jpg.jpg", "jpeg", "legacy/a/photo-jpg.jpg"),  # only one extension dropped
        ("a/logo.png", "jpeg", "legacy/a/logo.jpg"),  # the content decides the extension
        ("a/scan.TIFF", "tiff", "legacy/a/scan.tif"),
        ("a/anim.gif", "gif", "legacy/a/anim.gif"),
        ("a/x.webp", "webp", "legacy/a/x.webp"),
        ("a/phone.HEIC", "heic", "legacy/a/phone.heic"),
        ("a/pic", "png", "legacy/a/pic.png"),  # no extension at all
        ("a/my.photo", "jpeg", "legacy/a/my-photo.jpg"),  # ".photo" is part of the name
        ("Crème Brûlée.jpg", "jpeg", "legacy/creme-brulee.jpg"),
        ("Straße/Ærøskøbing.png", "png", "legacy/strae/rskbing.png"),  # no ASCII decomposition
        ("__init__ -- copy__.jpg", "jpeg", "legacy/init-copy.jpg"),
        ("  Spaces  Everywhere  .jpg", "jpeg", "legacy/spaces-everywhere.jpg"),
        ("ﬁle ①.jpg", "jpeg", "legacy/file-1.jpg"),  # compatibility forms spelled out
        ("a/./b//c.jpg", "jpeg", "legacy/a/b/c.jpg"),
        ("x.MPO", "mpo", "legacy/x.jpg"),
    ],
)
def test_standard_key(path: str, fmt: str, key: str) -> None:
    assert standard_key(path, fmt) == key


def test_nfc_and_nfd_spellings_give_the_same_key() -> None:
    name = "Fotos Ünïcode/Mañana Café.png"
    assert nfd(name) != name
    assert standard_key(nfd(name), "png") == standard_key(name, "png")
    assert standard_key(name, "png") == "legacy/fotos-unicode/manana-cafe.png"


def test_names_with_nothing_left_get_stable_distinct_fallbacks() -> None:
    stars, cjk = standard_key("p/★★★.jpg", "jpeg"), standard_key("p/日本語.jpg", "jpeg")
    assert re.fullmatch(r"legacy/p/file-[0-9a-f]{8}\.jpg", stars)
    assert re.fullmatch(r"legacy/p/file-[0-9a-f]{8}\.jpg", cjk)
    assert stars != cjk
    assert standard_key("p/★★★.jpg", "jpeg") == stars  # stable
    assert re.fullmatch(r"legacy/dir-[0-9a-f]{8}/x\.jpg", standard_key("写真/x.jpg", "jpeg"))
    # Every spelling of one name (case, normal form) gets the same fallback.
    assert standard_key("Ω/é日本.jpg", "jpeg") == standard_key(nfd("ω/É日本.JPG"), "jpeg")
    assert standard_key(".jpg", "jpeg").startswith("legacy/file-")


def test_long_names_are_bounded_and_stay_distinct() -> None:
    long_a = "a/" + "Very long product name " * 20 + "A.jpg"
    long_b = "a/" + "Very long product name " * 20 + "B.jpg"
    key_a, key_b = standard_key(long_a, "jpeg"), standard_key(long_b, "jpeg")
    stem_a = key_a.rsplit("/", 1)[1].removesuffix(".jpg")
    assert len(stem_a) == MAX_SEGMENT and key_a != key_b
    assert stem_a.startswith("very-long-product-name-very")
    assert re.search(r"-[0-9a-f]{8}$", stem_a)


def test_deep_folders_are_bounded() -> None:
    deep = "/".join(f"Folder number {i}" for i in range(60)) + "/x.jpg"
    key = standard_key(deep, "jpeg")
    folders = key.removeprefix("legacy/").rsplit("/", 1)[0]
    assert len(folders) <= MAX_FOLDERS
    assert re.search(r"/more-[0-9a-f]{8}$", folders)
    assert len(key.encode()) < 1024  # S3's limit
    other = standard_key(deep.replace("number 59", "number 60"), "jpeg")
    assert other != key  # the folded tail still tells the trees apart


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "a/../../b.jpg", "a/../b.jpg", "/etc/passwd", "", "./", ".."]
)
def test_paths_that_climb_or_are_absolute_are_refused(path: str) -> None:
    with pytest.raises(UnsafePath):
        standard_key(path, "jpeg")


@pytest.mark.parametrize(
    "path",
    ["..\\..\\windows\\x.jpg", "...jpg", "..foo/bar.jpg", "a/%2e%2e/b.jpg", "a/b/.../c.jpg"],
)
def test_odd_but_legal_names_never_produce_an_escaping_key(path: str) -> None:
    key = standard_key(path, "jpeg")
    assert SAFE_KEY.fullmatch(key), key
    assert ".." not in key and not key.startswith("/")


def test_prefix() -> None:
    assert standard_key("a/b.jpg", "jpeg", prefix="") == "a/b.jpg"
    assert standard_key("a/b.jpg", "jpeg", prefix="/imports/2024/") == "imports/2024/a/b.jpg"
    with pytest.raises(ValueError, match="prefix"):
        standard_key("a/b.jpg", "jpeg", prefix="x/../y")


def test_extensions_one_per_format() -> None:
    assert {extension_for(f) for f in ("jpeg", "JPEG", "jpg", "mpo")} == {"jpg"}
    assert {extension_for(f) for f in ("heic", "heif", "HEIF")} == {"heic"}
    assert extension_for("tiff") == "tif"
    assert extension_for("JPEG XL") == "jpeg-xl"  # unknown: still one stable spelling
    with pytest.raises(ValueError):
        extension_for("★")


def test_slugify() -> None:
    assert slugify("  Hello, World!! ") == "hello-world"
    assert slugify("Ünïcode") == slugify(nfd("Ünïcode")) == "unicode"
    assert slugify("---") == slugify("日本") == ""


def test_suffixed_key() -> None:
    assert suffixed_key("legacy/a/b.jpg", "0123456789abcdef") == "legacy/a/b-01234567.jpg"
    assert suffixed_key("legacy/a/b.jpg", "0123456789abcdef", 16).endswith("b-0123456789abcdef.jpg")


# -- collisions and duplicates -----------------------------------------------------------


COLLIDING = [
    image("Photos/Crème Brûlée.jpg", "a1"),
    image("Photos/creme brulee.JPG", "b2"),
    image(nfd("Photos/Crème Brûlée.jpeg"), "c3"),
    image("Photos/other.jpg", "d4"),
    image("uploads/file.jpg", "e5"),
    image("uploads/file (1).jpg", "e5"),  # a copy
    image("old/Copy of file.jpg", "e5"),  # another copy, elsewhere
    image("links/file.jpg", "e5", via_link=True),  # an alias through a symlink
    image("Résumé.jpg", "f6"),
    image(nfd("Résumé.jpg"), "f6"),  # the same name and bytes in NFD
]


def test_every_content_wanting_one_key_gets_a_hash_suffix() -> None:
    p = plan(COLLIDING)
    keys = as_mapping(p, [e.path for e in COLLIDING[:4]])
    a1, b2, c3 = ("a1" * 32)[:8], ("b2" * 32)[:8], ("c3" * 32)[:8]
    assert keys == {
        "Photos/Crème Brûlée.jpg": f"legacy/photos/creme-brulee-{a1}.jpg",
        "Photos/creme brulee.JPG": f"legacy/photos/creme-brulee-{b2}.jpg",
        nfd("Photos/Crème Brûlée.jpeg"): f"legacy/photos/creme-brulee-{c3}.jpg",
        "Photos/other.jpg": "legacy/photos/other.jpg",  # no collision, no suffix
    }
    assert set(p.collisions) == {"legacy/photos/creme-brulee.jpg"}
    assert len({o.key for o in p.objects}) == len(p.objects)


def test_the_plan_does_not_depend_on_input_order() -> None:
    reference = plan(COLLIDING)
    paths = [e.path for e in COLLIDING]
    for seed in range(25):
        shuffled = COLLIDING[:]
        random.Random(seed).shuffle(shuffled)
        p = plan(shuffled)
        assert p.objects == reference.objects
        assert as_mapping(p, paths) == as_mapping(reference, paths)
        assert dict(p.collisions) == dict(reference.collisions)


def test_identical_content_is_one_object_under_the_canonical_path() -> None:
    p = plan(COLLIDING)
    copies = p.object_for("uploads/file (1).jpg")
    assert copies is not None
    # A real file beats a link alias; the shorter name beats "(1)" and "Copy of".
    assert copies.paths == (
        "uploads/file.jpg",
        "old/Copy of file.jpg",
        "uploads/file (1).jpg",
        "links/file.jpg",
    )
    assert copies.key == "legacy/uploads/file.jpg" and copies.duplicates == 3
    for path in copies.paths:
        assert p.key_for(path) == "legacy/uploads/file.jpg"
    resume = p.object_for(nfd("Résumé.jpg"))
    assert resume is not None and resume.canonical_path == "Résumé.jpg"  # NFC is shorter
    assert p.duplicates_folded == 4
    assert p.paths == len(COLLIDING) and len(p.objects) == 6


def test_canonical_order_is_link_then_length_then_code_points() -> None:
    entries = [image("b.jpg", "1"), image("a.jpg", "1"), image("a.jpg.x", "1"), image("z", "1")]
    entries.append(image("y", "1", via_link=True))
    assert [e.path for e in sorted(entries, key=canonical_order)] == [
        "z", "a.jpg", "b.jpg", "a.jpg.x", "y",
    ]  # fmt: skip


def test_a_suffixed_key_that_is_taken_uses_a_longer_hash() -> None:
    sha_a, sha_b = "ab" * 32, "cd" * 32
    entries = [
        image("x.jpg", sha_a),
        image("X.JPG", sha_b),
        image(f"x-{sha_a[:8]}.jpg", "ef"),  # a legacy name that looks like our suffix
    ]
    for order in (entries, entries[::-1]):
        p = plan(order)
        assert p.key_for("x.jpg") == f"legacy/x-{sha_a[:16]}.jpg"
        assert p.key_for("X.JPG") == f"legacy/x-{sha_b[:16]}.jpg"
        assert p.key_for(f"x-{sha_a[:8]}.jpg") == f"legacy/x-{sha_a[:8]}.jpg"


def test_only_images_get_keys() -> None:
    entries = [
        image("a.jpg", "1"),
        ScanEntry("b.jpg", 10, "f" * 64, "f" * 32, Kind.REJECTED, reason="truncated JPEG"),
        ScanEntry(".DS_Store", 10, None, None, Kind.JUNK, reason="junk: .DS_Store"),
    ]
    p = plan(entries)
    assert [o.key for o in p.objects] == ["legacy/a.jpg"]
    assert p.key_for("b.jpg") is None and p.key_for(".DS_Store") is None


# -- the generated tree ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleManifest:
    return build_sample_tree(tmp_path_factory.mktemp("legacy") / "media", PHOTOS, n=80, seed=3)


@pytest.fixture(scope="module")
def sample_plan(sample: SampleManifest) -> Plan:
    return plan(scan(sample.root))


def test_plan_of_the_sample_tree(sample: SampleManifest, sample_plan: Plan) -> None:
    counts = sample.counts
    assert sample_plan.paths == counts["image"]
    assert len(sample_plan.objects) == counts["unique_images"]
    assert sample_plan.duplicates_folded == counts["duplicates"]
    assert "legacy/photos/cafe/creme-brulee.jpg" in sample_plan.collisions
    keys = [o.key for o in sample_plan.objects]
    assert len(set(keys)) == len(keys) and keys == sorted(keys)
    for key in keys:
        assert SAFE_KEY.fullmatch(key.removeprefix("legacy/")), key
    for copy, original in sample.duplicates.items():
        assert sample_plan.key_for(copy) == sample_plan.key_for(original)
    assert sample_plan.key_for("Photos/Summer 2019/IMG_0001 (1).JPG") == (
        "legacy/photos/summer-2019/img-0001.jpg"
    )


def test_every_legacy_value_of_the_sample_resolves_as_the_manifest_says(
    sample: SampleManifest, sample_plan: Plan
) -> None:
    styles = set()
    for v in sample.legacy_values:
        link = sample_plan.resolve(v.value)
        styles.add(v.style)
        if v.path is None:
            assert not link.linked and link.reason, v
            assert link.resolution.status in (Match.DANGLING, Match.INVALID)
        elif v.target_kind == Kind.IMAGE:
            assert link.key == sample_plan.key_for(v.path), v
        else:  # points at a file that was rejected: reported with the file's reason
            assert not link.linked and link.reason == "refers to a rejected file: truncated JPEG"
    assert {"relative", "media_url", "url_encoded", "absolute_url", "backslashes", "case"} <= styles
    assert {"unicode", "unicode_case", "dot_segments", "dangling", "escape"} <= styles


def test_an_ambiguous_match_links_when_the_files_are_one_content(sample_plan: Plan) -> None:
    link = sample_plan.resolve("/media/PHOTOS/R%C3%89SUM%C3%89.JPG")
    assert link.resolution.status is Match.AMBIGUOUS and len(link.resolution.matches) == 2
    assert link.key == "legacy/photos/resume.jpg"
